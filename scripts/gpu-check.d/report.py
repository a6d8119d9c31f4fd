"""Judges gpu-check's raw measurements: limits, goals, ratios and MFU in one
place. Writes OUT/gpu-check.json, prints the short table last and exits 1 when
a step errored, timed out or missed a limit (goals are reported, not enforced).

  python report.py pick-batch --work DIR --default N    micro batch for the speed step
  python report.py summarize --work DIR --out DIR --device D --tiny 0|1 --wall S --command CMD

Status of a step: ok | fail (ran, a limit missed) | error (crashed or timed
out: the error is the end of its log) | skipped (with the reason).

bf16 exactness is the relative L2 error of our bf16 run against HF's bf16
run on the same card (logits and loss; all gradients together): at most
1e-2, or at most sqrt(2) x HF's own bf16-vs-fp32 error when that bound is
larger. Two correct bf16 runs that each miss fp32 by about f, with rounding
errors of their own, differ by about sqrt(2) f; on small models f alone can
pass 1e-2. Both sides' bf16-vs-fp32 errors are reported too.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

LIMITS = {"fp32_abs": 1e-4, "fp32_grad_rel": 1e-4, "bf16_rel": 1e-2, "tp2": 1e-4}
GOALS = {"mfu": 0.45, "speed_ratio": 1.1, "memory_ratio": 1.0}
FLOP_FORMULA = (
    "6*T*(L*(4h^2 + 2h*f) + 2h) + 12*T*L*s*h with T = batch*seq tokens: the matmul FLOPs of "
    "forward (1/3) and backward (2/3) of the QKV/output/MLP projections and the QA head, plus "
    "attention's QK^T and AV; embeddings and elementwise ops not counted"
)


def load(work, step, name):
    path = os.path.join(work, step, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def log_tail(out, step, n=15):
    try:
        with open(os.path.join(out, f"{step}.log"), errors="replace") as f:
            return "".join(f.readlines()[-n:]).strip()
    except OSError:
        return ""


def flops_per_step(s):
    h, L, f = s["hidden"], s["layers"], s["ffn"]
    tokens = s["batch"] * s["seq"]
    return 6 * tokens * (L * (4 * h * h + 2 * h * f) + 2 * h) + 12 * tokens * L * s["seq"] * h


def ratio(a, b):
    return a / b if a is not None and b else None


def exactness(work):
    hf, ours = load(work, "exactness", "hf"), load(work, "exactness", "ours")
    if not ours:
        return None, {}
    tp = ours["tp2"]
    fig = {
        "fp32_max_abs_diff": max(ours["fp32_logits_max_abs_diff"], ours["fp32_loss_abs_diff"]),
        "fp32_grad_max_rel_diff": ours["fp32_grad_max_rel_diff"],
        "bf16_rel_err": max(ours["bf16_logits_rel_err"], ours["bf16_loss_rel_err"]),
        "bf16_grads_rel_err": ours["bf16_grads_rel_err"],
        "hf_bf16_vs_fp32_rel_err": ours["hf_bf16_vs_fp32_logits_rel_err"],
        "hf_bf16_vs_fp32_grads_rel_err": ours["hf_bf16_vs_fp32_grads_rel_err"],
        "ours_bf16_vs_fp32_rel_err": ours["ours_bf16_vs_fp32_logits_rel_err"],
        "ours_bf16_vs_fp32_grads_rel_err": ours["ours_bf16_vs_fp32_grads_rel_err"],
        "bf16_limit": max(LIMITS["bf16_rel"], 2**0.5 * ours["hf_bf16_vs_fp32_logits_rel_err"]),
        "bf16_grads_limit": max(LIMITS["bf16_rel"], 2**0.5 * ours["hf_bf16_vs_fp32_grads_rel_err"]),
        "tp2_max_abs_diff": max(tp["logits_max_abs_diff_vs_tp1"], tp["loss_abs_diff_vs_tp1"]),
        "tp2_grad_max_rel_diff": tp["grad_max_rel_diff_vs_tp1"],
        "tf32": ours["tf32_cublas"] or bool((hf or {}).get("hf_tf32_matmul")),
        "shape": ours["shape"],
        "raw": {"ours": ours, "hf": hf},
    }
    checks = {
        "fp32_max_abs_diff": fig["fp32_max_abs_diff"] <= LIMITS["fp32_abs"],
        "fp32_grad_max_rel_diff": fig["fp32_grad_max_rel_diff"] <= LIMITS["fp32_grad_rel"],
        "bf16_rel_err": fig["bf16_rel_err"] <= fig["bf16_limit"],
        "bf16_grads_rel_err": fig["bf16_grads_rel_err"] <= fig["bf16_grads_limit"],
        "tp2_max_abs_diff": fig["tp2_max_abs_diff"] <= LIMITS["tp2"],
        "tp2_grad_max_rel_diff": fig["tp2_grad_max_rel_diff"] <= LIMITS["tp2"],
        "tf32_off": not fig["tf32"],
    }
    return checks, fig


def nccl(work):
    ours, ref = load(work, "nccl", "ours"), load(work, "nccl", "torch")
    if not ours:
        return None, {}
    if "skipped" in ours:
        return "skipped", {"skipped": ours["skipped"], "torch": ref}
    fig = {
        "init_s": ours["init_s"],
        "allreduce_mib": ours["allreduce_bytes"] / 2**20,
        "allreduce_ms_ours": ours["allreduce_s_median"] * 1e3,
        "allreduce_ms_torch": ref and ref["allreduce_s_median"] * 1e3,
        "allreduce_ratio_ours_over_torch": ratio(ours["allreduce_s_median"], ref and ref["allreduce_s_median"]),
        "two_ranks_one_gpu": ours["two_ranks_one_gpu"],
        "nccl_version_torch": ref and ref.get("nccl_version"),
        "world_size": 1,
    }
    checks = {k: bool(ours[k]) for k in ("all_reduce_ok", "all_gather_ok", "broadcast_ok")}
    checks["torch_reference_ran"] = ref is not None and "allreduce_s_median" in ref
    return checks, fig


def memory(work):
    ours, hf = load(work, "memory", "ours"), load(work, "memory", "hf")
    so, sh = load(work, "speed", "ours"), load(work, "speed", "hf")
    if not ours or not hf:
        return None, {}
    fig = {
        "largest_batch_ours": ours["largest_batch"],
        "largest_batch_hf": hf["largest_batch"],
        "largest_capped": {"ours": ours["capped"], "hf": hf["capped"]},
        "probes": {"ours": ours["probes"], "hf": hf["probes"]},
    }
    if so and sh:
        fig.update(
            at_batch=so["batch"],
            peak_mem_mib_ours=so["peak_mem_mib"],
            peak_mem_mib_hf=sh["peak_mem_mib"],
            peak_mem_kind=so["peak_mem_kind"],
            peak_mem_ratio_ours_over_hf=ratio(so["peak_mem_mib"], sh["peak_mem_mib"]),
            hf_torch_max_allocated_mib=sh.get("torch_max_allocated_mib"),
        )
        fig["goal_memory_ratio_met"] = fig["peak_mem_ratio_ours_over_hf"] <= GOALS["memory_ratio"]
    return {"both_searches_found_a_batch": ours["largest_batch"] > 0 and hf["largest_batch"] > 0}, fig


def speed(work):
    ours, hf, peak = (load(work, "speed", n) for n in ("ours", "hf", "peak"))
    if not ours or not hf or not peak:
        return None, {}
    flops = flops_per_step(ours)
    tokens = ours["batch"] * ours["seq"]
    fig = {
        "batch": ours["batch"],
        "seq": ours["seq"],
        "params": ours["params"],
        "step_ms_ours": ours["step_s_median"] * 1e3,
        "step_ms_hf": hf["step_s_median"] * 1e3,
        "tokens_per_s_ours": tokens / ours["step_s_median"],
        "tokens_per_s_hf": tokens / hf["step_s_median"],
        "speed_ratio_ours_over_hf": hf["step_s_median"] / ours["step_s_median"],
        "flops_per_step": flops,
        "flop_formula": FLOP_FORMULA,
        "peak_bf16_tflops": peak["peak_bf16_flops"] / 1e12,
        "mfu_ours": flops / ours["step_s_median"] / peak["peak_bf16_flops"],
        "mfu_hf": flops / hf["step_s_median"] / peak["peak_bf16_flops"],
        "hf_attn_implementation": hf.get("hf_attn_implementation"),
    }
    fig["goal_mfu_met"] = fig["mfu_ours"] >= GOALS["mfu"]
    fig["goal_speed_ratio_met"] = fig["speed_ratio_ours_over_hf"] >= GOALS["speed_ratio"]
    checks = {"losses_finite": all(isinstance(x, float) and x == x for x in (ours["last_loss"], hf["last_loss"]))}
    return checks, fig


def checkpoint(work):
    ours = load(work, "checkpoint", "ours")
    if not ours:
        return None, {}
    fig = {
        "save_s": ours["save_s"],
        "load_s": ours["load_s"],
        "file_mib": ours["file_bytes"] / 2**20,
        "steps_compared": ours["steps_compared"],
        "resumed_from_step": ours["resumed_from_step"],
        "bit_exact": ours["losses_bit_exact"] and ours["weights_bit_exact"],
        "deterministic_algorithms": ours["deterministic_algorithms"],
        "raw": ours,
    }
    return {"bit_exact": fig["bit_exact"], "five_steps": ours["steps_compared"] == 5}, fig


JUDGES = {"exactness": exactness, "nccl": nccl, "memory": memory, "speed": speed, "checkpoint": checkpoint}


def judge(work, out, name, rc, seconds, limit):
    entry = {"seconds": seconds, "limit_s": limit, "exit": rc, "log": f"{name}.log"}
    try:
        checks, fig = JUDGES[name](work)
    except (KeyError, TypeError, ValueError) as e:
        checks, fig = None, {"judge_error": f"{type(e).__name__}: {e}"}
    entry["figures"] = fig
    if rc in (124, 137):
        entry.update(status="error", error=f"timed out after {limit} s\n{log_tail(out, name)}")
    elif rc != 0:
        entry.update(status="error", error=f"exit {rc}\n{log_tail(out, name)}")
    elif checks is None:
        entry.update(status="error", error=fig.get("judge_error", "no figures written") + "\n" + log_tail(out, name))
    elif checks == "skipped":
        entry.update(status="skipped", reason=fig["skipped"])
    else:
        entry["checks"] = checks
        failed = [k for k, ok in checks.items() if not ok]
        entry["status"] = "fail" if failed else "ok"
        if failed:
            entry["error"] = "missed: " + ", ".join(failed)
    return entry


def gpu_meta():
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()[0]
        card, driver = (x.strip() for x in line.split(",", 1))
        return card, driver
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None, None


def fmt(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def table(steps):
    """(step, figure, ours, reference, ratio, limit or goal) rows."""
    rows = []
    g = lambda s: steps[s].get("figures", {})
    e, n, m, sp, c = (g(s) for s in ("exactness", "nccl", "memory", "speed", "checkpoint"))
    rows += [
        ("exactness", "fp32 max|diff| vs HF", fmt(e.get("fp32_max_abs_diff")), "HF", "", "<= 1e-4"),
        ("exactness", "fp32 grad rel diff", fmt(e.get("fp32_grad_max_rel_diff")), "HF", "", "<= 1e-4"),
        ("exactness", "bf16 rel err vs HF", fmt(e.get("bf16_rel_err")), "HF", "",
         f"<= {fmt(e.get('bf16_limit'))}"),
        ("exactness", "bf16 grads rel err", fmt(e.get("bf16_grads_rel_err")), "HF", "",
         f"<= {fmt(e.get('bf16_grads_limit'))}"),
        ("exactness", "TP=2 max|diff| vs TP=1", fmt(e.get("tp2_max_abs_diff")), "TP=1", "", "<= 1e-4"),
    ]
    if steps["nccl"]["status"] == "skipped":
        rows.append(("nccl", steps["nccl"]["reason"], "-", "-", "", ""))
    else:
        rows += [
            ("nccl", "init+allreduce+gather+bcast", fmt(steps["nccl"].get("status") == "ok"), "", "", "all ok"),
            ("nccl", f"{fmt(n.get('allreduce_mib'), '.0f')} MiB all-reduce ms", fmt(n.get("allreduce_ms_ours")),
             fmt(n.get("allreduce_ms_torch")), fmt(n.get("allreduce_ratio_ours_over_torch"), ".2f"), "world 1"),
            ("nccl", "2 ranks on 1 GPU", str(n.get("two_ranks_one_gpu", "-"))[:40], "", "", "NCCL refuses"),
        ]
    rows += [
        ("memory", "largest micro batch", fmt(m.get("largest_batch_ours")), fmt(m.get("largest_batch_hf")),
         fmt(ratio(m.get("largest_batch_ours"), m.get("largest_batch_hf")), ".2f"), ""),
        ("memory", f"peak MiB @ batch {fmt(m.get('at_batch'))}", fmt(m.get("peak_mem_mib_ours"), ".0f"),
         fmt(m.get("peak_mem_mib_hf"), ".0f"), fmt(m.get("peak_mem_ratio_ours_over_hf"), ".2f"), "goal <= 1.0x"),
        ("speed", f"tokens/s @ batch {fmt(sp.get('batch'))}", fmt(sp.get("tokens_per_s_ours"), ".4g"),
         fmt(sp.get("tokens_per_s_hf"), ".4g"), fmt(sp.get("speed_ratio_ours_over_hf"), ".2f"), "goal >= 1.1x"),
        ("speed", f"MFU (peak {fmt(sp.get('peak_bf16_tflops'), '.4g')} TF/s)", fmt(sp.get("mfu_ours"), ".1%"),
         fmt(sp.get("mfu_hf"), ".1%"), "", "goal >= 45%"),
        ("checkpoint", "save / load s", f"{fmt(c.get('save_s'))} / {fmt(c.get('load_s'))}",
         f"{fmt(c.get('file_mib'), '.0f')} MiB", "", ""),
        ("checkpoint", "resume bit-exact, 5 steps", fmt(c.get("bit_exact")), "", "", "yes"),
    ]
    return rows


def summarize(a):
    steps = {}
    with open(os.path.join(a.work, "steps.tsv")) as f:
        for line in f:
            name, rc, ms, limit = line.rstrip("\n").split("\t")
            steps[name] = judge(a.work, a.out, name, int(rc), int(ms) / 1e3, int(limit))
    for name in JUDGES:  # a step the script never reached
        steps.setdefault(name, {"status": "error", "error": "not run", "figures": {}})
    card, driver = gpu_meta() if a.device == "cuda" else (None, None)
    meta = {
        "device": a.device, "tiny": a.tiny == "1", "card": card, "driver": driver,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": a.command, "wall_s": a.wall, "limits": LIMITS, "goals": GOALS,
    }
    rows = table(steps)
    report = {"meta": meta, "steps": steps, "table": rows}
    with open(os.path.join(a.out, "gpu-check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    bad = [n for n, s in steps.items() if s["status"] in ("error", "fail")]
    for n in bad:
        print(f"--- {n}: {steps[n]['status']}: {steps[n].get('error', '')}\n")
    print(f"gpu-check {a.device}{' --tiny' if meta['tiny'] else ''}: {card or '-'}, driver {driver or '-'}, "
          f"{meta['date']}, {a.wall} s")
    print("  ".join(f"{n}={s['status']}" for n, s in steps.items()))
    head = ("step", "figure", "ours", "reference", "ratio", "limit/goal")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    return 1 if bad else 0


def pick_batch(a):
    """The largest micro batch both sides fit (the memory step's result), else --default."""
    try:
        both = [load(a.work, "memory", s)["largest_batch"] for s in ("ours", "hf")]
        print(min(both) if min(both) > 0 else a.default)
    except (TypeError, KeyError):
        print(a.default)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pick-batch")
    p.add_argument("--work", required=True)
    p.add_argument("--default", type=int, required=True)
    s = sub.add_parser("summarize")
    for k in ("--work", "--out", "--device", "--tiny", "--command"):
        s.add_argument(k, required=True)
    s.add_argument("--wall", type=int, required=True)
    a = ap.parse_args()
    sys.exit(pick_batch(a) if a.cmd == "pick-batch" else summarize(a))


if __name__ == "__main__":
    main()
