//! Scale benchmark against a running control plane (`source e2e/.cluster/env` first):
//! creates N MegatronFineTunes (default 500) in a fresh namespace with the operator running
//! in this process, and reports the time until every StatefulSet exists, p50/p99 of
//! create-to-StatefulSet latency, the process's peak RSS, and API writes per reconcile at
//! steady state (every job touched once more).
//!
//! `cargo run --release -p megatron-operator --example bench_scale -- 500`

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use crds::MegatronFineTune;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Namespace},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use megatron_operator::{Metrics, Operator, OperatorConfig};
use serde_json::json;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn total_writes(metrics: &Metrics) -> u64 {
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
        "megatronfinetunes",
    ]
    .iter()
    .map(|r| metrics.writes_for(r))
    .sum()
}

fn job(name: &str, ns: &str) -> Result<MegatronFineTune> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "megatron.dev/v1alpha1", "kind": "MegatronFineTune",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "task": { "type": "TextClassification", "textClassification": { "numClasses": 2 } },
            "model": { "pretrained": "megatron-bert-345m-uncased" },
            "data": { "train": "s3://bench/train.tsv" },
            "training": { "maxSteps": 10, "globalBatchSize": 8, "microBatchSize": 2, "optimizer": { "learningRate": 0.0001 } },
            "parallelism": { "tensorParallelSize": 2, "dataParallelSize": 2, "ranksPerPod": 4, "device": "CPU" },
            "storage": { "bucket": "bench", "credentialsSecretRef": { "name": "s3" } },
        }
    }))?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(500);
    let config = kube::Config::infer()
        .await
        .context("KUBECONFIG: source e2e/.cluster/env")?;
    megatron_operator::client::install_crypto_provider();
    let client = Client::try_from(config.clone())?;
    let crds_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds_api
        .patch(
            crds::CRD_NAME,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(crds::crd::crd()),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ns = format!("bench-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": ns } }))?,
        )
        .await?;

    let metrics = Arc::new(Metrics::default());
    let op_client = megatron_operator::client::build(config, metrics.clone())?;
    let mut op_config = OperatorConfig::for_tests();
    op_config.namespace = Some(ns.clone());
    op_config.lease_namespace = ns.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(Operator::new(op_client, op_config, metrics.clone()).run(
        async move {
            let _ = stop_rx.await;
        },
        None,
    ));
    while metrics.leader.get() != 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Record when each StatefulSet first appears.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen_w = seen.clone();
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let watch = tokio::spawn(async move {
        let mut stream = watcher(sts_api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(sts)) = stream.try_next().await {
            seen_w
                .lock()
                .unwrap()
                .entry(sts.name_any())
                .or_insert_with(Instant::now);
        }
    });

    let jobs: Api<MegatronFineTune> = Api::namespaced(client.clone(), &ns);
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (jobs, created, ns) = (jobs.clone(), created.clone(), ns.clone());
            async move {
                let name = format!("job-{i:04}");
                let t = Instant::now();
                jobs.create(&PostParams::default(), &job(&name, &ns)?)
                    .await?;
                created.lock().unwrap().insert(name, t);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let created_all = start.elapsed();
    while seen.lock().unwrap().len() < n {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "StatefulSets missing after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_sts = start.elapsed();
    let mut latencies: Vec<Duration> = {
        let (seen, created) = (seen.lock().unwrap(), created.lock().unwrap());
        created
            .iter()
            .map(|(name, t)| seen[name].duration_since(*t))
            .collect()
    };
    latencies.sort();

    // Steady state: let the first wave settle, then touch every job once and count writes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (writes0, reconciles0) = (total_writes(&metrics), metrics.reconciliations.get());
    let touch = json!({ "metadata": { "annotations": { "bench/touched": "1" } } });
    for i in 0..n {
        jobs.patch(
            &format!("job-{i:04}"),
            &PatchParams::default(),
            &Patch::Merge(&touch),
        )
        .await?;
    }
    while metrics.reconciliations.get() < reconciles0 + n as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = metrics.reconciliations.get() - reconciles0;
    let writes = total_writes(&metrics) - writes0;

    println!("jobs                                  {n}");
    println!(
        "all created after                     {:.2} s",
        created_all.as_secs_f64()
    );
    println!(
        "every StatefulSet exists after        {:.2} s (goal < 30 s)",
        all_sts.as_secs_f64()
    );
    println!(
        "create -> StatefulSet latency p50     {:.3} s",
        percentile(&latencies, 0.5).as_secs_f64()
    );
    println!(
        "create -> StatefulSet latency p99     {:.3} s",
        percentile(&latencies, 0.99).as_secs_f64()
    );
    println!(
        "peak RSS of this process              {:.1} MiB (operator + benchmark client)",
        peak_rss_mib()
    );
    println!(
        "steady state: {reconciles} reconciles, {writes} writes = {:.3} writes/reconcile (goal 0)",
        writes as f64 / reconciles.max(1) as f64
    );

    watch.abort();
    let _ = stop_tx.send(());
    let _ = operator.await;
    namespaces.delete(&ns, &DeleteParams::background()).await?;
    Ok(())
}
