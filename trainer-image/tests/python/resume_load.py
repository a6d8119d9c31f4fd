"""Opens a training checkpoint written by megatron-trainer with
torch.load(weights_only=True) and reports what Python sees.

Usage: resume_load.py CKPT OUT_DIR
Writes OUT_DIR/summary.json (keys, scalars, shapes, dtypes) and
OUT_DIR/tensors.safetensors (state_dict.*, opt.<name>.exp_avg[_sq], rng.*,
rng.draw = torch.rand(5, float64) after torch.set_rng_state(torch_rng_state))
so the Rust test compares values exactly.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file


def main():
    path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    opt = ck["optimizer_states"][0]
    group = opt["param_groups"][0]
    names = group["param_names"]
    tensors = {}
    for k, v in ck["state_dict"].items():
        tensors["state_dict." + k] = v.contiguous()
    steps = {}
    step_dtypes = set()
    for idx, name in zip(group["params"], names):
        s = opt["state"][idx]
        tensors["opt." + name + ".exp_avg"] = s["exp_avg"].contiguous()
        tensors["opt." + name + ".exp_avg_sq"] = s["exp_avg_sq"].contiguous()
        steps[name] = s["step"].item()
        step_dtypes.add((str(s["step"].dtype), tuple(s["step"].shape)))
    rng = ck["rng_states"]
    for k in ("torch_rng_state", "cuda_rng_state"):
        if k in rng:
            tensors["rng." + k] = rng[k]
    if "torch_rng_state" in rng:
        torch.set_rng_state(rng["torch_rng_state"])
        tensors["rng.draw"] = torch.rand(5, dtype=torch.float64)
    if "rng_tracker_states" in rng:
        for k, v in rng["rng_tracker_states"].items():
            tensors["rng.tracker." + k] = v
    save_file(tensors, os.path.join(out, "tensors.safetensors"))
    summary = {
        "keys": sorted(ck.keys()),
        "format": ck["format"],
        "format_version": ck["format_version"],
        "global_step": ck["global_step"],
        "epoch": ck["epoch"],
        "fractional_epoch": ck["fractional_epoch"],
        "data_position": ck["data_position"],
        "consumed_samples": ck["consumed_samples"],
        "tp_rank": ck["tp_rank"],
        "tp_size": ck["tp_size"],
        "lr_schedulers": ck["lr_schedulers"],
        "early_stopping": ck["early_stopping"],
        "native_amp_scaling_state": ck.get("native_amp_scaling_state"),
        "hyper_parameters": ck["hyper_parameters"],
        "state_dict_is_ordered": type(ck["state_dict"]).__name__,
        "shapes": {k: list(v.shape) for k, v in ck["state_dict"].items()},
        "dtypes": sorted({str(v.dtype) for v in ck["state_dict"].values()}),
        "param_names": names,
        "steps": steps,
        "step_dtypes": sorted([list(x) for x in step_dtypes]),
        "rng_dtypes": sorted({str(v.dtype) for k, v in tensors.items() if k.startswith("rng.") and k != "rng.draw"}),
        "torch": torch.__version__,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
