//! `megatron-trainer predict`: runs a trained model (a `.nemo`) over
//! `spec.data.test` (labels optional) and writes the task's standard
//! predictions file: SQuAD `{"id": "answer"}` JSON, one label per word per
//! line, or one class per line.

use std::path::PathBuf;

use clap::Args;
use crds::Split;
use megatron_trainer::job::JobResult;

use super::args::JobArgs;
use super::evaluate::evaluate_split;

/// `predict` arguments.
#[derive(Args, Clone, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Where to write the predictions.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Use the weights of a training checkpoint (a `step-NNNNNNNNNNNN`
    /// directory) instead of a .nemo; the architecture comes from the spec.
    #[arg(long, value_name = "DIR")]
    pub training_checkpoint: Option<PathBuf>,
}

/// Runs `predict`; returns the exit code.
pub fn run(args: &PredictArgs) -> JobResult<i32> {
    let count = evaluate_split(
        &args.job,
        false,
        args.training_checkpoint.as_deref(),
        |_, loaded| {
            let evaluation = loaded.task.evaluate(&loaded.model, Split::Test)?;
            loaded.task.write_predictions(&evaluation, &args.output)?;
            Ok(loaded.task.num_features(Split::Test))
        },
    )?;
    eprintln!(
        "wrote predictions for {count} test features to {}",
        args.output.display()
    );
    Ok(0)
}
