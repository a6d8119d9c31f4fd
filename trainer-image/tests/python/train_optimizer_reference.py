"""Reference numbers for the optimizer and schedule tests (tests/train/optimizer.rs).

  python train_optimizer_reference.py --out DIR

DIR/adamw.safetensors: initial parameters `init.NAME`, per-step gradients
`grad.STEP.NAME` and parameters after each step `param.STEP.NAME`, from
torch.optim.AdamW(fused=True) (Hugging Face's adamw_torch_fused) with two
parameter groups (weight decay on weights, none on biases and LayerNorm
parameters) driven by Hugging Face's linear warmup schedule; `lr` holds the learning rate of each step.
DIR/schedules.json: learning rates of HF schedules by name, for each step.
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

STEPS = 7
LR, WD, BETAS, EPS = 3e-3, 0.05, (0.85, 0.995), 1e-6
PARAMS = {
    "encoder.layers.0.mlp.dense_h_to_4h.weight": (6, 4),
    "encoder.layers.0.mlp.dense_h_to_4h.bias": (6,),
    "encoder.layers.0.input_layernorm.weight": (4,),
    "encoder.final_layernorm.bias": (4,),
    "embeddings.word_embeddings.weight": (10, 4),
}


def decays(name):
    return not (name.endswith(".bias") or "layernorm" in name)


def lrs(make, total, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=kw.pop("peak"))
    if make is not get_constant_schedule_with_warmup:
        kw["num_training_steps"] = total
    sched = make(opt, **kw)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    params = {n: torch.nn.Parameter(torch.randn(s)) for n, s in PARAMS.items()}
    out = {f"init.{n}": p.detach().clone() for n, p in params.items()}
    groups = [
        {"params": [p for n, p in params.items() if decays(n)], "weight_decay": WD},
        {"params": [p for n, p in params.items() if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=STEPS)
    lr_used = []
    for step in range(STEPS):
        for n, p in params.items():
            # Large and tiny gradients, and a parameter that skips step 3 (no gradient).
            if step == 3 and n == "encoder.final_layernorm.bias":
                p.grad = None
                continue
            g = torch.randn_like(p) * (10.0 ** (step % 3 - 1))
            p.grad = g
            out[f"grad.{step}.{n}"] = g.clone()
        lr_used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        for n, p in params.items():
            out[f"param.{step}.{n}"] = p.detach().clone()
    out["lr"] = torch.tensor(lr_used, dtype=torch.float64)
    save_file(out, os.path.join(args.out, "adamw.safetensors"))

    total = 10
    schedules = {
        "linear_w3": lrs(get_linear_schedule_with_warmup, total, peak=2e-5, num_warmup_steps=3),
        "linear_w0": lrs(get_linear_schedule_with_warmup, total, peak=1e-3, num_warmup_steps=0),
        "cosine_w2": lrs(get_cosine_schedule_with_warmup, total, peak=5e-5, num_warmup_steps=2),
        "cosine_min_w2": lrs(
            get_cosine_with_min_lr_schedule_with_warmup, total, peak=5e-5, num_warmup_steps=2, min_lr=1e-6
        ),
        "constant_w4": lrs(get_constant_schedule_with_warmup, total, peak=3e-4, num_warmup_steps=4),
    }
    with open(os.path.join(args.out, "schedules.json"), "w") as f:
        json.dump(schedules, f)


if __name__ == "__main__":
    main()
