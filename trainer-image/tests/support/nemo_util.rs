//! Helpers shared by the .nemo tests: a tiny random Megatron-BERT task model,
//! its vocabulary, and the model written as a .nemo.
#![allow(dead_code)]

use std::path::Path;

use megatron_trainer::checkpoint::nemo::{self, DEFAULT_COMPRESSION, NemoContents, NemoWeights};
use megatron_trainer::model::{
    BertConfig, BertTaskModel, HeadConfig, HeadOutput, StateDict, shard_state_dict,
};
use megatron_trainer::parallel::TpGroup;
use tch::{Device, Kind, Tensor};

/// hidden 64, 4 heads, 2 layers, ffn 256, 32 positions, vocabulary 100
/// (padded to 128 at TP=1), dropout off.
pub fn tiny_config() -> BertConfig {
    let mut cfg = BertConfig::megatron_345m(100);
    cfg.hidden_size = 64;
    cfg.num_attention_heads = 4;
    cfg.num_layers = 2;
    cfg.ffn_hidden_size = 256;
    cfg.max_position_embeddings = 32;
    cfg.hidden_dropout = 0.0;
    cfg.attention_dropout = 0.0;
    cfg.padded_vocab_size = cfg.padded_vocab_for(1);
    cfg
}

/// A random full (TP=1) state dict of a model with `head`, plus the pooler;
/// every tensor distinct so misplaced rows are caught.
pub fn random_full(cfg: &BertConfig, head: &HeadConfig, seed: i64) -> StateDict {
    tch::manual_seed(seed);
    let model = BertTaskModel::new(cfg, head, &TpGroup::single(), Device::Cpu).unwrap();
    model
        .state_dict()
        .into_iter()
        .map(|(k, v)| {
            let noisy = tch::no_grad(|| &v + Tensor::randn_like(&v) * 0.1);
            (k, noisy.detach().contiguous())
        })
        .collect()
}

/// Writes a `vocab.txt` with the configured number of tokens.
pub fn write_vocab(path: &Path, n: i64) {
    let mut toks: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .into();
    toks.extend((5..n).map(|i| format!("tok{i}")));
    std::fs::write(path, toks.join("\n") + "\n").unwrap();
}

/// Writes a random model of `cfg` with `head` (seed `seed`) as a .nemo at
/// `path`: tensor-parallel size `tp`, a vocabulary of `cfg.vocab_size`
/// tokens (lower case), `labels` in id order, no pooler. Returns the full
/// (TP=1) state dict it was cut from, the pooler included.
pub fn write_tiny_nemo(
    path: &Path,
    cfg: &BertConfig,
    head: &HeadConfig,
    labels: Option<&[String]>,
    tp: i64,
    seed: i64,
) -> StateDict {
    let vocab = path.with_extension("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let full = random_full(cfg, head, seed);
    let contents = NemoContents {
        config: cfg,
        head,
        weights: NemoWeights::Full(&full),
        tp_size: tp,
        pretrained_model_name: "megatron-bert-uncased",
        vocab_file: &vocab,
        do_lower_case: true,
        label_names: labels,
        dataset: serde_json::Map::new(),
        include_pooler: false,
        compression_level: DEFAULT_COMPRESSION,
    };
    nemo::write_nemo(path, &contents).unwrap();
    full
}

/// The config keys the Python checker needs.
pub fn write_config_json(path: &Path, cfg: &BertConfig) {
    std::fs::write(path, serde_json::to_string(cfg).unwrap()).unwrap();
}

/// Saves canonical tensors as safetensors.
pub fn save_safetensors(path: &Path, sd: &StateDict) {
    let items: Vec<(&str, Tensor)> = sd
        .iter()
        .map(|(k, v)| (k.as_str(), v.contiguous()))
        .collect();
    Tensor::write_safetensors(&items, path).unwrap();
}

/// `full` cut for `tp` ranks with the vocabulary padded for `tp`.
pub fn shards(cfg: &BertConfig, full: &StateDict, tp: i64) -> Vec<StateDict> {
    let mut padded: StateDict = full
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    let word = "embeddings.word_embeddings.weight";
    let rows = cfg.padded_vocab_for(tp);
    let t = megatron_trainer::checkpoint::megatron::reshard_repad(&full[word], rows).unwrap();
    padded.insert(word.into(), t);
    (0..tp)
        .map(|r| shard_state_dict(&padded, tp, r).unwrap())
        .collect()
}

/// Asserts two state dicts hold the same names and bit-identical tensors.
pub fn assert_same(what: &str, got: &StateDict, want: &StateDict) {
    let gk: Vec<_> = got.keys().collect();
    let wk: Vec<_> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: names differ");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.kind(), w.kind(), "{what}: {k} dtype");
        assert_eq!(g.size(), w.size(), "{what}: {k} shape");
        assert!(g.equal(w), "{what}: {k} values differ");
    }
}

/// Max |a - b| over positions where `mask` is nonzero (`[b, s]` logits).
pub fn max_diff_masked(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(Kind::Bool);
    (a - b).abs().masked_select(&m).max().double_value(&[])
}

/// Span logits of `model` (eval mode).
pub fn span_logits(
    model: &BertTaskModel,
    ids: &Tensor,
    types: &Tensor,
    mask: &Tensor,
) -> (Tensor, Tensor) {
    match model.forward(ids, Some(types), Some(mask), false).unwrap() {
        HeadOutput::Span {
            start_logits,
            end_logits,
        } => (start_logits, end_logits),
        other => panic!("expected span logits, got {other:?}"),
    }
}
