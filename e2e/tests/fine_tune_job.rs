//! The main job for real: the operator (in-process) and the process kubelet running
//! `target/<profile>/megatron-trainer` fine-tune a tiny Megatron-BERT on tiny SQuAD data from the
//! local S3 server, on CPU, with tensor parallelism 2, through the local control plane.
//!
//! Run: `e2e/cluster/up && source e2e/.cluster/env && eval "$(scripts/torch-env)" &&
//! cargo build -p megatron-trainer && cargo test -p e2e --test fine_tune_job`.
//! Both tests fail loudly (never skip) when the trainer binary or the cluster is missing.

mod operator_common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use crds::MegatronFineTune;
use e2e::{
    Cluster, TestNamespace,
    process_kubelet::{PROCESS_NODE_TAINT, ProcessKubelet, ProcessKubeletConfig},
};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use object_store::{ObjectStore, ObjectStoreExt, path::Path as Key};
use operator_common::{
    RunningOperator, install_crd, job_phase, merge, s3_secret_and_store, seed_inputs,
    tiny_example_job, wait,
};
use serde_json::{Value, json};

const BUCKET: &str = "megatron-e2e";

/// `target/<profile>`: the directory of this test binary's parent (`.../deps/..`).
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary outside target/<profile>/deps")?
        .to_path_buf();
    let trainer = dir.join("megatron-trainer");
    ensure!(
        trainer.is_file(),
        "{} does not exist: build the trainer first (`cargo build -p megatron-trainer`, same profile as the tests)",
        trainer.display()
    );
    Ok(dir)
}

/// One job's world: namespace, S3 inputs, process kubelet, operator.
struct Run {
    cluster: Cluster,
    ns: TestNamespace,
    kubelet: ProcessKubelet,
    operator: RunningOperator,
    store: Arc<dyn ObjectStore>,
    /// Key prefix of this run's objects in the bucket.
    prefix: String,
}

impl Run {
    async fn start(prefix: &str) -> Result<Self> {
        let bin = bin_dir()?;
        let cluster = Cluster::connect().await?;
        install_crd(&cluster.client).await?;
        let ns = cluster.namespace(prefix).await?;
        let store = s3_secret_and_store(&cluster, &ns.name, BUCKET).await?;
        let run_prefix = ns.name.clone();
        let work = e2e::workspace_root()
            .join("e2e/.cluster/fine-tune-tests")
            .join(&ns.name);
        seed_inputs(&store, &run_prefix, &work).await?;

        let mut config = ProcessKubeletConfig::new(
            &format!("pk-{}", ns.name),
            e2e::workspace_root().join("e2e/.cluster/process-kubelet-tests"),
            vec![bin],
            &cluster.env.kubeconfig()?,
        )?;
        config.restart_backoff = Duration::from_secs(5);
        let kubelet = ProcessKubelet::start(cluster.client.clone(), config).await?;

        // Watches only this namespace; rank 0's rendezvous port is a free port of this host
        // (the pods share its network).
        let mut op = megatron_operator::OperatorConfig::for_tests();
        op.namespace = Some(ns.name.clone());
        op.lease_namespace = ns.name.clone();
        op.lease_duration_seconds = 15;
        op.lease_grace_seconds = 5;
        op.master_port = e2e::port::free_port()?;
        op.trainer_image = "megatron-trainer:process".into();
        let operator = RunningOperator::start(op).await?;
        Ok(Self {
            cluster,
            ns,
            kubelet,
            operator,
            store,
            prefix: run_prefix,
        })
    }

