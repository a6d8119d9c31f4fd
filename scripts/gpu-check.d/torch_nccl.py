"""torch.distributed's NCCL at world size 1 (gpu-check step 2's reference):
communicator init, all-reduce / all-gather / broadcast checks, and the time of
an in-place sum all-reduce of --mib MiB of float32, each call followed by a
device synchronize (our NCCL path waits for every collective the same way).

  python torch_nccl.py --device cuda|cpu --json PATH [--mib 256] [--iters 20]
"""

import argparse
import socket
import statistics
import time

import torch
import torch.distributed as dist

import common


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if args.device == "cpu":
        common.write_json(args.json, {"skipped": "skipped: no CUDA"})
        return
    device = common.device_of("cuda")
    torch.cuda.set_device(device)
    t0 = time.perf_counter()
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, device_id=device
    )
    x = torch.arange(1024, dtype=torch.float32, device=device)
    y = x.clone()
    dist.all_reduce(y)
    torch.cuda.synchronize()
    init_s = time.perf_counter() - t0
    gathered = torch.empty(1024, device=device)
    dist.all_gather_into_tensor(gathered, x)
    b = x.clone()
    dist.broadcast(b, src=0)
    torch.cuda.synchronize()
    checks = {
        "all_reduce_ok": bool(torch.equal(y, x)),
        "all_gather_ok": bool(torch.equal(gathered, x)),
        "broadcast_ok": bool(torch.equal(b, x)),
    }
    t = torch.ones(args.mib * 2**20 // 4, dtype=torch.float32, device=device)
    for _ in range(3):
        dist.all_reduce(t)
        torch.cuda.synchronize()
    times = []
    for _ in range(args.iters):
        s = time.perf_counter()
        dist.all_reduce(t)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - s)
    dist.destroy_process_group()
    common.write_json(
        args.json,
        {
            **checks,
            "init_s": init_s,
            "allreduce_bytes": t.numel() * 4,
            "allreduce_s_median": statistics.median(times),
            "allreduce_s": times,
            "nccl_version": ".".join(map(str, torch.cuda.nccl.version())),
        },
    )


if __name__ == "__main__":
    main()
