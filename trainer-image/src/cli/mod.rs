//! The command line: `train`, `evaluate`, `predict`, `inspect`, `convert`.
//!
//! Exit codes: 0 success; 2 invalid input or configuration (not worth
//! retrying; the reason also goes to `/dev/termination-log`); 1 any other
//! failure (may be retried). A launcher of several local ranks exits with
//! the first failed rank's code.

mod args;
mod convert;
mod evaluate;
mod inspect;
mod predict;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use megatron_trainer::job::{JobError, termination};

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
    /// Fine-tune (or, with spec.mode Evaluate, evaluate) as the spec says:
    /// what every rank pod runs, and a local run with --output-dir.
    Train(train::TrainArgs),
    /// Score a .nemo (or a training checkpoint) on the test split; writes the metrics JSON.
    Evaluate(evaluate::EvaluateArgs),
    /// Run a .nemo (or a training checkpoint) over the test split; writes the task's
    /// predictions file.
    Predict(predict::PredictArgs),
    /// Describe a checkpoint: format, iteration, checkpoint_version, config,
    /// tensor-parallel size and its tensors (Megatron-LM directory or file,
    /// any torch.save file, Hugging Face safetensors directory); or a .nemo:
    /// task and head, architecture, vocabulary, labels and weights.
    Inspect(inspect::InspectArgs),
    /// Convert between Megatron-LM checkpoints and .nemo archives, or change
    /// the tensor-parallel size.
    Convert(convert::ConvertArgs),
}

/// Parses the command line, runs the subcommand and maps the outcome to
/// the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_tracing();
    let result = match &cli.command {
        Command::Train(a) => train::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => fail(&e),
    }
}

fn fail(e: &JobError) -> ExitCode {
    let message = e.to_string();
    eprintln!("error: {message}");
    if e.is_invalid_input() {
        termination::write_termination_message(&message);
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MEGATRON_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MEGATRON_LOG_FORMAT").is_ok_and(|f| f == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(megatron_trainer::progress::log_tee::writer);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
