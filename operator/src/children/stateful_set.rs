//! The StatefulSet running the gang: one pod per `ranksPerPod` ranks, all started together
//! (`Parallel`), restarted only by the operator (`OnDelete`).

use std::collections::BTreeMap;

use crds::pod::PullPolicy;
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
    },
};

use super::{
    ATTEMPT_LABEL, CONFIG_DIR, CONFIG_KEY, Names, labels, metadata, pod_group, selector_labels,
};
use crate::{
    config::{GangScheduling, OperatorConfig},
    job::JobView,
};

/// Name of the trainer container.
pub const CONTAINER: &str = "trainer";
/// Downward-API label with the pod's ordinal (set by the StatefulSet controller).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Builds the StatefulSet for gang `attempt` with `replicas` pods (0 while suspended or finished).
pub fn build(job: &JobView, config: &OperatorConfig, attempt: u32, replicas: i32) -> StatefulSet {
    // User labels first: the operator's own labels win.
    let mut pod_labels = job.pod.labels.clone();
    pod_labels.extend(labels(job));
    pod_labels.insert(ATTEMPT_LABEL.to_owned(), attempt.to_string());
    let annotations = (!job.pod.annotations.is_empty()).then(|| job.pod.annotations.clone());
    StatefulSet {
        metadata: metadata(job, Names::stateful_set(job)),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(Names::service(job)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(job)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(job, config, attempt)),
            },
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn shm_size(job: &JobView, config: &OperatorConfig) -> Option<Quantity> {
    let size = job
        .pod
        .shm_size
        .clone()
        .unwrap_or_else(|| Quantity(config.shm_size.clone()));
    // "0" (in any unit) disables the volume.
    let zero = size.0.trim_start_matches('0').is_empty()
        || size
            .0
            .trim_start_matches('0')
            .starts_with(|c: char| c.is_ascii_alphabetic());
    (!zero).then_some(size)
}

fn pod_spec(job: &JobView, config: &OperatorConfig, attempt: u32) -> PodSpec {
    let pod = &job.pod;
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: Names::config_map(job),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(size) = shm_size(job, config) {
        volumes.push(Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(size),
                mode: None,
            }),
            ..Volume::default()
        });
    }
    volumes.extend(pod.volumes.iter().cloned());
    PodSpec {
        containers: vec![container(job, config, attempt)],
        volumes: Some(volumes),
        service_account_name: Some(Names::trainer_identity(job)),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(
            pod.termination_grace_period_seconds
                .unwrap_or(crds::PodSpec::DEFAULT_TERMINATION_GRACE_SECONDS),
        ),
        node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
        tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
        affinity: pod.affinity.clone(),
        topology_spread_constraints: (!pod.topology_spread_constraints.is_empty())
            .then(|| pod.topology_spread_constraints.clone()),
        priority_class_name: pod.priority_class_name.clone(),
        scheduler_name: pod.scheduler_name.clone(),
        scheduling_group: (config.gang_scheduling == GangScheduling::PodGroup)
            .then(|| pod_group::scheduling_group(job, attempt)),
        image_pull_secrets: (!pod.image_pull_secrets.is_empty())
            .then(|| pod.image_pull_secrets.clone()),
        security_context: Some(pod_security_context(
            pod.security_context.clone(),
            config.trainer_uid,
        )),
        ..PodSpec::default()
    }
}

