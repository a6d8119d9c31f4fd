"""All-reduce timing with torch.distributed's Gloo backend, the reference for
examples/bench_allreduce.rs. Starts WORLD processes on loopback and prints
one line per size from rank 0: `gloo <bytes> <seconds per all-reduce>`.

Usage: python bench_allreduce_gloo.py WORLD PORT SIZE_BYTES...
"""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def iterations(nbytes):
    return max(5, min(200, (64 << 20) * 4 // max(nbytes, 1)))


def run(rank, world, port, sizes):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for nbytes in sizes:
        t = torch.ones(nbytes // 4, dtype=torch.float32)
        for _ in range(2):
            dist.all_reduce(t)
        iters = iterations(nbytes)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        elapsed = (time.perf_counter() - start) / iters
        if rank == 0:
            print(f"gloo {nbytes} {elapsed:.9f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    world, port = int(sys.argv[1]), int(sys.argv[2])
    sizes = [int(s) for s in sys.argv[3:]]
    mp.spawn(run, args=(world, port, sizes), nprocs=world, join=True)
