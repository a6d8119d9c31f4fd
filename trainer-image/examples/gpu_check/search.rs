//! Step 4, our side: the largest micro batch whose training step fits, by
//! bisection over `--candidates`. Each candidate runs as a child process
//! (`speed --warmup 1 --steps 1`): a CUDA out-of-memory error can surface as
//! an `Err` or as a panic on libtorch's side of an op, and a process that
//! hit one may keep fragmented or leaked device memory, so only a fresh
//! process gives the next probe the whole card. A child that fails for any
//! other reason fails the search instead of being read as "does not fit".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::child;
use super::error::{GpuCheckError, Result};
use super::shape::Shape;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub device: String,
    #[command(flatten)]
    pub shape: Shape,
    /// Candidate micro batches, ascending, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub candidates: Vec<i64>,
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    #[arg(long, default_value_t = 0)]
    pub simulate_oom_above: i64,
    /// Limit for one probe.
    #[arg(long, default_value_t = 120)]
    pub probe_timeout_s: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn probe(a: &Args, batch: i64) -> Result<bool> {
    let mut args: Vec<String> = [
        "speed",
        "--device",
        &a.device,
        "--batch",
        &batch.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(a.shape.to_args());
    for (k, v) in [
        ("--warmup", 1),
        ("--steps", 1),
        ("--threads", a.threads as i64),
        ("--simulate-oom-above", a.simulate_oom_above),
    ] {
        args.extend([k.to_string(), v.to_string()]);
    }
    let c = child::spawn(&args, &[])?;
    let f = child::wait_all(vec![c], Duration::from_secs(a.probe_timeout_s))?
        .pop()
        .ok_or_else(|| GpuCheckError::Arg("no probe result".into()))?;
    if f.success {
        return Ok(true);
    }
    if !f.timed_out && is_oom(&f.stderr) {
        return Ok(false);
    }
    Err(child::failed(&format!("probe at micro batch {batch}"), &f))
}

/// Whether a probe died of memory: libtorch's caching allocator says "CUDA
/// out of memory"; cuBLAS or cuDNN may instead fail to allocate a handle or
/// workspace when the card is full.
fn is_oom(stderr: &str) -> bool {
    let s = stderr.to_lowercase();
    [
        "out of memory",
        "status_alloc_failed",
        "not_enough_workspace",
    ]
    .iter()
    .any(|m| s.contains(m))
}

pub fn run(a: &Args) -> Result<Value> {
    let c = &a.candidates;
    if c.is_empty() || c.windows(2).any(|w| w[0] >= w[1]) {
        return Err(GpuCheckError::Arg(
            "--candidates must be ascending and non-empty".into(),
        ));
    }
    let (mut lo, mut hi) = (-1i64, c.len() as i64);
    let mut probes = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let b = c[mid as usize];
        let t0 = Instant::now();
        let fits = probe(a, b)?;
        eprintln!(
            "micro batch {b}: {} ({:.1} s)",
            if fits { "fits" } else { "does not fit" },
            t0.elapsed().as_secs_f64()
        );
        probes.insert(b.to_string(), fits);
        seconds.insert(b.to_string(), t0.elapsed().as_secs_f64());
        if fits {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let largest = if lo >= 0 { c[lo as usize] } else { 0 };
    Ok(json!({
        "largest_batch": largest,
        "capped": lo == c.len() as i64 - 1,
        "probes": probes,
        "probe_s": seconds,
    }))
}
