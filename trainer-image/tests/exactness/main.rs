//! Bit-for-bit agreement with PyTorch/Megatron-LM: RNG streams, attention dropout and Megatron files. Every in-process test here holds `common::rng_lock()`: libtorch's default generator is process-global.

#[path = "../support/mod.rs"]
mod support;

mod attention_dropout;
mod megatron_files;
mod rng;
