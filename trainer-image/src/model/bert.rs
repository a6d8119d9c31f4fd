//! The BERT encoder in both layouts, built from tensor-parallel layers:
//!
//! * [`Architecture::MegatronPreLn`] (Megatron-LM BERT): embeddings without
//!   LayerNorm, pre-LN layers (`input_layernorm` -> self-attention ->
//!   residual; `post_attention_layernorm` -> MLP -> residual), final LayerNorm.
//! * [`Architecture::BertPostLn`] (Hugging Face `BertModel`): embedding
//!   LayerNorm, post-LN layers, no final LayerNorm. Extra/renamed parameters:
//!   `embeddings.layernorm`, `encoder.layers.{i}.attention_output_layernorm`
//!   (after the attention residual), `encoder.layers.{i}.output_layernorm`
//!   (after the MLP residual); HF's separate query/key/value are fused into
//!   `self_attention.query_key_value` in `[heads, 3, head_dim]` row order.
//!
//! Parameter paths equal the canonical names of the trainer contract.
//! Activations are `[batch, seq, hidden]`.
//!
//! Dropout follows Megatron's two random streams (see
//! [`crate::parallel::random`]): embedding and hidden dropout act on
//! activations replicated across the tensor-parallel group and draw from the
//! default generator (same seed on every rank, so the same masks); attention
//! dropout acts on this rank's heads and runs inside the model's
//! [`ModelParallelRng`] fork, so ranks draw different masks for different heads.

use tch::{Kind, Tensor, nn};

use super::config::{Activation, Architecture, BertConfig};
use super::error::{ModelError, Result};
use crate::parallel::{
    ColumnParallelLinear, ModelParallelRng, RowParallelLinear, TpGroup, VocabParallelEmbedding,
};

/// Megatron's `init_method_std`.
pub const INIT_STD: f64 = 0.02;

fn layer_norm(vs: &nn::Path, cfg: &BertConfig) -> nn::LayerNorm {
    nn::layer_norm(
        vs,
        vec![cfg.hidden_size],
        nn::LayerNormConfig {
            eps: cfg.layernorm_epsilon,
            ..Default::default()
        },
    )
}

/// Word (vocab-parallel), position and token-type embeddings.
#[derive(Debug)]
pub struct Embeddings {
    pub word_embeddings: VocabParallelEmbedding,
    pub position_embeddings: nn::Embedding,
    pub token_type_embeddings: nn::Embedding,
    /// Only in [`Architecture::BertPostLn`].
    pub layernorm: Option<nn::LayerNorm>,
    dropout: f64,
    max_positions: i64,
}

impl Embeddings {
    fn new(vs: &nn::Path, cfg: &BertConfig, tp: &TpGroup) -> Result<Self> {
        let emb_cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            ..Default::default()
        };
        Ok(Self {
            word_embeddings: VocabParallelEmbedding::new(
                &(vs / "word_embeddings"),
                cfg.padded_vocab_size,
                cfg.hidden_size,
                INIT_STD,
                tp,
            )?,
            position_embeddings: nn::embedding(
                vs / "position_embeddings",
                cfg.max_position_embeddings,
                cfg.hidden_size,
                emb_cfg,
            ),
            token_type_embeddings: nn::embedding(
                vs / "token_type_embeddings",
                cfg.type_vocab_size,
                cfg.hidden_size,
                emb_cfg,
            ),
            layernorm: (cfg.architecture == Architecture::BertPostLn)
                .then(|| layer_norm(&(vs / "layernorm"), cfg)),
            dropout: cfg.hidden_dropout,
            max_positions: cfg.max_position_embeddings,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Result<Tensor> {
        let seq = input_ids.size()[1];
        if seq > self.max_positions {
            return Err(ModelError::Input(format!(
                "sequence length {seq} exceeds max_position_embeddings {}",
                self.max_positions
            )));
        }
        let positions = Tensor::f_arange(seq, (Kind::Int64, input_ids.device()))?;
        let words = self.word_embeddings.forward(input_ids)?;
        let x = words
            .f_add(&positions.apply(&self.position_embeddings))?
            .f_add(&token_type_ids.apply(&self.token_type_embeddings))?;
        let x = match &self.layernorm {
            Some(ln) => x.apply(ln),
            None => x,
        };
        Ok(x.f_dropout(self.dropout, train)?)
    }
}

/// Multi-head self-attention with heads split over the tensor-parallel group:
/// column-parallel fused QKV, `scaled_dot_product_attention`, row-parallel output.
#[derive(Debug)]
pub struct SelfAttention {
    pub query_key_value: ColumnParallelLinear,
    pub dense: RowParallelLinear,
    local_heads: i64,
    head_dim: i64,
    dropout: f64,
    rng: ModelParallelRng,
}

impl SelfAttention {
    fn new(
        vs: &nn::Path,
        cfg: &BertConfig,
        tp: &TpGroup,
        output_std: f64,
        rng: &ModelParallelRng,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            query_key_value: ColumnParallelLinear::new(
                &(vs / "query_key_value"),
                h,
                3 * h,
                true,
                INIT_STD,
                tp,
            )?,
            dense: RowParallelLinear::new(&(vs / "dense"), h, h, true, output_std, tp)?,
            local_heads: cfg.num_attention_heads / tp.size(),
            head_dim: cfg.head_dim(),
            dropout: cfg.attention_dropout,
            rng: rng.clone(),
        })
    }

