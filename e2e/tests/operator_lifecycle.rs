//! The operator against the real local control plane (kube-apiserver, controller manager with
//! the StatefulSet and garbage-collector controllers, scheduler). No kubelet runs: the fake
//! kubelet in `e2e::kubelet` reports pod and node status through the API as a kubelet would.
//!
//! Run: `source e2e/.cluster/env && cargo test -p e2e --test operator_lifecycle`.

mod operator_common;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Event, Pod, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use operator_common::{RunningOperator, World, condition, job_phase, spec, wait};
use serde_json::json;

const T: Duration = Duration::from_secs(45);

fn env_value(sts: &StatefulSet, name: &str) -> Option<String> {
    let container = &sts.spec.template.spec.as_ref()?.containers[0];
    container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

async fn sts(world: &World, name: &str) -> Result<StatefulSet> {
    Ok(world.api::<StatefulSet>().get(name).await?)
}

#[tokio::test]
async fn children_have_the_expected_shape() -> Result<()> {
    let world = World::new("shape").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    let node = world.kubelet.node.clone();
    let job = world.create("shape", spec(&node, json!({}))).await?;
    let gpu = world
        .create(
            "shape-gpu",
            spec(&node, json!({ "parallelism": { "device": "GPU" } })),
        )
        .await?;
    wait("both StatefulSets", T, || async {
        Ok(world
            .api::<StatefulSet>()
            .list(&ListParams::default())
            .await?
            .items
            .len()
            == 2)
    })
    .await?;

    let uid = job.uid().unwrap();
    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let refs = meta.owner_references.clone().unwrap_or_default();
        refs.len() == 1
            && refs[0].uid == uid
            && refs[0].controller == Some(true)
            && refs[0].kind == "MegatronFineTune"
    };

    let svc = world.api::<Service>().get("shape").await?;
    assert!(owned(&svc.metadata));
    let svc_spec = svc.spec.unwrap();
    assert_eq!(svc_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc_spec.publish_not_ready_addresses, Some(true));

    let set = sts(&world, "shape").await?;
    assert!(owned(&set.metadata));
    assert_eq!(set.spec.replicas, Some(2), "world size 4 / 2 ranks per pod");
    assert_eq!(set.spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        set.spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    assert_eq!(set.spec.service_name.as_deref(), Some("shape"));
    let pod = set.spec.template.spec.clone().unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.command.clone().unwrap(),
        [
            "megatron-trainer",
            "train",
            "--config",
            "/etc/megatron/spec.yaml"
        ]
    );
    assert_eq!(container.image.as_deref(), Some("megatron-trainer:e2e"));
    for (name, value) in [
        ("NPROC_PER_NODE", "2"),
        ("WORLD_SIZE", "4"),
        ("TENSOR_PARALLEL_SIZE", "2"),
        ("DATA_PARALLEL_SIZE", "2"),
        ("MASTER_PORT", "29500"),
        ("MEGATRON_JOB_NAME", "shape"),
        ("MEGATRON_ATTEMPT", "0"),
    ] {
        assert_eq!(env_value(&set, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(
        env_value(&set, "MASTER_ADDR"),
        Some(format!("shape-0.shape.{}.svc", world.namespace))
    );
    assert_eq!(env_value(&set, "MEGATRON_JOB_UID"), Some(uid.clone()));
    let envs = container.env.clone().unwrap();
    let pod_index = envs.iter().find(|e| e.name == "POD_INDEX").unwrap();
    assert_eq!(
        pod_index
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    for secret_var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let var = envs.iter().find(|e| e.name == secret_var).unwrap();
        assert!(var.value.is_none(), "{secret_var} must not be inlined");
        assert_eq!(
            var.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "s3-credentials"
        );
    }
    let sc = container.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    let psc = pod.security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(
        container.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("shape-trainer"));
    assert_eq!(
        pod.node_selector.clone().unwrap()["kubernetes.io/hostname"],
        node
    );
    let volumes = pod.volumes.clone().unwrap();
    let shm = volumes
        .iter()
        .find(|v| v.name == "dshm")
        .unwrap()
        .empty_dir
        .clone()
        .unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    let mounts = container.volume_mounts.clone().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/dev/shm"));
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/megatron" && m.read_only == Some(true))
    );
    let limits = container
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap_or_default();
    assert!(
        !limits.contains_key("nvidia.com/gpu"),
        "CPU run requests no GPU"
    );
    let gpu_set = sts(&world, "shape-gpu").await?;
    let gpu_limits = gpu_set.spec.template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(
        gpu_limits["nvidia.com/gpu"].0, "2",
        "GPU run: ranksPerPod GPUs per pod"
    );
    assert!(gpu.uid().is_some());

    let cm = world.api::<ConfigMap>().get("shape-config").await?;
    assert!(owned(&cm.metadata));
    let rendered: crds::MegatronFineTuneSpec =
        serde_yaml::from_str(&cm.data.unwrap()["spec.yaml"])?;
    assert_eq!(rendered, job.spec, "the ConfigMap holds the spec as YAML");

    let sa = world.api::<ServiceAccount>().get("shape-trainer").await?;
    assert!(owned(&sa.metadata));
    let role = world.api::<Role>().get("shape-trainer").await?;
    assert!(owned(&role.metadata));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 2);
    for rule in &rules {
        assert_eq!(rule.resource_names.clone().unwrap(), ["shape"]);
        assert_eq!(rule.api_groups.clone().unwrap(), ["megatron.dev"]);
    }
    assert_eq!(rules[0].resources.clone().unwrap(), ["megatronfinetunes"]);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[1].resources.clone().unwrap(),
        ["megatronfinetunes/status"]
    );
    assert_eq!(rules[1].verbs, ["get", "patch"]);
    let binding = world.api::<RoleBinding>().get("shape-trainer").await?;
    assert!(owned(&binding.metadata));
    assert_eq!(binding.role_ref.name, "shape-trainer");
    assert_eq!(binding.subjects.unwrap()[0].name, "shape-trainer");

    // The rank pods the StatefulSet controller made carry the same template.
    let pods = world.wait_pods_running("shape", 2, 0, T).await?;
    assert_eq!(
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["shape-0", "shape-1"]
    );
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn completion_scales_to_zero_and_survives_an_operator_restart() -> Result<()> {
    let world = World::new("complete").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("done", spec(&world.kubelet.node, json!({})))
        .await?;
    // No node takes the pods yet: the job waits in Pending, Reconciling.
    world.kubelet.set_pod_mode(e2e::kubelet::PodMode::Hold);
    let job = world.wait_phase("done", "Pending", T).await?;
    assert_eq!(condition(&job, "Reconciling").unwrap().status, "True");
    assert_eq!(condition(&job, "Ready").unwrap().status, "False");
    for pod in ["done-0", "done-1"] {
        wait("the pod to be scheduled", T, || async {
            Ok(world
                .api::<Pod>()
                .get(pod)
                .await?
                .spec
                .and_then(|s| s.node_name)
                .is_some())
        })
        .await?;
        world.kubelet.start_pod(&world.namespace, pod).await?;
    }
    world.kubelet.set_pod_mode(e2e::kubelet::PodMode::Run);
    world.wait_pods_running("done", 2, 0, T).await?;
    let job = world.wait_phase("done", "Running", T).await?;
    let status = job.status.clone().unwrap();
    assert_eq!(
        (status.ranks, status.ready_pods, status.restarts),
        (Some(4), Some(2), 0)
    );
    assert!(status.start_time.is_some());
    assert_eq!(condition(&job, "Ready").unwrap().status, "True");
    assert_eq!(condition(&job, "Running").unwrap().status, "True");
    assert_eq!(status.observed_generation, job.metadata.generation);

    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    world
        .trainer_reports(
            "done",
            json!({
                "progress": { "step": 40, "totalSteps": 40, "percent": 100.0, "summary": "40/40 (100%)", "lastStepTime": now },
                "metrics": { "trainLoss": 0.5 },
                "artifacts": { "nemo": { "uri": "s3://megatron-e2e/runs/done/artifacts/model.nemo", "sizeBytes": 1234, "sha256": "a".repeat(64) } },
                "result": { "outcome": "Succeeded", "attempt": 0, "reason": "Completed", "message": "trained 40 steps", "step": 40, "time": now },
            }),
        )
        .await?;
    let job = world.wait_phase("done", "Succeeded", T).await?;
    let status = job.status.clone().unwrap();
    assert!(status.completion_time.is_some());
    assert_eq!(condition(&job, "Succeeded").unwrap().status, "True");
    assert_eq!(
        condition(&job, "Succeeded").unwrap().message,
        "trained 40 steps"
    );
    assert_eq!(
        status.artifacts.unwrap().nemo.unwrap().size_bytes,
        Some(1234),
        "the trainer's fields survive"
    );
    assert_eq!(
        status.progress.unwrap().summary.as_deref(),
        Some("40/40 (100%)")
    );
    wait("StatefulSet at zero replicas", T, || async {
        Ok(sts(&world, "done").await?.spec.replicas == Some(0))
    })
    .await?;
    wait("pods gone", T, || async {
        Ok(world.pods("done").await?.is_empty())
    })
    .await?;
    operator.stop().await?;

    // A fresh operator (as after a crash or upgrade) leaves the finished job alone.
    let operator = world.start_operator(world.operator_config()).await?;
    wait("the new operator to reconcile", T, || async {
        Ok(operator.reconciliations() >= 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = world.jobs().get("done").await?;
    assert_eq!(job_phase(&again), "Succeeded");
    assert_eq!(
        again.status.as_ref().unwrap().completion_time,
        job.status.as_ref().unwrap().completion_time
    );
    assert_eq!(sts(&world, "done").await?.spec.replicas, Some(0));
    assert!(world.pods("done").await?.is_empty());
    assert_eq!(operator.writes("statefulsets"), 0, "nothing re-applied");
    assert_eq!(
        operator.writes("megatronfinetunes/status"),
        0,
        "status untouched"
    );
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_failing_rank_restarts_the_whole_gang() -> Result<()> {
    let world = World::new("restart").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("flaky", spec(&world.kubelet.node, json!({})))
        .await?;
    let before = world.wait_pods_running("flaky", 2, 0, T).await?;
    world.wait_phase("flaky", "Running", T).await?;

    world
        .kubelet
        .crash_container(&world.namespace, "flaky-1", 137, "NCCL watchdog timeout")
        .await?;
    // Restarting lasts about the 1 s backoff: wait for its record rather than the phase.
    wait("restarts = 1", T, || async {
        Ok(world
            .jobs()
            .get("flaky")
            .await?
            .status
            .is_some_and(|s| s.restarts == 1))
    })
    .await?;
    // Both pods are replaced (not only the failed one), at attempt 1.
    let after = world.wait_pods_running("flaky", 2, 1, T).await?;
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old.uid(), new.uid(), "{} was recreated", new.name_any());
    }
    let set = sts(&world, "flaky").await?;
    assert_eq!(env_value(&set, "MEGATRON_ATTEMPT").as_deref(), Some("1"));
    let job = world.wait_phase("flaky", "Running", T).await?;
    assert_eq!(job.status.as_ref().unwrap().restarts, 1);
    assert_eq!(
        operator
            .metrics
            .gang_restarts
            .get_or_create(&megatron_operator::metrics::ReasonLabels {
                reason: "RankFailed".into()
            })
            .get(),
        1
    );
    let events = world
        .api::<Event>()
        .list(&ListParams::default())
        .await?
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RankFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("exited with code 137"))),
        "a Warning event records the restart and its cause"
    );
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn exit_code_2_fails_at_once_with_the_trainers_message() -> Result<()> {
    let world = World::new("invalid").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("bad", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_pods_running("bad", 2, 0, T).await?;
    let message = "spec.data.train: s3://megatron-e2e/squad-tiny/train.json does not exist";
    world
        .kubelet
        .crash_container(&world.namespace, "bad-0", 2, message)
        .await?;
    let job = world.wait_phase("bad", "Failed", T).await?;
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(
        (failed.reason.as_str(), failed.message.as_str()),
        ("InvalidInput", message)
    );
    assert_eq!(condition(&job, "Stalled").unwrap().status, "True");
    assert_eq!(job.status.as_ref().unwrap().restarts, 0, "no retry");
    wait("StatefulSet at zero replicas", T, || async {
        Ok(sts(&world, "bad").await?.spec.replicas == Some(0))
    })
    .await?;
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn exhausting_max_restarts_fails_the_job() -> Result<()> {
    let world = World::new("maxrestarts").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create(
            "doomed",
            spec(
                &world.kubelet.node,
                json!({ "runPolicy": { "maxRestarts": 1 } }),
            ),
        )
        .await?;
    world.wait_pods_running("doomed", 2, 0, T).await?;
    world
        .kubelet
        .crash_container(&world.namespace, "doomed-0", 1, "segfault")
        .await?;
    world.wait_pods_running("doomed", 2, 1, T).await?;
    world.wait_phase("doomed", "Running", T).await?;
    world
        .kubelet
        .crash_container(&world.namespace, "doomed-0", 1, "segfault again")
        .await?;
    let job = world.wait_phase("doomed", "Failed", T).await?;
    assert_eq!(
        condition(&job, "Failed").unwrap().reason,
        "MaxRestartsExceeded"
    );
    assert_eq!(job.status.as_ref().unwrap().restarts, 1);
    wait("pods gone", T, || async {
        Ok(world.pods("doomed").await?.is_empty())
    })
    .await?;
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn suspend_scales_to_zero_and_resume_starts_again() -> Result<()> {
    let world = World::new("suspend").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("pausable", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_pods_running("pausable", 2, 0, T).await?;
    world.wait_phase("pausable", "Running", T).await?;
    let suspend = |on: bool| json!({ "spec": { "runPolicy": { "suspend": on } } });
    world
        .jobs()
        .patch(
            "pausable",
            &PatchParams::default(),
            &Patch::Merge(suspend(true)),
        )
        .await?;
    let job = world.wait_phase("pausable", "Suspended", T).await?;
    assert_eq!(condition(&job, "Suspended").unwrap().status, "True");
    assert!(job.status.as_ref().unwrap().start_time.is_none());
    wait("pods gone", T, || async {
        Ok(world.pods("pausable").await?.is_empty())
    })
    .await?;
    assert_eq!(sts(&world, "pausable").await?.spec.replicas, Some(0));
    world
        .jobs()
        .patch(
            "pausable",
            &PatchParams::default(),
            &Patch::Merge(suspend(false)),
        )
        .await?;
    world.wait_pods_running("pausable", 2, 0, T).await?;
    let job = world.wait_phase("pausable", "Running", T).await?;
    assert_eq!(
        job.status.as_ref().unwrap().restarts,
        0,
        "suspension is no restart"
    );
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn deleting_the_job_garbage_collects_every_child() -> Result<()> {
    let world = World::new("gc").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("temp", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_pods_running("temp", 2, 0, T).await?;
    world
        .jobs()
        .delete("temp", &DeleteParams::background())
        .await?;
    wait("every child collected", Duration::from_secs(60), || async {
        let gone = world.api::<StatefulSet>().get_opt("temp").await?.is_none()
            && world.api::<Service>().get_opt("temp").await?.is_none()
            && world
                .api::<ConfigMap>()
                .get_opt("temp-config")
                .await?
                .is_none()
            && world
                .api::<ServiceAccount>()
                .get_opt("temp-trainer")
                .await?
                .is_none()
            && world.api::<Role>().get_opt("temp-trainer").await?.is_none()
            && world
                .api::<RoleBinding>()
                .get_opt("temp-trainer")
                .await?
                .is_none()
            && world.pods("temp").await?.is_empty();
        Ok(gone)
    })
    .await?;
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_stalled_job_is_restarted() -> Result<()> {
    let world = World::new("hang").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    // 60 s is the smallest hangTimeoutSeconds the API accepts.
    world
        .create(
            "stuck",
            spec(
                &world.kubelet.node,
                json!({ "runPolicy": { "hangTimeoutSeconds": 60 } }),
            ),
        )
        .await?;
    world.wait_pods_running("stuck", 2, 0, T).await?;
    world.wait_phase("stuck", "Running", T).await?;
    let step_time =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    world
        .trainer_reports(
            "stuck",
            json!({ "progress": { "step": 3, "lastStepTime": step_time } }),
        )
        .await?;
    // Restarting lasts about the 1 s backoff: wait for its record rather than the phase.
    // The reason is counted once the status write returned: wait for both.
    let hung = || {
        operator
            .metrics
            .gang_restarts
            .get_or_create(&megatron_operator::metrics::ReasonLabels {
                reason: "Hung".into(),
            })
            .get()
    };
    wait(
        "restarts = 1, for a hang",
        Duration::from_secs(90),
        || async {
            Ok(world
                .jobs()
                .get("stuck")
                .await?
                .status
                .is_some_and(|s| s.restarts == 1)
                && hung() == 1)
        },
    )
    .await?;
    let restarted = world.jobs().get("stuck").await?.status.unwrap_or_default();
    let restart_time = restarted
        .last_restart_time
        .context("status.lastRestartTime")?;
    let waited = restart_time.0.duration_since(step_time.0).as_secs();
    assert!(
        waited >= 59,
        "restarted only after the hang timeout ({waited}s)"
    );
    world.wait_pods_running("stuck", 2, 1, T).await?;
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_node_restarts_the_gang_and_force_deletes_its_pods() -> Result<()> {
    let world = World::new("node").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create(
            "lost",
            spec(
                &world.kubelet.node,
                json!({ "runPolicy": { "nodeNotReadyGraceSeconds": 2 } }),
            ),
        )
        .await?;
    let before = world.wait_pods_running("lost", 2, 0, T).await?;
    world.wait_phase("lost", "Running", T).await?;
    world.kubelet.go_not_ready().await?;
    let job = world.wait_phase("lost", "Restarting", T).await?;
    assert_eq!(
        condition(&job, "Reconciling").unwrap().reason,
        "NodeNotReady"
    );
    // No kubelet confirms graceful deletion on a NotReady node: the operator deletes with grace 0.
    let pods: Api<Pod> = world.api();
    wait("the old pods to be gone", T, || async {
        for old in &before {
            if let Some(p) = pods.get_opt(&old.name_any()).await?
                && p.uid() == old.uid()
            {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn two_replicas_elect_one_leader() -> Result<()> {
    let world = World::new("leader").await?;
    let mut config_a = world.operator_config();
    config_a.identity = Some("replica-a".into());
    let mut config_b = world.operator_config();
    config_b.identity = Some("replica-b".into());
    let a = world.start_operator(config_a).await?;
    let b = world.start_operator(config_b).await?;
    wait("a leader", T, || async {
        Ok(a.is_leader() || b.is_leader())
    })
    .await?;
    // Never both, not even for a moment (a lost race must not leave two leaders until the next
    // renewal), over more than one renewal period (10 s: the world's 15 s lease less 5 s grace).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline {
        assert!(
            !(a.is_leader() && b.is_leader()),
            "two replicas lead at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_leader() ^ b.is_leader(), "exactly one leads");
    assert!(!a.finished() && !b.finished(), "both replicas keep running");
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    world
        .create("first", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_reconciled("first", T).await?;
    assert_eq!(
        standby.reconciliations(),
        0,
        "the standby does not reconcile"
    );
    // The leader steps down on SIGTERM (releasing the Lease); the standby takes over.
    leader.stop().await?;
    wait("the standby to lead", T, || async {
        Ok(standby.is_leader())
    })
    .await?;
    world
        .create("second", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_reconciled("second", T).await?;
    assert!(standby.reconciliations() >= 1);
    standby.stop().await?;
    world.cleanup().await;
    Ok(())
}

/// Replicas that race for a free Lease never both lead: the loser's server-side apply of
/// `holderIdentity` conflicts (each replica has its own field manager) instead of silently
/// overwriting the winner's. Many rounds, since the race only shows when both see the Lease free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_both_lead() -> Result<()> {
    use megatron_operator::leader::{Election, LeaseConfig};
    let world = World::new("race").await?;
    for round in 0..12 {
        let lease = |identity: &str| LeaseConfig {
            name: format!("race-{round}"),
            namespace: world.namespace.clone(),
            identity: identity.into(),
            duration: Duration::from_secs(4),
            grace: Duration::from_secs(1),
        };
        let (config_a, config_b) = (lease("replica-a"), lease("replica-b"));
        let (a, b) = tokio::join!(
            Election::start(world.client.clone(), &config_a),
            Election::start(world.client.clone(), &config_b),
        );
        let (a, b) = (a?, b?);
        wait("a leader", T, || async {
            Ok(*a.is_leader.borrow() || *b.is_leader.borrow())
        })
        .await?;
        // Past the acquisition and its conflict backoff, short of the first renewal (3 s).
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < until {
            assert!(
                !(*a.is_leader.borrow() && *b.is_leader.borrow()),
                "round {round}: both replicas lead"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.resign().await;
        b.resign().await;
    }
    world.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_unchanged_object_causes_no_writes() -> Result<()> {
    let world = World::new("nowrite").await?;
    let operator = world.start_operator(world.operator_config()).await?;
    world
        .create("steady", spec(&world.kubelet.node, json!({})))
        .await?;
    world.wait_pods_running("steady", 2, 0, T).await?;
    world.wait_phase("steady", "Running", T).await?;
    let writes = |op: &RunningOperator| {
        [
            "statefulsets",
            "services",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "megatronfinetunes/status",
            "events",
            "pods",
        ]
        .map(|r| (r, op.writes(r)))
    };
    // Settle: the reconcile that reported Running may still be writing its Event and children.
    let settle_until = tokio::time::Instant::now() + T;
    let mut before = writes(&operator);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = writes(&operator);
        if now == before {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < settle_until,
            "the operator kept writing to a steady job: {before:?} then {now:?}"
        );
        before = now;
    }
    let reconciled = operator.reconciliations();
    // Touch the job and a child: each triggers a reconcile of an unchanged object.
    let touch = json!({ "metadata": { "annotations": { "e2e/touched": "1" } } });
    world
        .jobs()
        .patch("steady", &PatchParams::default(), &Patch::Merge(&touch))
        .await?;
    world
        .api::<Service>()
        .patch("steady", &PatchParams::default(), &Patch::Merge(&touch))
        .await?;
    wait("two more reconciles", T, || async {
        Ok(operator.reconciliations() >= reconciled + 2)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        writes(&operator),
        before,
        "reconciling an unchanged object writes nothing"
    );

    // The endpoints the chart probes and scrapes.
    assert_eq!(operator.http_get("/healthz").await?.0, 200);
    assert_eq!(operator.http_get("/readyz").await?.0, 200);
    let (code, metrics) = operator.http_get("/metrics").await?;
    assert_eq!(code, 200);
    for needle in [
        "megatron_operator_reconciliations_total",
        "megatron_operator_reconcile_duration_seconds_bucket",
        "megatron_operator_api_writes_total{verb=\"patch\",resource=\"statefulsets\"}",
        "megatron_operator_jobs{phase=\"Running\"} 1",
        "megatron_operator_leader 1",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    operator.stop().await?;
    world.cleanup().await;
    Ok(())
}