/// The user's pod security context with the restricted profile filled in where unset.
fn pod_security_context(user: Option<PodSecurityContext>, uid: i64) -> PodSecurityContext {
    let mut sc = user.unwrap_or_default();
    sc.run_as_non_root.get_or_insert(true);
    sc.run_as_user.get_or_insert(uid);
    sc.run_as_group.get_or_insert(uid);
    sc.fs_group.get_or_insert(uid);
    sc.seccomp_profile.get_or_insert(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
    sc
}

/// The user's container security context with the restricted profile filled in where unset.
fn container_security_context(user: Option<SecurityContext>) -> SecurityContext {
    let mut sc = user.unwrap_or_default();
    sc.allow_privilege_escalation.get_or_insert(false);
    sc.run_as_non_root.get_or_insert(true);
    sc.capabilities.get_or_insert(Capabilities {
        drop: Some(vec!["ALL".into()]),
        add: None,
    });
    sc.seccomp_profile.get_or_insert(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
    sc
}

fn pull_policy(policy: PullPolicy) -> String {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
    .to_owned()
}

fn container(job: &JobView, config: &OperatorConfig, attempt: u32) -> Container {
    let pod = &job.pod;
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if shm_size(job, config).is_some() {
        mounts.push(VolumeMount {
            name: "dshm".into(),
            mount_path: "/dev/shm".into(),
            ..VolumeMount::default()
        });
    }
    mounts.extend(pod.volume_mounts.iter().cloned());
    Container {
        name: CONTAINER.into(),
        image: Some(
            pod.image
                .clone()
                .unwrap_or_else(|| config.trainer_image.clone()),
        ),
        image_pull_policy: Some(
            pod.image_pull_policy
                .map_or_else(|| config.trainer_image_pull_policy.clone(), pull_policy),
        ),
        command: Some(vec![
            "megatron-trainer".into(),
            "train".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(env(job, config, attempt)),
        env_from: (!pod.env_from.is_empty()).then(|| pod.env_from.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("rendezvous".into()),
            container_port: config.master_port.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(job)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security_context(
            pod.container_security_context.clone(),
        )),
        ..Container::default()
    }
}

fn resources(job: &JobView) -> ResourceRequirements {
    let mut resources = job.pod.resources.clone().unwrap_or_default();
    if job.gpu {
        let gpus = Quantity(job.ranks_per_pod.to_string());
        let limits = resources.limits.get_or_insert_with(BTreeMap::new);
        // The user's own nvidia.com/gpu wins (API: "adds ... when absent").
        limits.entry(GPU_RESOURCE.into()).or_insert(gpus);
    }
    resources
}

fn value(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn env(job: &JobView, config: &OperatorConfig, attempt: u32) -> Vec<EnvVar> {
    let storage = &job.storage;
    let mut env = vec![
        EnvVar {
            name: "POD_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{POD_INDEX_LABEL}']"),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        value("NPROC_PER_NODE", job.ranks_per_pod),
        value("WORLD_SIZE", job.world_size),
        value("TENSOR_PARALLEL_SIZE", job.tensor_parallel_size),
        value("DATA_PARALLEL_SIZE", job.data_parallel_size),
        value("MASTER_ADDR", Names::master_addr(job)),
        value("MASTER_PORT", config.master_port),
        value("MEGATRON_JOB_NAME", &job.name),
        value("MEGATRON_JOB_NAMESPACE", &job.namespace),
        value("MEGATRON_JOB_UID", &job.uid),
        value("MEGATRON_ATTEMPT", attempt),
        value("MEGATRON_CONFIG", format!("{CONFIG_DIR}/{CONFIG_KEY}")),
        value("MEGATRON_MODEL_NGC_URL", &config.model_ngc_url),
    ];
    if !config.model_mirror.is_empty() {
        env.push(value("MEGATRON_MODEL_MIRROR", &config.model_mirror));
    }
    if let Some(endpoint) = &storage.endpoint {
        env.push(value("AWS_ENDPOINT_URL", endpoint));
    }
    env.push(value("AWS_REGION", &storage.region));
    env.push(value("AWS_S3_FORCE_PATH_STYLE", storage.force_path_style));
    let secret = &storage.credentials_secret_ref;
    let secret_env = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    };
    env.push(secret_env("AWS_ACCESS_KEY_ID", &secret.access_key_id_key));
    env.push(secret_env(
        "AWS_SECRET_ACCESS_KEY",
        &secret.secret_access_key_key,
    ));
    env.extend(job.pod.env.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures;

    fn env_of(sts: &StatefulSet) -> Vec<EnvVar> {
        sts.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap()
    }

    #[test]
    fn gang_shape() {
        let config = OperatorConfig::for_tests();
        let sts = build(&fixtures::job(), &config, 3, 2);
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let template = &spec.template;
        assert_eq!(
            template.metadata.as_ref().unwrap().labels.as_ref().unwrap()[ATTEMPT_LABEL],
            "3"
        );
        let pod = template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()[GPU_RESOURCE]
                .0,
            "2"
        );
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let env = env_of(&sts);
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get("MASTER_ADDR").as_deref(), Some("squad-0.squad.ml.svc"));
        assert_eq!(get("MEGATRON_ATTEMPT").as_deref(), Some("3"));
        assert_eq!(get("NPROC_PER_NODE").as_deref(), Some("2"));
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            let var = env.iter().find(|e| e.name == name).unwrap();
            assert!(var.value.is_none(), "{name} must come from the Secret");
            assert_eq!(
                var.value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap()
                    .name,
                "s3-creds"
            );
        }
    }

    #[test]
    fn pods_join_the_attempts_pod_group_only_with_gang_scheduling() {
        let mut config = OperatorConfig::for_tests();
        let pod_of = |config: &OperatorConfig| {
            build(&fixtures::job(), config, 3, 2)
                .spec
                .template
                .spec
                .unwrap()
        };
        assert!(pod_of(&config).scheduling_group.is_none());
        config.gang_scheduling = GangScheduling::PodGroup;
        assert_eq!(
            pod_of(&config)
                .scheduling_group
                .and_then(|g| g.pod_group_name)
                .as_deref(),
            Some("squad-gang-3")
        );
    }

    #[test]
    fn cpu_runs_get_no_gpu_limit_and_zero_shm_disables_the_volume() {
        let mut job = fixtures::job();
        job.gpu = false;
        job.pod.shm_size = Some(Quantity("0".into()));
        let sts = build(&job, &OperatorConfig::for_tests(), 0, 2);
        let pod = sts.spec.template.spec.unwrap();
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap_or_default();
        assert!(!limits.contains_key(GPU_RESOURCE));
        assert!(pod.volumes.unwrap().iter().all(|v| v.name != "dshm"));
    }

    #[test]
    fn user_gpu_limit_wins() {
        let mut job = fixtures::job();
        job.pod.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                GPU_RESOURCE.to_owned(),
                Quantity("1".into()),
            )])),
            ..Default::default()
        });
        let sts = build(&job, &OperatorConfig::for_tests(), 0, 2);
        let pod = sts.spec.template.spec.unwrap();
        assert_eq!(
            pod.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()[GPU_RESOURCE]
                .0,
            "1"
        );
    }
}
