//! All-or-nothing placement through kube-scheduler's own gang scheduling: the local cluster
//! runs Kubernetes 1.37 with the `GenericWorkload` gate and `scheduling.k8s.io/v1beta1`
//! (`e2e/cluster/versions.sh`), and the operator runs in-process with
//! `--gang-scheduling pod-group`. Each world's fake node offers 64 cores; a gang of two pods
//! asking for 40 cores each does not fit, one asking for 30 each does.
//!
//! Run: `e2e/cluster/up && source e2e/.cluster/env && cargo test -p e2e --test gang_scheduling`.

mod operator_common;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::{core::v1::Pod, scheduling::v1beta1::PodGroup};
use kube::Api;
use megatron_operator::config::GangScheduling;
use operator_common::{RunningOperator, World, condition, spec, wait};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// A gang of 2 pods (TP2 x DP2, 2 ranks per pod) asking for `cpu` cores each.
async fn gang(world: &World, name: &str, cpu: u32) -> Result<()> {
    world
        .create(
            name,
            spec(
                &world.kubelet.node,
                json!({ "pod": { "resources": { "requests": { "cpu": cpu.to_string() } } } }),
            ),
        )
        .await?;
    Ok(())
}

async fn world_with(name: &str, gang: GangScheduling) -> Result<(World, RunningOperator)> {
    let world = World::new(name).await?;
    let mut config = world.operator_config();
    config.gang_scheduling = gang;
    let operator = world.start_operator(config).await?;
    Ok((world, operator))
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

/// The scheduler has tried pod `pod` and left it unscheduled (`PodScheduled=False`).
fn scheduler_gave_up(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

/// Waits until job `name` has both its pods and the scheduler has decided on each: bound, or
/// tried and left unscheduled. Returns how many are bound.
async fn settled_bound_pods(world: &World, name: &str) -> Result<usize> {
    wait(
        &format!("the scheduler to decide on {name}'s pods"),
        T,
        || async {
            let pods = world.pods(name).await?;
            Ok(pods.len() == 2 && pods.iter().all(|p| is_bound(p) || scheduler_gave_up(p)))
        },
    )
    .await?;
    Ok(world
        .pods(name)
        .await?
        .iter()
        .filter(|p| is_bound(p))
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_does_not_fit_keeps_no_pod_bound_and_blocks_nothing() -> Result<()> {
    let (world, operator) = world_with("gang-pg", GangScheduling::PodGroup).await?;

    gang(&world, "big", 40).await?;
    assert_eq!(
        settled_bound_pods(&world, "big").await?,
        0,
        "a gang that does not fit keeps none of its pods bound"
    );
    // The job says why it is Pending, in the scheduler's words.
    wait("big's condition to say it is unschedulable", T, || async {
        let job = world.jobs().get("big").await?;
        Ok(condition(&job, "Reconciling").is_some_and(|c| {
            c.reason == "Unschedulable" && c.message.contains("not scheduled: big-")
        }))
    })
    .await?;
    let groups: Api<PodGroup> = world.api();
    let group = groups.get("big-gang-0").await.context("big's PodGroup")?;
    let policy = group
        .spec
        .scheduling_policy
        .gang
        .clone()
        .context("gang policy")?;
    assert_eq!(policy.min_count, 2);
    // The scheduler judged the group as a whole.
    let conditions = group.status.and_then(|s| s.conditions).unwrap_or_default();
    let scheduled = conditions
        .iter()
        .find(|c| c.type_ == "PodGroupInitiallyScheduled")
        .context("the scheduler's condition on the PodGroup")?;
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_str()),
        ("False", "Unschedulable")
    );
    assert!(
        scheduled
            .message
            .contains("minCount (2) cannot be satisfied"),
        "{}",
        scheduled.message
    );
    for pod in world.pods("big").await? {
        let group = pod.spec.and_then(|s| s.scheduling_group);
        assert_eq!(
            group.and_then(|g| g.pod_group_name).as_deref(),
            Some("big-gang-0")
        );
    }

    // Nothing is held by the waiting gang: one that fits is placed whole next to it.
    gang(&world, "small", 30).await?;
    world.wait_pods_running("small", 2, 0, T).await?;
    let big = world.pods("big").await?;
    assert!(big.iter().all(|p| !is_bound(p)), "big stays unbound");

    // A gang restart gets a PodGroup of its own; the replaced attempt's goes.
    world
        .kubelet
        .crash_container(&world.namespace, "small-1", 1, "rank failed")
        .await?;
    world.wait_pods_running("small", 2, 1, T).await?;
    wait("only small's attempt-1 PodGroup to remain", T, || async {
        let mut names: Vec<String> = groups
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|g| g.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        Ok(names == ["big-gang-0", "small-gang-1"])
    })
    .await?;

    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

/// The control: without gang scheduling, the same gang is half placed and its bound pod
/// holds 40 cores that the fitting gang then lacks. (This is what the test above rules out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gang_scheduling_the_same_gang_is_half_placed() -> Result<()> {
    let (world, operator) = world_with("gang-none", GangScheduling::None).await?;

    gang(&world, "big", 40).await?;
    assert_eq!(settled_bound_pods(&world, "big").await?, 1);
    let groups: Api<PodGroup> = world.api();
    assert!(groups.list(&Default::default()).await?.items.is_empty());

    gang(&world, "small", 30).await?;
    assert_eq!(
        settled_bound_pods(&world, "small").await?,
        0,
        "the half-placed gang's 40 cores leave 24 for two pods of 30"
    );

    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}
