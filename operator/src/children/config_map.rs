//! The ConfigMap holding the rendered trainer configuration, mounted read-only at /etc/megatron.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{CONFIG_KEY, Names, metadata};
use crate::job::JobView;

/// One key, `spec.yaml`, with the job's spec as YAML.
pub fn build(job: &JobView) -> ConfigMap {
    ConfigMap {
        metadata: metadata(job, Names::config_map(job)),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            job.config_yaml.clone(),
        )])),
        ..ConfigMap::default()
    }
}
