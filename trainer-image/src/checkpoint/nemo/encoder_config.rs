//! `<model name>_encoder_config.json`: the Megatron-LM arguments NeMo 1.x
//! builds `MegatronBertEncoder` from (its `register_bert_model` writes
//! `bert_model.config` with sorted keys and 2-space indent). NeMo pops
//! `vocab_size` and `num_tokentypes` and replaces `vocab_file` with the
//! restored tokenizer vocabulary; the rest become Megatron argument defaults.

use serde_json::{Value, json};

use crate::model::{Activation, BertConfig};

/// The encoder config JSON text for `config`.
pub fn to_json(config: &BertConfig, vocab_ref: &str, do_lower_case: bool) -> String {
    let tokenizer_type = if do_lower_case {
        "BertWordPieceLowerCase"
    } else {
        "BertWordPieceCase"
    };
    let mut v = json!({
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "num_layers": config.num_layers,
        "max_position_embeddings": config.max_position_embeddings,
        "ffn_hidden_size": config.ffn_hidden_size,
        "layernorm_epsilon": config.layernorm_epsilon,
        "hidden_dropout": config.hidden_dropout,
        "attention_dropout": config.attention_dropout,
        "make_vocab_size_divisible_by": config.make_vocab_size_divisible_by,
        "num_tokentypes": config.type_vocab_size,
        "vocab_size": config.vocab_size,
        "vocab_file": vocab_ref,
        "tokenizer_type": tokenizer_type,
        "lazy_mpu_init": true,
        "onnx_safe": true,
    });
    if config.activation == Activation::GeluTanh {
        v.as_object_mut()
            .expect("object literal")
            .insert("openai_gelu".into(), Value::Bool(true));
    }
    serde_json::to_string_pretty(&v).expect("JSON of plain values") + "\n"
}

/// The encoder config's basename for a model name (`/` replaced as NeMo does).
pub fn basename(pretrained_model_name: &str) -> String {
    format!(
        "{}_encoder_config.json",
        pretrained_model_name.replace('/', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_back_into_the_same_config() {
        let mut cfg = BertConfig::megatron_345m(30522);
        cfg.activation = Activation::GeluTanh;
        let text = to_json(&cfg, "nemo:x_vocab.txt", true);
        assert!(text.contains("\"hidden_size\": 1024"), "{text}");
        let back = BertConfig::from_json_or_yaml(&text).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(
            basename("megatron-bert-345m-uncased"),
            "megatron-bert-345m-uncased_encoder_config.json"
        );
    }
}
