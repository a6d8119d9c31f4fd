//! One rank's fine-tuning run, as named steps: connect and load, resume,
//! train with the reporter and the checkpointer as hooks, then the test split,
//! the final .nemo and the result in status. `spec.mode: Evaluate` restores the
//! .nemo and runs only the test split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::{Artifacts, Mode, Outcome, Split, TaskType};

use super::session::{self, Loaded, Session};
use crate::checkpoint::nemo::{DEFAULT_COMPRESSION, NemoContents, NemoWeights, write_nemo};
use crate::job::{
    JobConfig, JobResult, Outputs, Publish, RankIdentity, RunHooks, RunLogFile, published_weights,
    stop_signal,
};
use crate::model::BertTaskModel;
use crate::model::gather_state_dict;
use crate::parallel::TpGroup;
use crate::progress::Reporter;
use crate::resume::{Checkpointer, CheckpointerConfig};
use crate::task::TaskData;
use crate::task::write_metrics_json;
use crate::train::{FitOutcome, TrainState, TrainTask, Trainer, TrainerConfig};

/// What a run needs beyond the spec.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Where inputs are downloaded.
    pub cache_dir: PathBuf,
    /// Validate once before the first step (`--validate-before-training`).
    pub validate_before_training: bool,
}

/// One rank's run: connect and load, then evaluate only (`spec.mode:
/// Evaluate`) or resume, train, publish the artifacts and report the result.
pub fn fine_tune(
    options: &RunOptions,
    config: JobConfig,
    identity: RankIdentity,
    outputs: &Outputs,
    reporter: &mut Reporter,
    run_log: Option<&RunLogFile>,
) -> JobResult<i32> {
    let (session, mut loaded) = connect_and_load(options, config, identity, outputs, reporter)?;
    if session.config.spec.mode == Mode::Evaluate {
        return evaluate_only(&session, &loaded, outputs, reporter);
    }
    let mut checkpointer = checkpointer(&session, outputs)?;
    let (resumed_at, state) = resume(&mut checkpointer, &mut loaded)?.unzip();
    let Loaded {
        start,
        task,
        model,
        tp,
    } = loaded;
    let mut trainer = trainer(&session, model, &tp, &task, state)?;
    let publish = outputs.is_remote().then(|| Publish {
        outputs,
        runtime: session.inputs.runtime(),
        tensorboard: session.identity.is_rank0(),
        log: run_log,
    });
    let mut hooks = RunHooks {
        reporter,
        checkpointer: Some(&mut checkpointer),
        publish,
    };
    let baseline = validate_first(
        options,
        &session,
        &mut trainer,
        &task,
        &mut hooks,
        resumed_at,
    )?;
    let outcome = train_until_done_or_stopped(&mut trainer, &task, &mut hooks)?;
    if let Some(code) = stopped(&outcome) {
        return Ok(code);
    }
    tracing::info!(
        steps = outcome.steps,
        epoch = outcome.epoch,
        stopped_early = outcome.stopped_early,
        "training finished"
    );
    let loaded = Loaded {
        start,
        task,
        model: trainer.into_model(),
        tp,
    };
    publish_artifacts(&session, &loaded, outputs, reporter)?;
    report_result(
        reporter,
        loaded.task.task_type(),
        &outcome,
        baseline.as_ref(),
    )?;
    Ok(0)
}

/// Trains with SIGTERM/SIGINT noted rather than fatal, so that a stopped pod
/// saves a checkpoint at a step every rank agrees on (see `job::stop_signal`).
fn train_until_done_or_stopped(
    trainer: &mut Trainer,
    task: &TaskData,
    hooks: &mut RunHooks<'_>,
) -> JobResult<FitOutcome> {
    trainer.set_stop_check(stop_signal::stop_requested);
    stop_signal::set_mode(stop_signal::Mode::Note);
    let outcome = trainer.fit(task, hooks);
    stop_signal::set_mode(stop_signal::Mode::Terminate);
    Ok(outcome?)
}

/// The exit code of a run that a signal stopped (its checkpoint is saved): no
/// test split, .nemo or result, which belong to a finished run.
fn stopped(outcome: &FitOutcome) -> Option<i32> {
    if !outcome.interrupted {
        return None;
    }
    let signal = stop_signal::received().unwrap_or(libc::SIGTERM);
    tracing::warn!(
        step = outcome.steps,
        signal,
        "stopped by a signal after saving the checkpoint of step {}; the next run resumes there",
        outcome.steps
    );
    Some(stop_signal::exit_code(signal))
}

/// Rendezvous, device and seed; then the starting model and the task's data
/// (rank 0 records in status.model what the weights were loaded as).
fn connect_and_load(
    options: &RunOptions,
    config: JobConfig,
    identity: RankIdentity,
    outputs: &Outputs,
    reporter: &Reporter,
) -> JobResult<(Session, Loaded)> {
    let rank = identity.rank;
    let session = session::connect(config, identity, options.cache_dir.clone())?;
    let work_dir = outputs.local_dir(&format!("work/rank-{rank}"))?;
    let loaded = session::load(&session, &work_dir, false)?;
    if session.identity.is_rank0()
        && let Some(job) = reporter.job()
    {
        published_weights::report_loaded(
            &session.config.spec,
            session.inputs.cache_dir(),
            job,
            &loaded.start.config,
        );
    }
    tracing::info!(outputs = outputs.describe(), "outputs");
    Ok((session, loaded))
}

