//! Collectives (NCCL on GPUs, a TCP ring on CPUs) and torchrun-style rendezvous.
//!
//! # Use
//! ```no_run
//! use megatron_trainer::comm::{self, ProcessGroup};
//! // Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK; no env = one process.
//! let topo = comm::init_from_env(2)?;
//! let mut partial = tch::Tensor::ones([4], (tch::Kind::Float, topo.device()));
//! topo.tp.all_reduce_sum(&mut partial)?;            // row-parallel output
//! let full = topo.tp.all_gather_cat(&partial, -1)?; // column-parallel gather
//! topo.dp.all_reduce_sum(&mut partial)?;            // gradient sync
//! topo.world.barrier()?;
//! # Ok::<(), comm::CommError>(())
//! ```
//!
//! # Rendezvous
//! Like torchrun/c10d: rank 0 hosts a small TCP key-value store ([`StoreServer`])
//! on `MASTER_PORT`; every rank (rank 0 included) connects to
//! `MASTER_ADDR:MASTER_PORT`, retrying name resolution and connection until the
//! rendezvous deadline (a Kubernetes pod's DNS name appears only once it runs).
//! Each rank registers the address of its data-plane listener (the local IP
//! of its store connection, or `MEGATRON_COMM_ADDR`) and waits for all
//! `WORLD_SIZE` ranks; the timeout error lists the ranks that never came.
//! Each group then connects as a ring of persistent TCP connections.
//!
//! # Backends
//! The device of the tensor picks the backend: CUDA tensors use NCCL (see
//! [`nccl_available`]; loaded at run time, communicator created on a group's
//! first CUDA collective with its id shared through the store), CPU tensors
//! use the TCP ring in [`ring`](self::ring).
//!
//! Why a Rust ring and not Gloo through libtorch's c10d: the torch wheel ships
//! c10d's headers but not Gloo's, and the only other Gloo headers (Debian's)
//! are older than the Gloo compiled into torch 2.11, so a C++ shim would be an
//! ABI gamble tied to one torch build. The Rust ring has no C++ coupling, is
//! testable with plain processes, has a deterministic summation order (every
//! rank ends with bit-identical results, and reruns give the same bits: see
//! [`ring_sum_reference`]), bounded memory (one 256 KiB segment buffer), and
//! errors that name the peer that failed. CPU collectives serve tests and
//! CPU-only fine-tuning; GPU training uses NCCL.
//!
//! # Timeouts and failures
//! `MEGATRON_RENDEZVOUS_TIMEOUT_SECS` (default 900) bounds the rendezvous,
//! `MEGATRON_COMM_TIMEOUT_SECS` (default 600) one collective. A rank that
//! dies mid-collective closes its connections; its neighbours fail at once
//! and close theirs, so the whole group fails with errors naming the peer
//! instead of hanging. A failed group stays broken ([`CommError::Broken`]).

mod config;
mod connect;
mod group;
mod listener;
mod nccl;
mod rank_group;
mod reduce;
mod reference;
pub mod ring;
mod store;
mod topology;
mod wire;

pub use config::{CommConfig, DEFAULT_OP_TIMEOUT, DEFAULT_RENDEZVOUS_TIMEOUT};
pub use group::{CommError, NcclLoadError, ProcessGroup, SingleProcess};
pub use nccl::nccl_available;
pub use rank_group::RankGroup;
pub use reference::ring_sum_reference;
pub use store::{StoreClient, StoreServer};
pub use topology::{Topology, dp_group_members, init, init_from_env, tp_group_members};
