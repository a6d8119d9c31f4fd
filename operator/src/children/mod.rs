//! Builders of the objects a MegatronFineTune owns, and the names and labels they share.

pub mod config_map;
pub mod pod_group;
pub mod rbac;
pub mod service;
pub mod stateful_set;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::job::JobView;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "megatron-operator";
/// Label naming the MegatronFineTune a child or rank pod belongs to.
pub const JOB_LABEL: &str = "megatron.dev/job-name";
/// Label of rank pods carrying the gang attempt that created them.
pub const ATTEMPT_LABEL: &str = "megatron.dev/attempt";
/// Annotation with the hash of the desired object last applied; equal hash = nothing to write.
pub const HASH_ANNOTATION: &str = "megatron.dev/desired-hash";
/// `app.kubernetes.io/managed-by` value on every child.
pub const MANAGED_BY: &str = "megatron-operator";
/// Label selector matching every child the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=megatron-operator";
/// Where the trainer configuration is mounted.
pub const CONFIG_DIR: &str = "/etc/megatron";
/// Key (file name) of the trainer configuration in its ConfigMap.
pub const CONFIG_KEY: &str = "spec.yaml";

/// Names of a job's children.
pub struct Names;

impl Names {
    /// StatefulSet (pods are `<name>-<index>`).
    pub fn stateful_set(job: &JobView) -> String {
        job.name.clone()
    }
    /// Headless Service giving every rank a DNS name.
    pub fn service(job: &JobView) -> String {
        job.name.clone()
    }
    /// ConfigMap with the trainer configuration.
    pub fn config_map(job: &JobView) -> String {
        format!("{}-config", job.name)
    }
    /// ServiceAccount, Role and RoleBinding of the trainer.
    pub fn trainer_identity(job: &JobView) -> String {
        format!("{}-trainer", job.name)
    }
    /// Stable DNS name of rank pod 0 (`MASTER_ADDR`).
    pub fn master_addr(job: &JobView) -> String {
        format!(
            "{}-0.{}.{}.svc",
            Self::stateful_set(job),
            Self::service(job),
            job.namespace
        )
    }
}

/// Labels every child carries.
pub fn labels(job: &JobView) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "megatron-trainer".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), job.name.clone()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        (JOB_LABEL.to_owned(), job.name.clone()),
    ])
}

/// Labels selecting the rank pods (a subset of `labels`, stable for the StatefulSet's immutable selector).
pub fn selector_labels(job: &JobView) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
        (JOB_LABEL.to_owned(), job.name.clone()),
    ])
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub fn metadata(job: &JobView, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(job.namespace.clone()),
        labels: Some(labels(job)),
        owner_references: Some(vec![job.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Stamps the object's content hash into `HASH_ANNOTATION` and returns the hash.
pub fn stamp_hash<T: Serialize>(
    object: &mut T,
    meta: fn(&mut T) -> &mut ObjectMeta,
) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(&*object)?;
    let hash = format!("{:x}", Sha256::digest(&bytes));
    meta(object)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_ANNOTATION.to_owned(), hash.clone());
    Ok(hash)
}

/// The hash stamped on an observed object, if any.
pub fn observed_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    pub fn job() -> JobView {
        JobView {
            name: "squad".into(),
            namespace: "ml".into(),
            uid: "uid-1".into(),
            owner: OwnerReference {
                api_version: "megatron.dev/v1alpha1".into(),
                kind: "MegatronFineTune".into(),
                name: "squad".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            world_size: 4,
            ranks_per_pod: 2,
            tensor_parallel_size: 2,
            data_parallel_size: 2,
            gpu: true,
            storage: serde_json::from_value(serde_json::json!({
                "bucket": "runs", "credentialsSecretRef": { "name": "s3-creds" }
            }))
            .unwrap(),
            pod: Default::default(),
            config_yaml: "task: squad\n".into(),
        }
    }
}
