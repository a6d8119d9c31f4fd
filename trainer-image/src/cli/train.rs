//! `megatron-trainer train`: what every rank pod runs (`train --config
//! /etc/megatron/spec.yaml`), and a local fine-tuning run (`--output-dir`).
//!
//! Here: config → role (launcher or rank) → published weights (once per pod)
//! → outputs, reporter and log → the run ([`megatron_trainer::run::fine_tune`])
//! → under the operator, sleep until terminated.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use crds::Outcome;
use megatron_trainer::job::{
    FetchContext, JobConfig, JobError, JobResult, Outputs, RankIdentity, Role, RunLogFile,
    STORAGE_FIX, launch, published_weights, role, stop_signal, termination,
};
use megatron_trainer::progress::{JobRef, Reporter, ReporterConfig};
use megatron_trainer::run::{RunOptions, fine_tune};

use super::args::JobArgs;

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
        let yaml = serde_yaml::to_string(&config.spec).map_err(|source| JobError::EncodeYaml {
            what: "the spec",
            source,
        })?;
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
    stop_signal::install().map_err(|e| JobError::io("installing the SIGTERM handler", e))?;
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
    let options = RunOptions {
        cache_dir: args.job.cache_dir(),
        validate_before_training: args.validate_before_training,
    };
    let result = fine_tune(
        &options,
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
    // A stopped run exits now; a finished one waits for the operator to scale it down.
    if job_ref.is_some() && code == 0 {
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
