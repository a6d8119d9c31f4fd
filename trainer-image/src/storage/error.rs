//! Errors of the storage layer. Messages name the bucket, endpoint, key or
//! file and say what to check; they never contain credentials.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A location string that is neither `s3://bucket/key` nor an absolute path.
    #[error("{field}: '{value}' is not s3://bucket/key or an absolute path ({reason})")]
    InvalidLocation {
        field: String,
        value: String,
        reason: String,
    },
    /// Incomplete or inconsistent S3 settings.
    #[error("S3 configuration: {0}")]
    Config(String),
    /// A request to the object store failed (after retries).
    #[error("{op} {target}: {hint}: {source}")]
    Remote {
        /// What we were doing, e.g. "uploading /tmp/x to".
        op: String,
        /// The object, e.g. `s3://bucket/key at http://127.0.0.1:9000`.
        target: String,
        /// The likely cause and the fix, in words.
        hint: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// A request outside object_store (bucket creation, multipart listing) failed.
    #[error("{op} {target}: {detail}")]
    Request {
        op: String,
        target: String,
        detail: String,
    },
    /// Reading or writing a local file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Downloaded bytes do not match what the manifest promised.
    #[error(
        "{target}: {what} mismatch: expected {expected}, got {actual} (the object changed or is corrupt)"
    )]
    Integrity {
        target: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// A checkpoint-set manifest that cannot be used.
    #[error("manifest {target}: {reason}")]
    Manifest { target: String, reason: String },
    /// A checkpoint-set manifest written by a newer trainer: never skipped
    /// or deleted, since this trainer cannot tell whether the set is usable.
    #[error(
        "manifest {target}: format_version {version} is newer than this trainer supports \
         ({supported}); upgrade the trainer image (or move the set away)"
    )]
    NewerManifest {
        target: String,
        version: u32,
        supported: u32,
    },
    /// A background task panicked or was cancelled.
    #[error("{0}")]
    Task(String),
}

impl StorageError {
    /// Wraps an object_store error with what we were doing, where, and a hint
    /// derived from the error kind (credentials, missing bucket, unreachable endpoint).
    pub(crate) fn remote(
        op: impl Into<String>,
        target: impl Into<String>,
        bucket: Option<&str>,
        endpoint: &str,
        source: object_store::Error,
    ) -> Self {
        let hint = hint_for(&source, bucket, endpoint);
        StorageError::Remote {
            op: op.into(),
            target: target.into(),
            hint,
            source: Box::new(source),
        }
    }

    /// True when retrying cannot help: a bad location or configuration, or
    /// a manifest written by a newer trainer.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::InvalidLocation { .. } | Self::NewerManifest { .. }
        )
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Remote { source, .. }
            if matches!(**source, object_store::Error::NotFound { .. }))
    }
}

fn hint_for(err: &object_store::Error, bucket: Option<&str>, endpoint: &str) -> String {
    let text = format!("{err}");
    let bucket_text = bucket.map(|b| format!("bucket '{b}'")).unwrap_or_default();
    if text.contains("NoSuchBucket") || text.contains("specified bucket does not exist") {
        return format!(
            "{bucket_text} does not exist at endpoint {endpoint}; create it or fix the bucket name"
        );
    }
    match err {
        object_store::Error::NotFound { .. } => "not found".to_string(),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => credentials_hint(&bucket_text, endpoint),
        _ if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("403 Forbidden") =>
        {
            credentials_hint(&bucket_text, endpoint)
        }
        _ if text.contains("error sending request")
            || text.contains("connect")
            || text.contains("Connection refused")
            || text.contains("timed out") =>
        {
            format!(
                "cannot reach the S3 endpoint {endpoint} (is the server up and the address right?)"
            )
        }
        _ => format!("request to {endpoint} failed"),
    }
}

fn credentials_hint(bucket_text: &str, endpoint: &str) -> String {
    format!(
        "access to {bucket_text} at endpoint {endpoint} was denied; check AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY (the Secret the job references) and the identity's permissions"
    )
}
