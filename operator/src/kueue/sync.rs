//! The reconcile's Kueue steps: read (or create) the job's Workload before the decision, and
//! after it write what Kueue expects of a job controller.

use std::sync::Arc;

use crds::MegatronFineTune;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};

use super::{
    CHECKPOINT_STEP_ANNOTATION, CHECKPOINT_TIME_ANNOTATION,
    admission::{self, Placement},
    priority_class, queue_name, status,
    workload::{self, ResourceFlavor, Workload},
};
use crate::{
    children::stateful_set,
    context::Context,
    error::{Error, Result},
    job::JobView,
    lifecycle::{
        decide::Decision,
        gang::GangObservation,
        model::{Phase, QueueGate},
    },
};

/// Kueue's state of a queued job in this reconcile.
pub struct Queue {
    /// The job's Workload (`None` right after creating it).
    pub workload: Option<Arc<Workload>>,
    /// May the gang run.
    pub gate: QueueGate,
    /// Node labels and tolerations of the admitted flavors.
    pub placement: Placement,
}

/// The job's Workload and what it says; `None` when Kueue does not manage the job (no
/// queue-name label, or the operator runs without `--kueue`). A missing Workload is created,
/// unless the job has finished (Kueue may delete finished Workloads; a new one would take
/// quota for a job that never runs again).
pub async fn observe(
    ctx: &Context,
    job: &MegatronFineTune,
    view: &JobView,
    attempt: u32,
    finished: bool,
) -> Result<Option<Queue>> {
    let (Some(queue), Some(store)) = (queue_name(job), ctx.stores.workloads.as_ref()) else {
        return Ok(None);
    };
    let name = workload::name(&view.name);
    let found = store.get(&ObjectRef::new(&name).within(&view.namespace));
    if found.is_none() && finished {
        return Ok(None);
    }
    let Some(workload) = found else {
        create(ctx, job, view, queue, attempt).await?;
        return Ok(Some(Queue {
            workload: None,
            gate: QueueGate::default(),
            placement: Placement::default(),
        }));
    };
    let gate = admission::gate(&workload);
    let placement = if gate.runs() {
        placement(ctx, &workload).await?
    } else {
        Placement::default()
    };
    Ok(Some(Queue {
        workload: Some(workload),
        gate,
        placement,
    }))
}

/// Writes what Kueue expects after the decision: Finished, the quota released after an
/// eviction once the gang is gone, PodsReady, and the latest checkpoint.
pub async fn publish(
    ctx: &Context,
    queue: &Queue,
    decision: &Decision,
    gang: &GangObservation,
    checkpoint: Option<(u64, Timestamp)>,
    now: Timestamp,
) -> Result<()> {
    let Some(workload) = &queue.workload else {
        return Ok(());
    };
    let api: Api<Workload> = Api::namespaced(
        ctx.client.clone(),
        &workload.namespace().unwrap_or_default(),
    );
    let name = workload.name_any();
    let phase = decision.status.phase.unwrap_or(Phase::Pending);
    let apply = |manager: &'static str| PatchParams::apply(manager).force();
    if phase.is_finished() {
        let message = decision
            .transition
            .as_ref()
            .map(|t| t.message.clone())
            .unwrap_or_default();
        if let Some(body) = status::finished(workload, phase == Phase::Succeeded, &message, now) {
            api.patch_status(
                &name,
                &apply(status::FINISHED_MANAGER),
                &Patch::Apply(&body),
            )
            .await?;
        }
    } else if queue.gate.evicted.is_some() {
        // Only once no rank runs: the quota must not go to another job while ranks hold GPUs.
        if gang.current == 0
            && gang.stale.is_empty()
            && let Some(body) = status::release(workload, now)
        {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
        }
    } else if queue.gate.admitted {
        let all_ready = phase == Phase::Running;
        if let Some(body) = status::pods_ready(workload, all_ready, now) {
            api.patch_status(
                &name,
                &apply(status::PODS_READY_MANAGER),
                &Patch::Apply(&body),
            )
            .await?;
        }
    }
    annotate(&api, workload, checkpoint).await
}

/// Publishes the latest checkpoint's step and time on the Workload, when they changed.
async fn annotate(
    api: &Api<Workload>,
    workload: &Workload,
    checkpoint: Option<(u64, Timestamp)>,
) -> Result<()> {
    let Some((step, time)) = checkpoint else {
        return Ok(());
    };
    let step = step.to_string();
    if workload.annotations().get(CHECKPOINT_STEP_ANNOTATION) == Some(&step) {
        return Ok(());
    }
    let body = serde_json::json!({ "metadata": { "annotations": {
        CHECKPOINT_STEP_ANNOTATION: step,
        CHECKPOINT_TIME_ANNOTATION: time.to_string(),
    }}});
    api.patch(
        &workload.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await?;
    Ok(())
}

/// Creates the job's Workload (Kueue's webhook validates it; it exists already after a
/// lost race, which is fine).
async fn create(
    ctx: &Context,
    job: &MegatronFineTune,
    view: &JobView,
    queue: &str,
    attempt: u32,
) -> Result<()> {
    let priority = match priority_class(job) {
        Some(class) => Some((class, priority_value(ctx, class).await?)),
        None => None,
    };
    let pods = view.pods() as i32;
    let template = stateful_set::build(view, &ctx.config, attempt, pods)
        .spec
        .template;
    let desired = workload::desired(view, queue, pods, template, priority);
    let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &view.namespace);
    match api.create(&PostParams::default(), &desired).await {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other.map(|_| ()).map_err(Error::from),
    }
}

/// The value of a WorkloadPriorityClass (its `value`, a top-level field).
async fn priority_value(ctx: &Context, class: &str) -> Result<i32> {
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", "WorkloadPriorityClass");
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ApiResource::from_gvk(&gvk));
    let object = api
        .get(class)
        .await
        .map_err(|source| Error::PriorityClass {
            name: class.to_owned(),
            source,
        })?;
    Ok(object
        .data
        .get("value")
        .and_then(serde_json::Value::as_i64)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0))
}

/// Node labels and tolerations of the flavors the Workload was admitted on, from the
/// flavor cache (a GET for one the cache has not seen yet).
async fn placement(ctx: &Context, workload: &Workload) -> Result<Placement> {
    let api: Api<ResourceFlavor> = Api::all(ctx.client.clone());
    let mut specs = Vec::new();
    for name in admission::flavors(workload) {
        let cached = ctx
            .stores
            .resource_flavors
            .as_ref()
            .and_then(|store| store.get(&ObjectRef::new(&name)));
        specs.push(match cached {
            Some(flavor) => flavor.spec.clone(),
            None => api.get(&name).await?.spec,
        });
    }
    Ok(Placement::of(&specs))
}
