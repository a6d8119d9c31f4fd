//! Checkpoint formats: Megatron-LM and Hugging Face files, `.nemo` archives (write, read, convert, restore), and `inspect`.

#[path = "../support/mod.rs"]
mod support;

mod huggingface;
mod inspect;
mod megatron;
mod nemo_archive;
mod nemo_convert;
mod nemo_hf_restore;
