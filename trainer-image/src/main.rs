//! `megatron-trainer`: the program each rank pod runs.
//!
//! Exit codes: 0 success, 2 invalid input or config (not worth retrying),
//! 1 any other failure (may be retried).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use megatron_trainer::checkpoint::{CheckpointError, inspect};

#[derive(Parser)]
#[command(
    name = "megatron-trainer",
    version,
    about = "Megatron-BERT fine-tuning with tensor parallelism"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a checkpoint: format, iteration, checkpoint_version, config,
    /// tensor-parallel size and its tensors (Megatron-LM directory or file,
    /// any torch.save file, Hugging Face safetensors directory).
    Inspect {
        /// Checkpoint root, iteration directory, rank file or HF directory.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Inspect { path, json } => match inspect::inspect(&path) {
            Ok(report) => {
                let text = if json {
                    match serde_json::to_string_pretty(&report) {
                        Ok(s) => s + "\n",
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(1);
                        }
                    }
                } else {
                    report.to_text()
                };
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &CheckpointError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(if e.is_invalid_input() { 2 } else { 1 })
}
