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
    #[error("{op} {target}: {hint}: {detail}")]
    Remote {
        /// What we were doing, e.g. "uploading /tmp/x to".
        op: String,
        /// The object, e.g. `s3://bucket/key at http://127.0.0.1:9000`.
        target: String,
        /// The likely cause and the fix, in words.
        hint: String,
        /// The store's error with signing material redacted ([`redact`]).
        detail: String,
        /// The store's error (not displayed: its text may echo signed
        /// headers); kept to classify it.
        cause: Box<object_store::Error>,
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
            detail: redact(&source.to_string()),
            cause: Box::new(source),
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
        matches!(self, StorageError::Remote { cause, .. }
            if matches!(**cause, object_store::Error::NotFound { .. }))
    }
}

/// Parts of S3 error bodies and URLs that can echo signing material: AWS
/// answers SignatureDoesNotMatch with the canonical request, which holds
/// every signed header (a session token among them).
const SIGNING_ELEMENTS: [&str; 5] = [
    "CanonicalRequest",
    "CanonicalRequestBytes",
    "StringToSign",
    "StringToSignBytes",
    "SignatureProvided",
];
const SIGNING_PARAMS: [&str; 4] = [
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-credential",
    "signature",
];

/// An object_store error as it may be logged: its text through [`redact`].
pub struct Redacted<'a>(pub &'a object_store::Error);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0.to_string()))
    }
}

/// `text` with the contents of signing-related XML elements and the values
/// of signing query parameters or headers replaced by `(redacted)`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for tag in SIGNING_ELEMENTS {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut from = 0;
        while let Some(start) = out[from..].find(&open).map(|i| from + i + open.len()) {
            let Some(end) = out[start..].find(&close).map(|i| start + i) else {
                out.replace_range(start.., "(redacted)");
                break;
            };
            out.replace_range(start..end, "(redacted)");
            from = start + "(redacted)".len() + close.len();
        }
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    'scan: while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let next = SIGNING_PARAMS
            .iter()
            .flat_map(|p| [format!("{p}="), format!("{p}:")])
            .filter_map(|m| lower.find(&m).map(|i| (i, m.len())))
            .min();
        let Some((at, len)) = next else {
            result.push_str(rest);
            break 'scan;
        };
        result.push_str(&rest[..at + len]);
        let value = &rest[at + len..];
        let end = value
            .find(['&', '<', '"', '\n', ','])
            .unwrap_or(value.len());
        if end > 0 {
            result.push_str("(redacted)");
        }
        rest = &value[end..];
    }
    result
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn signing_material_is_redacted() {
        let body = "403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>\
            <StringToSign>AWS4-HMAC-SHA256\n20261128T000000Z\nabc</StringToSign>\
            <CanonicalRequest>GET\n/b\n\nhost:x\nx-amz-security-token:SESSIONTOKEN\n</CanonicalRequest>\
            <SignatureProvided>PROVIDEDSIG</SignatureProvided></Error> at http://x/b?X-Amz-Credential=AKID%2F&X-Amz-Signature=SIG&X-Amz-Security-Token=TOK2";
        let out = redact(body);
        for secret in [
            "SESSIONTOKEN",
            "TOK2",
            "SIG",
            "AKID",
            "20261128T000000Z",
            "PROVIDEDSIG",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(
            out.contains("SignatureDoesNotMatch") && out.contains("403 Forbidden"),
            "{out}"
        );
        assert_eq!(
            redact("NoSuchBucket: the bucket"),
            "NoSuchBucket: the bucket"
        );
    }
}
