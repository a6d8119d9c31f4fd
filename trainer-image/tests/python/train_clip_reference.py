"""torch.nn.utils.clip_grad_norm_ on a full model's gradients, for tests/train/clip.rs.

  python train_clip_reference.py --grads GRADS.safetensors --max-norm X --out OUT.safetensors

GRADS holds d(loss)/d(param) of the whole (unsharded) model by canonical name
(model_reference.py writes one). The gradients become the .grad of parameters
and go through clip_grad_norm_; OUT holds the clipped gradients under the same
names and `total_norm` (the norm before clipping).
"""

import argparse

import torch
from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grads", required=True)
    ap.add_argument("--max-norm", type=float, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    grads = load_file(args.grads)
    params = {}
    for name, g in grads.items():
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params[name] = p
    total = torch.nn.utils.clip_grad_norm_(list(params.values()), args.max_norm, foreach=False)
    out = {n: p.grad for n, p in params.items()}
    out["total_norm"] = total.reshape(1).double()
    save_file(out, args.out)


if __name__ == "__main__":
    main()
