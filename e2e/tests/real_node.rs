//! The real node, as a user runs the product: the operator installed by Helm from its chart
//! and image, rank pods as containers (containerd + runc) on the kubelet's node, meeting over
//! the pod network through the headless Service's DNS names, under Pod Security `restricted`.
//!
//! Run: `make images && source e2e/.cluster/env && eval "$(scripts/torch-env)" &&
//! cargo test -p e2e --test real_node` (root: the tests read containers through CRI).

mod operator_common;

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use anyhow::{Context, Result, ensure};
use crds::{MegatronFineTune, MegatronFineTuneStatus};
use e2e::{
    Cluster, TestNamespace,
    node::{ContainerWatch, HelmRelease, Images},
};
use futures::TryStreamExt;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use object_store::{ObjectStore, ObjectStoreExt, path::Path as Key};
use operator_common::{
    install_crd, job_phase,
    kueue::{kueue_up, queues, remove_queues},
    merge, s3_secret_and_store, seed_inputs, tiny_example_job, wait,
};
use serde_json::{Value, json};

const BUCKET: &str = "megatron-e2e";
/// The uid the chart runs trainer containers as (values.yaml `trainer.uid`, the Dockerfile's USER).
const TRAINER_UID: u64 = 65532;
const LONG: Duration = Duration::from_secs(900);

/// Held by the tests that compare a disturbed run with an uninterrupted one (a killed rank, a
/// preemption): two or three gangs each on the 2-core node, so two such tests at once starve each
/// other's ranks on top of the other tests' gangs.
static COMPARED_RUNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's world on the real node: a restricted namespace with the S3 Secret and inputs,
/// and the operator installed there by Helm.
struct NodeRun {
    cluster: Cluster,
    ns: TestNamespace,
    release: Option<HelmRelease>,
    store: Arc<dyn ObjectStore>,
    containers: ContainerWatch,
}

impl NodeRun {
    async fn start(prefix: &str, helm_sets: &[&str]) -> Result<Self> {
        let cluster = Cluster::connect().await?;
        install_crd(&cluster.client).await?;
        let ns = cluster.restricted_namespace(prefix).await?;
        let store = s3_secret_and_store(&cluster, &ns.name, BUCKET).await?;
        let work = e2e::workspace_root()
            .join("e2e/.cluster/real-node-tests")
            .join(&ns.name);
        seed_inputs(&store, &ns.name, &work).await?;
        let sets: Vec<String> = helm_sets.iter().map(|s| s.to_string()).collect();
        let release = HelmRelease::install(&cluster, &ns.name, &sets)?;
        let containers = ContainerWatch::start(&cluster, &ns.name);
        Ok(Self {
            cluster,
            ns,
            release: Some(release),
            store,
            containers,
        })
    }

