//! What a cache entry holds: `manifest.json` beside the files, written last, so an entry
//! without one is incomplete and ignored. The same record marks a pod's local copy.

use serde::{Deserialize, Serialize};

/// Name of the manifest in a cache entry.
pub const MANIFEST: &str = "manifest.json";

/// The files of one published model as they were verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelManifest {
    /// The published name.
    pub name: String,
    /// NGC's version.
    pub version: String,
    /// Where the bytes first came from (the mirror or NGC).
    pub origin: String,
    /// Every file, by its NGC path.
    pub files: Vec<ManifestEntry>,
}

/// One verified file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    /// The NGC path (relative to the entry).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
}

impl ModelManifest {
    /// The entry of `path`.
    pub fn file(&self, path: &str) -> Option<&ManifestEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}
