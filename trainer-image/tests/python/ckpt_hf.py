"""Tiny Hugging Face checkpoints and their canonical tensors.

  make OUT   writes OUT/megatron_bert (MegatronBertModel, pre-LN) and
             OUT/bert (BertForPreTraining, post-LN) with save_pretrained
             (safetensors), and OUT/<name>/reference.safetensors holding the
             canonical tensors (Q, K, V fused per head as [heads, 3, head_dim]).
"""
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForPreTraining, MegatronBertConfig, MegatronBertModel

H, HEADS, LAYERS, FFN, VOCAB, POS = 16, 4, 2, 64, 100, 32


def fuse(q, k, v):
    shape = (HEADS, H // HEADS) + tuple(q.shape[1:])
    return torch.stack([q.reshape(shape), k.reshape(shape), v.reshape(shape)], dim=1).reshape((3 * H,) + tuple(q.shape[1:]))


def canonical(sd, post_ln):
    sd = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in sd.items()}
    out = {
        "embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": sd["embeddings.position_embeddings.weight"],
        "embeddings.token_type_embeddings.weight": sd["embeddings.token_type_embeddings.weight"],
        "pooler.dense.weight": sd["pooler.dense.weight"],
        "pooler.dense.bias": sd["pooler.dense.bias"],
    }
    if post_ln:
        out["embeddings.layernorm.weight"] = sd["embeddings.LayerNorm.weight"]
        out["embeddings.layernorm.bias"] = sd["embeddings.LayerNorm.bias"]
    else:
        out["encoder.final_layernorm.weight"] = sd["encoder.ln.weight"]
        out["encoder.final_layernorm.bias"] = sd["encoder.ln.bias"]
    for i in range(LAYERS):
        hf, c = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            s = hf + "attention.self."
            out[c + f"self_attention.query_key_value.{p}"] = fuse(sd[s + f"query.{p}"], sd[s + f"key.{p}"], sd[s + f"value.{p}"])
            out[c + f"self_attention.dense.{p}"] = sd[hf + f"attention.output.dense.{p}"]
            out[c + f"mlp.dense_h_to_4h.{p}"] = sd[hf + f"intermediate.dense.{p}"]
            out[c + f"mlp.dense_4h_to_h.{p}"] = sd[hf + f"output.dense.{p}"]
            if post_ln:
                out[c + f"attention_output_layernorm.{p}"] = sd[hf + f"attention.output.LayerNorm.{p}"]
                out[c + f"output_layernorm.{p}"] = sd[hf + f"output.LayerNorm.{p}"]
            else:
                out[c + f"input_layernorm.{p}"] = sd[hf + f"attention.ln.{p}"]
                out[c + f"post_attention_layernorm.{p}"] = sd[hf + f"ln.{p}"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def make(out):
    torch.manual_seed(3)
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=FFN, max_position_embeddings=POS)
    models = {
        "megatron_bert": (MegatronBertModel(MegatronBertConfig(**common, layer_norm_eps=1e-5)), False),
        "bert": (BertForPreTraining(BertConfig(**common)), True),
    }
    for name, (model, post_ln) in models.items():
        with torch.no_grad():
            for p in model.parameters():
                p.normal_()
        model.save_pretrained(f"{out}/{name}", safe_serialization=True)
        save_file(canonical(model.state_dict(), post_ln), f"{out}/{name}/reference.safetensors")


if __name__ == "__main__":
    make(sys.argv[2])
