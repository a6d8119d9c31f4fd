//! Megatron's `VocabParallelEmbedding`.

use tch::{Tensor, nn};

use super::error::{ParallelError, Result};
use super::regions::{TpGroup, reduce_from_tensor_parallel_region};

/// An embedding table split along the vocabulary: rank `r` holds rows
/// `r*V/tp .. (r+1)*V/tp`. Ids outside this rank's range look up row 0 and are
/// zeroed, then the outputs are summed over the group
/// ([`reduce_from_tensor_parallel_region`]), so every rank gets the full lookup
/// and each row's gradient lands only on the rank that owns it.
#[derive(Debug)]
pub struct VocabParallelEmbedding {
    /// `[V/tp, h]`.
    pub weight: Tensor,
    vocab_start: i64,
    vocab_end: i64,
    group: TpGroup,
}

impl VocabParallelEmbedding {
    /// Creates the `[num_embeddings/tp, dim]` shard (normal, std `init_std`) under `vs`.
    pub fn new(
        vs: &nn::Path,
        num_embeddings: i64,
        dim: i64,
        init_std: f64,
        group: &TpGroup,
    ) -> Result<Self> {
        let tp = group.size();
        if num_embeddings % tp != 0 {
            return Err(ParallelError::NotDivisible {
                what: "padded_vocab_size".into(),
                value: num_embeddings,
                tp,
            });
        }
        let local = num_embeddings / tp;
        let weight = vs.f_var(
            "weight",
            &[local, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: init_std,
            },
        )?;
        let vocab_start = group.rank() * local;
        Ok(Self {
            weight,
            vocab_start,
            vocab_end: vocab_start + local,
            group: group.clone(),
        })
    }

    /// `ids`: int64 `[...]` of global token ids -> `[..., h]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if self.group.size() == 1 {
            return Ok(Tensor::f_embedding(&self.weight, ids, -1, false, false)?);
        }
        let outside = ids
            .f_lt(self.vocab_start)?
            .f_logical_or(&ids.f_ge(self.vocab_end)?)?;
        let local_ids = (ids - self.vocab_start).f_masked_fill(&outside, 0)?;
        let out = Tensor::f_embedding(&self.weight, &local_ids, -1, false, false)?;
        let out = out.f_masked_fill(&outside.f_unsqueeze(-1)?, 0.0)?;
        reduce_from_tensor_parallel_region(&out, &self.group)
    }

    /// First global id held by this rank.
    pub fn vocab_start(&self) -> i64 {
        self.vocab_start
    }
}
