//! The four tasks' data formats (NeMo's), their features, batching and the
//! data-parallel sampler.
//!
//! Flow for the training loop: read examples (`squad::read_squad_file`,
//! `token_classification::read_token_classification`,
//! `text_classification::read_text_classification`,
//! `relation::read_relation_extraction`), turn them into features with the
//! task's featurizer, draw index batches from a [`DistributedSampler`], and
//! collate them with [`PaddedBatch::collate`] + [`PaddedBatch::to_tensors`].

mod batch;
mod error;
pub mod predictions;
pub mod relation;
mod sampler;
pub mod squad;
pub mod text_classification;
pub mod token_classification;

pub use batch::{Batch, BatchItem, PaddedBatch, Padding, Target};
pub use error::DataError;
pub use sampler::{DataPosition, DistributedSampler};