    fn jobs(&self) -> Api<MegatronFineTune> {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    /// examples/tiny-cpu-squad.yaml on this run's inputs, one rank per pod (each rank its own
    /// container), small CPU requests so several tests' gangs fit the node; `patch` on top.
    async fn create(&self, name: &str, patch: Value) -> Result<MegatronFineTune> {
        self.create_labelled(name, json!({}), patch).await
    }

    /// [`NodeRun::create`] with `labels` on the job.
    async fn create_labelled(
        &self,
        name: &str,
        labels: Value,
        patch: Value,
    ) -> Result<MegatronFineTune> {
        let endpoint = self.cluster.env.s3_endpoint()?;
        let mut job = tiny_example_job(name, &self.ns.name, BUCKET, &self.ns.name, endpoint)?;
        merge(&mut job["metadata"], json!({ "labels": labels }));
        merge(
            &mut job["spec"],
            json!({
                "training": { "maxSteps": 40, "validationIntervalSteps": 20 },
                "parallelism": { "ranksPerPod": 1 },
                // One CPU per rank at most: one libtorch thread each, so that several tests'
                // gangs on the 2-core node do not spin-wait against each other.
                "pod": { "resources": {
                    "requests": { "cpu": "100m", "memory": "512Mi" },
                    "limits": { "cpu": "1" },
                } },
            }),
        );
        merge(&mut job["spec"], patch);
        let job: MegatronFineTune = serde_json::from_value(job)?;
        Ok(self.jobs().create(&PostParams::default(), &job).await?)
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Result<MegatronFineTuneStatus> {
        let jobs = self.jobs();
        let outcome = wait(&format!("{name} to be {phase}"), LONG, || async {
            let job = jobs.get(name).await?;
            let now = job_phase(&job);
            ensure!(
                now != "Failed" || phase == "Failed",
                "{name} failed: {:?}",
                job.status.as_ref().map(|s| &s.conditions)
            );
            Ok(now == phase)
        })
        .await;
        if let Err(e) = outcome {
            self.dump(name).await;
            return Err(e);
        }
        jobs.get(name).await?.status.context("status")
    }

    /// Waits until the job's status names a checkpoint at `step` or later.
    async fn wait_checkpoint(&self, name: &str, step: i64) -> Result<MegatronFineTuneStatus> {
        let jobs = self.jobs();
        wait(&format!("{name}'s checkpoint {step}"), LONG, || async {
            let job = jobs.get(name).await?;
            ensure!(job_phase(&job) != "Failed", "failed: {:?}", job.status);
            Ok(job
                .status
                .and_then(|s| s.latest_checkpoint)
                .is_some_and(|c| c.step >= step))
        })
        .await?;
        jobs.get(name).await?.status.context("status")
    }

    /// The job's pods by name and uid (the gang as the API has it now).
    async fn gang(&self, name: &str) -> Result<BTreeSet<(String, String)>> {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&format!("megatron.dev/job-name={name}")))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap()))
            .collect())
    }

    async fn wait_pods_running(&self, name: &str, n: usize) -> Result<Vec<Pod>> {
        let pods = self.pods();
        let selector = format!("megatron.dev/job-name={name}");
        wait(&format!("{n} running pods of {name}"), LONG, || async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok(list
                .items
                .iter()
                .filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && p.metadata.deletion_timestamp.is_none()
                })
                .count()
                == n)
        })
        .await?;
        Ok(pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items)
    }

    async fn dump(&self, name: &str) {
        if let Ok(job) = self.jobs().get(name).await {
            eprintln!(
                "job status: {}",
                serde_json::to_string_pretty(&job.status).unwrap_or_default()
            );
        }
        if let Ok(out) =
            self.cluster
                .kubectl_output(&["get", "pods,events", "-n", &self.ns.name, "-o", "wide"])
        {
            eprintln!("{out}");
        }
    }

    async fn object_exists(&self, uri: &str) -> Result<u64> {
        let key = uri
            .strip_prefix(&format!("s3://{BUCKET}/"))
            .with_context(|| format!("{uri} is not in bucket {BUCKET}"))?;
        Ok(self.store.head(&Key::from(key)).await?.size)
    }

    async fn finish(mut self) -> Result<()> {
        if let Some(release) = self.release.take() {
            release.uninstall()?;
        }
        self.ns.delete().await
    }
}

fn in_pod_network(ip: &str) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|a| a.octets()[..2] == [198, 18] && a != Ipv4Addr::new(198, 18, 0, 1))
}

#[tokio::test]
async fn the_demo_job_runs_as_containers_on_the_real_node() -> Result<()> {
    let run = NodeRun::start("node-demo", &[]).await?;
    let node = run.cluster.env.get("MEGATRON_NODE_NAME")?.to_owned();

    // Pod Security `restricted` is enforced here: a root pod is refused (asked as a
    // server-side dry run, which admission sees like a real create).
    let root_pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "root" },
        "spec": { "containers": [{ "name": "c", "image": Images::load()?.trainer,
                  "securityContext": { "runAsUser": 0 } }] },
    }))?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match run.pods().create(&dry_run, &root_pod).await {
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("violates PodSecurity") => {}
        other => anyhow::bail!("a root pod was not refused by Pod Security admission: {other:?}"),
    }

    run.create("tiny", json!({})).await?;
    let pods = run.wait_pods_running("tiny", 2).await?;
    let ips: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ensure!(
        ips.len() == 2 && ips.iter().all(|ip| in_pod_network(ip)),
        "each rank pod has its own pod-network address: {ips:?}"
    );
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
        assert_eq!(spec.containers.len(), 1, "one rank, one container");
    }
    let status = run.wait_phase("tiny", "Succeeded").await?;
    assert_eq!(status.restarts, 0);
    assert_eq!(status.progress.as_ref().map(|p| p.step), Some(40));
    let nemo = status
        .artifacts
        .as_ref()
        .and_then(|a| a.nemo.clone())
        .context("status.artifacts.nemo")?;
    assert!(run.object_exists(nemo.uri.as_str()).await? > 1_000_000);

    // As the container runtime saw them: each rank its own container, in its own network
    // namespace, as the chart's non-root uid.
    let trainers: Vec<_> = run
        .containers
        .seen()
        .into_iter()
        .filter(|c| c.name == "trainer")
        .collect();
    let ranks: BTreeSet<&str> = trainers.iter().map(|c| c.pod.as_str()).collect();
    assert_eq!(ranks, BTreeSet::from(["tiny-0", "tiny-1"]), "{trainers:?}");
    for c in &trainers {
        assert_eq!(c.uid, Some(TRAINER_UID), "{c:?}");
        assert!(
            c.netns.as_deref().is_some_and(|n| !n.is_empty()),
            "own network namespace: {c:?}"
        );
    }
    let netns: BTreeSet<_> = trainers.iter().map(|c| c.netns.clone()).collect();
    assert_eq!(
        netns.len(),
        2,
        "two pods, two network namespaces: {trainers:?}"
    );
    run.finish().await
}

