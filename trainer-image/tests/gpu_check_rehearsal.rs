//! Rehearses `scripts/gpu-check` (issue 14's one-call GPU check) on the CPU
//! with tiny shapes, so the device minutes go to measuring, not debugging:
//! every step runs through the same script, Rust code (the `gpu_check`
//! example's) and Python reference scripts as on the card, and the test reads
//! the figures back from `gpu-check.json`.
//!
//! This test binary is also the script's `--bin`: it compiles the example's
//! modules in (a test cannot depend on an example target, and building the
//! example from here with a nested cargo would use another feature set than
//! the outer invocation and rebuild dependencies), and when called with one
//! of the example's subcommands it is that CLI. Hence `harness = false`.
//!
//! On the CPU the NCCL step must say `skipped: no CUDA`; the batch searches
//! run against a simulated full card (`--simulate-oom-above`: ours fits 4,
//! Hugging Face 2), so the searches' "does not fit" path runs too. A second
//! test gives the script a binary that always fails and checks that every
//! step is recorded as an error and the script still runs to the end and
//! exits non-zero.

#[path = "support/common.rs"]
mod common;
#[path = "../examples/gpu_check/main.rs"]
mod gpu_check;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn run_script(out_dir: &Path, bin: &Path) -> (Output, f64) {
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/gpu-check"))
        .args(["--device", "cpu", "--tiny", "--out"])
        .arg(out_dir)
        .arg("--bin")
        .arg(bin)
        .env("MEGATRON_PYTHON", common::python())
        .output()
        .expect("running scripts/gpu-check");
    (out, t0.elapsed().as_secs_f64())
}

fn report(out_dir: &Path) -> Value {
    let path = out_dir.join("gpu-check.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("gpu-check.json is JSON")
}

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gpu-check-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn gpu_check_runs_every_step_on_the_cpu() {
    let bin = std::env::current_exe().expect("this test binary");
    let dir = fresh_dir("cpu");
    let (out, secs) = run_script(&dir, &bin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("scripts/gpu-check --device cpu --tiny: {secs:.1} s\n{stdout}");
    let r = report(&dir);
    let status = |s: &str| r["steps"][s]["status"].as_str().unwrap_or("?").to_string();
    for step in ["exactness", "memory", "speed", "checkpoint"] {
        assert_eq!(
            status(step),
            "ok",
            "{step}: {:#}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            r["steps"][step]
        );
        let log = dir.join(format!("{step}.log"));
        assert!(
            std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
            "{} is missing or empty",
            log.display()
        );
    }
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    // No GPU here: NCCL is skipped, saying why, and that is not a failure.
    assert_eq!(status("nccl"), "skipped");
    assert_eq!(r["steps"]["nccl"]["reason"], "skipped: no CUDA");

    let e = "/steps/exactness/figures";
    assert!(num(&r, &format!("{e}/fp32_max_abs_diff")) <= 1e-5);
    assert!(num(&r, &format!("{e}/fp32_grad_max_rel_diff")) <= 1e-5);
    // bf16: within 1e-2, or within sqrt(2) x HF's own bf16-vs-fp32 error (report.py).
    for (err, limit) in [
        ("bf16_rel_err", "bf16_limit"),
        ("bf16_grads_rel_err", "bf16_grads_limit"),
    ] {
        let (err, limit) = (
            num(&r, &format!("{e}/{err}")),
            num(&r, &format!("{e}/{limit}")),
        );
        assert!(err <= limit && limit <= 2e-2, "{err} vs {limit}");
    }
    assert!(num(&r, &format!("{e}/tp2_max_abs_diff")) <= 1e-5);
    assert!(num(&r, &format!("{e}/tp2_grad_max_rel_diff")) <= 1e-5);
    assert_eq!(r.pointer(&format!("{e}/tf32")), Some(&Value::Bool(false)));

    // The simulated card: ours fits micro batch 4, HF 2; both are timed at 2.
    let m = "/steps/memory/figures";
    assert_eq!(num(&r, &format!("{m}/largest_batch_ours")), 4.0);
    assert_eq!(num(&r, &format!("{m}/largest_batch_hf")), 2.0);
    assert_eq!(
        r.pointer(&format!("{m}/probes/ours/8")),
        Some(&Value::Bool(false))
    );
    assert!(num(&r, &format!("{m}/peak_mem_mib_ours")) > 0.0);
    assert!(num(&r, &format!("{m}/peak_mem_ratio_ours_over_hf")) > 0.0);
    let s = "/steps/speed/figures";
    assert_eq!(num(&r, &format!("{s}/batch")), 2.0);
    for k in ["tokens_per_s_ours", "tokens_per_s_hf", "mfu_ours", "mfu_hf"] {
        let v = num(&r, &format!("{s}/{k}"));
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    assert!(num(&r, &format!("{s}/peak_bf16_tflops")) > 0.0);

    let c = "/steps/checkpoint/figures";
    assert_eq!(
        r.pointer(&format!("{c}/bit_exact")),
        Some(&Value::Bool(true))
    );
    assert_eq!(num(&r, &format!("{c}/steps_compared")), 5.0);
    assert_eq!(num(&r, &format!("{c}/resumed_from_step")), 5.0);
    assert!(num(&r, &format!("{c}/save_s")) > 0.0 && num(&r, &format!("{c}/load_s")) > 0.0);

    // The table comes last.
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("checkpoint") && last.contains("bit-exact"),
        "{stdout}"
    );
}

fn a_failing_step_is_recorded_and_the_script_goes_on() {
    let dir = fresh_dir("failing");
    let (out, _) = run_script(&dir, Path::new("/bin/false"));
    assert!(!out.status.success(), "exit {:?}", out.status);
    let r = report(&dir);
    for step in ["exactness", "nccl", "memory", "speed", "checkpoint"] {
        let s = &r["steps"][step];
        assert_eq!(s["status"], "error", "{step}: {s:#}");
        assert!(
            s["error"].as_str().is_some_and(|e| e.starts_with("exit 1")),
            "{step}: {s:#}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exactness=error"), "{stdout}");
}

type Rehearsal = (&'static str, fn());

const TESTS: [Rehearsal; 2] = [
    (
        "gpu_check_runs_every_step_on_the_cpu",
        gpu_check_runs_every_step_on_the_cpu,
    ),
    (
        "a_failing_step_is_recorded_and_the_script_goes_on",
        a_failing_step_is_recorded_and_the_script_goes_on,
    ),
];

/// The gpu_check CLI when called with one of its subcommands; otherwise the
/// two rehearsals, one after the other (they share two cores), filtered by
/// the first free argument like libtest, with libtest's `--list`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| gpu_check::SUBCOMMANDS.contains(&a.as_str()))
    {
        gpu_check::main();
        return;
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filter.is_none_or(|f| name.contains(f.as_str())))
        .collect();
    let mut failed = 0;
    for (name, test) in &selected {
        let t0 = Instant::now();
        let ok = std::panic::catch_unwind(*test).is_ok();
        println!(
            "test {name} ... {} ({:.1} s)",
            if ok { "ok" } else { "FAILED" },
            t0.elapsed().as_secs_f64()
        );
        failed += usize::from(!ok);
    }
    println!("{} passed, {failed} failed", selected.len() - failed);
    if failed > 0 {
        std::process::exit(101);
    }
}
