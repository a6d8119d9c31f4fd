"""Reference generator states and draws from PyTorch for tests/exactness/rng.rs.

For each seed s writes to a safetensors file:
  state_{s}            torch.manual_seed(s); torch.get_rng_state()
  rand_{s}             then torch.rand(RAND_LEN)
  state_after_{s}      then torch.get_rng_state()
  tracker_{s}_{r}      Megatron's model-parallel stream of TP rank r:
                       torch.manual_seed(s + 2718 + r); torch.rand(RAND_LEN) twice, concatenated
  dropout_{s}_{r}      the same stream: torch.nn.functional.dropout(ones(DROPOUT_SHAPE), p=0.5)

usage: exactness_rng.py OUT.safetensors --seeds 0 42 --tp 2
"""

import argparse

import torch
from safetensors.torch import save_file

RAND_LEN = 16
DROPOUT_SHAPE = (2, 3, 5, 5)
MODEL_PARALLEL_SEED_OFFSET = 2718  # megatron/core/tensor_parallel/random.py


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--tp", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for s in args.seeds:
        torch.manual_seed(s)
        out[f"state_{s}"] = torch.get_rng_state()
        out[f"rand_{s}"] = torch.rand(RAND_LEN)
        out[f"state_after_{s}"] = torch.get_rng_state()
        for r in range(args.tp):
            torch.manual_seed(s + MODEL_PARALLEL_SEED_OFFSET + r)
            out[f"tracker_{s}_{r}"] = torch.cat([torch.rand(RAND_LEN), torch.rand(RAND_LEN)])
            torch.manual_seed(s + MODEL_PARALLEL_SEED_OFFSET + r)
            out[f"dropout_{s}_{r}"] = torch.nn.functional.dropout(
                torch.ones(DROPOUT_SHAPE), p=0.5, training=True
            )
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)


if __name__ == "__main__":
    main()