    /// `x`: `[b, s, h]`; `mask`: bool `[b, 1, 1, s]`, true where a key may be attended.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let ctx = self.context(x, mask, train)?;
        Ok(self.dense.forward(&ctx)?)
    }

    /// This rank's heads' attention output before the row-parallel output
    /// projection, `[b, s, local_heads * head_dim]` (heads in order).
    /// Attention-probability dropout (train mode) draws from the
    /// model-parallel generator. `x`: `[b, s, h]`; `mask`: bool
    /// `[b, 1, 1, s]`, true where a key may be attended.
    pub fn context(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, s, _) = x.size3()?;
        let qkv = self
            .query_key_value
            .forward(x)?
            .f_view([b, s, self.local_heads, 3, self.head_dim])?
            .f_permute([3, 0, 2, 1, 4])?;
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let attend = |p: f64| {
            Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, p, false, None, false)
        };
        let ctx = if train && self.dropout > 0.0 {
            self.rng.fork(|| attend(self.dropout))??
        } else {
            attend(0.0)?
        };
        Ok(ctx
            .f_transpose(1, 2)?
            .f_reshape([b, s, self.local_heads * self.head_dim])?)
    }
}

/// The feed-forward block: column-parallel `dense_h_to_4h`, GELU, row-parallel `dense_4h_to_h`.
#[derive(Debug)]
pub struct Mlp {
    pub dense_h_to_4h: ColumnParallelLinear,
    pub dense_4h_to_h: RowParallelLinear,
    activation: Activation,
}

