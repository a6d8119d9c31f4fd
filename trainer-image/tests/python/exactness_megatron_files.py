"""End-to-end exactness fixtures for tests/exactness/megatron_files.rs.

Writes random tiny Megatron-LM BERT checkpoints exactly as Megatron-LM saves
them (through ckpt_megatron.make: every checkpoint_version with its QKV row
layout, per rank for version 0; both naming generations; zip and legacy
containers; fp16 and fp32; source TP 1, 2 and 4), converts the same weights
to Hugging Face MegatronBertForQuestionAnswering with a QA head, and runs it
on a fixed padded batch:

  python exactness_megatron_files.py OUT

OUT/variants.json              [{name, version, naming, legacy, dtype, tp}]
OUT/<name>/...                 the Megatron checkpoint (root with latest_checkpointed_iteration.txt)
OUT/<name>/hf.safetensors      HF outputs: sequence_output, start_logits, end_logits
OUT/head.safetensors           the QA head in canonical names (classifier.mlp.layer0.*)
OUT/io.safetensors             input_ids, token_type_ids, attention_mask
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import MegatronBertConfig, MegatronBertForQuestionAnswering

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_megatron as cm  # noqa: E402  (the Megatron-LM checkpoint writer shared with tests/checkpoint/megatron.rs)

BATCH_LENGTHS = (12, 9, 5)
SEQ = 12

# (checkpoint_version, naming, legacy container, dtype, source TP)
VARIANTS = [
    (v, naming, legacy, "float16", 2)
    for v in (0, 1, 2, 3)
    for naming in ("old", "new")
    for legacy in (False, True)
] + [
    (3, "new", False, "float32", 2),
    (0, "old", True, "float32", 2),
    (2, "new", False, "float16", 1),
    (1, "old", True, "float32", 4),
]

_draw_std_normal = cm.reference


def megatron_scaled_reference(tp, dtype):
    """ckpt_megatron's random tensors (standard normal) rescaled to a trained
    model's magnitudes, so attention is not saturated and every parameter
    (LayerNorm gains and biases included) shapes the outputs."""
    out = {}
    for name, t in _draw_std_normal(tp, torch.float32).items():
        if "layernorm" in name and name.endswith(".weight"):
            t = 1.0 + 0.1 * t
        elif "layernorm" in name or name.endswith(".bias"):
            t = 0.05 * t
        elif "embeddings" in name:
            t = 0.5 * t
        else:
            t = 0.15 * t
        out[name] = t.to(dtype)
    return out


cm.reference = megatron_scaled_reference


def split_qkv(fused, heads, head_dim):
    """Canonical [heads, 3, head_dim] rows -> HF's query, key, value."""
    rest = fused.shape[1:]
    v = fused.reshape(heads, 3, head_dim, *rest)
    return [v[:, i].reshape(heads * head_dim, *rest) for i in range(3)]


def hf_state_dict(ref, head):
    """Canonical full tensors -> HF MegatronBertForQuestionAnswering names (fp32)."""
    ref = {k: v.float() for k, v in ref.items()}
    out = {
        "bert.embeddings.word_embeddings.weight": ref["embeddings.word_embeddings.weight"],
        "bert.embeddings.position_embeddings.weight": ref["embeddings.position_embeddings.weight"],
        "bert.embeddings.token_type_embeddings.weight": ref["embeddings.token_type_embeddings.weight"],
    }
    for i in range(cm.LAYERS):
        us, hf = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        for s in ("weight", "bias"):
            q, k, v = split_qkv(ref[us + f"self_attention.query_key_value.{s}"], cm.HEADS, cm.HEAD_DIM)
            out[hf + f"attention.self.query.{s}"] = q
            out[hf + f"attention.self.key.{s}"] = k
            out[hf + f"attention.self.value.{s}"] = v
            out[hf + f"attention.output.dense.{s}"] = ref[us + f"self_attention.dense.{s}"]
            out[hf + f"attention.ln.{s}"] = ref[us + f"input_layernorm.{s}"]
            out[hf + f"ln.{s}"] = ref[us + f"post_attention_layernorm.{s}"]
            out[hf + f"intermediate.dense.{s}"] = ref[us + f"mlp.dense_h_to_4h.{s}"]
            out[hf + f"output.dense.{s}"] = ref[us + f"mlp.dense_4h_to_h.{s}"]
    for s in ("weight", "bias"):
        out[f"bert.encoder.ln.{s}"] = ref[f"encoder.final_layernorm.{s}"]
        out[f"qa_outputs.{s}"] = head[f"classifier.mlp.layer0.{s}"]
    return out


def hf_outputs(ref, head, io):
    vocab = ref["embeddings.word_embeddings.weight"].shape[0]
    cfg = MegatronBertConfig(
        vocab_size=vocab,
        hidden_size=cm.HIDDEN,
        num_hidden_layers=cm.LAYERS,
        num_attention_heads=cm.HEADS,
        intermediate_size=cm.FFN,
        max_position_embeddings=cm.MAX_POS,
        type_vocab_size=2,
        hidden_act="gelu",  # Megatron's exact GELU (openai_gelu off)
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,  # Megatron's default layernorm_epsilon
        attn_implementation="eager",
        pad_token_id=vocab - 1,  # a row no input uses (Megatron has no padding_idx)
    )
    model = MegatronBertForQuestionAnswering(cfg).eval()
    sd = hf_state_dict(ref, head)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    params = dict(model.named_parameters())
    unset = [k for k in missing if k in params]
    if unset or unexpected:
        sys.exit(f"HF conversion incomplete: unset {unset}, unexpected {unexpected}")
    with torch.no_grad():
        kw = dict(
            input_ids=io["input_ids"],
            token_type_ids=io["token_type_ids"],
            attention_mask=io["attention_mask"],
        )
        seq = model.bert(**kw).last_hidden_state
        out = model(**kw)
    return {
        "sequence_output": seq.contiguous(),
        "start_logits": out.start_logits.contiguous(),
        "end_logits": out.end_logits.contiguous(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)

    g = torch.Generator().manual_seed(11)
    head = {
        "classifier.mlp.layer0.weight": 0.3 * torch.randn(2, cm.HIDDEN, generator=g),
        "classifier.mlp.layer0.bias": 0.1 * torch.randn(2, generator=g),
    }
    save_file(head, os.path.join(a.out, "head.safetensors"))
    ids = torch.randint(1, cm.VOCAB, (len(BATCH_LENGTHS), SEQ), generator=g)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for b, n in enumerate(BATCH_LENGTHS):
        mask[b, :n] = 1
        types[b, n // 2 : n] = 1
        ids[b, n:] = 0
    io = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    save_file(io, os.path.join(a.out, "io.safetensors"))

    manifest = []
    for version, naming, legacy, dtype, tp in VARIANTS:
        name = f"v{version}-{naming}-{'legacy' if legacy else 'zip'}-{dtype}-tp{tp}"
        d = os.path.join(a.out, name)
        cm.make(
            argparse.Namespace(
                out=d, version=version, tp=tp, naming=naming, legacy=legacy,
                release=False, no_args=False, dtype=dtype,
            )
        )
        ref = load_file(os.path.join(d, "reference.safetensors"))
        save_file(hf_outputs(ref, head, io), os.path.join(d, "hf.safetensors"))
        manifest.append(
            dict(name=name, version=version, naming=naming, legacy=legacy, dtype=dtype, tp=tp)
        )
    with open(os.path.join(a.out, "variants.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
