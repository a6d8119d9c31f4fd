//! Run checkpoints: bit-exact resume, data parallelism, file format, retention policy and S3 (outages: the `s3_outages` binary).

#[path = "../support/mod.rs"]
mod support;

mod bit_exact;
mod data_parallel;
mod file_format;
mod policy;
mod retention;
mod s3;