/// `spec.mode: Evaluate`: the test split of the restored .nemo, nothing else.
fn evaluate_only(
    session: &Session,
    loaded: &Loaded,
    outputs: &Outputs,
    reporter: &mut Reporter,
) -> JobResult<i32> {
    let artifacts = test_split(session, loaded, outputs, reporter)?;
    reporter.artifacts(artifacts);
    reporter.finish(
        Outcome::Succeeded,
        "Evaluated",
        "evaluated the test split",
        None,
    )?;
    Ok(0)
}

/// The run checkpointer: sets under the job's `checkpoints/` (or the local directory).
fn checkpointer(session: &Session, outputs: &Outputs) -> JobResult<Checkpointer> {
    let spec = &session.config.spec;
    let rank = session.identity.rank;
    let local_dir = if outputs.is_remote() {
        outputs.local_dir(&format!("checkpoints-rank{rank}"))?
    } else {
        outputs.local_dir("checkpoints")?
    };
    Ok(Checkpointer::new(CheckpointerConfig {
        remote: outputs.remote_store("checkpoints")?,
        hyper_parameters: serde_json::json!({
            "task": spec.task, "model": spec.model, "training": spec.training,
        }),
        comm_device: session.device,
        ..CheckpointerConfig::from_topology(
            "megatron_bert",
            local_dir,
            spec.checkpointing.clone(),
            &session.topo,
        )
    })?)
}

/// The newest complete checkpoint restored into the model (its step and the
/// loop's state), or a warning when the encoder starts random.
fn resume(
    checkpointer: &mut Checkpointer,
    loaded: &mut Loaded,
) -> JobResult<Option<(i64, TrainState)>> {
    match checkpointer.find_latest()? {
        Some(point) => {
            tracing::info!(step = point.step, uri = %point.uri, "resuming");
            let state = checkpointer.restore(&point, &mut loaded.model)?;
            Ok(Some((point.step as i64, state)))
        }
        None => {
            crate::job::warn_random_init(&loaded.start);
            Ok(None)
        }
    }
}

/// The training loop over this rank's model, with the resumed state.
fn trainer(
    session: &Session,
    model: BertTaskModel,
    tp: &TpGroup,
    task: &TaskData,
    state: Option<TrainState>,
) -> JobResult<Trainer> {
    let spec = &session.config.spec;
    let topo = &session.topo;
    let config = TrainerConfig::from_spec(
        &spec.training,
        &spec.checkpointing,
        topo.dp_size,
        TrainTask::num_train_samples(task),
    )?;
    let mut trainer = Trainer::new(
        model,
        config,
        tp.clone(),
        topo.dp.clone(),
        topo.dp_rank,
        session.device,
    )?;
    if let Some(state) = state {
        trainer.restore(state)?;
    }
    Ok(trainer)
}

/// `--validate-before-training`: the untrained model's validation metrics
/// (step 0), unless a resumed run did it in an earlier attempt.
fn validate_first(
    options: &RunOptions,
    session: &Session,
    trainer: &mut Trainer,
    task: &TaskData,
    hooks: &mut RunHooks<'_>,
    resumed_at: Option<i64>,
) -> JobResult<Option<BTreeMap<String, f64>>> {
    if !options.validate_before_training {
        return Ok(None);
    }
    if !task.has_validation() {
        tracing::warn!("--validate-before-training: the spec has no validation split");
        return Ok(None);
    }
    if let Some(step) = resumed_at {
        tracing::info!(
            step,
            "resumed: the validation before training ran in an earlier attempt"
        );
        return Ok(None);
    }
    let metrics = trainer.validate_now(task, hooks)?;
    if session.identity.is_rank0() {
        tracing::info!(
            "validation at step 0 (before training): {}",
            headline(task.task_type(), &metrics)
        );
    }
    Ok(Some(metrics))
}

/// The test split (when the spec has one), the final .nemo and TensorBoard files.
fn publish_artifacts(
    session: &Session,
    loaded: &Loaded,
    outputs: &Outputs,
    reporter: &mut Reporter,
) -> JobResult<()> {
    let mut artifacts = if loaded.task.has_split(Split::Test) {
        test_split(session, loaded, outputs, reporter)?
    } else {
        Artifacts::default()
    };
    artifacts.nemo = final_nemo(session, loaded, outputs, job_name(&session.config))?;
    if session.identity.is_rank0() {
        reporter.artifacts(artifacts);
        let n = outputs.publish_dir(session.inputs.runtime(), "tensorboard")?;
        tracing::debug!(files = n, "TensorBoard files published");
    }
    Ok(())
}

