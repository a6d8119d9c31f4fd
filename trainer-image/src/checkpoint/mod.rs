//! PyTorch, Megatron-LM and Hugging Face checkpoint formats.

pub mod convert;
pub mod error;
pub mod huggingface;
pub mod inspect;
pub mod megatron;
pub mod nemo;
pub mod training;

pub use error::{CheckpointError, Result};
