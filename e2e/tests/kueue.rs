//! Queueing through a real Kueue (sigs.k8s.io/kueue, built from source by
//! `e2e/cluster/install kueue`, running on the local cluster's node with its webhooks; see
//! `e2e/cluster/kueue`). The operator runs in-process with `--kueue`; the rank pods run on a
//! fake node whose kubelet reports them Running (or holds them Pending), so each test takes
//! seconds and exercises only the queueing: the operator owns each job's Workload, keeps the
//! gang at zero until Kueue admits it, writes PodsReady, stops and releases an evicted gang
//! and marks finished Workloads.
//!
//! Run: `e2e/cluster/up && source e2e/.cluster/env && cargo test -p e2e --test kueue`.

mod operator_common;

use std::time::Duration;

use anyhow::{Context, Result};
use kube::{Api, ResourceExt, api::DynamicObject};
use operator_common::{
    RunningOperator, World, condition,
    kueue::{kueue_api, kueue_up, queues, remove_queues},
    spec, wait,
};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// A world whose namespace has queues for one job (2 cores) and the operator running with
/// `--kueue`.
async fn kueue_world(name: &str) -> Result<(World, RunningOperator)> {
    kueue_up().await?;
    let world = World::new(name).await?;
    queues(&world.client, &world.namespace, &world.kubelet.node, "2").await?;
    let mut config = world.operator_config();
    config.kueue = true;
    let operator = world.start_operator(config).await?;
    Ok((world, operator))
}

/// Stops the operator and removes the world with its cluster-scoped Kueue objects.
async fn finish(world: World, operator: RunningOperator) -> Result<()> {
    operator.stop().await?;
    remove_queues(&world.client, &world.namespace).await;
    world.cleanup().await;
    Ok(())
}

/// A queued job of 2 pods x 1 core (TP2 x DP2, 2 ranks per pod) in LocalQueue `team`.
async fn queued_job(world: &World, name: &str, priority: Option<&str>) -> Result<()> {
    let mut labels = json!({ "kueue.x-k8s.io/queue-name": "team" });
    if let Some(p) = priority {
        labels["kueue.x-k8s.io/priority-class"] = json!(format!("{p}-{}", world.namespace));
    }
    let job: crds::MegatronFineTune = serde_json::from_value(json!({
        "apiVersion": "megatron.dev/v1alpha1", "kind": "MegatronFineTune",
        "metadata": { "name": name, "namespace": world.namespace, "labels": labels },
        "spec": spec(&world.kubelet.node, json!({
            "pod": { "resources": { "requests": { "cpu": "1" } } },
        })),
    }))?;
    world.jobs().create(&Default::default(), &job).await?;
    Ok(())
}

/// The job's Workload.
async fn workload(world: &World, job: &str) -> Result<DynamicObject> {
    Ok(kueue_api(&world.client, "Workload", Some(&world.namespace))
        .get(&format!("megatronfinetune-{job}"))
        .await?)
}