impl Mlp {
    fn new(vs: &nn::Path, cfg: &BertConfig, tp: &TpGroup, output_std: f64) -> Result<Self> {
        let (h, f) = (cfg.hidden_size, cfg.ffn_hidden_size);
        Ok(Self {
            dense_h_to_4h: ColumnParallelLinear::new(
                &(vs / "dense_h_to_4h"),
                h,
                f,
                true,
                INIT_STD,
                tp,
            )?,
            dense_4h_to_h: RowParallelLinear::new(
                &(vs / "dense_4h_to_h"),
                f,
                h,
                true,
                output_std,
                tp,
            )?,
            activation: cfg.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let approximate = match self.activation {
            Activation::Gelu => "none",
            Activation::GeluTanh => "tanh",
        };
        let inner = self.dense_h_to_4h.forward(x)?.f_gelu(approximate)?;
        Ok(self.dense_4h_to_h.forward(&inner)?)
    }
}

/// One transformer layer; its LayerNorms depend on the architecture.
#[derive(Debug)]
pub struct TransformerLayer {
    pub self_attention: SelfAttention,
    pub mlp: Mlp,
    /// Pre-LN: `input_layernorm`; post-LN: `attention_output_layernorm`.
    pub first_layernorm: nn::LayerNorm,
    /// Pre-LN: `post_attention_layernorm`; post-LN: `output_layernorm`.
    pub second_layernorm: nn::LayerNorm,
    architecture: Architecture,
    dropout: f64,
}

impl TransformerLayer {
    fn new(vs: &nn::Path, cfg: &BertConfig, tp: &TpGroup, rng: &ModelParallelRng) -> Result<Self> {
        // Megatron's scaled init for the layers that feed the residual stream.
        let output_std = INIT_STD / (2.0 * cfg.num_layers as f64).sqrt();
        let (first, second) = match cfg.architecture {
            Architecture::MegatronPreLn => ("input_layernorm", "post_attention_layernorm"),
            Architecture::BertPostLn => ("attention_output_layernorm", "output_layernorm"),
        };
        Ok(Self {
            first_layernorm: layer_norm(&(vs / first), cfg),
            self_attention: SelfAttention::new(&(vs / "self_attention"), cfg, tp, output_std, rng)?,
            second_layernorm: layer_norm(&(vs / second), cfg),
            mlp: Mlp::new(&(vs / "mlp"), cfg, tp, output_std)?,
            architecture: cfg.architecture,
            dropout: cfg.hidden_dropout,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        match self.architecture {
            Architecture::MegatronPreLn => {
                let attn =
                    self.self_attention
                        .forward(&x.apply(&self.first_layernorm), mask, train)?;
                let x = x.f_add(&attn.f_dropout(self.dropout, train)?)?;
                let out = self.mlp.forward(&x.apply(&self.second_layernorm))?;
                Ok(x.f_add(&out.f_dropout(self.dropout, train)?)?)
            }
            Architecture::BertPostLn => {
                let attn = self.self_attention.forward(x, mask, train)?;
                let x = x
                    .f_add(&attn.f_dropout(self.dropout, train)?)?
                    .apply(&self.first_layernorm);
                let out = self.mlp.forward(&x)?;
                Ok(x.f_add(&out.f_dropout(self.dropout, train)?)?
                    .apply(&self.second_layernorm))
            }
        }
    }
}

/// The BERT encoder: embeddings, transformer layers, (pre-LN) final
/// LayerNorm, and the pooler. Build it under the root of a `VarStore` so the
/// parameter names are the canonical ones.
#[derive(Debug)]
pub struct BertModel {
    pub embeddings: Embeddings,
    pub layers: Vec<TransformerLayer>,
    /// `encoder.final_layernorm` (pre-LN only).
    pub final_layernorm: Option<nn::LayerNorm>,
    /// `pooler.dense`.
    pub pooler: nn::Linear,
    config: BertConfig,
    tp: TpGroup,
    rng: ModelParallelRng,
}

impl BertModel {
    /// Creates randomly initialised parameters (Megatron's init) for this
    /// rank's shards under `vs` (normally `var_store.root()`).
    ///
    /// Seeding: call `tch::manual_seed(seed)` with the same `seed` on every
    /// rank of the tensor-parallel group before building. The model's
    /// model-parallel generator (attention dropout) then starts from
    /// `seed + 2718 + tp_rank` (Megatron's `model_parallel_cuda_manual_seed`),
    /// taken from the default generator's seed at this call; reseed it later
    /// with `model_parallel_rng().manual_seed(seed)`.
    pub fn new(vs: &nn::Path, config: &BertConfig, tp: &TpGroup) -> Result<Self> {
        config.validate(tp.size())?;
        let rng = ModelParallelRng::from_default_seed(tp.rank(), vs.device())?;
        let encoder = vs / "encoder";
        let layers = (0..config.num_layers)
            .map(|i| TransformerLayer::new(&(&encoder / "layers" / i), config, tp, &rng))
            .collect::<Result<Vec<_>>>()?;
        let final_layernorm = (config.architecture == Architecture::MegatronPreLn)
            .then(|| layer_norm(&(&encoder / "final_layernorm"), config));
        let pooler = nn::linear(
            vs / "pooler" / "dense",
            config.hidden_size,
            config.hidden_size,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        );
        Ok(Self {
            embeddings: Embeddings::new(&(vs / "embeddings"), config, tp)?,
            layers,
            final_layernorm,
            pooler,
            config: config.clone(),
            tp: tp.clone(),
            rng,
        })
    }

    /// The model-parallel generator attention dropout draws from (shared by
    /// all layers): read and restore it with `state()` / `set_state()` for
    /// training checkpoints, reseed it with `manual_seed`.
    pub fn model_parallel_rng(&self) -> &ModelParallelRng {
        &self.rng
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The tensor-parallel group.
    pub fn tp_group(&self) -> &TpGroup {
        &self.tp
    }

    /// Runs the encoder. `input_ids`: int64 `[b, s]`; `token_type_ids`: int64
    /// `[b, s]` (zeros when `None`); `attention_mask`: `[b, s]`, 1 for real
    /// tokens and 0 for padding (all attended when `None`). `train` enables
    /// dropout. Returns the sequence output `[b, s, h]` (after the final
    /// LayerNorm for pre-LN models), identical on every tensor-parallel rank.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let size = input_ids.size();
        if size.len() != 2 || input_ids.kind() != Kind::Int64 {
            return Err(ModelError::Input(format!(
                "input_ids must be int64 [batch, seq], got {:?} {size:?}",
                input_ids.kind()
            )));
        }
        for (name, t) in [
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
        ] {
            if let Some(t) = t
                && t.size() != size
            {
                return Err(ModelError::Input(format!(
                    "{name} has shape {:?}, input_ids has {size:?}",
                    t.size()
                )));
            }
        }
        let zeros;
        let token_type_ids = match token_type_ids {
            Some(t) => t,
            None => {
                zeros = input_ids.f_zeros_like()?;
                &zeros
            }
        };
        let mask = attention_mask
            .map(|m| m.f_ne(0)?.f_view([size[0], 1, 1, size[1]]))
            .transpose()?;
        let mut x = self.embeddings.forward(input_ids, token_type_ids, train)?;
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref(), train)?;
        }
        Ok(match &self.final_layernorm {
            Some(ln) => x.apply(ln),
            None => x,
        })
    }

    /// The pooled output `tanh(dense(sequence_output[:, 0]))`, `[b, h]`.
    pub fn pool(&self, sequence_output: &Tensor) -> Result<Tensor> {
        Ok(sequence_output
            .f_select(1, 0)?
            .apply(&self.pooler)
            .f_tanh()?)
    }
}