/// The result in status: completed or stopped early, with the validation
/// before and after training.
fn report_result(
    reporter: &mut Reporter,
    task_type: TaskType,
    outcome: &FitOutcome,
    baseline: Option<&BTreeMap<String, f64>>,
) -> JobResult<()> {
    let (reason, mut message) = if outcome.stopped_early {
        (
            "EarlyStopped",
            format!(
                "stopped early after {} steps (no improvement)",
                outcome.steps
            ),
        )
    } else {
        ("Completed", format!("trained {} steps", outcome.steps))
    };
    if let Some(before) = baseline {
        message += &format!("; validation at step 0: {}", headline(task_type, before));
    }
    if let Some(last) = &outcome.last_validation {
        message += &format!(
            "; validation at step {}: {}",
            outcome.steps,
            headline(task_type, last)
        );
    }
    reporter.finish(Outcome::Succeeded, reason, &message, Some(outcome.steps))?;
    Ok(())
}

/// The task's headline validation metrics, e.g. `val_exact_match 12.5,
/// val_f1 20.1` (question answering: exact match and F1; the classification
/// tasks: accuracy and F1).
fn headline(task: TaskType, metrics: &BTreeMap<String, f64>) -> String {
    let names: &[&str] = match task {
        TaskType::QuestionAnswering => &["val_exact_match", "val_f1"],
        _ => &["val_accuracy", "val_f1"],
    };
    names
        .iter()
        .filter_map(|&n| metrics.get(n).map(|v| format!("{n} {v:.1}")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn job_name(config: &JobConfig) -> String {
    std::env::var("MEGATRON_JOB_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| config.name.clone())
        .unwrap_or_else(|| "model".to_owned())
}

/// The standard predictions file name of a task.
pub fn predictions_name(task: TaskType) -> &'static str {
    match task {
        TaskType::QuestionAnswering => "predictions.json",
        _ => "predictions.txt",
    }
}

/// Evaluates the test split on every rank; rank 0 writes and publishes the
/// predictions and `test_metrics.json` and reports the metrics.
fn test_split(
    session: &Session,
    loaded: &Loaded,
    outputs: &Outputs,
    reporter: &mut Reporter,
) -> JobResult<Artifacts> {
    let evaluation = loaded.task.evaluate(&loaded.model, Split::Test)?;
    if !session.identity.is_rank0() {
        return Ok(Artifacts::default());
    }
    for (name, value) in &evaluation.metrics {
        tracing::info!(metric = name, value, "test");
    }
    if let Some(report) = &evaluation.report {
        tracing::info!("test split report:\n{report}");
    }
    let dir = outputs.local_dir("artifacts")?;
    let predictions = dir.join(predictions_name(loaded.task.task_type()));
    loaded.task.write_predictions(&evaluation, &predictions)?;
    let metrics = dir.join("test_metrics.json");
    write_metrics_json(&evaluation, &metrics)?;
    reporter.test_metrics(&evaluation.metrics);
    let rt = session.inputs.runtime();
    outputs.publish_artifact(rt, &metrics, "test_metrics.json")?;
    let artifact =
        outputs.publish_artifact(rt, &predictions, predictions_name(loaded.task.task_type()))?;
    Ok(Artifacts {
        nemo: None,
        predictions: Some(artifact),
    })
}

/// Gathers the model over each tensor-parallel group of replica 0 and has
/// rank 0 write `<name>.nemo` (with this run's tensor-parallel size) and
/// publish it.
fn final_nemo(
    session: &Session,
    loaded: &Loaded,
    outputs: &Outputs,
    name: String,
) -> JobResult<Option<crds::Artifact>> {
    let topo = &session.topo;
    if topo.dp_rank != 0 {
        return Ok(None);
    }
    let full = gather_state_dict(&loaded.model.state_dict(), topo.tp.as_ref())?;
    if !session.identity.is_rank0() {
        return Ok(None);
    }
    let full: crate::model::StateDict = full
        .into_iter()
        .map(|(k, v)| (k, v.to_device(tch::Device::Cpu)))
        .collect();
    let spec = &session.config.spec;
    let mut config = loaded.start.config.clone();
    config.padded_vocab_size = full
        .get("embeddings.word_embeddings.weight")
        .and_then(|t| t.size().first().copied())
        .unwrap_or(config.padded_vocab_size);
    let labels = loaded.task.label_names();
    let head = loaded.task.head_config();
    let mut dataset = serde_json::Map::new();
    dataset.insert("max_seq_length".into(), spec.task.max_seq_length().into());
    let path = outputs.local_dir("artifacts")?.join(format!("{name}.nemo"));
    let written = write_nemo(
        &path,
        &NemoContents {
            config: &config,
            head: &head,
            weights: NemoWeights::Full(&full),
            tp_size: topo.tp_size as i64,
            pretrained_model_name: &loaded.start.pretrained_name,
            vocab_file: &loaded.start.vocab_file,
            do_lower_case: loaded.start.do_lower_case,
            label_names: labels.as_deref(),
            dataset,
            include_pooler: false,
            compression_level: DEFAULT_COMPRESSION,
        },
    )?;
    tracing::info!(path = %written.path.display(), bytes = written.bytes, "final .nemo written");
    let file_name = file_name(&path);
    Ok(Some(outputs.publish_artifact(
        session.inputs.runtime(),
        &path,
        &file_name,
    )?))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
