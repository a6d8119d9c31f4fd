//! One reconciliation of a MegatronFineTune: observe, decide, then write only what changed.

use std::{sync::Arc, time::Instant};

use crds::{MegatronFineTune, status::condition_types};
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Pod, scheduling::v1beta1::PodGroup},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{
        controller::Action,
        events::{Event, EventType},
        reflector::{ObjectRef, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, warn};

use crate::{
    api,
    children::{self, ATTEMPT_LABEL, FIELD_MANAGER, JOB_LABEL, Names},
    context::Context,
    error::{Error, ErrorReason, Result},
    job::JobView,
    kueue::{self, admission::Placement},
    lifecycle::{
        decide::{Decision, Inputs, decide},
        gang,
        model::{OwnedStatus, Phase},
    },
};

/// Longest a reconciliation may take before it is abandoned and retried.
pub const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Entry point called by the controller.
pub async fn reconcile(job: Arc<MegatronFineTune>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let started = Instant::now();
    tracing::debug!(job = %job.name_any(), namespace = ?job.namespace(), resource_version = ?job.resource_version(), "reconciling");
    // A stuck API call must not wedge the job: give up and retry.
    let result = match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_job(&job, &ctx)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(RECONCILE_TIMEOUT)),
    };
    tracing::debug!(job = %job.name_any(), ok = result.is_ok(), took_ms = started.elapsed().as_millis() as u64, "reconciled");
    ctx.metrics.observe_reconcile(started.elapsed());
    result
}

/// On error: count it, log it, and retry soon (conflicts sooner).
pub fn error_policy(job: Arc<MegatronFineTune>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_error(error.reason().as_str());
    // A conflict means a newer object is on its way: retry at once.
    let retry = match error.reason() {
        ErrorReason::Conflict => 1,
        _ => 5,
    };
    warn!(job = %job.name_any(), namespace = ?job.namespace(), %error, "reconcile failed");
    Action::requeue(std::time::Duration::from_secs(retry))
}

/// Current time, whole seconds (the API stores timestamps with second precision).
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

async fn reconcile_job(job: &MegatronFineTune, ctx: &Context) -> Result<Action> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = job.name_any();
    let read = api::read(job)?;
    let now = now();
    let attempt = read.status.restarts;

    let pods: Vec<Arc<Pod>> = ctx.stores.pods.state_filter(|pod| {
        pod.metadata.namespace.as_deref() == Some(namespace.as_str())
            && pod.labels().get(JOB_LABEL) == Some(&name)
    });
    let observation = gang::observe(
        pods.iter().map(|p| p.as_ref()),
        attempt,
        |node| ctx.stores.nodes.get(&ObjectRef::new(node)),
        read.policy.node_not_ready_grace,
        now,
    );
    let sts_ref = ObjectRef::new(&name).within(&namespace);
    let sts = ctx.stores.stateful_sets.get(&sts_ref);
    let stateful_set_current = sts
        .as_deref()
        .is_some_and(|s| template_is_current(s, attempt));
    let generation = job.metadata.generation.unwrap_or_default();
    let desired_pods = read.view.as_ref().map_or(0, JobView::pods);
    let finished = read.status.phase.is_some_and(crds::Phase::is_finished);
    let queue = match &read.view {
        Ok(view) => kueue::sync::observe(ctx, job, view, attempt, finished).await?,
        Err(_) => None,
    };
    let decision = decide(&Inputs {
        now,
        generation,
        policy: &read.policy,
        status: &read.status,
        trainer: &read.trainer,
        gang: &observation,
        desired_pods,
        world_size: read.view.as_ref().map_or(0, |v| i64::from(v.world_size)),
        stateful_set_current,
        invalid: read.view.as_ref().err().map(ToString::to_string),
        queue: queue.as_ref().map(|q| &q.gate),
    });

    let jobs: Api<MegatronFineTune> = Api::namespaced(ctx.client.clone(), &namespace);
    if decision.delete_job {
        info!(%name, %namespace, "ttlSecondsAfterFinished elapsed: deleting the job");
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        ignore_not_found(jobs.delete(&name, &params).await.map(|_| ()))?;
        return Ok(Action::await_change());
    }
    if decision.status != read.status {
        let body = api::status_apply(job, &decision.status);
        jobs.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    if let Some(reason) = &decision.restarted {
        ctx.metrics.count_restart(reason);
    }
    count_queue_transitions(ctx, &read.status, &decision, queue.as_ref(), now);
    publish(ctx, job, &decision).await;

    // Pods go before the StatefulSet scales down, so that they get the decided grace.
    delete_pods(ctx, &namespace, &name, &decision).await?;
    let placement = queue.as_ref().map(|q| &q.placement);
    match &read.view {
        Ok(view) => apply_children(ctx, view, &decision, placement).await?,
        Err(_) => scale_down_orphan(ctx, &namespace, sts.as_deref()).await?,
    }
    if let Some(queue) = &queue {
        let checkpoint = read
            .trainer
            .checkpoint_step
            .zip(read.trainer.checkpoint_time);
        kueue::sync::publish(ctx, queue, &decision, &observation, checkpoint, now).await?;
    }
    Ok(Action::requeue(
        decision
            .requeue
            .unwrap_or(ctx.config.resync())
            .min(ctx.config.resync()),
    ))
}

