//! S3 settings of a job: `spec.storage` (endpoint, region, forcePathStyle)
//! combined with the environment the operator sets (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_S3_FORCE_PATH_STYLE`, the access keys from the Secret).
//! Explicit `MEGATRON_S3_*` variables win (a local run pointing elsewhere);
//! credentials only ever come from the environment and are never logged.

use crds::StorageSpec;

use crate::storage::{S3Config, StorageError, Store};

/// The settings for `bucket`/`prefix` under `storage` and the process environment.
pub fn s3_config(
    storage: &StorageSpec,
    bucket: &str,
    prefix: &str,
) -> Result<S3Config, StorageError> {
    s3_config_with(storage, bucket, prefix, |k| std::env::var(k).ok())
}

/// [`s3_config`] with an explicit variable lookup.
pub fn s3_config_with(
    storage: &StorageSpec,
    bucket: &str,
    prefix: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<S3Config, StorageError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let explicit_endpoint = env("MEGATRON_S3_ENDPOINT")
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    let endpoint = explicit_endpoint
        .clone()
        .or_else(|| storage.endpoint.clone());
    // An http:// endpoint written in the spec is an explicit choice (an
    // in-cluster store); the storage module otherwise refuses plain HTTP
    // to a non-loopback host.
    let spec_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://") && storage.endpoint.as_deref() == Some(e));
    S3Config::from_lookup(bucket, prefix, |k| match k {
        "MEGATRON_S3_ENDPOINT" => endpoint.clone(),
        "AWS_ENDPOINT_URL_S3" | "AWS_ENDPOINT_URL" => None,
        "AWS_REGION" => env("AWS_REGION").or_else(|| Some(storage.region.clone())),
        "MEGATRON_S3_PATH_STYLE" => env(k)
            .or_else(|| env("AWS_S3_FORCE_PATH_STYLE"))
            .or_else(|| Some(storage.force_path_style.to_string())),
        "MEGATRON_S3_ALLOW_HTTP" => env(k).or_else(|| spec_http.then(|| "true".to_owned())),
        other => env(other),
    })
}

/// A store over `bucket`/`prefix` with the job's settings.
pub fn s3_store(storage: &StorageSpec, bucket: &str, prefix: &str) -> Result<Store, StorageError> {
    Store::s3(s3_config(storage, bucket, prefix)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::CredentialsSecretRef;
    use std::collections::HashMap;

    fn storage(endpoint: Option<&str>) -> StorageSpec {
        StorageSpec {
            endpoint: endpoint.map(str::to_owned),
            bucket: "bkt".into(),
            prefix: String::new(),
            region: "eu-west-1".into(),
            force_path_style: false,
            credentials_secret_ref: CredentialsSecretRef::new("c"),
        }
    }

    fn cfg(s: &StorageSpec, vars: &[(&str, &str)]) -> Result<S3Config, StorageError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s3_config_with(s, "bkt", "p", |k| m.get(k).cloned())
    }

    #[test]
    fn spec_settings_apply_and_env_wins() {
        let s = storage(Some("http://seaweedfs.storage:8333"));
        let c = cfg(&s, &[]).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://seaweedfs.storage:8333"));
        assert_eq!(
            (c.region.as_str(), c.path_style, c.allow_http),
            ("eu-west-1", false, true)
        );
        let c = cfg(
            &s,
            &[
                ("MEGATRON_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.path_style);
        // Plain HTTP to a remote host that the spec did not name is refused.
        let e = cfg(
            &storage(None),
            &[("AWS_ENDPOINT_URL", "http://10.1.2.3:9000")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("plain HTTP"), "{e}");
    }

    #[test]
    fn credentials_come_from_env_and_are_not_printed() {
        let c = cfg(
            &storage(None),
            &[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ],
        )
        .unwrap();
        assert!(c.credentials.is_some());
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
