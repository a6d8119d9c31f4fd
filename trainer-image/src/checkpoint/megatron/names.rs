//! Megatron-LM parameter names (both generations: `transformer`/`encoder`,
//! `attention`/`self_attention`) to and from the canonical names.

/// The canonical name of a flattened Megatron model key (nested dicts
/// joined with dots, below the `model` entry), or `None` for keys that are
/// not encoder parameters. Pretraining heads (`lm_head.*`, `binary_head.*`)
/// keep their names and are returned only when `heads` is true.
pub fn canonical(key: &str, heads: bool) -> Option<String> {
    let mut key = key;
    for prefix in ["module.", "bert_model.", "model."] {
        key = key.strip_prefix(prefix).unwrap_or(key);
    }
    if let Some(rest) = key.strip_prefix("language_model.") {
        if let Some(emb) = rest.strip_prefix("embedding.") {
            return match emb {
                "word_embeddings.weight" => Some("embeddings.word_embeddings.weight".into()),
                "position_embeddings.weight" => {
                    Some("embeddings.position_embeddings.weight".into())
                }
                "tokentype_embeddings.weight" => {
                    Some("embeddings.token_type_embeddings.weight".into())
                }
                _ => None,
            };
        }
        if let Some(pooler) = rest.strip_prefix("pooler.") {
            return matches!(pooler, "dense.weight" | "dense.bias")
                .then(|| format!("pooler.{pooler}"));
        }
        let enc = rest
            .strip_prefix("transformer.")
            .or_else(|| rest.strip_prefix("encoder."))?;
        if matches!(enc, "final_layernorm.weight" | "final_layernorm.bias") {
            return Some(format!("encoder.{enc}"));
        }
        let layer = enc.strip_prefix("layers.")?;
        let (index, param) = layer.split_once('.')?;
        index.parse::<u32>().ok()?;
        let param = match param.strip_prefix("attention.") {
            Some(p) => format!("self_attention.{p}"),
            None => param.to_string(),
        };
        let known = [
            "input_layernorm",
            "self_attention.query_key_value",
            "self_attention.dense",
            "post_attention_layernorm",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        ];
        let (module, kind) = param.rsplit_once('.')?;
        if known.contains(&module) && matches!(kind, "weight" | "bias") {
            return Some(format!("encoder.layers.{index}.{param}"));
        }
        return None;
    }
    let head = matches!(
        key,
        "lm_head.bias"
            | "lm_head.dense.weight"
            | "lm_head.dense.bias"
            | "lm_head.layernorm.weight"
            | "lm_head.layernorm.bias"
            | "binary_head.weight"
            | "binary_head.bias"
    );
    (heads && head).then(|| key.to_string())
}

/// Where a canonical name goes in a checkpoint_version 3.0 Megatron `model`
/// dict: the path of nested dict keys (the last one holding the tensor).
pub fn megatron_path(name: &str) -> Option<Vec<String>> {
    let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect());
    if let Some(emb) = name.strip_prefix("embeddings.") {
        let (module, param) = emb.split_once('.')?;
        let module = match module {
            "word_embeddings" => "word_embeddings",
            "position_embeddings" => "position_embeddings",
            "token_type_embeddings" => "tokentype_embeddings",
            _ => return None,
        };
        return s(&["language_model", "embedding", module, param]);
    }
    if let Some(enc) = name.strip_prefix("encoder.") {
        return s(&["language_model", "encoder", enc]);
    }
    if let Some(p) = name.strip_prefix("pooler.") {
        return s(&["language_model", "pooler", p]);
    }
    if let Some(p) = name.strip_prefix("lm_head.") {
        return s(&["lm_head", p]);
    }
    if let Some(p) = name.strip_prefix("binary_head.") {
        return s(&["binary_head", p]);
    }
    None
}

/// Tensor-parallel split dimension of a canonical name (the model's layout,
/// plus the vocab-parallel `lm_head.bias`).
pub fn split_dim(name: &str) -> Option<i64> {
    if name == "lm_head.bias" {
        return Some(0);
    }
    crate::model::tp_split_dim(name)
}

/// True for the parameters whose dim 0 is the (padded) vocabulary.
pub fn is_vocab(name: &str) -> bool {
    name == "embeddings.word_embeddings.weight" || name == "lm_head.bias"
}
