//! The parameters a tensor-parallel shard of a Megatron-BERT task model must
//! hold, with their shapes: used to check archives before any tensor is
//! handed to the model, so a bad member is named instead of failing later.

use std::collections::BTreeMap;

use crate::model::{Architecture, BertConfig, HeadConfig, StateDict};

/// Expected shape of every encoder parameter of one rank's shard at
/// tensor-parallel size `tp`. The word embedding's row count is checked
/// separately (it depends on the padding), so it is left out here.
pub fn encoder_shapes(config: &BertConfig, tp: i64) -> BTreeMap<String, Vec<i64>> {
    let h = config.hidden_size;
    let ffn = config.ffn_hidden_size;
    let mut m = BTreeMap::new();
    let mut put = |k: String, s: Vec<i64>| {
        m.insert(k, s);
    };
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![config.max_position_embeddings, h],
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![config.type_vocab_size, h],
    );
    for i in 0..config.num_layers {
        let p = format!("encoder.layers.{i}.");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            put(format!("{p}{ln}.weight"), vec![h]);
            put(format!("{p}{ln}.bias"), vec![h]);
        }
        put(
            format!("{p}self_attention.query_key_value.weight"),
            vec![3 * h / tp, h],
        );
        put(
            format!("{p}self_attention.query_key_value.bias"),
            vec![3 * h / tp],
        );
        put(format!("{p}self_attention.dense.weight"), vec![h, h / tp]);
        put(format!("{p}self_attention.dense.bias"), vec![h]);
        put(format!("{p}mlp.dense_h_to_4h.weight"), vec![ffn / tp, h]);
        put(format!("{p}mlp.dense_h_to_4h.bias"), vec![ffn / tp]);
        put(format!("{p}mlp.dense_4h_to_h.weight"), vec![h, ffn / tp]);
        put(format!("{p}mlp.dense_4h_to_h.bias"), vec![h]);
    }
    put("encoder.final_layernorm.weight".into(), vec![h]);
    put("encoder.final_layernorm.bias".into(), vec![h]);
    m
}

/// Expected shapes of the head parameters (`classifier.mlp.layer{2i}`).
pub fn head_shapes(hidden: i64, head: &HeadConfig) -> BTreeMap<String, Vec<i64>> {
    let mut m = BTreeMap::new();
    for i in 0..head.num_layers {
        let out = if i + 1 == head.num_layers {
            head.num_classes
        } else {
            hidden
        };
        let p = format!("classifier.mlp.layer{}", 2 * i);
        m.insert(format!("{p}.weight"), vec![out, hidden]);
        m.insert(format!("{p}.bias"), vec![out]);
    }
    m
}

/// The head's layer count and class count as the weights show them
/// (`None` when there are no head weights).
pub fn head_from_weights(sd: &StateDict) -> Option<(i64, i64)> {
    let mut last: Option<(u32, i64)> = None;
    for (k, t) in sd {
        let Some(rest) = k.strip_prefix("classifier.mlp.layer") else {
            continue;
        };
        let Some((idx, "weight")) = rest.split_once('.') else {
            continue;
        };
        let Ok(idx) = idx.parse::<u32>() else {
            continue;
        };
        // A malformed (0-d) tensor is left to the shape checks, which name it.
        let Some(&rows) = t.size().first() else {
            continue;
        };
        if last.is_none_or(|(l, _)| idx > l) {
            last = Some((idx, rows));
        }
    }
    last.map(|(idx, rows)| (i64::from(idx) / 2 + 1, rows))
}

/// True when the architecture can live in a NeMo Megatron-BERT archive.
pub fn is_megatron(config: &BertConfig) -> bool {
    config.architecture == Architecture::MegatronPreLn
}

/// Sort key putting NeMo weight keys in module order (embedding, layers by
/// index, final LayerNorm, pooler, head), as `Module.state_dict()` lists them.
pub fn module_order(canonical: &str) -> (u8, u32, u8, String) {
    let param_rank = |p: &str| -> u8 {
        const ORDER: [&str; 6] = [
            "input_layernorm",
            "self_attention.query_key_value",
            "self_attention.dense",
            "post_attention_layernorm",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        ];
        ORDER
            .iter()
            .position(|o| p.starts_with(o))
            .map_or(9, |i| i as u8)
    };
    let emb = [
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
    ];
    if let Some(rest) = canonical.strip_prefix("embeddings.") {
        let i = emb.iter().position(|e| rest.starts_with(e)).unwrap_or(9);
        return (0, 0, i as u8, canonical.into());
    }
    if let Some(rest) = canonical.strip_prefix("encoder.layers.")
        && let Some((idx, p)) = rest.split_once('.')
        && let Ok(idx) = idx.parse::<u32>()
    {
        return (1, idx, param_rank(p), canonical.into());
    }
    let group = if canonical.starts_with("encoder.") {
        2
    } else if canonical.starts_with("pooler.") {
        3
    } else if let Some(rest) = canonical.strip_prefix("classifier.mlp.layer") {
        let idx = rest
            .split_once('.')
            .and_then(|(i, _)| i.parse().ok())
            .unwrap_or(0);
        return (4, idx, 0, canonical.into());
    } else {
        5
    };
    (group, 0, 0, canonical.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_a_tp2_shard() {
        let mut cfg = BertConfig::megatron_345m(100);
        cfg.num_layers = 1;
        let s = encoder_shapes(&cfg, 2);
        assert_eq!(
            s["encoder.layers.0.self_attention.query_key_value.weight"],
            [1536, 1024]
        );
        assert_eq!(s["encoder.layers.0.mlp.dense_4h_to_h.weight"], [1024, 2048]);
        assert_eq!(s.len(), 2 + 12 + 2);
        let h = head_shapes(8, &HeadConfig::token_classification(3));
        assert_eq!(h["classifier.mlp.layer2.weight"], [3, 8]);
        let mut keys = vec![
            "classifier.mlp.layer2.bias",
            "encoder.layers.10.input_layernorm.weight",
            "encoder.final_layernorm.weight",
            "encoder.layers.2.mlp.dense_h_to_4h.weight",
            "encoder.layers.2.input_layernorm.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.word_embeddings.weight",
            "classifier.mlp.layer0.weight",
        ];
        keys.sort_by_key(|k| module_order(k));
        assert_eq!(
            keys,
            [
                "embeddings.word_embeddings.weight",
                "embeddings.position_embeddings.weight",
                "encoder.layers.2.input_layernorm.weight",
                "encoder.layers.2.mlp.dense_h_to_4h.weight",
                "encoder.layers.10.input_layernorm.weight",
                "encoder.final_layernorm.weight",
                "classifier.mlp.layer0.weight",
                "classifier.mlp.layer2.bias",
            ]
        );
    }
}
