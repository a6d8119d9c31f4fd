//! Storage for datasets, checkpoints and exported models: S3-compatible
//! buckets (through `object_store`) and local directories (mounted volumes)
//! behind one [`Store`] API.
//!
//! - [`Location`]: `s3://bucket/key` or an absolute path, parsed from spec fields.
//! - [`S3Config`]: endpoint, region, bucket, prefix, credentials from the
//!   environment (never printed).
//! - [`Store`]: small-object reads/writes, listing, and large-file transfers
//!   ([`Store::upload_file`] multipart, [`Store::download_file`] ranged), both
//!   streamed with bounded memory and sha256 computed on the way.
//! - [`CheckpointSets`]: the commit protocol for multi-file checkpoints
//!   (files first, manifest last; readers trust only manifested sets).
//! - [`Store::cleanup_stale_multipart`]: aborts uploads a crashed writer left.
//!
//! The API is async (tokio). Synchronous callers (the training loop) run it on
//! a runtime: `tokio::runtime::Runtime::new()?.block_on(store.upload_file(..))`.
//!
//! Retries: every request gets object_store's retry policy ([`RetryPolicy`]:
//! exponential backoff on 5xx, timeouts and dropped connections; part uploads
//! are idempotent PUTs, retried with their buffered payload); ranged reads are
//! additionally retried whole (body included), see [`TransferOptions`].

mod checkpoint_set;
mod error;
mod location;
mod manifest;
mod multipart;
mod retry;
mod s3_config;
mod secret;
mod stale_uploads;
mod store;
mod transfer;

pub use checkpoint_set::{CheckpointSets, CommittedSet, RetentionReport, SetFile};
pub use error::StorageError;
pub use location::Location;
pub use manifest::{MANIFEST_FORMAT_VERSION, MANIFEST_NAME, Manifest, ManifestFile};
pub use s3_config::{RetryPolicy, S3Config, S3Credentials};
pub use secret::Secret;
pub use stale_uploads::PendingUpload;
pub use store::{ObjectInfo, Store};
pub use transfer::{FileDigest, TransferOptions};
