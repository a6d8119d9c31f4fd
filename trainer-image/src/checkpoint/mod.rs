//! Checkpoint file formats: Megatron-LM, NeMo and Hugging Face (`torch.save`
//! files through the `torch-pickle` crate). The run checkpointer is `crate::resume`.

pub mod convert;
pub mod error;
pub mod huggingface;
pub mod inspect;
pub mod megatron;
pub mod nemo;

pub use error::{CheckpointError, Result};