#[tokio::test]
async fn a_killed_rank_container_restarts_the_gang_which_resumes_to_the_same_result() -> Result<()>
{
    let _one_at_a_time = COMPARED_RUNS.lock().await;
    let run = NodeRun::start("node-kill", &[]).await?;
    let patch = json!({
        "training": { "maxSteps": 80, "validationIntervalSteps": 40 },
        "checkpointing": { "intervalSteps": 20, "keepLast": 2 },
        "runPolicy": { "backoff": { "initialSeconds": 1, "maxSeconds": 2 } },
    });
    run.create("reference", patch.clone()).await?;
    run.create("killed", patch).await?;
    let before = run.wait_checkpoint("killed", 20).await?;
    ensure!(
        before.progress.as_ref().is_some_and(|p| p.step < 80),
        "training ended before a rank could be killed: {:?}",
        before.progress
    );
    // SIGKILL rank 1's process in its container, as the kernel's OOM killer would.
    let rank1 = run
        .containers
        .of("killed-1", "trainer")
        .first()
        .and_then(|c| c.pid)
        .context("rank 1's container pid (crictl inspect)")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rank1 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let checkpoint = before.latest_checkpoint.as_ref().unwrap().step;
    eprintln!("killed rank 1 (host pid {rank1}) after checkpoint step {checkpoint}");

    let killed = run.wait_phase("killed", "Succeeded").await?;
    let reference = run.wait_phase("reference", "Succeeded").await?;
    if killed.restarts != 1 {
        run.dump("killed").await;
    }
    assert_eq!(killed.restarts, 1, "one gang restart (events above)");
    assert_eq!(killed.result.as_ref().map(|r| r.attempt), Some(1));
    assert!(killed.restart_checkpoint_step.unwrap_or_default() >= checkpoint);
    assert_eq!(reference.restarts, 0);
    // Resumed bit for bit: the same final metrics as the uninterrupted run.
    let (k, r) = (
        killed.metrics.clone().context("metrics")?,
        reference.metrics.clone().context("metrics")?,
    );
    assert_eq!(k.train_loss, r.train_loss, "train loss");
    assert_eq!(k.validation, r.validation, "validation metrics");
    run.finish().await
}

