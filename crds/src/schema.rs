//! Schema helpers for the generated CRD.

use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Schema of an optional unit enum that keeps the field's own description.
///
/// kube's `OptionalEnum` transform replaces an `Option<Enum>` field's description with the
/// enum type's; emitting the nullable enum directly avoids that.
pub fn optional_enum<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = T::json_schema(generator);
    if let Some(object) = schema.as_object_mut() {
        object.remove("description");
        object.insert("nullable".into(), true.into());
    }
    schema
}
