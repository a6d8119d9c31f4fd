//! GitOps and monitoring interop, run by the engines that use them: the chart's Argo CD health
//! check (gopher-lua, as Argo CD embeds it) and Flux `healthCheckExprs` (cel-go, as Flux
//! evaluates them) over their test objects, through e2e/tools/gitops-check; and every metric the
//! Grafana dashboard and the PrometheusRule query is one the operator or the trainer exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    e2e::workspace_root()
}

/// `go -C e2e/tools/gitops-check run . <args>`: stdout, panicking with the output on failure.
fn gitops_check(args: &[&Path]) -> String {
    let go = std::env::var("GO").unwrap_or_else(|_| {
        ["/usr/local/go/bin/go", "go"]
            .into_iter()
            .find(|g| Path::new(g).exists() || *g == "go")
            .unwrap_or("go")
            .to_owned()
    });
    let out = Command::new(&go)
        .arg("-C")
        .arg(root().join("e2e/tools/gitops-check"))
        .args(["run", "."])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {go} (Go is needed for the GitOps checks): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gitops-check {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn chart(path: &str) -> PathBuf {
    root().join("charts/megatron-operator").join(path)
}

#[test]
fn argo_cd_health_check_passes_its_cases_in_gopher_lua() {
    let dir = chart("gitops/argocd/megatron.dev/MegatronFineTune");
    let out = gitops_check(&[Path::new("argocd-health"), &dir]);
    assert!(out.contains("0 failed"), "{out}");
    for phase in ["Healthy", "Degraded", "Progressing", "Suspended"] {
        assert!(out.contains(phase), "no case maps to {phase}:\n{out}");
    }
}

#[test]
fn flux_health_check_exprs_pass_their_cases_in_cel_go() {
    let file = chart("gitops/flux/healthcheckexprs.yaml");
    let out = gitops_check(&[Path::new("flux-health"), &file]);
    assert!(out.contains("0 failed"), "{out}");
}

/// The metric families a registry's text exposition declares, with the sample suffixes
/// Prometheus queries use.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some(name) = rest.split_whitespace().next() else {
            continue;
        };
        names.insert(name.to_owned());
        for suffix in ["_total", "_bucket", "_sum", "_count"] {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    // A family without samples is not rendered: give each one a sample first.
    let operator = megatron_operator::Metrics::default();
    operator.count_error("conflict");
    operator.count_restart("Hung");
    operator.count_eviction("Preempted");
    operator.set_restart_budgets([("ml".into(), "squad".into(), 2)]);
    operator.set_job_phases(["Running"]);
    operator
        .api_writes
        .get_or_create(&megatron_operator::metrics::WriteLabels {
            verb: "PATCH".into(),
            resource: "statefulsets".into(),
        })
        .inc();
    let trainer = megatron_trainer::progress::TrainerMetrics::default();
    let one = (String::from("val_f1"), 1.0);
    for family in [&trainer.validation, &trainer.test] {
        megatron_trainer::progress::TrainerMetrics::set_family(family, [(&one.0, &one.1)]);
    }
    let (operator, trainer) = (operator.render(), trainer.render());
    let known: BTreeSet<String> = exported(&operator)
        .into_iter()
        .chain(exported(&trainer))
        .collect();
    assert!(known.contains("megatron_operator_jobs") && known.contains("megatron_trainer_step"));
    let used = gitops_check(&[
        Path::new("metric-names"),
        &chart("dashboards/megatron-finetune.json"),
        &chart("templates/prometheusrule.yaml"),
    ]);
    let used: Vec<&str> = used
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(used.len() >= 10, "too few names parsed: {used:?}");
    let unknown: Vec<&&str> = used.iter().filter(|n| !known.contains(**n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the alerts query metrics nobody exports: {unknown:?}\nexported: {known:?}"
    );
}
