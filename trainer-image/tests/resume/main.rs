//! Run checkpoints: bit-exact resume, data parallelism, file format, retention policy and S3 (including outages).

#[path = "../support/mod.rs"]
mod support;

mod bit_exact;
mod data_parallel;
mod file_format;
mod policy;
mod retention;
mod s3;
mod s3_outage;
