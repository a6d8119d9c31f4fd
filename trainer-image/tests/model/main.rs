//! Megatron-BERT against Hugging Face transformers, and the tensor-parallel layers.

#[path = "../support/mod.rs"]
mod support;

mod hf_reference;
mod tensor_parallel;
