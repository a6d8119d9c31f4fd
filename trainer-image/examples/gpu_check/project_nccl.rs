//! The project's NCCL path, compiled into this example from its source
//! (`src/comm/nccl.rs`), with the two sibling modules it imports mapped to
//! the library's public types.
//!
//! Why: the library reaches NCCL only through a `RankGroup` of two or more
//! ranks, and NCCL refuses two ranks on one GPU, so on a one-GPU machine the
//! only way to run the project's own NCCL calls (library loading, unique id
//! through the store, `ncclCommInitRank`, the collectives and the stream
//! wait with its timeout) is a world of size 1 built from this same file.

pub mod group {
    pub use megatron_trainer::comm::{CommError, NcclLoadError};
}

pub mod store {
    pub use megatron_trainer::comm::StoreClient;
}

#[allow(dead_code, unreachable_pub)]
#[path = "../../src/comm/nccl.rs"]
pub mod nccl;
