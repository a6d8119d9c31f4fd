//! Where data lives: `s3://bucket/key` or an absolute local path (a mounted volume).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::storage::StorageError;

/// A storage location from a spec field or a command-line flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An object or prefix in an S3-compatible bucket. `key` has no leading or
    /// trailing `/` and may be empty (the bucket root).
    S3 { bucket: String, key: String },
    /// An absolute path on a local or mounted file system.
    Local(PathBuf),
}

impl Location {
    /// Parses `value`; errors name `field` (e.g. `spec.data.train`) and say
    /// what is accepted.
    pub fn parse(field: &str, value: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidLocation {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("the bucket name is empty"));
            }
            if !valid_bucket_name(bucket) {
                return Err(invalid(
                    "bucket names are 3-63 characters of a-z, 0-9, '.' and '-', \
                     starting and ending with a letter or digit",
                ));
            }
            let key = key.trim_end_matches('/');
            let bad_segment = |p: &str| p.is_empty() || p == "." || p == "..";
            if !key.is_empty() && key.split('/').any(bad_segment) {
                return Err(invalid("the key has an empty, '.' or '..' segment"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if value.contains("://") || value.starts_with("s3:") {
            return Err(invalid("only the s3:// scheme is supported"));
        }
        let path = PathBuf::from(value);
        if !path.is_absolute() {
            return Err(invalid("local paths must be absolute"));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(invalid("local paths must not contain '..'"));
        }
        Ok(Location::Local(path))
    }

    /// This location with `child` (a relative `a/b` key) appended.
    pub fn join(&self, child: &str) -> Location {
        let child = child.trim_matches('/');
        match self {
            Location::S3 { bucket, key } if key.is_empty() => Location::S3 {
                bucket: bucket.clone(),
                key: child.to_string(),
            },
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: format!("{key}/{child}"),
            },
            Location::Local(p) => Location::Local(p.join(child)),
        }
    }
}

impl FromStr for Location {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Location::parse("location", s)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, key } if key.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// S3 bucket naming rules (the subset every S3-compatible server accepts).
pub(crate) fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local() {
        assert_eq!(
            Location::parse("f", "s3://my-bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                key: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("f", "s3://my-bucket").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                key: String::new()
            }
        );
        assert_eq!(
            Location::parse("f", "/mnt/data").unwrap(),
            Location::Local("/mnt/data".into())
        );
        assert_eq!(
            Location::parse("f", "s3://b12/x")
                .unwrap()
                .join("y/z")
                .to_string(),
            "s3://b12/x/y/z"
        );
    }

    #[test]
    fn errors_name_the_field() {
        for bad in [
            "s3:/x",
            "s3://",
            "relative/path",
            "gs://b/k",
            "s3://UPPER/k",
            "s3://b12//k",
            "s3://b12/a/../k",
            "/a/../b",
        ] {
            let err = Location::parse("spec.data.train", bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "spec.data.train: '{bad}' is not s3://bucket/key or an absolute path"
                )),
                "{err}"
            );
        }
    }
}
