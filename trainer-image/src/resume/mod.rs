//! The run checkpointer (resume): training checkpoints saved every N steps, after validations and at the
//! end, one `torch.save` file per tensor-parallel rank (model weights,
//! optimizer moments, schedule position, loss scale, early stopping, RNG
//! states, data position), committed as a set with a manifest, kept by
//! `keepLast` and top-k, and restored bit-exactly on restart.
//!
//! Layouts:
//! - the rank's working directory, as NeMo's experiment manager writes it:
//!   `mp_rank_NN/<name>-last.ckpt` (overwritten by each save) and top-k files
//!   `mp_rank_NN/<name>--val_loss=0.35-epoch=0.ckpt`;
//! - the set store (the job's `checkpoints/` prefix in S3, or the working
//!   directory without one): `step-000000000600/mp_rank_NN/<file>` plus
//!   `step-000000000600/manifest.json`, written last by global rank 0 once
//!   every rank's file is stored (see [`crate::storage::CheckpointSets`]).
//!
//! Use: [`Checkpointer::new`], then [`Checkpointer::find_latest`] and
//! [`Checkpointer::restore`] at start, [`Checkpointer::save`] from the
//! loop's `on_checkpoint` hook.

mod best;
mod checkpointer;
mod config;
mod consensus;
pub mod contents;
mod digest;
mod errors;
mod metadata;
mod naming;
mod pyvalue;
mod restore;

pub use best::{BestEntry, TopK};
pub use checkpointer::{Checkpointer, SavedCheckpoint, reason_name};
pub use config::CheckpointerConfig;
pub use metadata::SetMetadata;
pub use naming::{last_file, metric_file, rank_dir, step_file};
pub use restore::{ResumePoint, ResumeSource};
