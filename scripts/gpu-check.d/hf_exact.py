"""Exactness reference (gpu-check step 1): Hugging Face
MegatronBertForQuestionAnswering on --device, forward and one backward of the
QA loss in fp32 (TF32 off) and under bf16 autocast, on random perturbed weights
and padded random inputs, dropout off (eval mode), as
trainer-image/tests/python/model_reference.py does on CPU for the model test;
its `canonical` maps the HF names to ours.

  python hf_exact.py --device cuda|cpu --out DIR --hidden .. --heads .. --layers .. \
      --vocab .. --padded-vocab .. --seq .. --batch .. [--json PATH]

DIR/config.json          our BertConfig (serde form)
DIR/weights.safetensors  canonical names (no pooler: the QA model has none)
DIR/io.safetensors       inputs; start/end logits and loss in fp32 and bf16 (stored as fp32)
DIR/grads_fp32.safetensors, DIR/grads_bf16.safetensors  d(QA loss)/d(param), canonical names
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

import common
import model_reference as mr


def qa_pass(qa, inputs, device, bf16):
    """One forward + backward; returns (start, end, loss, grads by HF name)."""
    qa.zero_grad(set_to_none=True)
    if bf16:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = qa(**inputs)
    else:
        out = qa(**inputs)
    out.loss.backward()
    grads = {k: p.grad.detach().float().cpu() for k, p in qa.named_parameters() if p.grad is not None}
    f32 = lambda t: t.detach().float().cpu().contiguous()
    return f32(out.start_logits), f32(out.end_logits), f32(out.loss).reshape(1), grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    common.add_shape_args(ap)
    args = ap.parse_args()
    device = common.device_of(args.device)
    common.no_tf32()
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    # model_reference's canonical() reads the shape from its module constants.
    mr.HIDDEN, mr.HEADS, mr.LAYERS = args.hidden, args.heads, args.layers

    qa = transformers_qa(args)
    with torch.no_grad():  # LayerNorms start at 1/0: perturb everything so they matter (on the CPU: same weights on any card).
        for p in qa.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    weights = mr.canonical(dict(qa.named_parameters()), "megatron")
    qa.to(device).eval()

    b, s = args.batch, args.seq
    ids = torch.randint(0, args.vocab, (b, s))
    mask = torch.zeros(b, s, dtype=torch.long)
    types = torch.zeros(b, s, dtype=torch.long)
    start, end = torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    for i in range(b):  # row i has 5*i padding tokens (at least half the row real)
        n = max(s // 2, s - 5 * i)
        mask[i, :n] = 1
        types[i, n // 2 : n] = 1
        ids[i, n:] = 0
        start[i] = torch.randint(1, n // 2, ()).item()
        end[i] = start[i] + torch.randint(0, n // 2, ()).item()
    inputs = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "token_type_ids": types.to(device),
        "start_positions": start.to(device),
        "end_positions": end.to(device),
    }
    io = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
          "start_positions": start, "end_positions": end}
    for tag, bf16 in (("fp32", False), ("bf16", True)):
        st, en, loss, grads = qa_pass(qa, inputs, device, bf16)
        io[f"start_logits_{tag}"], io[f"end_logits_{tag}"], io[f"loss_{tag}"] = st, en, loss
        save_file(mr.canonical(grads, "megatron"), os.path.join(args.out, f"grads_{tag}.safetensors"))
    save_file(weights, os.path.join(args.out, "weights.safetensors"))
    save_file(io, os.path.join(args.out, "io.safetensors"))
    ours = {
        "vocab_size": args.vocab,
        "padded_vocab_size": args.padded_vocab,
        "hidden_size": args.hidden,
        "num_layers": args.layers,
        "num_attention_heads": args.heads,
        "ffn_hidden_size": args.ffn or 4 * args.hidden,
        "max_position_embeddings": max(512, args.seq),
        "type_vocab_size": 2,
        "layernorm_epsilon": 1e-5,
        "activation": "gelu",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "make_vocab_size_divisible_by": 128,
        "architecture": "megatron_pre_ln",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(ours, f, indent=1)
    summary = {
        "hf_attn_implementation": qa.config._attn_implementation,
        "hf_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "hf_loss_fp32": io["loss_fp32"].item(),
        "hf_loss_bf16": io["loss_bf16"].item(),
        **common.versions(),
    }
    if args.json:
        common.write_json(args.json, summary)


def transformers_qa(args):
    from transformers import MegatronBertForQuestionAnswering

    return MegatronBertForQuestionAnswering(common.hf_config(args, dropout=0.0, attn="eager"))


if __name__ == "__main__":
    main()
