//! The Rust side of `scripts/gpu-check` (issue 14: the GPU path on a real
//! card): one binary, so the device bundle carries one release build. Each
//! subcommand measures one thing and writes its raw figures as JSON
//! (`--json PATH`, and the last line of stdout); the script compares them
//! with the Python reference runs and judges them in `report.py`.
//!
//! ```text
//! exactness  --device D --ref DIR             fp32/bf16 vs HF, TP=2 vs TP=1 (step 1)
//! nccl       --device D [--mib 256]           the project's NCCL path at world size 1 (step 2)
//! search     --device D --candidates 8,16,..  largest micro batch that fits (step 4)
//! speed      --device D --batch N             bf16 fine-tuning step time, memory (steps 3, 4)
//! checkpoint --device D --dir DIR             save/load and bit-exact resume (step 5)
//! ```
//! `cuda-info` prints what libtorch says about CUDA (for the log).
//! `tp-rank` and `nccl-dup-rank` are the child processes of `exactness` and
//! `nccl`. `--device cpu` runs everything on the CPU (the rehearsal), where
//! `nccl` reports `skipped: no CUDA`.

mod checkpoint;
mod child;
mod compare;
mod cuda;
mod error;
mod exactness;
mod host_staged;
mod nccl_check;
mod project_nccl;
mod qa_task;
mod search;
mod shape;
mod speed;
mod tp_rank;

use std::path::Path;

use clap::{Parser, Subcommand};
use serde_json::Value;

use error::{Result, io};

#[derive(Parser, Debug)]
#[command(about = "GPU checks of megatron-trainer (driven by scripts/gpu-check)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Exactness(exactness::Args),
    TpRank(tp_rank::Args),
    Nccl(nccl_check::Args),
    NcclDupRank(nccl_check::DupArgs),
    Search(search::Args),
    Speed(speed::Args),
    Checkpoint(checkpoint::Args),
    /// What libtorch says about CUDA (written to env.log).
    CudaInfo,
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn emit(figures: &Value, path: Option<&Path>) -> Result<()> {
    let text = serde_json::to_string(figures)?;
    if let Some(p) = path {
        std::fs::write(p, &text).map_err(io(format!("writing {}", p.display())))?;
    }
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Exactness(a) => emit(&exactness::run(&a)?, a.json.as_deref()),
        Cmd::TpRank(a) => tp_rank::run(&a),
        Cmd::Nccl(a) => emit(&nccl_check::run(&a)?, a.json.as_deref()),
        Cmd::NcclDupRank(a) => nccl_check::dup_rank(&a),
        Cmd::Search(a) => emit(&search::run(&a)?, a.json.as_deref()),
        Cmd::Speed(a) => emit(&speed::run(&a)?, a.json.as_deref()),
        Cmd::Checkpoint(a) => emit(&checkpoint::run(&a)?, a.json.as_deref()),
        Cmd::CudaInfo => emit(&cuda::info(), None),
    }
}

/// The subcommands (a test that hosts this code recognizes its CLI calls by them).
#[allow(dead_code)]
pub(crate) const SUBCOMMANDS: [&str; 8] = [
    "exactness",
    "tp-rank",
    "nccl",
    "nccl-dup-rank",
    "search",
    "speed",
    "checkpoint",
    "cuda-info",
];

pub(crate) fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("gpu_check: error: {e}");
        std::process::exit(1);
    }
}