/// Kueue preempts a running low-priority job for a high-priority one: the low job's ranks
/// get SIGTERM, save a checkpoint at the step they reached and exit; the job waits in the
/// queue, is admitted again once the high one is done, resumes from that checkpoint (no step
/// redone, none lost) and ends with the same metrics as an uninterrupted run.
#[tokio::test]
async fn a_preempted_job_checkpoints_requeues_and_ends_like_an_uninterrupted_run() -> Result<()> {
    let _one_at_a_time = COMPARED_RUNS.lock().await;
    kueue_up().await?;
    let run = NodeRun::start("node-preempt", &["kueue.enabled=true"]).await?;
    let node = run.cluster.env.get("MEGATRON_NODE_NAME")?.to_owned();
    let client = run.cluster.client.clone();
    // Quota for one queued gang of 2 pods x 300m.
    queues(&client, &run.ns.name, &node, "600m").await?;
    // No checkpoint but the stop's before the end (no interval, validation at the end only),
    // and long enough that the preemption lands mid-run.
    const STEPS: i64 = 400;
    let training = |steps: i64| {
        json!({
            "training": { "maxSteps": steps, "validationIntervalSteps": steps },
            "checkpointing": { "intervalSteps": 100_000 },
            "pod": { "resources": { "requests": { "cpu": "300m" } } },
        })
    };
    let queued = |priority: &str| {
        json!({
            "kueue.x-k8s.io/queue-name": "team",
            "kueue.x-k8s.io/priority-class": format!("{priority}-{}", run.ns.name),
        })
    };
    run.create("reference", training(STEPS)).await?;
    run.create_labelled("low", queued("low"), training(STEPS))
        .await?;
    let jobs = run.jobs();
    wait("low to train a few steps", LONG, || async {
        let job = jobs.get("low").await?;
        ensure!(job_phase(&job) != "Failed", "low failed: {:?}", job.status);
        Ok(job
            .status
            .and_then(|s| s.progress)
            .is_some_and(|p| p.step >= 5))
    })
    .await?;

    run.create_labelled("high", queued("high"), training(40))
        .await?;
    let evicted = wait_status(&jobs, "low", "evicted", |s| {
        s.evictions == Some(1) && s.phase == Some(crds::Phase::Queued)
    })
    .await?;
    // The stop's checkpoint is the only one possible before the last step.
    let stopped = wait_status(&jobs, "low", "a checkpoint", |s| {
        s.latest_checkpoint.is_some()
    })
    .await?;
    let checkpoint = stopped.latest_checkpoint.context("checkpoint")?;
    let last_step = stopped.progress.as_ref().map_or(0, |p| p.step);
    eprintln!(
        "low evicted ({:?}); checkpoint at step {}, last reported step {last_step}",
        evicted
            .conditions
            .iter()
            .find(|c| c.type_ == "Queued")
            .map(|c| &c.message),
        checkpoint.step
    );
    ensure!(
        (5..STEPS).contains(&checkpoint.step) && checkpoint.step >= last_step,
        "the ranks checkpoint the step they reached: checkpoint {} vs step {last_step}",
        checkpoint.step
    );
    ensure!(
        checkpoint.duration_seconds.is_some_and(|d| d > 0.0),
        "the save's duration is reported: {checkpoint:?}"
    );

    let high = run.wait_phase("high", "Succeeded").await?;
    let low = run.wait_phase("low", "Succeeded").await?;
    let reference = run.wait_phase("reference", "Succeeded").await?;
    assert_eq!(high.evictions.unwrap_or_default(), 0);
    assert_eq!(low.evictions, Some(1));
    assert_eq!(low.restarts, 0, "an eviction is not a restart");
    assert_eq!(low.progress.as_ref().map(|p| p.step), Some(STEPS));
    let (l, r) = (
        low.metrics.clone().context("metrics")?,
        reference.metrics.clone().context("metrics")?,
    );
    assert_eq!(l.train_loss, r.train_loss, "train loss");
    assert_eq!(l.validation, r.validation, "validation metrics");
    remove_queues(&client, &run.ns.name).await;
    run.finish().await
}

/// Waits until job `name`'s status satisfies `check` (described by `what`), returning it.
async fn wait_status(
    jobs: &Api<MegatronFineTune>,
    name: &str,
    what: &str,
    check: impl Fn(&MegatronFineTuneStatus) -> bool,
) -> Result<MegatronFineTuneStatus> {
    let check = &check;
    wait(&format!("{name}: {what}"), LONG, || async move {
        let job = jobs.get(name).await?;
        ensure!(
            job_phase(&job) != "Failed",
            "{name} failed: {:?}",
            job.status
        );
        Ok(job.status.as_ref().is_some_and(check))
    })
    .await?;
    jobs.get(name).await?.status.context("status")
}

