//! Megatron-BERT (and post-LN BERT) with tensor-parallel layers and NeMo-shaped
//! task heads. Parameter names are the canonical names of the trainer
//! contract; a tensor-parallel rank holds its shards under the same names.

pub mod bert;
pub mod config;
pub mod error;
pub mod grads;
pub mod heads;
pub mod state_dict;
pub mod task_model;

pub use bert::BertModel;
pub use config::{Activation, Architecture, BertConfig};
pub use error::{ModelError, Result};
pub use grads::clear_grads;
pub use heads::{
    HeadActivation, HeadConfig, HeadOutput, Task, TaskHead, question_answering_loss,
    sequence_classification_loss, token_classification_loss,
};
pub use state_dict::{gather_state_dict, merge_shards, shard_state_dict, tp_split_dim};
pub use task_model::BertTaskModel;

/// Parameters by canonical name (see the trainer contract); a tensor-parallel
/// rank's state dict holds its shards under the same names.
pub type StateDict = std::collections::BTreeMap<String, tch::Tensor>;
