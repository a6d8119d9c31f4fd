//! Loading the job configuration: a MegatronFineTune manifest or a bare spec
//! (what the operator mounts at `/etc/megatron/spec.yaml`), YAML or JSON.
//!
//! Errors name the file and the field (`spec.training.globalBatchSize: ...`);
//! unknown fields are rejected (a typo would otherwise be silently ignored),
//! and the spec is checked with [`crds::MegatronFineTuneSpec::validate`], the same
//! rules the API server applies, so a local run fails as early and as clearly.

use std::path::{Path, PathBuf};

use crds::MegatronFineTuneSpec;
use serde_json::Value;

use super::error::{JobError, JobResult, SpecError};
use crds::Allow;

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// The spec.
    pub spec: MegatronFineTuneSpec,
    /// `metadata.name` of a manifest.
    pub name: Option<String>,
    /// `metadata.namespace` of a manifest.
    pub namespace: Option<String>,
    /// Where it was read from (for messages).
    pub origin: String,
}

/// Reads the configuration file at `path` (call [`JobConfig::validate`]
/// after applying command-line overrides).
pub fn load_config(path: &Path) -> JobResult<JobConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        JobError::invalid(format!(
            "cannot read the config file {}: {e} (pass --config FILE or set MEGATRON_CONFIG)",
            path.display()
        ))
    })?;
    parse_unvalidated(&text, &path.display().to_string())
}

/// Parses (without validating) a manifest or bare spec from `text`; `origin`
/// names the source in messages.
pub fn parse_unvalidated(text: &str, origin: &str) -> JobResult<JobConfig> {
    let bad = |msg: String| JobError::invalid(format!("{origin}: {msg}"));
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(bad(
            "the file is empty; it must hold a MegatronFineTune manifest or its spec".into(),
        ));
    }
    let value: Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?
    } else {
        serde_yaml::from_str(text).map_err(|e| bad(format!("not valid YAML: {e}")))?
    };
    let Value::Object(mut top) = value else {
        return Err(bad(
            "expected a mapping (a MegatronFineTune manifest or its spec)".into(),
        ));
    };
    let is_manifest = top.contains_key("apiVersion") || top.contains_key("kind");
    let (spec_value, name, namespace) = if is_manifest {
        let api_version = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let expected_api = format!("{}/{}", crds::GROUP, crds::VERSION);
        if api_version != expected_api {
            return Err(bad(format!(
                "apiVersion is {api_version:?}; expected {expected_api:?}"
            )));
        }
        let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "MegatronFineTune" {
            return Err(bad(format!(
                "kind is {kind:?}; expected \"MegatronFineTune\""
            )));
        }
        let meta = top.get("metadata").cloned().unwrap_or(Value::Null);
        let text_of = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
        let (name, namespace) = (text_of("name"), text_of("namespace"));
        let spec = top
            .remove("spec")
            .ok_or_else(|| bad("the manifest has no spec".into()))?;
        (spec, name, namespace)
    } else {
        (Value::Object(top), None, None)
    };
    let spec = deserialize_spec(spec_value).map_err(|source| JobError::Spec {
        origin: origin.to_owned(),
        source,
    })?;
    Ok(JobConfig {
        spec,
        name,
        namespace,
        origin: origin.to_owned(),
    })
}

/// Parses and validates a manifest or bare spec.
pub fn parse_config(text: &str, origin: &str) -> JobResult<JobConfig> {
    let config = parse_unvalidated(text, origin)?;
    config.validate(Allow::default())?;
    Ok(config)
}

impl JobConfig {
    /// Checks the spec (see [`crds::MegatronFineTuneSpec::validate`]) with the
    /// rules `allow` relaxes.
    pub fn validate(&self, allow: Allow) -> JobResult<()> {
        let problems = self.spec.validate(allow);
        if problems.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Err(JobError::invalid(format!(
            "{}: invalid spec:\n  - {}",
            self.origin,
            lines.join("\n  - ")
        )))
    }
}

fn deserialize_spec(value: Value) -> Result<MegatronFineTuneSpec, SpecError> {
    if !value.is_object() {
        return Err(SpecError::NotAMapping);
    }
    let mut unknown = Vec::new();
    let spec = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize::<_, MegatronFineTuneSpec>(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "spec".to_owned()
            } else {
                format!("spec.{path}")
            };
            SpecError::Field {
                field,
                source: e.into_inner(),
            }
        })?
    };
    if !unknown.is_empty() {
        return Err(SpecError::UnknownFields {
            fields: unknown.iter().map(|p| format!("spec.{p}")).collect(),
        });
    }
    Ok(spec)
}

/// The config path: `--config`, else `MEGATRON_CONFIG`.
pub fn config_path(flag: Option<PathBuf>) -> JobResult<PathBuf> {
    flag.or_else(|| std::env::var_os("MEGATRON_CONFIG").map(PathBuf::from))
        .ok_or_else(|| {
            JobError::invalid("no configuration: pass --config FILE (or set MEGATRON_CONFIG)")
        })
}
