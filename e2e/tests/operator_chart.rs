//! The Helm chart `charts/megatron-operator`: its CRD is the generated one, it lints and
//! renders, and the operator runs on exactly the RBAC it grants (impersonating its
//! ServiceAccount against the local control plane).
//!
//! Run: `source e2e/.cluster/env && cargo test -p e2e --test operator_chart` (helm and kubectl on PATH).

mod operator_common;

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use operator_common::{RunningOperator, World, condition, spec};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chart() -> PathBuf {
    root().join("charts/megatron-operator")
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("running {program} (source e2e/.cluster/env to put it on PATH)")
        })?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn chart_crd_is_the_generated_crd() -> Result<()> {
    let chart_crd =
        std::fs::read_to_string(chart().join("crds/megatron.dev_megatronfinetunes.yaml"))?;
    let generated = std::fs::read_to_string(root().join(crds::crd::CRD_PATH))?;
    assert!(
        chart_crd == generated,
        "charts/megatron-operator/crds/ differs from {}: cp {} charts/megatron-operator/crds/",
        crds::crd::CRD_PATH,
        crds::crd::CRD_PATH
    );
    assert_eq!(
        generated,
        crds::crd::crd_yaml(),
        "regenerate with `{}`",
        crds::crd::REGENERATE
    );
    Ok(())
}

#[test]
fn chart_lints_and_renders() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    run("helm", &["lint", "--strict", chart], None)?;
    let rendered = run(
        "helm",
        &[
            "template",
            "mo",
            chart,
            "--namespace",
            "ops",
            "--set",
            "replicaCount=2",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "watchNamespace=ml",
            "--set",
            "logFormat=json",
        ],
        None,
    )?;
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()?;
    let kind = |k: &str| {
        docs.iter()
            .filter(|d| d["kind"].as_str() == Some(k))
            .collect::<Vec<_>>()
    };
    for k in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceMonitor",
    ] {
        assert_eq!(kind(k).len(), 1, "one {k}");
    }
    let deployment = kind("Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0].as_str(), Some("run"));
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(env.contains(&("MEGATRON_WATCH_NAMESPACE".into(), "ml".into())));
    assert!(env.contains(&("MEGATRON_LOG_FORMAT".into(), "json".into())));
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    // Nothing broader than the operator needs: no wildcards, no escalate/bind, no secrets.
    let rules = kind("ClusterRole")[0]["rules"].as_sequence().unwrap();
    for rule in rules {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (verbs, resources) = (list("verbs"), list("resources"));
        for forbidden in ["*", "escalate", "bind", "impersonate"] {
            assert!(
                !verbs.iter().any(|v| v == forbidden),
                "ClusterRole grants verb {forbidden}: {rule:?}"
            );
        }
        assert!(
            !resources.iter().any(|r| r == "*" || r == "secrets"),
            "ClusterRole grants {resources:?}"
        );
    }
    // replicaCount > 1 without leader election is refused.
    let refused = Command::new("helm")
        .args([
            "template",
            "mo",
            chart,
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ])
        .output()?;
    assert!(!refused.status.success());
    Ok(())
}

use serde::Deserialize as _;

#[tokio::test]
async fn the_operator_runs_on_the_charts_rbac_alone() -> Result<()> {
    let world = World::new("rbac").await?;
    let release = world.namespace.replace("op-rbac", "mo");
    let chart = chart();
    let rendered = run(
        "helm",
        &[
            "template",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &world.namespace,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/clusterrole.yaml",
            "--show-only",
            "templates/leader-election-role.yaml",
        ],
        None,
    )?;
    run("kubectl", &["apply", "-f", "-"], Some(&rendered))?;
    // The API server authorizes from a cache of roles and bindings: wait until it has these.
    let account = format!(
        "--as=system:serviceaccount:{}:{release}-megatron-operator",
        world.namespace
    );
    for (verb, resource, subresource) in [
        ("create", "leases.coordination.k8s.io", ""),
        ("patch", "megatronfinetunes.megatron.dev", "status"),
    ] {
        operator_common::wait(
            &format!("the chart's RBAC to allow {verb} {resource}"),
            Duration::from_secs(30),
            || async {
                let mut args = vec!["auth", "can-i", verb, resource, "-n", &world.namespace];
                args.push(&account);
                let subresource = format!("--subresource={subresource}");
                if !subresource.ends_with('=') {
                    args.push(&subresource);
                }
                Ok(run("kubectl", &args, None).is_ok())
            },
        )
        .await?;
    }

    let mut config = world.operator_config();
    config.identity = Some("rbac-test".into());
    let mut kube = operator_common::kube_config().await?;
    kube.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:{release}-megatron-operator",
        world.namespace
    ));
    let metrics = std::sync::Arc::new(megatron_operator::Metrics::default());
    let client = megatron_operator::client::build(kube, metrics.clone())?;
    let operator = RunningOperator::start_with(client, config, metrics).await?;

    world
        .create("rbac", spec(&world.kubelet.node, json!({})))
        .await?;
    world
        .wait_pods_running("rbac", 2, 0, Duration::from_secs(45))
        .await?;
    world
        .wait_phase("rbac", "Running", Duration::from_secs(45))
        .await?;
    world
        .kubelet
        .crash_container(&world.namespace, "rbac-0", 1, "oom")
        .await?;
    world
        .wait_pods_running("rbac", 2, 1, Duration::from_secs(45))
        .await?;
    let job = world
        .wait_phase("rbac", "Running", Duration::from_secs(45))
        .await?;
    assert_eq!(job.status.as_ref().unwrap().restarts, 1);
    assert!(condition(&job, "Ready").is_some());
    assert_eq!(
        operator
            .metrics
            .reconcile_errors
            .get_or_create(&megatron_operator::metrics::ReasonLabels {
                reason: "api".into()
            })
            .get(),
        0,
        "no API call was refused"
    );
    operator.stop().await?;
    let _ = run(
        "kubectl",
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &format!("{release}-megatron-operator"),
        ],
        None,
    );
    world.cleanup().await;
    Ok(())
}