#[tokio::test]
async fn the_helm_operator_fails_over_to_its_second_replica_without_a_second_gang() -> Result<()> {
    let run = NodeRun::start("node-failover", &["replicaCount=2"]).await?;
    // Long enough that the job still runs when the new leader takes over.
    run.create(
        "steady",
        json!({ "training": { "maxSteps": 2000 }, "checkpointing": { "intervalSteps": 500 } }),
    )
    .await?;
    run.wait_pods_running("steady", 2).await?;
    let gang = run.gang("steady").await?;
    let leases: Api<Lease> = Api::namespaced(run.cluster.client.clone(), &run.ns.name);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let leader = holder(leases.get("megatron-operator").await?);
    ensure!(!leader.is_empty(), "no leader holds the Lease");
    Api::<Pod>::namespaced(run.cluster.client.clone(), &run.ns.name)
        .delete(&leader, &DeleteParams::default())
        .await?;
    eprintln!("deleted the leader pod {leader}");
    wait("another replica to lead", LONG, || async {
        let now = holder(leases.get("megatron-operator").await?);
        Ok(!now.is_empty() && now != leader)
    })
    .await?;
    let job = run.jobs().get("steady").await?;
    ensure!(
        job_phase(&job) == "Running",
        "the job was no longer running when the new leader took over: {:?}",
        job.status.and_then(|s| s.progress)
    );
    let status = run.wait_phase("steady", "Succeeded").await?;
    assert_eq!(status.restarts, 0, "the new leader adopted the gang");
    assert_eq!(status.result.as_ref().map(|r| r.attempt), Some(0));
    let trainer_pods: BTreeSet<String> = run
        .containers
        .seen()
        .into_iter()
        .filter(|c| c.name == "trainer")
        .map(|c| c.pod)
        .collect();
    let gang_pods: BTreeSet<String> = gang.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(trainer_pods, gang_pods, "no second gang ever ran");
    run.finish().await
}

