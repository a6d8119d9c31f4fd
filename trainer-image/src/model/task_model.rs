//! `BertTaskModel`: an encoder plus one task head in its own `VarStore`, with
//! `load_state_dict` / `state_dict` by canonical name. This is the unit the
//! fine-tuning loop trains.

use std::collections::BTreeMap;

use tch::{Device, Tensor, nn};

use super::StateDict;
use super::bert::BertModel;
use super::config::BertConfig;
use super::error::{ModelError, Result};
use super::heads::{HeadConfig, HeadOutput, TaskHead};
use super::state_dict::{load_into_var_store, var_store_state_dict};
use crate::parallel::TpGroup;

/// Encoder + head, with this rank's parameters.
#[derive(Debug)]
pub struct BertTaskModel {
    /// Owns every parameter; `vs.trainable_variables()` feeds the optimizer.
    pub vs: nn::VarStore,
    pub encoder: BertModel,
    pub head: TaskHead,
}

impl BertTaskModel {
    /// Builds a randomly initialised model on `device` for tensor-parallel
    /// group `tp` (use [`TpGroup::single`] for TP=1).
    ///
    /// Seeding: every rank of one tensor-parallel group must call
    /// `tch::manual_seed` with the same seed before building and training
    /// (e.g. `seed + dp_rank`): replicated parameters (the new head) are then
    /// initialised identically, and hidden dropout, which acts on activations
    /// replicated across the group, draws the same mask on every rank, as
    /// Megatron's shared default RNG does. Data-parallel replicas should use
    /// different seeds.
    pub fn new(
        config: &BertConfig,
        head: &HeadConfig,
        tp: &TpGroup,
        device: Device,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = BertModel::new(&root, config, tp)?;
        let head = TaskHead::new(&(&root / "classifier"), config.hidden_size, head)?;
        Ok(Self { vs, encoder, head })
    }

    /// Loads a complete state dict (encoder and head): every parameter must be
    /// present with this rank's shape, and no other names may appear.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let unknown = load_into_var_store(&self.vs, sd, &[])?;
        if !unknown.is_empty() {
            return Err(ModelError::UnexpectedKeys(unknown));
        }
        Ok(())
    }

    /// Loads a pretrained encoder for fine-tuning: every encoder parameter
    /// must be present; `classifier.*` (the new head) and `pooler.*` keep
    /// their initialisation when absent. Returns the names in `sd` the model
    /// does not use (e.g. Megatron's `lm_head`, `binary_head`).
    pub fn load_pretrained(&mut self, sd: &StateDict) -> Result<Vec<String>> {
        load_into_var_store(&self.vs, sd, &["classifier.", "pooler."])
    }

    /// This rank's parameters by canonical name (sharing storage with the model).
    pub fn state_dict(&self) -> StateDict {
        var_store_state_dict(&self.vs)
    }

    /// Gradients by canonical name (parameters without a gradient are left out).
    pub fn gradients(&self) -> StateDict {
        self.vs
            .variables()
            .into_iter()
            .filter_map(|(k, v)| {
                let g = v.grad();
                g.defined().then_some((k, g))
            })
            .collect::<BTreeMap<_, _>>()
    }

    /// Encoder + head forward; see [`BertModel::forward`] for the inputs.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<HeadOutput> {
        let seq = self
            .encoder
            .forward(input_ids, token_type_ids, attention_mask, train)?;
        self.head.forward(&seq, train)
    }
}
