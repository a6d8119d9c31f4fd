//! Object storage: checkpoint sets, large files, S3 errors (restarts: `s3_outages`).

#[path = "../support/mod.rs"]
mod support;

mod checkpoint_sets;
mod large_files;
mod s3_errors;
