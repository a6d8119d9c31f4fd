//! The generated CustomResourceDefinition and its committed YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::spec::MegatronFineTune;

/// Path of the committed CRD, relative to the workspace root.
pub const CRD_PATH: &str = "crds/megatron.dev_megatronfinetunes.yaml";

/// Command that regenerates [`CRD_PATH`] (what `make crd` runs).
pub const REGENERATE: &str =
    "cargo run -p crds --bin crdgen > crds/megatron.dev_megatronfinetunes.yaml";

/// The CustomResourceDefinition generated from the Rust types.
pub fn crd() -> CustomResourceDefinition {
    MegatronFineTune::crd()
}

/// The CRD as YAML, exactly as `crdgen` prints it.
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("a CRD always serializes to YAML");
    format!("# Generated from the Rust types in crds/src by `{REGENERATE}`. Do not edit.\n{body}")
}

/// The committed CRD, embedded at compile time (for installers and tests).
pub const COMMITTED_CRD_YAML: &str = include_str!("../megatron.dev_megatronfinetunes.yaml");
