//! `megatron-trainer train`: what every rank pod runs (`train --config
//! /etc/megatron/spec.yaml`), and a local fine-tuning run (`--output-dir`).
//!
//! Flow of a rank: config → role (launcher or rank) → rendezvous, device,
//! seed → outputs and reporter → starting model, task data → resume → fit
//! (hooks: reporter + checkpointer) → test split → final .nemo (rank 0) →
//! artifacts and result in status → under the operator, sleep until
//! terminated. `spec.mode: Evaluate` restores the .nemo and runs only the
//! test split.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use crds::{Artifacts, Mode, Outcome, Split, TaskType};
use megatron_trainer::checkpoint::nemo::{
    DEFAULT_COMPRESSION, NemoContents, NemoWeights, write_nemo,
};
use megatron_trainer::job::{
    FetchContext, JobConfig, JobError, JobResult, Outputs, Publish, RankIdentity, Role, RunHooks,
    RunLogFile, STORAGE_FIX, launch, published_weights, role, termination,
};
use megatron_trainer::model::gather_state_dict;
use megatron_trainer::progress::{JobRef, Reporter, ReporterConfig};
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::task::write_metrics_json;
use megatron_trainer::train::{TrainTask, Trainer, TrainerConfig};

use super::args::JobArgs;
use super::prepare::{self, Loaded, Session};

/// `train` arguments.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Ranks to run on this machine (default: NPROC_PER_NODE under the
    /// operator, else the spec's whole world, tensorParallelSize x dataParallelSize).
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
    /// Serve Prometheus metrics on this address (rank 0), e.g. 0.0.0.0:9400.
    #[arg(long, env = "MEGATRON_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Only load and validate the configuration (with the overrides) and
    /// print the effective spec as YAML.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate the validation split once before the first step: the
    /// untrained model's metrics are reported as the validation at step 0
    /// (log, TensorBoard, status) and named in the result's message next to
    /// the final ones. Not repeated when the run resumes from a checkpoint.
    #[arg(
        long,
        env = "MEGATRON_VALIDATE_BEFORE_TRAINING",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub validate_before_training: bool,
}

/// Runs `train`; returns the exit code.
pub fn run(args: &TrainArgs) -> JobResult<i32> {
    let config = args.job.load(false, |_| {})?;
    if args.dry_run {
        let yaml =
            serde_yaml::to_string(&config.spec).map_err(|e| JobError::Other(e.to_string()))?;
        print!("{yaml}");
        return Ok(0);
    }
    let role = role(&config.spec, args.nproc_per_node, |k| std::env::var(k).ok())?;
    fetch_published_weights(args, &config, &role)?;
    match role {
        Role::Launcher(layout) => launch::launch(&layout),
        Role::Rank(identity) => {
            let _span = tracing::info_span!("rank", rank = identity.rank).entered();
            run_rank(args, config, identity)
        }
    }
}

/// Resolves a published name's weights once per pod, before any rank builds a
/// model: a job whose weights are nowhere fails here with exit code 2. The
/// job's first pod downloads; the others read the shared cache it fills.
fn fetch_published_weights(args: &TrainArgs, config: &JobConfig, role: &Role) -> JobResult<()> {
    let leader = match role {
        Role::Launcher(layout) => layout.first_rank == 0,
        Role::Rank(identity) => identity.is_rank0(),
    };
    let context = FetchContext {
        leader,
        shared_cache: args.job.output_dir.is_none(),
        job: JobRef::from_env()?,
    };
    published_weights::fetch(&config.spec, &args.job.cache_dir(), &context)?;
    Ok(())
}

fn run_rank(args: &TrainArgs, config: JobConfig, identity: RankIdentity) -> JobResult<i32> {
    let job_ref = JobRef::from_env()?;
    let outputs = outputs(&args.job, &config, job_ref.as_ref())?;
    let is_rank0 = identity.is_rank0();
    let mut reporter = Reporter::new(ReporterConfig {
        is_rank0,
        job: job_ref.clone(),
        metrics_addr: args.metrics_addr.filter(|_| is_rank0),
        tensorboard_dir: if is_rank0 {
            Some(outputs.local_dir("tensorboard")?)
        } else {
            None
        },
        log_interval_steps: config.spec.training.log_interval_steps,
        ..ReporterConfig::default()
    })?;
    let attempt = job_ref.as_ref().map_or(0, |j| j.attempt);
    let run_log = RunLogFile::open(&outputs, attempt, identity.rank);
    let result = run_job(
        args,
        config,
        identity,
        &outputs,
        &mut reporter,
        run_log.as_ref(),
    );
    if let Err(e) = &result {
        tracing::error!(error = %e, "the run failed");
        if e.is_invalid_input() {
            // A permanent failure: the result tells the operator not to retry.
            if let Err(report) = reporter.finish(Outcome::Failed, e.reason(), &e.to_string(), None)
            {
                tracing::error!("reporting the failure: {report}");
            }
        }
    }
    if let Some(log) = &run_log
        && outputs.is_remote()
    {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => log.publish(&outputs, &runtime),
            Err(e) => tracing::warn!(error = %e, "cannot publish the run's log"),
        }
    }
    let code = result?;
    if job_ref.is_some() {
        termination::sleep_until_terminated();
    }
    Ok(code)
}

