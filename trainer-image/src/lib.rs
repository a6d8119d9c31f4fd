//! The Megatron-BERT trainer: checkpoint formats, the tensor-parallel model,
//! collectives, and the fine-tuning loop.

pub mod checkpoint;
pub mod comm;
pub mod data;
pub mod job;
pub mod model;
pub mod parallel;
pub mod pretrained;
pub mod progress;
pub mod resume;
pub mod run;
pub mod scores;
pub mod storage;
pub mod task;
pub mod tokenizer;
pub mod train;
