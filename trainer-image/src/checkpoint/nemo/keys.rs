//! NeMo 1.x task-model weight keys <-> canonical parameter names.
//!
//! A NeMo Megatron-BERT task model (`QAModel`, `TokenClassificationModel`,
//! `TextClassificationModel`) keeps the Megatron language model under
//! `bert_model.language_model.*` and its head under `classifier.mlp.*`.
//! Megatron-LM >= 2.1 (NeMo 1.0-1.4 pinned megatron-lm 2.2; NeMo >= 1.5 ships
//! the same module names) names the blocks `encoder.layers.N.self_attention`;
//! older Megatron named them `transformer.layers.N.attention`. Both are read;
//! the newer names are written.

use crate::checkpoint::megatron::names;

/// The prefix of the encoder in NeMo task models.
pub const ENCODER_PREFIX: &str = "bert_model.";
/// The prefix of the task head.
pub const HEAD_PREFIX: &str = "classifier.";

/// The canonical name of a NeMo weight key, or `None` for keys that are not
/// encoder, pooler or head parameters.
pub fn canonical(key: &str) -> Option<String> {
    if key.starts_with(HEAD_PREFIX) {
        return is_head_key(key).then(|| key.to_string());
    }
    // `model.language_model.*` is the NeMo >= 1.5 pretraining model's prefix.
    let rest = key
        .strip_prefix(ENCODER_PREFIX)
        .or_else(|| key.strip_prefix("model."))?;
    names::canonical(rest, false)
}

/// The NeMo weight key of a canonical name, or `None` when the name has no
/// place in a NeMo Megatron-BERT task model (post-LN BERT parameters,
/// pretraining heads).
pub fn nemo_key(name: &str) -> Option<String> {
    if name.starts_with(HEAD_PREFIX) {
        return is_head_key(name).then(|| name.to_string());
    }
    if name.starts_with("lm_head.") || name.starts_with("binary_head.") {
        return None;
    }
    let path = names::megatron_path(name)?;
    // megatron_path maps anything under `encoder.`; keep only Megatron's modules.
    names::canonical(&path.join("."), false)?;
    Some(format!("{ENCODER_PREFIX}{}", path.join(".")))
}

/// `classifier.mlp.layerN.{weight,bias}`.
fn is_head_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("classifier.mlp.layer") else {
        return false;
    };
    let Some((index, param)) = rest.split_once('.') else {
        return false;
    };
    index.parse::<u32>().is_ok() && matches!(param, "weight" | "bias")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_generations_map_to_canonical() {
        let cases = [
            (
                "bert_model.language_model.embedding.word_embeddings.weight",
                "embeddings.word_embeddings.weight",
            ),
            (
                "bert_model.language_model.embedding.tokentype_embeddings.weight",
                "embeddings.token_type_embeddings.weight",
            ),
            (
                "bert_model.language_model.encoder.layers.3.self_attention.query_key_value.bias",
                "encoder.layers.3.self_attention.query_key_value.bias",
            ),
            (
                "bert_model.language_model.transformer.layers.3.attention.dense.weight",
                "encoder.layers.3.self_attention.dense.weight",
            ),
            (
                "bert_model.language_model.transformer.final_layernorm.weight",
                "encoder.final_layernorm.weight",
            ),
            ("classifier.mlp.layer2.bias", "classifier.mlp.layer2.bias"),
        ];
        for (nemo, ours) in cases {
            assert_eq!(canonical(nemo).as_deref(), Some(ours), "{nemo}");
        }
        assert_eq!(canonical("classifier.mlp.layerX.weight"), None);
        assert_eq!(canonical("loss.weight"), None);
    }

    #[test]
    fn writes_new_generation_names() {
        assert_eq!(
            nemo_key("encoder.layers.0.mlp.dense_4h_to_h.weight").as_deref(),
            Some("bert_model.language_model.encoder.layers.0.mlp.dense_4h_to_h.weight")
        );
        assert_eq!(
            nemo_key("embeddings.token_type_embeddings.weight").as_deref(),
            Some("bert_model.language_model.embedding.tokentype_embeddings.weight")
        );
        assert_eq!(
            nemo_key("pooler.dense.bias").as_deref(),
            Some("bert_model.language_model.pooler.dense.bias")
        );
        assert_eq!(nemo_key("embeddings.layernorm.weight"), None);
        assert_eq!(
            nemo_key("encoder.layers.0.attention_output_layernorm.weight"),
            None
        );
        assert_eq!(nemo_key("lm_head.bias"), None);
        for name in [
            "encoder.layers.1.self_attention.query_key_value.weight",
            "classifier.mlp.layer0.weight",
        ] {
            assert_eq!(canonical(&nemo_key(name).unwrap()).as_deref(), Some(name));
        }
    }
}
