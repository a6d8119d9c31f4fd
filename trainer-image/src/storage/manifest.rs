//! The manifest of a checkpoint set: written last, it is what makes a set
//! complete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{FileDigest, StorageError};

/// Current manifest format; readers reject newer versions.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Object name of the manifest inside a set's prefix.
pub const MANIFEST_NAME: &str = "manifest.json";

/// One file of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Key relative to the set's prefix, e.g. `mp_rank_00/model_optim_rng.pt`.
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl ManifestFile {
    /// A manifest entry for `name` with the digest an upload returned.
    pub fn new(name: impl Into<String>, digest: &FileDigest) -> Self {
        Self {
            name: name.into(),
            size: digest.size,
            sha256: digest.sha256.clone(),
        }
    }

    /// This entry's size and checksum.
    pub fn digest(&self) -> FileDigest {
        FileDigest {
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }
}

/// `manifest.json` of a checkpoint set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Training step the set was saved at; sets are ordered by it.
    pub step: u64,
    pub created: DateTime<Utc>,
    pub files: Vec<ManifestFile>,
    /// Free-form data of the writer (e.g. tensor-parallel size, config).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

impl Manifest {
    /// Parses and checks a manifest read from `target` (for messages).
    pub fn from_json(target: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        let invalid = |reason: String| StorageError::Manifest {
            target: target.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("not a valid manifest: {e}")))?;
        if m.format_version > MANIFEST_FORMAT_VERSION {
            return Err(StorageError::NewerManifest {
                target: target.to_string(),
                version: m.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &m.files {
            if f.name.is_empty() || f.name == MANIFEST_NAME || !names.insert(f.name.as_str()) {
                return Err(invalid(format!(
                    "file name '{}' is empty, reserved or repeated",
                    f.name
                )));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("file '{}' has no valid sha256", f.name)));
            }
        }
        Ok(m)
    }

    /// The JSON written to storage.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }
}
