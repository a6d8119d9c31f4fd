//! `spec.storage`: the S3-compatible store for checkpoints, artifacts and `s3://` inputs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::uri::Uri;

/// How to give a config the S3 store it lacks (the end of the messages that ask for one).
pub const STORAGE_FIX: &str = "add spec.storage (bucket and credentialsSecretRef, and endpoint \
     for a store other than AWS S3; a local run reads the keys from AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY)";

/// An S3-compatible object store. Every `s3://` location in the spec is read with this
/// endpoint and these credentials; outputs go under
/// `s3://<bucket>/<prefix>/<namespace>/<name>/` (checkpoints/, artifacts/, report.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Endpoint URL, e.g. http://seaweedfs.storage:8333 or https://s3.us-east-1.amazonaws.com.
    /// Default: AWS S3 for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^https?://[^\s/?#]+(/\S*)?$"))]
    pub endpoint: Option<String>,

    /// Bucket for checkpoints and artifacts (must exist).
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,

    /// Key prefix inside the bucket, without leading or trailing `/` (e.g. team-a/finetunes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512), pattern(r"^([^\s/]+(/[^\s/]+)*)?$"))]
    pub prefix: String,

    /// Signing region.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9-]+$"))]
    pub region: String,

    /// Address buckets as <endpoint>/<bucket> instead of <bucket>.<endpoint> (most
    /// self-hosted stores need this).
    #[serde(default = "default_true")]
    pub force_path_style: bool,

    /// The Secret (in the job's namespace) holding the access key pair; the operator passes it
    /// to the pods as environment variables, never through the spec or logs.
    pub credentials_secret_ref: CredentialsSecretRef,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_true() -> bool {
    true
}

/// Where the S3 access keys live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub access_key_id_key: String,

    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}

impl CredentialsSecretRef {
    /// A reference with the default key names.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            access_key_id_key: default_access_key_id_key(),
            secret_access_key_key: default_secret_access_key_key(),
        }
    }
}

impl StorageSpec {
    /// The job's output root: `s3://<bucket>/<prefix>/<namespace>/<name>`.
    pub fn job_root(&self, namespace: &str, name: &str) -> Uri {
        let mut key = String::new();
        if !self.prefix.is_empty() {
            key.push_str(self.prefix.trim_matches('/'));
            key.push('/');
        }
        Uri(format!("s3://{}/{key}{namespace}/{name}", self.bucket))
    }

    /// Where the trainer writes checkpoints: `<job root>/checkpoints`.
    pub fn checkpoints_root(&self, namespace: &str, name: &str) -> Uri {
        self.job_root(namespace, name).join("checkpoints")
    }

    /// Where the trainer writes the final .nemo and other artifacts: `<job root>/artifacts`.
    pub fn artifacts_root(&self, namespace: &str, name: &str) -> Uri {
        self.job_root(namespace, name).join("artifacts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_layout() {
        let mut s = StorageSpec {
            endpoint: None,
            bucket: "ml-runs".into(),
            prefix: "team-a/ft".into(),
            region: default_region(),
            force_path_style: true,
            credentials_secret_ref: CredentialsSecretRef::new("s3-creds"),
        };
        assert_eq!(
            s.job_root("ns1", "squad").as_str(),
            "s3://ml-runs/team-a/ft/ns1/squad"
        );
        assert_eq!(
            s.checkpoints_root("ns1", "squad").as_str(),
            "s3://ml-runs/team-a/ft/ns1/squad/checkpoints"
        );
        s.prefix.clear();
        assert_eq!(
            s.artifacts_root("n", "j").as_str(),
            "s3://ml-runs/n/j/artifacts"
        );
        assert!(s.job_root("n", "j").location().is_ok());
    }

    #[test]
    fn secret_key_defaults() {
        let r: CredentialsSecretRef =
            serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert_eq!(r, CredentialsSecretRef::new("c"));
        assert_eq!(r.access_key_id_key, "AWS_ACCESS_KEY_ID");
    }
}
