//! The model shape flags, shared by the speed, probe and checkpoint
//! subcommands (the same names as the Python reference scripts').

use megatron_trainer::model::BertConfig;

/// Megatron-BERT shape; the defaults are the 345M model at sequence 384.
#[derive(clap::Args, Debug, Clone)]
pub struct Shape {
    #[arg(long, default_value_t = 1024)]
    pub hidden: i64,
    #[arg(long, default_value_t = 16)]
    pub heads: i64,
    #[arg(long, default_value_t = 24)]
    pub layers: i64,
    /// Inner MLP width; 0 means 4 x hidden.
    #[arg(long, default_value_t = 0)]
    pub ffn: i64,
    /// Tokenizer vocabulary (30522: megatron-bert-345m-uncased).
    #[arg(long, default_value_t = 30522)]
    pub vocab: i64,
    #[arg(long, default_value_t = 384)]
    pub seq: i64,
}

impl Shape {
    /// The training config: Megatron-BERT 345M's numerics (dropout 0.1) at this shape.
    pub fn config(&self) -> BertConfig {
        let mut cfg = BertConfig::megatron_345m(self.vocab);
        cfg.hidden_size = self.hidden;
        cfg.num_attention_heads = self.heads;
        cfg.num_layers = self.layers;
        cfg.ffn_hidden_size = if self.ffn > 0 {
            self.ffn
        } else {
            4 * self.hidden
        };
        cfg.max_position_embeddings = cfg.max_position_embeddings.max(self.seq);
        cfg
    }

    /// The same flags, to pass on to a child process.
    pub fn to_args(&self) -> Vec<String> {
        [
            ("--hidden", self.hidden),
            ("--heads", self.heads),
            ("--layers", self.layers),
            ("--ffn", self.ffn),
            ("--vocab", self.vocab),
            ("--seq", self.seq),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }
}
