//! Tensor-parallel building blocks with Megatron-LM's forward/backward
//! semantics: the region functions (an autograd shim in C++), column- and
//! row-parallel linear layers, the vocab-parallel embedding, and helpers for
//! splitting full (TP=1) weights into shards and gathering them back.

pub mod error;
pub mod grad_sync;
pub mod linear;
pub mod random;
pub mod regions;
pub mod vocab_embedding;

pub use error::ParallelError;
pub use grad_sync::all_reduce_gradients_mean;
pub use linear::{ColumnParallelLinear, RowParallelLinear};
pub use random::ModelParallelRng;
pub use regions::{TpGroup, copy_to_tensor_parallel_region, reduce_from_tensor_parallel_region};
pub use vocab_embedding::VocabParallelEmbedding;
