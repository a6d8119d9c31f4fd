"""Reference fine-tuning trajectory for tests/train/trajectory.rs.

Builds the tiny random Megatron-BERT of model_reference.py with a span-QA
head (Hugging Face MegatronBertForQuestionAnswering, dropout off, fp32), a
fixed random QA data set, and trains it with torch.optim.AdamW (fused=True,
the HF Trainer's adamw_torch_fused; weight decay on weights, none on biases
and LayerNorms), Hugging Face's linear warmup schedule and clip_grad_norm_,
on the micro batches the plan gives:

  python train_trajectory_reference.py --plan PLAN.json --out DIR

PLAN.json: {"samples": N, "lr": .., "weight_decay": .., "warmup_steps": ..,
            "total_steps": .., "clip": .., "steps": [[[i, ...], ...], ...]}
  (for each optimizer step, its micro batches over all data-parallel ranks;
   each micro-batch loss is divided by the step's micro-batch count, which is
   what averaging gradients over ranks of per-rank means amounts to)
DIR/config.json, DIR/weights.safetensors (canonical names: model_reference.py)
DIR/data.safetensors   input_ids, attention_mask, token_type_ids, start/end_positions
DIR/trajectory.json    {"losses": [mean micro-batch loss per step], "lrs": [...], "grad_norms": [...]}
DIR/final.safetensors  canonical weights after training
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import MegatronBertConfig, MegatronBertForQuestionAnswering, MegatronBertModel
from transformers import get_linear_schedule_with_warmup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_reference as ref  # noqa: E402

SEQ = 16


def make_data(n):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, ref.VOCAB, (n, SEQ), generator=g)
    mask = torch.zeros(n, SEQ, dtype=torch.long)
    types = torch.zeros(n, SEQ, dtype=torch.long)
    start = torch.zeros(n, dtype=torch.long)
    end = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        length = int(torch.randint(8, SEQ + 1, (1,), generator=g))
        mask[i, :length] = 1
        types[i, length // 2 : length] = 1
        ids[i, length:] = 0
        s = int(torch.randint(length // 2, length - 1, (1,), generator=g))
        e = int(torch.randint(s, length - 1, (1,), generator=g))
        start[i], end[i] = s, e
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=start, end_positions=end)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    cfg = MegatronBertConfig(
        vocab_size=ref.PADDED_VOCAB,
        hidden_size=ref.HIDDEN,
        num_hidden_layers=ref.LAYERS,
        num_attention_heads=ref.HEADS,
        intermediate_size=ref.FFN,
        max_position_embeddings=ref.MAX_POS,
        type_vocab_size=ref.TYPES,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
        pad_token_id=ref.PADDED_VOCAB - 1,
        layer_norm_eps=1e-5,
    )
    base, qa = MegatronBertModel(cfg), MegatronBertForQuestionAnswering(cfg)
    with torch.no_grad():
        for p in list(base.parameters()) + list(qa.qa_outputs.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    qa.bert.load_state_dict(base.state_dict(), strict=False)

    def canonical_weights():
        named = dict(base.named_parameters(prefix="bert"))
        named.update({f"bert.{k}": v for k, v in qa.bert.named_parameters() if not k.startswith("pooler.")})
        named.update({f"qa_outputs.{k}": v for k, v in qa.qa_outputs.named_parameters()})
        return ref.canonical(named, "megatron")

    save_file(canonical_weights(), os.path.join(args.out, "weights.safetensors"))
    data = make_data(plan["samples"])
    save_file(data, os.path.join(args.out, "data.safetensors"))

    qa.train()
    no_decay = lambda n: n.endswith("bias") or ".ln." in n
    named = list(qa.named_parameters())
    groups = [
        {"params": [p for n, p in named if not no_decay(n)], "weight_decay": plan["weight_decay"]},
        {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=plan["lr"], betas=(0.9, 0.999), eps=1e-8, fused=True)
    sched = get_linear_schedule_with_warmup(opt, plan["warmup_steps"], plan["total_steps"])
    losses, lrs, norms = [], [], []
    for micro_batches in plan["steps"]:
        step_losses = []
        for idx in micro_batches:
            idx = torch.tensor(idx)
            out = qa(**{k: v[idx] for k, v in data.items()})
            loss = out.loss
            (loss / len(micro_batches) if len(micro_batches) > 1 else loss).backward()
            step_losses.append(loss.item())
        norms.append(float(torch.nn.utils.clip_grad_norm_(qa.parameters(), plan["clip"])))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(sum(step_losses) / len(step_losses))
    save_file(canonical_weights(), os.path.join(args.out, "final.safetensors"))
    with open(os.path.join(args.out, "trajectory.json"), "w") as f:
        json.dump({"losses": losses, "lrs": lrs, "grad_norms": norms}, f)
    ours = {
        "vocab_size": ref.VOCAB,
        "padded_vocab_size": ref.PADDED_VOCAB,
        "hidden_size": ref.HIDDEN,
        "num_layers": ref.LAYERS,
        "num_attention_heads": ref.HEADS,
        "ffn_hidden_size": ref.FFN,
        "max_position_embeddings": ref.MAX_POS,
        "type_vocab_size": ref.TYPES,
        "layernorm_epsilon": 1e-5,
        "activation": "gelu",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "make_vocab_size_divisible_by": 128,
        "architecture": "megatron_pre_ln",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(ours, f, indent=1)


if __name__ == "__main__":
    main()
