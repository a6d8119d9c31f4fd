//! Settings for an S3-compatible server and the `AmazonS3` client built from them.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::signer::Url;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::storage::location::valid_bucket_name;
use crate::storage::{Secret, StorageError};

/// Static credentials, normally injected from a Kubernetes Secret as
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Retries of single requests (object_store's policy): transient errors
/// (5xx, connection resets, timeouts) are retried with exponential backoff.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    pub init_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            retry_timeout: Duration::from_secs(120),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn to_object_store(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                ..BackoffConfig::default()
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// Where and how to reach an S3-compatible bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Config {
    /// `http(s)://host:port` of a non-AWS server; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix every object of this store lives under (no leading/trailing `/`).
    pub prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), which most self-hosted servers need.
    pub path_style: bool,
    /// Plain HTTP to a non-loopback endpoint (loopback is always allowed).
    pub allow_http: bool,
    /// `None`: unsigned requests (public buckets only).
    pub credentials: Option<S3Credentials>,
    pub retry: RetryPolicy,
    /// Timeout of one HTTP request (a whole part upload or ranged read).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl S3Config {
    /// Settings for `bucket`/`prefix` from the environment the operator sets:
    /// `MEGATRON_S3_ENDPOINT` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`),
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`, default `us-east-1`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `MEGATRON_S3_PATH_STYLE` (default: true when an endpoint is set) and
    /// `MEGATRON_S3_ALLOW_HTTP`.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self, StorageError> {
        Self::from_lookup(bucket, prefix, |k| std::env::var(k).ok())
    }

    /// Like [`S3Config::from_env`] with an explicit variable lookup (for tests
    /// and for reading an env file).
    pub fn from_lookup(
        bucket: &str,
        prefix: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StorageError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let endpoint = get("MEGATRON_S3_ENDPOINT")
            .or_else(|| get("AWS_ENDPOINT_URL_S3"))
            .or_else(|| get("AWS_ENDPOINT_URL"));
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let flag = |k: &str| -> Result<Option<bool>, StorageError> {
            match get(k).as_deref() {
                None => Ok(None),
                Some("true" | "1") => Ok(Some(true)),
                Some("false" | "0") => Ok(Some(false)),
                Some(other) => Err(StorageError::Config(format!(
                    "{k}='{other}' is not a boolean (use true or false)"
                ))),
            }
        };
        let path_style = flag("MEGATRON_S3_PATH_STYLE")?.unwrap_or(endpoint.is_some());
        let allow_http = flag("MEGATRON_S3_ALLOW_HTTP")?.unwrap_or(false);
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some(S3Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(StorageError::Config(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; \
                     the credentials Secret must have both keys"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(StorageError::Config(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; \
                     the credentials Secret must have both keys"
                        .into(),
                ));
            }
        };
        let config = S3Config {
            endpoint,
            region,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            path_style,
            allow_http,
            credentials,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
        };
        config.validate()?;
        Ok(config)
    }

    /// The endpoint for messages (`https://s3.<region>.amazonaws.com` for AWS).
    pub fn endpoint_display(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
    }

    /// `s3://bucket/prefix/key at <endpoint>`, for messages.
    pub fn describe(&self, key: &str) -> String {
        let mut s = format!("s3://{}", self.bucket);
        for part in [self.prefix.as_str(), key] {
            if !part.is_empty() {
                s.push('/');
                s.push_str(part);
            }
        }
        format!("{s} at {}", self.endpoint_display())
    }

    /// Checks the bucket name and the endpoint URL.
    pub fn validate(&self) -> Result<(), StorageError> {
        if !valid_bucket_name(&self.bucket) {
            return Err(StorageError::Config(format!(
                "bucket '{}' is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-')",
                self.bucket
            )));
        }
        if let Some(endpoint) = &self.endpoint {
            let url = Url::parse(endpoint).map_err(|e| {
                StorageError::Config(format!(
                    "endpoint '{endpoint}' is not a URL ({e}); expected http(s)://host:port"
                ))
            })?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(StorageError::Config(
                    "the endpoint URL must not contain credentials; use AWS_ACCESS_KEY_ID / \
                     AWS_SECRET_ACCESS_KEY"
                        .into(),
                ));
            }
            match url.scheme() {
                "https" => {}
                "http" if self.allow_http || is_loopback(&url) => {}
                "http" => {
                    return Err(StorageError::Config(format!(
                        "endpoint {endpoint} uses plain HTTP to a non-loopback host; use https \
                         or set MEGATRON_S3_ALLOW_HTTP=true"
                    )));
                }
                other => {
                    return Err(StorageError::Config(format!(
                        "endpoint {endpoint} has scheme '{other}'; expected http or https"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Builds the object_store client for this bucket.
    pub fn build(&self) -> Result<AmazonS3, StorageError> {
        self.validate()?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_retry(self.retry.to_object_store())
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(self.request_timeout)
                    .with_connect_timeout(self.connect_timeout)
                    .with_allow_http(self.allow_http || self.endpoint.is_some()),
            );
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match &self.credentials {
            Some(c) => {
                builder = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(c.secret_access_key.expose());
                if let Some(token) = &c.session_token {
                    builder = builder.with_token(token.expose());
                }
            }
            None => builder = builder.with_skip_signature(true),
        }
        builder.build().map_err(|e| {
            StorageError::Config(format!(
                "cannot create the S3 client for {}: {e}",
                self.describe("")
            ))
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_env_and_redacts_secrets() {
        let cfg = S3Config::from_lookup(
            "ckpts",
            "/runs/a/",
            lookup(&[
                ("MEGATRON_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
                ("AWS_SESSION_TOKEN", "session-secret-token"),
            ]),
        )
        .unwrap();
        assert!(cfg.path_style);
        assert_eq!(cfg.prefix, "runs/a");
        assert_eq!(cfg.region, "us-east-1");
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(!shown.contains("session-secret-token"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE"));
        cfg.build().unwrap();
    }

    #[test]
    fn rejects_bad_settings_with_the_fix() {
        let err = S3Config::from_lookup(
            "ckpts",
            "",
            lookup(&[("MEGATRON_S3_ENDPOINT", "http://10.0.0.5:9000")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("MEGATRON_S3_ALLOW_HTTP=true"), "{err}");
        let err = S3Config::from_lookup("ckpts", "", lookup(&[("AWS_ACCESS_KEY_ID", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
        let err = S3Config::from_lookup("Bad_Bucket", "", lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket 'Bad_Bucket'"), "{err}");
        let err = S3Config::from_lookup(
            "ckpts",
            "",
            lookup(&[("MEGATRON_S3_ENDPOINT", "http://user:pw@127.0.0.1:1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("pw"), "{err}");
    }
}
