//! Object storage: checkpoint sets, large files, S3 errors and S3 restarts.

#[path = "../support/mod.rs"]
mod support;

mod checkpoint_sets;
mod large_files;
mod s3_errors;
mod s3_restart;