fn outputs(args: &JobArgs, config: &JobConfig, job: Option<&JobRef>) -> JobResult<Outputs> {
    if let Some(dir) = &args.output_dir {
        return Outputs::local(dir);
    }
    let scratch = std::env::var_os("MEGATRON_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("megatron-work"));
    let storage = || {
        config
            .spec
            .storage
            .as_ref()
            .ok_or_else(|| JobError::StorageRequired {
                needed_by: "writing the outputs to the job's S3 root".into(),
                fix: format!(
                    "{STORAGE_FIX}, or pass --output-dir DIR to write the outputs to a local directory"
                ),
            })
    };
    match (job, &config.name) {
        (Some(j), _) => Outputs::s3(storage()?, &j.namespace, &j.name, scratch),
        (None, Some(name)) => {
            let ns = config.namespace.as_deref().unwrap_or("default");
            Outputs::s3(storage()?, ns, name, scratch)
        }
        (None, None) => Err(JobError::invalid(
            "no output location: pass --output-dir DIR, or give the manifest a metadata.name \
             (outputs then go to the job's S3 root), or run under the operator",
        )),
    }
}

fn run_job(
    args: &TrainArgs,
    config: JobConfig,
    identity: RankIdentity,
    outputs: &Outputs,
    reporter: &mut Reporter,
    run_log: Option<&RunLogFile>,
) -> JobResult<i32> {
    let rank = identity.rank;
    let session = prepare::connect(config, identity, args.job.cache_dir())?;
    let work_dir = outputs.local_dir(&format!("work/rank-{rank}"))?;
    let mut loaded = prepare::load(&session, &work_dir, false)?;
    let spec = &session.config.spec;
    if session.identity.is_rank0()
        && let Some(job) = reporter.job().cloned()
    {
        published_weights::report_loaded(
            spec,
            session.inputs.cache_dir(),
            &job,
            &loaded.start.config,
        );
    }
    tracing::info!(outputs = outputs.describe(), "outputs");
    if spec.mode == Mode::Evaluate {
        let artifacts = test_split(&session, &loaded, outputs, reporter)?;
        reporter.artifacts(artifacts);
        reporter.finish(
            Outcome::Succeeded,
            "Evaluated",
            "evaluated the test split",
            None,
        )?;
        return Ok(0);
    }

    let topo = &session.topo;
    let mut checkpointer = Checkpointer::new(CheckpointerConfig {
        remote: outputs.remote_store("checkpoints")?,
        hyper_parameters: serde_json::json!({
            "task": spec.task, "model": spec.model, "training": spec.training,
        }),
        comm_device: session.device,
        ..CheckpointerConfig::from_topology(
            "megatron_bert",
            if outputs.is_remote() {
                outputs.local_dir(&format!("checkpoints-rank{rank}"))?
            } else {
                outputs.local_dir("checkpoints")?
            },
            spec.checkpointing.clone(),
            topo,
        )
    })?;
    let resume = checkpointer.find_latest()?;
    let state = match &resume {
        Some(point) => {
            tracing::info!(step = point.step, uri = %point.uri, "resuming");
            Some(checkpointer.restore(point, &mut loaded.model)?)
        }
        None => {
            megatron_trainer::job::warn_random_init(&loaded.start);
            None
        }
    };
    let trainer_config = TrainerConfig::from_spec(
        &spec.training,
        &spec.checkpointing,
        topo.dp_size,
        TrainTask::num_train_samples(&loaded.task),
    )?;
    let Loaded {
        start,
        task,
        model,
        tp,
    } = loaded;
    let mut trainer = Trainer::new(
        model,
        trainer_config,
        tp.clone(),
        topo.dp.clone(),
        topo.dp_rank,
        session.device,
    )?;
    if let Some(state) = state {
        trainer.restore(state)?;
    }
    let validate_first = args.validate_before_training && task.has_validation();
    if args.validate_before_training && !validate_first {
        tracing::warn!("--validate-before-training: the spec has no validation split");
    }
    let (baseline, outcome) = {
        let mut hooks = RunHooks {
            reporter,
            checkpointer: Some(&mut checkpointer),
            publish: outputs.is_remote().then(|| Publish {
                outputs,
                runtime: session.inputs.runtime(),
                tensorboard: session.identity.is_rank0(),
                log: run_log,
            }),
        };
        let baseline = match &resume {
            Some(point) if validate_first => {
                tracing::info!(
                    step = point.step,
                    "resumed: the validation before training ran in an earlier attempt"
                );
                None
            }
            _ if validate_first => {
                let metrics = trainer.validate_now(&task, &mut hooks)?;
                if session.identity.is_rank0() {
                    tracing::info!(
                        "validation at step 0 (before training): {}",
                        headline(task.task_type(), &metrics)
                    );
                }
                Some(metrics)
            }
            _ => None,
        };
        (baseline, trainer.fit(&task, &mut hooks)?)
    };
    tracing::info!(
        steps = outcome.steps,
        epoch = outcome.epoch,
        stopped_early = outcome.stopped_early,
        "training finished"
    );
    let model = trainer.into_model();
    let loaded = Loaded {
        start,
        task,
        model,
        tp,
    };
    let mut artifacts = if loaded.task.has_split(Split::Test) {
        test_split(&session, &loaded, outputs, reporter)?
    } else {
        Artifacts::default()
    };
    artifacts.nemo = final_nemo(&session, &loaded, outputs, job_name(&session.config))?;
    if session.identity.is_rank0() {
        reporter.artifacts(artifacts);
        let n = outputs.publish_dir(session.inputs.runtime(), "tensorboard")?;
        tracing::debug!(files = n, "TensorBoard files published");
    }
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
    let task_type = loaded.task.task_type();
    if let Some(before) = &baseline {
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
    Ok(0)
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
    let full: megatron_trainer::model::StateDict = full
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
