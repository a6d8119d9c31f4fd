//! Locations of data, checkpoints and models: `s3://bucket/key` or an absolute path.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// RE2 pattern every [`Uri`] must match (enforced by the apiserver).
///
/// `s3://` + a DNS-style bucket name + `/` + a non-empty key without whitespace, or an
/// absolute path (on a volume mounted through `spec.pod.volumeMounts`).
pub const URI_PATTERN: &str = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+|/\S*[^\s/]\S*)$";

/// Longest accepted [`Uri`], in bytes.
pub const URI_MAX_LENGTH: usize = 1024;

/// A location: `s3://bucket/key` (read through `spec.storage`'s endpoint and credentials)
/// or an absolute path inside the pod (a volume from `spec.pod.volumes`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Uri(pub String);

/// A parsed [`Uri`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// An object (or a key prefix, for directories) in an S3-compatible bucket.
    S3 {
        /// Bucket name.
        bucket: &'a str,
        /// Object key or prefix, without the leading `/`.
        key: &'a str,
    },
    /// An absolute path inside the pod.
    Path(&'a str),
}

/// A [`Uri`] that is neither `s3://bucket/key` nor an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{uri:?} is not a location: use s3://bucket/key or an absolute path such as /data/train.json"
)]
pub struct InvalidUri {
    /// The rejected text.
    pub uri: String,
}

impl Uri {
    /// Wraps a string without checking it (see [`Uri::location`]).
    pub fn new(uri: impl Into<String>) -> Self {
        Self(uri.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits the location into bucket and key, or returns the path.
    pub fn location(&self) -> Result<Location<'_>, InvalidUri> {
        let invalid = || InvalidUri {
            uri: self.0.clone(),
        };
        if self.0.len() > URI_MAX_LENGTH || self.0.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        if let Some(rest) = self.0.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').ok_or_else(invalid)?;
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
                && !bucket.starts_with(['.', '-'])
                && !bucket.ends_with(['.', '-']);
            if !bucket_ok || key.is_empty() {
                return Err(invalid());
            }
            Ok(Location::S3 { bucket, key })
        } else if self.0.starts_with('/') && !self.0.trim_matches('/').is_empty() {
            Ok(Location::Path(&self.0))
        } else {
            Err(invalid())
        }
    }

    /// The last path segment, ignoring a trailing `/` (e.g. `iter_0080000`, `model.nemo`).
    pub fn file_name(&self) -> &str {
        let trimmed = self.0.trim_end_matches('/');
        trimmed.rsplit('/').next().unwrap_or(trimmed)
    }

    /// This location with `/` and `child` appended (one `/` between them).
    pub fn join(&self, child: &str) -> Uri {
        Uri(format!(
            "{}/{}",
            self.0.trim_end_matches('/'),
            child.trim_start_matches('/')
        ))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Uri {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl JsonSchema for Uri {
    fn schema_name() -> Cow<'static, str> {
        "Uri".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": URI_PATTERN,
            "maxLength": URI_MAX_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_paths() {
        assert_eq!(
            Uri::from("s3://my-bucket/squad/train-v1.1.json").location(),
            Ok(Location::S3 {
                bucket: "my-bucket",
                key: "squad/train-v1.1.json"
            })
        );
        assert_eq!(
            Uri::from("/data/squad/dev.json").location(),
            Ok(Location::Path("/data/squad/dev.json"))
        );
        for bad in [
            "squad/train.json",
            "s3://bucket",
            "s3://bucket/",
            "s3://B/x",
            "s3://-bad/x",
            "/",
            "/a b",
            "https://x/y",
        ] {
            assert!(Uri::from(bad).location().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn schema_pattern_agrees_with_parser() {
        // The apiserver enforces URI_PATTERN (RE2); `regex` uses the same syntax.
        let re = regex::Regex::new(URI_PATTERN).unwrap();
        for text in [
            "s3://my-bucket/squad/train.json",
            "s3://abc/k",
            "s3://bucket",
            "s3://bucket/",
            "s3://B/x",
            "s3://-bad/x",
            "/",
            "//",
            "/mnt/ckpt/iter_0080000/",
            "/a b",
            "relative/path",
            "https://x/y",
        ] {
            assert_eq!(
                re.is_match(text),
                Uri::from(text).location().is_ok(),
                "pattern and parser disagree on {text:?}"
            );
        }
    }

    #[test]
    fn file_name_and_join() {
        let u = Uri::from("s3://b1b/ckpt/iter_0080000/");
        assert_eq!(u.file_name(), "iter_0080000");
        assert_eq!(
            u.join("mp_rank_00").as_str(),
            "s3://b1b/ckpt/iter_0080000/mp_rank_00"
        );
    }
}