/// Feeds the queue metrics: an eviction (by Kueue's reason), and the wait of a job that
/// leaves phase Queued for the gang.
fn count_queue_transitions(
    ctx: &Context,
    before: &OwnedStatus,
    decision: &Decision,
    queue: Option<&kueue::sync::Queue>,
    now: Timestamp,
) {
    if decision.status.evictions > before.evictions {
        let reason = queue
            .and_then(|q| q.gate.evicted.as_ref())
            .map_or("Unknown", |(reason, _)| reason.as_str());
        ctx.metrics.count_eviction(reason);
    }
    let queued = |p: Option<Phase>| p == Some(Phase::Queued);
    if queued(before.phase) && !queued(decision.status.phase) {
        let since = before
            .condition(condition_types::QUEUED)
            .filter(|c| c.status)
            .map(|c| c.last_transition_time);
        if let Some(waited) =
            since.and_then(|s| std::time::Duration::try_from(now.duration_since(s)).ok())
        {
            ctx.metrics.observe_queue_wait(waited);
        }
    }
}

/// Deletes the pods the decision names, each with its grace period.
async fn delete_pods(ctx: &Context, namespace: &str, job: &str, decision: &Decision) -> Result<()> {
    let Some(first) = decision.delete_pods.first() else {
        return Ok(());
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in &decision.delete_pods {
        let params = DeleteParams {
            grace_period_seconds: u32::try_from(pod.grace_seconds).ok(),
            ..DeleteParams::default()
        };
        ignore_not_found(pods_api.delete(&pod.name, &params).await.map(|_| ()))?;
    }
    info!(job, namespace, phase = ?decision.status.phase, attempt = decision.status.restarts,
        pods = decision.delete_pods.len(), grace_seconds = first.grace_seconds,
        "deleted the gang's pods");
    Ok(())
}

/// The StatefulSet controller has seen the template of `attempt`, so pods deleted now come back at it.
fn template_is_current(sts: &StatefulSet, attempt: u32) -> bool {
    let template_attempt = sts
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(ATTEMPT_LABEL))
        .and_then(|a| a.parse::<u32>().ok());
    let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
    template_attempt == Some(attempt) && observed.is_some() && observed >= sts.metadata.generation
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

async fn publish(ctx: &Context, job: &MegatronFineTune, decision: &Decision) {
    let Some(transition) = &decision.transition else {
        return;
    };
    let event = Event {
        type_: if transition.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: transition.reason.clone(),
        note: Some(truncate(&transition.message, 1000)),
        action: decision
            .status
            .phase
            .map_or("Pending", crds::Phase::as_str)
            .to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        // An event is best effort: never fail the reconcile for it.
        ctx.metrics
            .count_error(Error::Event(error).reason().as_str());
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Server-side applies `desired` unless the cached copy already carries its hash.
async fn apply<K>(
    client: &Client,
    store: &Store<K>,
    mut desired: K,
    what: &'static str,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let hash = children::stamp_hash(&mut desired, |k| k.meta_mut())
        .map_err(|source| Error::Serialize { what, source })?;
    let namespace = desired
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let observed = store.get(&ObjectRef::new(&name).within(&namespace));
    if observed
        .as_deref()
        .and_then(|o| children::observed_hash(o.meta()))
        == Some(hash.as_str())
    {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(())
}

async fn apply_children(
    ctx: &Context,
    view: &JobView,
    decision: &Decision,
    placement: Option<&Placement>,
) -> Result<()> {
    use children::{config_map, pod_group, rbac, service, stateful_set};
    let (client, stores) = (&ctx.client, &ctx.stores);
    // Independent children go out together. The RoleBinding follows its Role (RBAC checks a
    // binding against the rules of the Role it names) and the StatefulSet comes last.
    futures::try_join!(
        apply(
            client,
            &stores.service_accounts,
            rbac::service_account(view),
            "ServiceAccount"
        ),
        apply(client, &stores.roles, rbac::role(view), "Role"),
        apply(
            client,
            &stores.config_maps,
            config_map::build(view),
            "ConfigMap"
        ),
        apply(
            client,
            &stores.services,
            service::build(view, ctx.config.master_port),
            "Service"
        ),
    )?;
    apply(
        client,
        &stores.role_bindings,
        rbac::role_binding(view),
        "RoleBinding",
    )
    .await?;
    let attempt = decision.status.restarts;
    if let Some(pod_groups) = &stores.pod_groups {
        // The pods' group exists before the pods, or they wait for it in the scheduler.
        apply(
            client,
            pod_groups,
            pod_group::build(view, attempt),
            "PodGroup",
        )
        .await?;
        delete_stale_pod_groups(ctx, pod_groups, view, attempt).await?;
    }
    let mut sts = stateful_set::build(view, &ctx.config, attempt, decision.replicas);
    if let (Some(placement), Some(pod)) = (placement, sts.spec.template.spec.as_mut()) {
        placement.apply(pod);
    }
    apply(client, &stores.stateful_sets, sts, "StatefulSet").await
}

/// Deletes the PodGroups of the job's earlier gang attempts.
async fn delete_stale_pod_groups(
    ctx: &Context,
    pod_groups: &Store<PodGroup>,
    view: &JobView,
    attempt: u32,
) -> Result<()> {
    let api: Api<PodGroup> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let stale = pod_groups.state().into_iter().filter(|group| {
        group.metadata.namespace.as_deref() == Some(view.namespace.as_str())
            && group
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|owners| owners.iter().any(|o| o.uid == view.uid))
            && children::pod_group::is_stale(group, attempt)
    });
    for group in stale {
        ignore_not_found(
            api.delete(&group.name_any(), &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }
    Ok(())
}

/// A job whose spec cannot be read keeps no running pods.
async fn scale_down_orphan(
    ctx: &Context,
    namespace: &str,
    sts: Option<&StatefulSet>,
) -> Result<()> {
    let Some(sts) = sts else { return Ok(()) };
    if sts.spec.replicas == Some(0) {
        return Ok(());
    }
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "replicas": 0 } });
    api.patch(
        &sts.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Name of the StatefulSet of a job (for tests).
pub fn stateful_set_name(view: &JobView) -> String {
    Names::stateful_set(view)
}