    fn jobs(&self) -> Api<MegatronFineTune> {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    /// examples/tiny-cpu-squad.yaml pointed at this run's inputs and node, `patch` merged over.
    async fn create(&self, name: &str, patch: Value) -> Result<MegatronFineTune> {
        let endpoint = self.cluster.env.s3_endpoint()?;
        let mut job = tiny_example_job(name, &self.ns.name, BUCKET, &self.prefix, endpoint)?;
        let spec = &mut job["spec"];
        spec["pod"]["nodeSelector"] = json!({ "kubernetes.io/hostname": self.kubelet.node });
        spec["pod"]["tolerations"] = json!([
            { "key": PROCESS_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule" }
        ]);
        merge(spec, patch);
        let job: MegatronFineTune = serde_json::from_value(job)?;
        Ok(self.jobs().create(&PostParams::default(), &job).await?)
    }

    async fn wait_phase(
        &self,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> Result<MegatronFineTune> {
        let jobs = self.jobs();
        let outcome = wait(&format!("{name} to be {phase}"), timeout, || async {
            let job = jobs.get(name).await?;
            let now = job_phase(&job);
            if now == "Failed" && phase != "Failed" {
                bail!(
                    "{name} failed: {:?}",
                    job.status.as_ref().map(|s| &s.conditions)
                );
            }
            Ok(now == phase)
        })
        .await;
        if let Err(e) = outcome {
            self.dump(name).await;
            return Err(e);
        }
        Ok(jobs.get(name).await?)
    }

    /// Prints the job's status and where the rank logs are (on failure).
    async fn dump(&self, name: &str) {
        if let Ok(job) = self.jobs().get(name).await {
            eprintln!(
                "job status: {}",
                serde_json::to_string_pretty(&job.status).unwrap_or_default()
            );
        }
        eprintln!(
            "rank logs: {}/{}_{name}-*/logs/trainer/",
            e2e::workspace_root()
                .join("e2e/.cluster/process-kubelet-tests")
                .display(),
            self.ns.name
        );
    }

    async fn object_size(&self, uri: &str) -> Result<u64> {
        let key = uri
            .strip_prefix(&format!("s3://{BUCKET}/"))
            .with_context(|| format!("{uri} is not in bucket {BUCKET}"))?;
        Ok(self.store.head(&Key::from(key)).await?.size)
    }

    async fn finish(self) -> Result<()> {
        self.operator.stop().await?;
        self.kubelet.shutdown(Duration::from_secs(5)).await;
        self.ns.delete().await
    }
}

#[tokio::test]
async fn the_tiny_cpu_example_fine_tunes_end_to_end() -> Result<()> {
    let run = Run::start("ft-main").await?;
    run.create("tiny", json!({})).await?;
    let job = run
        .wait_phase("tiny", "Succeeded", Duration::from_secs(900))
        .await?;
    let status = job.status.clone().unwrap();
    assert_eq!(status.restarts, 0);
    let progress = status.progress.clone().context("status.progress")?;
    assert_eq!(progress.step, 40, "maxSteps of the example");
    assert_eq!(progress.total_steps, Some(40));
    let metrics = status.metrics.clone().context("status.metrics")?;
    assert!(
        metrics.train_loss.is_some_and(f64::is_finite),
        "{metrics:?}"
    );
    for name in ["val_loss", "val_exact_match", "val_f1"] {
        assert!(
            metrics.validation.contains_key(name),
            "{name} in {metrics:?}"
        );
    }
    let latest = status
        .latest_checkpoint
        .clone()
        .context("status.latestCheckpoint")?;
    assert_eq!(latest.step, 40);
    let nemo = status
        .artifacts
        .clone()
        .and_then(|a| a.nemo)
        .context("status.artifacts.nemo")?;
    assert!(nemo.uri.as_str().ends_with(".nemo"), "{}", nemo.uri);
    let size = run.object_size(nemo.uri.as_str()).await?;
    assert_eq!(
        Some(size as i64),
        nemo.size_bytes,
        "the .nemo object is in S3, whole"
    );
    assert!(
        size > 1_000_000,
        "the .nemo holds the weights: {size} bytes"
    );
    let result = status.result.clone().context("status.result")?;
    assert_eq!(result.attempt, 0);
    // Finished: the gang is scaled to zero.
    let pods: Api<Pod> = Api::namespaced(run.cluster.client.clone(), &run.ns.name);
    wait("the pods to be gone", Duration::from_secs(120), || async {
        Ok(pods
            .list(&ListParams::default().labels("megatron.dev/job-name=tiny"))
            .await?
            .items
            .is_empty())
    })
    .await?;
    run.finish().await
}

#[tokio::test]
async fn a_killed_rank_restarts_the_gang_which_resumes_from_its_checkpoint() -> Result<()> {
    let run = Run::start("ft-kill").await?;
    // One rank per pod, so killing a pod's process kills exactly one rank; more steps and
    // frequent checkpoints so that training is still going when the first checkpoint is there.
    run.create(
        "resumable",
        json!({
            "training": { "maxSteps": 80, "validationIntervalSteps": 40 },
            "parallelism": { "ranksPerPod": 1 },
            "checkpointing": { "intervalSteps": 20, "keepLast": 2 },
            "runPolicy": { "backoff": { "initialSeconds": 1, "maxSeconds": 2 } },
        }),
    )
    .await?;
    let jobs = run.jobs();
    wait("a first checkpoint", Duration::from_secs(900), || async {
        let job = jobs.get("resumable").await?;
        ensure!(
            job_phase(&job) != "Failed",
            "the job failed: {:?}",
            job.status
        );
        Ok(job
            .status
            .and_then(|s| s.latest_checkpoint)
            .is_some_and(|c| c.step >= 20))
    })
    .await?;
    let before = jobs.get("resumable").await?.status.unwrap();
    let checkpoint = before.latest_checkpoint.clone().unwrap();
    let checkpoint_step = checkpoint.step;
    // The TensorBoard curves are published with each checkpoint, before status names it.
    let root = checkpoint
        .uri
        .as_str()
        .split_once("/checkpoints/")
        .and_then(|(root, _)| root.strip_prefix(&format!("s3://{BUCKET}/")))
        .with_context(|| format!("job root of {}", checkpoint.uri.as_str()))?
        .to_owned();
    let events: Vec<_> = run
        .store
        .list(Some(&Key::from(format!("{root}/tensorboard"))))
        .try_collect()
        .await?;
    ensure!(
        events.iter().any(|o| o
            .location
            .filename()
            .is_some_and(|f| f.starts_with("events.out.tfevents"))
            && o.size > 0),
        "no TensorBoard event file under {root}/tensorboard while training: {events:?}"
    );
    // Each rank publishes its own log after the checkpoint, independently of rank 0's status
    // write: wait for rank 1's, so that the kill comes after it (SIGKILL publishes nothing).
    let rank1_log = Key::from(format!("{root}/logs/attempt-0/rank-0001.log"));
    wait(
        "rank 1's published log",
        Duration::from_secs(120),
        || async { Ok(run.store.head(&rank1_log).await.is_ok()) },
    )
    .await?;
    let progress = jobs.get("resumable").await?.status.and_then(|s| s.progress);
    ensure!(
        progress.as_ref().is_some_and(|p| p.step < 80),
        "training ended before a rank could be killed: {progress:?}"
    );
    // SIGKILL rank 1's process (its pod's container), as an OOM kill would.
    let rank1 = run
        .kubelet
        .container(&run.ns.name, "resumable-1", "trainer")
        .and_then(|c| c.pid)
        .context("rank 1's process")?;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(rank1 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    eprintln!("killed rank 1 (pid {rank1}) after checkpoint step {checkpoint_step}");

    let job = run
        .wait_phase("resumable", "Succeeded", Duration::from_secs(900))
        .await?;
    let status = job.status.clone().unwrap();
    assert_eq!(status.restarts, 1, "one gang restart");
    assert_eq!(status.result.as_ref().map(|r| r.attempt), Some(1));
    assert_eq!(status.progress.as_ref().map(|p| p.step), Some(80));
    assert!(
        status.restart_checkpoint_step.unwrap_or_default() >= checkpoint_step,
        "{:?}",
        status.restart_checkpoint_step
    );
    assert!(
        nemo_size(&run, &status).await? > 1_000_000,
        "the resumed run wrote its .nemo"
    );
    // Both attempts' logs of both ranks outlive their pods: attempt 0's (rank 1 was killed)
    // as published with its checkpoint, attempt 1's when the run ended.
    let logs: Vec<_> = run
        .store
        .list(Some(&Key::from(format!("{root}/logs"))))
        .try_collect()
        .await?;
    let names: Vec<String> = logs.iter().map(|o| o.location.to_string()).collect();
    for attempt in 0..2 {
        for rank in 0..2 {
            let key = format!("{root}/logs/attempt-{attempt}/rank-{rank:04}.log");
            ensure!(names.contains(&key), "{key} missing in {names:?}");
        }
    }
    // Attempt 1's rank 0 resumed from a checkpoint at or after the one seen before the kill.
    // Its published log is read: the pod itself is gone once the finished gang scales to zero.
    let resumed_log = run
        .store
        .get(&Key::from(format!("{root}/logs/attempt-1/rank-0000.log")))
        .await?
        .bytes()
        .await?;
    let resumed_log = String::from_utf8_lossy(&resumed_log);
    let resumed = resumed_log
        .lines()
        .find(|l| l.contains("resuming"))
        .context("attempt 1's rank 0 log does not say it resumed")?;
    let step: i64 = resumed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("step="))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no step in {resumed:?}"))?;
    assert!(step >= checkpoint_step && step < 80, "{resumed}");
    run.finish().await
}

async fn nemo_size(run: &Run, status: &crds::MegatronFineTuneStatus) -> Result<u64> {
    let nemo = status
        .artifacts
        .clone()
        .and_then(|a| a.nemo)
        .context("status.artifacts.nemo")?;
    run.object_size(nemo.uri.as_str()).await
}
