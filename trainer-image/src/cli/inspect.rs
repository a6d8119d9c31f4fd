//! `megatron-trainer inspect`: describes a checkpoint or a `.nemo` archive.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use megatron_trainer::checkpoint::inspect;
use megatron_trainer::job::{JobError, JobResult};

/// `inspect` arguments.
#[derive(Args, Clone, Debug)]
pub struct InspectArgs {
    /// Checkpoint root, iteration directory, rank file, HF directory or .nemo archive.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `inspect`; returns the exit code.
pub fn run(args: &InspectArgs) -> JobResult<i32> {
    let report = inspect::inspect(&args.path)?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|source| JobError::EncodeJson {
            what: "the inspect report",
            source,
        })? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}
