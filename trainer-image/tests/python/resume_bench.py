"""Reference timings for the checkpoint benchmark: torch.save and
torch.load(weights_only=True) of a training-checkpoint-shaped dict (weights
plus two AdamW moments per parameter) of the given shapes.

Usage: resume_bench.py SHAPES_JSON OUT_FILE  -> prints {"save_s", "load_s", "bytes"}
"""
import json
import os
import sys
import time

import torch


def main():
    shapes = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    sd = {k: torch.randn(v) for k, v in shapes.items()}
    state = {i: {"step": torch.tensor(6.0), "exp_avg": torch.randn(v), "exp_avg_sq": torch.rand(v)}
             for i, v in enumerate(shapes.values())}
    ck = {"state_dict": sd, "optimizer_states": [{"state": state, "param_groups": [
        {"params": list(range(len(shapes))), "param_names": list(shapes)}]}], "global_step": 6}
    t = time.perf_counter()
    torch.save(ck, out)
    with open(out, "rb") as f:
        os.fsync(f.fileno())
    save_s = time.perf_counter() - t
    del ck, sd, state
    t = time.perf_counter()
    back = torch.load(out, map_location="cpu", weights_only=True)
    load_s = time.perf_counter() - t
    assert len(back["state_dict"]) == len(shapes)
    print(json.dumps({"save_s": save_s, "load_s": load_s, "bytes": os.path.getsize(out)}))
    os.remove(out)


if __name__ == "__main__":
    main()
