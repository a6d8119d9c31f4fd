//! Published weights (megatron-bert-345m-cased/-uncased, biomegatron-bert-345m-cased/-uncased):
//! found in the job bucket's shared cache, the cluster's mirror or NGC, downloaded with resume
//! and retries, checked for size and sha256, kept once per pod and once per bucket. The table
//! of what is published lives in `crds::published`; the order of the sources in [`resolve`].

mod download;
mod error;
mod manifest;
mod progress;
mod remote;
mod resolve;

pub use download::{ATTEMPTS, file_digest, part_path};
pub use error::{PretrainedError, Result};
pub use manifest::{MANIFEST, ManifestEntry, ModelManifest};
pub use progress::Meter;
pub use remote::Remote;
pub use resolve::{Request, Resolved, Sources, resolve};