fn workload_condition(w: &DynamicObject, type_: &str) -> Option<(String, String)> {
    w.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Rank 0's final report for attempt 0.
async fn succeed(world: &World, job: &str) -> Result<()> {
    world
        .trainer_reports(
            job,
            json!({ "result": { "outcome": "Succeeded", "attempt": 0,
            "reason": "Completed", "message": "done" } }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_job_waits_in_the_queue_until_the_first_finishes() -> Result<()> {
    let (world, operator) = kueue_world("kueue-fifo").await?;

    queued_job(&world, "first", None).await?;
    world.wait_phase("first", "Running", T).await?;
    queued_job(&world, "second", None).await?;
    let second = world.wait_phase("second", "Queued", T).await?;
    let queued = condition(&second, "Queued").context("Queued condition")?;
    assert_eq!(
        (queued.status.as_str(), queued.reason.as_str()),
        ("True", "WaitingForAdmission")
    );
    assert!(
        world.pods("second").await?.is_empty(),
        "no pod before admission"
    );
    // The admitted flavor's node label reached the rank pods' template.
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = world.api();
    let template = sts.get("first").await?.spec.template;
    let selector = template
        .spec
        .context("pod spec")?
        .node_selector
        .unwrap_or_default();
    assert_eq!(
        selector.get("kubernetes.io/hostname"),
        Some(&world.kubelet.node)
    );
    wait("PodsReady on the first Workload", T, || async {
        Ok(
            workload_condition(&workload(&world, "first").await?, "PodsReady")
                == Some(("True".into(), "Started".into())),
        )
    })
    .await?;

    succeed(&world, "first").await?;
    world.wait_phase("first", "Succeeded", T).await?;
    let first = workload(&world, "first").await?;
    assert_eq!(
        workload_condition(&first, "Finished"),
        Some(("True".into(), "Succeeded".into()))
    );
    let second = world.wait_phase("second", "Running", T).await?;
    assert_eq!(
        condition(&second, "Queued").context("Queued")?.reason,
        "Admitted"
    );
    finish(world, operator).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_job_preempts_a_low_priority_one_which_requeues_and_runs_again()
-> Result<()> {
    let (world, operator) = kueue_world("kueue-preempt").await?;

    queued_job(&world, "low", Some("low")).await?;
    world.wait_phase("low", "Running", T).await?;
    assert_eq!(workload(&world, "low").await?.data["spec"]["priority"], 100);
    world
        .trainer_reports(
            "low",
            json!({ "latestCheckpoint": { "step": 20,
            "uri": "s3://megatron-e2e/low/checkpoints/step-000000000020/",
            "time": "2026-12-06T00:00:00Z" } }),
        )
        .await?;
    wait("the checkpoint on the low Workload", T, || async {
        Ok(workload(&world, "low")
            .await?
            .annotations()
            .get("megatron.dev/last-checkpoint-step")
            == Some(&"20".to_owned()))
    })
    .await?;

    queued_job(&world, "high", Some("high")).await?;
    let low = world.wait_phase("low", "Queued", T).await?;
    let queued = condition(&low, "Queued").context("Queued")?;
    assert_eq!(queued.reason, "Evicted");
    assert!(queued.message.contains("Preempted"), "{}", queued.message);
    let status = low.status.context("status")?;
    assert_eq!((status.evictions, status.restarts), (Some(1), 0));
    world.wait_phase("high", "Running", T).await?;
    assert!(
        world.pods("low").await?.is_empty(),
        "the evicted gang is gone"
    );
    let low_workload = workload(&world, "low").await?;
    assert!(
        low_workload.data["status"]["admission"].is_null(),
        "quota released"
    );

    succeed(&world, "high").await?;
    world.wait_phase("high", "Succeeded", T).await?;
    let low = world.wait_phase("low", "Running", T).await?;
    let status = low.status.context("status")?;
    assert_eq!(
        (status.evictions, status.restarts),
        (Some(1), 0),
        "requeued, not restarted"
    );
    finish(world, operator).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_whose_pods_never_become_ready_is_evicted_and_requeued_not_left_half_running()
-> Result<()> {
    let (world, operator) = kueue_world("kueue-ready").await?;
    world.kubelet.set_pod_mode(e2e::kubelet::PodMode::Hold);

    queued_job(&world, "stuck", None).await?;
    world.wait_phase("stuck", "Pending", T).await?;
    // Kueue's waitForPodsReady (20 s here) evicts it; the operator stops the gang.
    let stuck = world.wait_phase("stuck", "Queued", T).await?;
    let queued = condition(&stuck, "Queued").context("Queued")?;
    assert_eq!(queued.reason, "Evicted");
    assert!(
        queued.message.contains("PodsReadyTimeout"),
        "{}",
        queued.message
    );
    wait("the held pods to go", T, || async {
        Ok(world.pods("stuck").await?.is_empty())
    })
    .await?;
    let w = workload(&world, "stuck").await?;
    assert_eq!(
        workload_condition(&w, "PodsReady").map(|c| c.0),
        Some("False".into())
    );

    // After Kueue's backoff it is admitted again; this time the pods start.
    world.kubelet.set_pod_mode(e2e::kubelet::PodMode::Run);
    let stuck = world.wait_phase("stuck", "Running", T).await?;
    assert_eq!(stuck.status.context("status")?.evictions, Some(1));
    finish(world, operator).await
}
