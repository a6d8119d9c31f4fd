//! `.nemo` archives of Megatron-BERT task models, in NeMo 1.x's layout.
//!
//! What we write (and why), for tensor-parallel size `N`:
//!
//! ```text
//! .                                           directory entry (tar.add(dir, arcname="."))
//! ./<h>_<model name>_encoder_config.json      Megatron arguments (NeMo's register_bert_model)
//! ./<h>_label_ids.csv                         labels, one a line in id order (token/text classification)
//! ./<h>_megatron_checkpoint_version.json      {"checkpoint_version": 3.0}: QKV rows are [heads, 3, head_dim]
//! ./<h>_vocab.txt                             the tokenizer vocabulary
//! ./model_config.yaml                         target class, language_model, tokenizer, head, dataset
//! ./model_weights.ckpt                        N = 1: torch.save(OrderedDict) of the whole model
//! ./mp_rank_NN  +  ./mp_rank_NN/model_weights.ckpt   N > 1: one directory entry and file per rank
//! ```
//!
//! - gzip-compressed tar (`tarfile.open(path, "r:gz")` in NeMo 1.0-1.6; later
//!   versions read gzip and plain tar), members sorted as Python's `tar.add`
//!   lists a directory; NeMo counts `mp_rank` names and halves the count, so
//!   each rank needs its directory entry.
//! - Artifacts are named `<32 hex>_<basename>` at the root and referenced as
//!   `nemo:<member>` from `model_config.yaml` (NeMo >= 1.0); our hex is the
//!   content's SHA-256 prefix, not a random uuid, so archives are reproducible.
//! - Weight keys are those of NeMo's task models: `bert_model.language_model.
//!   {embedding, encoder.layers.N.self_attention, ...}` (Megatron-LM >= 2.1
//!   module names) and `classifier.mlp.layerK.{weight,bias}`; no pooler (NeMo
//!   builds the encoder with `add_pooler=False` and restores strictly).
//! - `model_config.yaml` holds NeMo's fields for the class: QA
//!   `token_classifier.*`; token classification `label_ids`, `head.*`,
//!   `class_labels.class_labels_file`; text classification
//!   `classifier_head.*`, `dataset.num_classes`.
//!
//! Reading accepts the same and NeMo 1.x's variations: `transformer.layers.N.
//! attention` names, any checkpoint version (QKV converted to the canonical
//! order), gzip or plain tar, with or without `./`, the architecture from the
//! encoder config, `language_model.config` or a published model name; the
//! weights are resharded to any tensor-parallel size.

pub mod artifact;
pub mod encoder_config;
pub mod keys;
pub mod model_config;
mod reader;
pub mod shapes;
mod writer;

use std::path::PathBuf;

pub use model_config::{ModelConfigError, NemoTask, UnknownNemoTask};
pub use reader::{NemoArchive, ReadOptions, is_nemo_archive, open_nemo, read_nemo, read_nemo_with};
pub use writer::{DEFAULT_COMPRESSION, NemoContents, NemoWeights, NemoWritten, write_nemo};

use crate::checkpoint::error::{CheckpointError, Result};
use crate::model::{BertConfig, BertTaskModel, HeadConfig, StateDict};

/// The Megatron checkpoint version we write (QKV rows `[heads, 3, head_dim]`);
/// also assumed when an archive has no `megatron_checkpoint_version.json`
/// (NeMo's in-model Megatron code uses that order at run time).
pub const NEMO_CHECKPOINT_VERSION: f64 = 3.0;

/// A task model read from a .nemo: one tensor-parallel rank's shard.
#[derive(Debug)]
pub struct NemoModel {
    /// The archive.
    pub path: PathBuf,
    pub task: NemoTask,
    /// The architecture; `padded_vocab_size` is for the requested tensor-parallel size.
    pub config: BertConfig,
    pub head: HeadConfig,
    /// False when the archive has no `classifier.*` weights (e.g. converted
    /// from a pretrained Megatron-LM checkpoint).
    pub has_head_weights: bool,
    /// This rank's parameters, canonical names (encoder, head, and the
    /// pooler when the archive has one).
    pub state_dict: StateDict,
    /// The archive's own tensor-parallel size.
    pub tensor_parallel_size: i64,
    /// From `megatron_checkpoint_version.json` (None when absent).
    pub checkpoint_version: Option<f64>,
    /// The extracted tokenizer vocabulary (lives as long as this value).
    pub vocab_file: Option<PathBuf>,
    pub do_lower_case: Option<bool>,
    /// Label names in id order.
    pub labels: Option<Vec<String>>,
    pub pretrained_model_name: Option<String>,
    /// `model_config.yaml`'s `dataset` section.
    pub dataset: serde_json::Map<String, serde_json::Value>,
    /// Weight keys that are not model parameters (first rank read).
    pub ignored_keys: Vec<String>,
    scratch: tempfile::TempDir,
}

impl NemoModel {
    /// The scratch directory holding the extracted artifacts.
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// Loads the weights into `model` (built with [`Self::config`] and
    /// [`Self::head`] for the same tensor-parallel rank): every encoder and
    /// head parameter must be present; the pooler keeps its initialisation
    /// when the archive has none (NeMo's task models have no pooler, and no
    /// task head reads it).
    pub fn load_into(&self, model: &mut BertTaskModel) -> Result<()> {
        let err = |m: String| CheckpointError::invalid(&self.path, m);
        for (name, _) in model.vs.variables() {
            if name.starts_with("classifier.") && !self.state_dict.contains_key(&name) {
                return Err(err(format!(
                    "{name} is missing: the archive has no trained task head; start fine-tuning \
                     from it instead of restoring it"
                )));
            }
        }
        let unused = model
            .load_pretrained(&self.state_dict)
            .map_err(|e| err(format!("loading the weights: {e}")))?;
        if !unused.is_empty() {
            return Err(err(format!(
                "the model has no parameters named {unused:?}; build it with this archive's \
                 config and head"
            )));
        }
        Ok(())
    }
}
