//! The `megatron-trainer` binary as a rank pod runs it: configuration, launch, operator protocol, published models, S3 inputs/outputs, train and evaluate.

#[path = "../support/mod.rs"]
mod support;

mod config;
mod launch;
mod operator;
mod pretrained;
mod s3;
mod train;
