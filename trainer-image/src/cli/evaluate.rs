//! `megatron-trainer evaluate`: scores a trained model (a `.nemo`, or a
//! training checkpoint with `--training-checkpoint`) on the test split and
//! writes the metrics as JSON (`{"test_f1": ..}`), the same numbers `train`
//! reports for its test split. One process, the model merged to
//! tensor-parallel size 1.

use std::path::{Path, PathBuf};

use clap::Args;
use crds::{Mode, Split};
use megatron_trainer::checkpoint::megatron::reshard_repad;
use megatron_trainer::job::{JobError, JobResult, RankIdentity};
use megatron_trainer::model::{BertTaskModel, StateDict, merge_shards};
use megatron_trainer::resume::contents;
use megatron_trainer::task::write_metrics_json;

use super::args::JobArgs;
use megatron_trainer::run::{self, Loaded, Session};

/// `evaluate` arguments.
#[derive(Args, Clone, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Where to write the metrics JSON.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write the predictions (the task's standard format) here.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Evaluate the weights of a training checkpoint (a `step-NNNNNNNNNNNN`
    /// directory `train` committed, any tensor-parallel size) instead of a
    /// .nemo; the architecture comes from the spec.
    #[arg(long, value_name = "DIR")]
    pub training_checkpoint: Option<PathBuf>,
}

/// Runs `evaluate`; returns the exit code.
pub fn run(args: &EvaluateArgs) -> JobResult<i32> {
    let evaluation = evaluate_split(
        &args.job,
        true,
        args.training_checkpoint.as_deref(),
        |session, loaded| {
            let evaluation = loaded.task.evaluate(&loaded.model, Split::Test)?;
            if let Some(path) = &args.predictions {
                loaded.task.write_predictions(&evaluation, path)?;
            }
            let _ = session;
            Ok(evaluation)
        },
    )?;
    write_metrics_json(&evaluation, &args.output)?;
    for (name, value) in &evaluation.metrics {
        println!("{name}\t{value}");
    }
    if let Some(report) = &evaluation.report {
        eprintln!("{report}");
    }
    Ok(0)
}

/// Loads the config as an evaluation of `spec.data.test` on one process
/// (TP = DP = 1) and runs `f` on the loaded model; `labelled` requires the
/// test split to carry labels.
pub fn evaluate_split<T>(
    job: &JobArgs,
    labelled: bool,
    training_checkpoint: Option<&Path>,
    f: impl FnOnce(&Session, &Loaded) -> JobResult<T>,
) -> JobResult<T> {
    let config = job.load(training_checkpoint.is_some(), |c| {
        let s = &mut c.spec;
        s.mode = Mode::Evaluate;
        s.parallelism.tensor_parallel_size = 1;
        s.parallelism.data_parallel_size = 1;
        s.parallelism.ranks_per_pod = 1;
        if s.parallelism.device == crds::Device::GPU && !tch::Cuda::is_available() {
            s.parallelism.device = crds::Device::CPU;
        }
        // Training settings are irrelevant here; keep the batch rule satisfied.
        s.training.global_batch_size = s.training.micro_batch_size;
        // Only the test split is read.
        s.data.train = None;
        s.data.validation = None;
        s.data.train_labels = None;
        s.data.validation_labels = None;
        s.checkpointing.best = None;
        s.training.early_stopping = None;
    })?;
    if config.spec.task.type_ == crds::TaskType::TokenClassification
        && labelled
        && config.spec.data.test_labels.is_none()
    {
        return Err(JobError::invalid(
            "evaluate needs labels: set spec.data.testLabels or pass --test-labels",
        ));
    }
    let cache = job.cache_dir();
    let work = match &job.output_dir {
        Some(d) => d.join("work"),
        None => std::env::temp_dir().join(format!("megatron-evaluate-{}", std::process::id())),
    };
    let session = run::connect(config, RankIdentity::single(), cache)?;
    let mut loaded = run::load(&session, &work, training_checkpoint.is_some())?;
    if let Some(dir) = training_checkpoint {
        load_training_checkpoint(dir, &mut loaded.model)?;
    }
    f(&session, &loaded)
}

/// Loads the weights of a committed training checkpoint set (every
/// `mp_rank_NN/*.ckpt`, merged to one shard, vocabulary re-padded) into `model`.
fn load_training_checkpoint(dir: &Path, model: &mut BertTaskModel) -> JobResult<()> {
    let bad =
        |m: String| JobError::invalid(format!("--training-checkpoint {}: {m}", dir.display()));
    let entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
    let mut rank_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("mp_rank_"))
        })
        .collect();
    rank_dirs.sort();
    if rank_dirs.is_empty() {
        return Err(bad(
            "no mp_rank_NN directories: pass a step-NNNNNNNNNNNN checkpoint directory".into(),
        ));
    }
    let mut shards = Vec::new();
    for (i, rank_dir) in rank_dirs.iter().enumerate() {
        let file = std::fs::read_dir(rank_dir)
            .map_err(|e| bad(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "ckpt"))
            .ok_or_else(|| bad(format!("no .ckpt file in {}", rank_dir.display())))?;
        let read = contents::read(&file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        if read.tp_rank != i || read.tp_size != rank_dirs.len() {
            return Err(bad(format!(
                "{} holds tensor-parallel rank {} of {}, expected {i} of {}",
                file.display(),
                read.tp_rank,
                read.tp_size,
                rank_dirs.len()
            )));
        }
        shards.push(read.state_dict);
    }
    let mut full: StateDict = merge_shards(&shards)?;
    let name = "embeddings.word_embeddings.weight";
    let rows = model.state_dict().get(name).map(|t| t.size()[0]);
    if let (Some(rows), Some(t)) = (rows, full.get_mut(name)) {
        *t = reshard_repad(t, rows).map_err(|e| bad(format!("{name}: {e}")))?;
    }
    model.load_state_dict(&full)?;
    tracing::info!(checkpoint = %dir.display(), ranks = shards.len(), "training checkpoint loaded");
    Ok(())
}