#[tokio::test]
async fn an_oom_killed_rank_says_what_to_raise_and_stops_at_its_restart_budget() -> Result<()> {
    let run = NodeRun::start("node-oom", &[]).await?;
    run.create(
        "small",
        json!({
            "runPolicy": { "maxRestarts": 1, "backoff": { "initialSeconds": 1, "maxSeconds": 1 } },
            "pod": { "resources": { "requests": { "memory": "96Mi" }, "limits": { "memory": "96Mi" } } },
        }),
    )
    .await?;
    let status = run.wait_phase("small", "Failed").await?;
    assert_eq!(
        status.restarts, 1,
        "one restart (maxRestarts: 1), then Failed"
    );
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .context("a Failed condition")?;
    for part in [
        "OOM-killed",
        "container trainer",
        "96Mi",
        "spec.pod.resources.limits.memory",
    ] {
        ensure!(
            failed.message.contains(part),
            "{part:?} in the Failed message: {}",
            failed.message
        );
    }
    // No crash loop: the failed gang's pods go and stay gone.
    wait("the failed gang's pods to be gone", LONG, || async {
        Ok(run.gang("small").await?.is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(run.gang("small").await?.is_empty(), "pods came back");
    run.finish().await
}

#[tokio::test]
async fn helm_upgrade_and_uninstall_leave_a_running_job_and_its_data_alone() -> Result<()> {
    let mut run = NodeRun::start("node-helm", &[]).await?;
    run.create(
        "kept",
        // keepLast high enough that retention deletes no checkpoint this test looks for.
        json!({
            "training": { "maxSteps": 1000 },
            "checkpointing": { "intervalSteps": 100, "keepLast": 20 },
        }),
    )
    .await?;
    let first = run.wait_checkpoint("kept", 100).await?;
    let gang = run.gang("kept").await?;
    let checkpoint = first.latest_checkpoint.clone().unwrap();

    // An upgrade rolls the operator's pod; the gang runs on untouched.
    let release = run.release.take().unwrap();
    release.upgrade(&["logLevel=debug".into()])?;
    ensure!(
        run.gang("kept").await? == gang,
        "the upgrade replaced the gang"
    );

    // Uninstalling the operator keeps the CRD, the job, its pods and its data.
    release.uninstall()?;
    run.cluster
        .kubectl_output(&["get", "crd", "megatronfinetunes.megatron.dev"])
        .context("helm uninstall removed the CRD")?;
    let job = run.jobs().get("kept").await?;
    ensure!(
        job.status
            .as_ref()
            .and_then(|s| s.progress.as_ref())
            .is_some_and(|p| p.step < 1000),
        "the job finished before the operator was uninstalled: {:?}",
        job.status.as_ref().and_then(|s| s.progress.as_ref())
    );
    ensure!(
        run.gang("kept").await? == gang,
        "uninstall touched the gang"
    );
    let kept = job.status.and_then(|s| s.latest_checkpoint);
    ensure!(
        kept.as_ref().is_some_and(|c| c.step >= checkpoint.step),
        "the job's status lost its checkpoint: {kept:?}"
    );
    let files: Vec<_> = run
        .store
        .list(Some(&Key::from(
            checkpoint
                .uri
                .as_str()
                .trim_start_matches(&format!("s3://{BUCKET}/")),
        )))
        .try_collect()
        .await?;
    ensure!(
        !files.is_empty(),
        "checkpoint {} is gone from S3",
        checkpoint.uri.as_str()
    );

    // Installed again, the operator finishes the same attempt.
    run.release = Some(HelmRelease::install(&run.cluster, &run.ns.name, &[])?);
    let status = run.wait_phase("kept", "Succeeded").await?;
    assert_eq!(status.restarts, 0);
    assert_eq!(status.progress.as_ref().map(|p| p.step), Some(1000));
    let nemo = status.artifacts.as_ref().and_then(|a| a.nemo.clone());
    assert!(
        run.object_exists(nemo.context("nemo")?.uri.as_str())
            .await?
            > 1_000_000
    );
    run.finish().await
}

/// `pretrained: megatron-bert-345m-uncased` on a cluster without internet: the operator's
/// mirror (an S3 prefix in NGC's layout, holding a generated model with the 345M key names at
/// tiny shapes) supplies the weights, the first job fills the job bucket's shared cache, and a
/// second job fine-tunes from that cache after the mirror's copy is deleted.
#[tokio::test]
async fn a_published_name_comes_from_the_mirror_then_from_the_shared_cache() -> Result<()> {
    let mirror_prefix = format!("mirror-{}", e2e::namespace::unique_suffix());
    let mirror = format!("s3://{BUCKET}/{mirror_prefix}/");
    let run = NodeRun::start(
        "node-published",
        &[&format!("models.mirror={mirror}"), "models.ngcUrl="],
    )
    .await?;
    let weights_key = format!(
        "{mirror_prefix}/{}",
        crds::PretrainedModel::MegatronBert345mUncased
            .published_files()
            .context("published")?
            .weights()
            .path
    );
    upload_published_fixture(&run, &weights_key).await?;
    let published = json!({ "model": {
        "pretrained": "megatron-bert-345m-uncased",
        "checkpoint": null,
        "config": null,
    } });

    run.create("first", published.clone()).await?;
    let first = run.wait_phase("first", "Succeeded").await?;
    let model = first.model.clone().context("status.model")?;
    assert_eq!(model.phase, crds::ModelPhase::Ready);
    let source = model.source.clone().unwrap_or_default();
    ensure!(
        source.starts_with(&mirror) || source.contains("_cache/models"),
        "weights from the mirror (pod 0) or the cache it filled: {model:?}"
    );
    ensure!(
        model
            .config
            .as_deref()
            .is_some_and(|c| c.contains("hidden 64")),
        "the architecture read from the checkpoint's args: {model:?}"
    );
    let ready = first
        .conditions
        .iter()
        .find(|c| c.type_ == crds::status::condition_types::MODEL_READY)
        .context("ModelReady condition")?;
    assert_eq!(ready.status, "True", "{ready:?}");

    // The mirror's copy goes; the second job needs only the shared cache.
    run.store.delete(&Key::from(weights_key.as_str())).await?;
    run.create("second", published).await?;
    let second = run.wait_phase("second", "Succeeded").await?;
    let model = second.model.context("status.model")?;
    ensure!(
        model
            .source
            .as_deref()
            .is_some_and(|s| s.contains("_cache/models/megatron-bert-345m-uncased/v0.0/")),
        "the second job read the shared cache: {model:?}"
    );
    run.finish().await
}

/// A tiny Megatron-LM checkpoint (tests/python/tiny_megatron_bert.py at TP 1: the 345M
/// model's key names and args, hidden 64) uploaded as the published weights file.
async fn upload_published_fixture(run: &NodeRun, key: &str) -> Result<()> {
    let python = std::env::var("MEGATRON_PYTHON").context("MEGATRON_PYTHON (scripts/torch-env)")?;
    let dir = e2e::workspace_root()
        .join("e2e/.cluster/real-node-tests")
        .join(format!("{}-published", run.ns.name));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(python)
        .arg(e2e::workspace_root().join("e2e/tests/python/tiny_megatron_bert.py"))
        .arg(&dir)
        .args(["--tp", "1"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(dir.join("iter_0000100/mp_rank_00/model_optim_rng.pt"))?;
    run.store
        .put(&Key::from(key), object_store::PutPayload::from(bytes))
        .await?;
    Ok(())
}
