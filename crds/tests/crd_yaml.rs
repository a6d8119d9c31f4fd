//! The committed CRD matches the types, stays small, and documents every field.

use crds::crd::{COMMITTED_CRD_YAML, REGENERATE, crd, crd_yaml};
use serde_json::Value;

fn schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_yaml_is_up_to_date() {
    let committed: Value = serde_yaml::from_str(COMMITTED_CRD_YAML).unwrap_or_else(|e| {
        panic!("crds/megatron.dev_megatronfinetunes.yaml does not parse ({e}); regenerate it: {REGENERATE}")
    });
    let generated: Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    assert!(
        committed == generated,
        "crds/megatron.dev_megatronfinetunes.yaml is stale; regenerate it from the workspace root: {REGENERATE}"
    );
}

#[test]
fn crd_fits_client_side_apply() {
    // `kubectl apply` (client-side) stores the object in an annotation limited to 256 KiB.
    let json = serde_json::to_string(&crd()).unwrap();
    assert!(
        json.len() < 240 * 1024,
        "the CRD is {} bytes as JSON; keep it below 240 KiB so client-side kubectl apply works",
        json.len()
    );
}

/// Paths of object properties without a description.
fn undocumented(path: &str, schema: &Value, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            if prop
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .is_empty()
            {
                out.push(here.clone());
            }
            undocumented(&here, prop, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(&format!("{path}[]"), items, out);
    }
    if let Some(extra) = schema.get("additionalProperties") {
        undocumented(&format!("{path}{{}}"), extra, out);
    }
}

#[test]
fn every_field_of_ours_is_documented() {
    let schema = schema();
    let mut missing = Vec::new();
    undocumented("", &schema["properties"]["spec"], &mut missing);
    undocumented("", &schema["properties"]["status"], &mut missing);
    // Embedded Kubernetes types (spec.pod.*, status.conditions) carry upstream docs; a few
    // upstream leaves have none. Our own fields must all have one.
    let ours: Vec<_> = missing
        .into_iter()
        .filter(|p| {
            !(p.starts_with(".pod.")
                && p.matches('.').count() > 2
                && !p.starts_with(".pod.serviceAccountAnnotations"))
        })
        .collect();
    assert!(ours.is_empty(), "fields without a description: {ours:#?}");
}

#[test]
fn crd_names_and_printer_columns() {
    let crd = crd();
    assert_eq!(crd.metadata.name.as_deref(), Some(crds::CRD_NAME));
    assert_eq!(crd.spec.names.short_names, Some(vec!["mft".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["megatron".to_owned()]));
    let version = &crd.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Phase", "Task", "TP", "Ranks", "Progress", "Age"]);
}

#[test]
fn optional_enums_keep_their_field_descriptions() {
    let spec = &schema()["properties"]["spec"]["properties"];
    let pretrained = &spec["model"]["properties"]["pretrained"];
    assert!(
        pretrained["description"]
            .as_str()
            .unwrap()
            .starts_with("A pretrained name"),
        "{pretrained}"
    );
    assert_eq!(pretrained["nullable"], true);
    assert_eq!(pretrained["enum"].as_array().unwrap().len(), 6);
    let pull = &spec["pod"]["properties"]["imagePullPolicy"];
    assert!(
        pull["description"]
            .as_str()
            .unwrap()
            .starts_with("Image pull policy"),
        "{pull}"
    );
}

#[test]
fn conditions_merge_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}

#[test]
fn storage_stays_required_and_non_nullable_for_the_api_server() {
    // The Rust type is `Option<StorageSpec>` so that a trainer config for a
    // local run may leave it out; the API server must still require it.
    let spec = &schema()["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(required.contains(&"storage"), "spec.required: {required:?}");
    let storage = &spec["properties"]["storage"];
    assert_eq!(storage["type"], "object", "{storage}");
    assert!(storage.get("nullable").is_none(), "{storage}");
    assert!(
        storage["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("bucket")),
        "{storage}"
    );
}
