//! Data formats, SQuAD features and the tokenizer against their Hugging Face references.

#[path = "../support/mod.rs"]
mod support;

mod formats;
mod squad;
mod tokenizer;
