"""The card's measured bf16 matmul rate, the peak that MFU is taken against
(gpu-check step 3): an n x n x n bf16 product (random data), 3 warm-ups, then
the mean of --iters timed products.

  python peak.py --device cuda|cpu --json PATH [--n 8192] [--iters 10]
"""

import argparse
import time

import torch

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    device = common.device_of(args.device)
    a = torch.randn(args.n, args.n, device=device, dtype=torch.bfloat16)
    b = torch.randn(args.n, args.n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    common.sync(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        a @ b
    common.sync(device)
    secs = (time.perf_counter() - t0) / args.iters
    common.write_json(
        args.json,
        {
            "peak_bf16_flops": 2 * args.n**3 / secs,
            "peak_n": args.n,
            "peak_s_per_matmul": secs,
            **common.versions(),
        },
    )


if __name__ == "__main__":
    main()
