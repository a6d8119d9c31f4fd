//! Shared scaffolding of the operator_* end-to-end tests: a client for the local control plane,
//! the CRD, a namespace and a fake node per test, the operator running in-process, and specs.
#![allow(dead_code)]

pub mod kueue;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use crds::MegatronFineTune;
use e2e::kubelet::FakeKubelet;
use k8s_openapi::{
    api::core::v1::{Namespace, Pod, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use megatron_operator::{Metrics, Operator, OperatorConfig};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as Key};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// Path of the admin kubeconfig: $KUBECONFIG, else the one `e2e/cluster/up` wrote.
fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cluster/admin.kubeconfig")
        })
}

/// Client configuration for the local control plane.
pub async fn kube_config() -> Result<Config> {
    megatron_operator::client::install_crypto_provider();
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| {
        format!(
            "reading {} (start the local cluster with `make cluster-up` or e2e/cluster/up)",
            path.display()
        )
    })?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// A plain admin client (the test's own, not the operator's).
pub async fn client() -> Result<Client> {
    Ok(Client::try_from(kube_config().await?)?)
}

/// Installs (server-side applies) the CRD and waits until it is Established.
pub async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds::crd::crd();
    crds.patch(
        crds::CRD_NAME,
        &PatchParams::apply("megatron-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait("CRD established", Duration::from_secs(30), || async {
        let crd = crds.get(crds::CRD_NAME).await?;
        Ok(crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        }))
    })
    .await
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes.
pub async fn wait<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what} (last error: {e:#})")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One test's world: a namespace, a fake node, and the S3 credentials Secret the specs name.
pub struct World {
    pub client: Client,
    pub namespace: String,
    pub kubelet: FakeKubelet,
}

impl World {
    /// Creates namespace `op-<name>-<suffix>` and node `node-<namespace>`.
    pub async fn new(name: &str) -> Result<Self> {
        let client = client().await?;
        install_crd(&client).await?;
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            % 1_000_000;
        let namespace = format!("op-{name}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces.create(&PostParams::default(), &ns).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "s3-credentials" },
            "stringData": { "AWS_ACCESS_KEY_ID": "test-id", "AWS_SECRET_ACCESS_KEY": "test-secret" },
        }))?;
        secrets.create(&PostParams::default(), &secret).await?;
        let kubelet = FakeKubelet::start(client.clone(), &format!("node-{namespace}"), 8).await?;
        Ok(Self {
            client,
            namespace,
            kubelet,
        })
    }

    /// Jobs in this namespace.
    pub fn jobs(&self) -> Api<MegatronFineTune> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Any namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Operator settings for this world: watches only this namespace, leases in it, short lease.
    pub fn operator_config(&self) -> OperatorConfig {
        let mut config = OperatorConfig::for_tests();
        config.namespace = Some(self.namespace.clone());
        config.lease_namespace = self.namespace.clone();
        config.lease_duration_seconds = 15;
        config.lease_grace_seconds = 5;
        config.trainer_image = "megatron-trainer:e2e".into();
        config.resync_seconds = 30;
        config
    }

    /// Starts the operator in-process with `config`.
    pub async fn start_operator(&self, config: OperatorConfig) -> Result<RunningOperator> {
        RunningOperator::start(config).await
    }

    /// Creates a job from `spec` (a JSON spec, see `spec`).
    pub async fn create(&self, name: &str, spec: Value) -> Result<MegatronFineTune> {
        let job: MegatronFineTune = serde_json::from_value(json!({
            "apiVersion": "megatron.dev/v1alpha1",
            "kind": "MegatronFineTune",
            "metadata": { "name": name, "namespace": self.namespace },
            "spec": spec,
        }))?;
        Ok(self.jobs().create(&PostParams::default(), &job).await?)
    }

    /// The rank pods of job `name`, sorted by name.
    pub async fn pods(&self, name: &str) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = self.api();
        let mut list = pods
            .list(&ListParams::default().labels(&format!("megatron.dev/job-name={name}")))
            .await?
            .items;
        list.sort_by_key(|p| p.name_any());
        Ok(list)
    }

    /// Waits until job `name` reaches `phase`, returning it.
    pub async fn wait_phase(
        &self,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> Result<MegatronFineTune> {
        let jobs = self.jobs();
        wait(&format!("{name} to be {phase}"), timeout, || async {
            let job = jobs.get(name).await?;
            Ok(job_phase(&job) == phase)
        })
        .await?;
        Ok(jobs.get(name).await?)
    }

    /// Waits until the operator has reconciled job `name` once (any phase set).
    pub async fn wait_reconciled(&self, name: &str, timeout: Duration) -> Result<MegatronFineTune> {
        let jobs = self.jobs();
        wait(&format!("{name} to have a phase"), timeout, || async {
            Ok(!job_phase(&jobs.get(name).await?).is_empty())
        })
        .await?;
        Ok(jobs.get(name).await?)
    }

    /// Waits until job `name` has `n` live pods of `attempt` all reported Running.
    pub async fn wait_pods_running(
        &self,
        name: &str,
        n: usize,
        attempt: u32,
        timeout: Duration,
    ) -> Result<Vec<Pod>> {
        wait(
            &format!("{n} running pods of {name} at attempt {attempt}"),
            timeout,
            || async {
                let pods = self.pods(name).await?;
                let live: Vec<_> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                Ok(live.len() == n
                    && live.iter().all(|p| {
                        p.labels().get("megatron.dev/attempt") == Some(&attempt.to_string())
                            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    }))
            },
        )
        .await?;
        self.pods(name).await
    }

    /// Writes trainer-owned status fields the way rank 0 does (SSA, field manager megatron-trainer).
    pub async fn trainer_reports(&self, name: &str, status: Value) -> Result<()> {
        let body = json!({
            "apiVersion": "megatron.dev/v1alpha1",
            "kind": "MegatronFineTune",
            "metadata": { "name": name },
            "status": status,
        });
        self.jobs()
            .patch_status(
                name,
                &PatchParams::apply("megatron-trainer").force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    /// Deletes the namespace and the node.
    pub async fn cleanup(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await;
        self.kubelet.shutdown().await;
    }
}

/// `status.phase` as a string ("" when unset).
pub fn job_phase(job: &MegatronFineTune) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default()
}

/// The condition `type_` of a job.
pub fn condition(
    job: &MegatronFineTune,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// A small valid spec: tiny CPU SQuAD run, TP2 x DP2 over 2 pods of 2 ranks, pinned to `node`,
/// short backoff; `patch` is merged over it (JSON merge semantics for objects).
pub fn spec(node: &str, patch: Value) -> Value {
    let mut base = json!({
        "task": { "type": "QuestionAnswering", "maxSeqLength": 128,
                  "questionAnswering": { "docStride": 32, "maxQueryLength": 32, "maxAnswerLength": 16, "nBestSize": 5 } },
        "model": { "pretrained": "megatron-bert-uncased",
                   "checkpoint": { "location": "s3://megatron-e2e/tiny-bert/" },
                   "config": { "hiddenSize": 64, "numAttentionHeads": 4, "numLayers": 2, "maxPositionEmbeddings": 128, "ffnHiddenSize": 256 } },
        "data": { "train": "s3://megatron-e2e/squad-tiny/train.json" },
        "training": { "maxSteps": 40, "globalBatchSize": 8, "microBatchSize": 2,
                      "optimizer": { "learningRate": 0.001 }, "precision": "fp32", "logIntervalSteps": 5 },
        "parallelism": { "tensorParallelSize": 2, "dataParallelSize": 2, "ranksPerPod": 2, "device": "CPU" },
        "storage": { "endpoint": "http://127.0.0.1:9000", "bucket": "megatron-e2e", "credentialsSecretRef": { "name": "s3-credentials" } },
        "runPolicy": { "maxRestarts": 2, "backoff": { "initialSeconds": 1, "maxSeconds": 2 } },
        "pod": { "nodeSelector": { "kubernetes.io/hostname": node } },
    });
    merge(&mut base, patch);
    base
}

/// examples/tiny-cpu-squad.yaml as job `name` in `namespace`, reading the inputs
/// [`seed_inputs`] put under `bucket`/`prefix` and writing under `<prefix>/runs` on the S3
/// server at `endpoint`.
pub fn tiny_example_job(
    name: &str,
    namespace: &str,
    bucket: &str,
    prefix: &str,
    endpoint: &str,
) -> Result<Value> {
    let example =
        std::fs::read_to_string(e2e::workspace_root().join("examples/tiny-cpu-squad.yaml"))?;
    let mut job: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&example)?)?;
    job["metadata"] = json!({ "name": name, "namespace": namespace });
    merge(
        &mut job["spec"],
        json!({
            "model": { "checkpoint": { "location": format!("s3://{bucket}/{prefix}/tiny-bert/") } },
            "data": {
                "train": format!("s3://{bucket}/{prefix}/squad-tiny/train.json"),
                "validation": format!("s3://{bucket}/{prefix}/squad-tiny/dev.json"),
            },
            "storage": { "endpoint": endpoint, "bucket": bucket, "prefix": format!("{prefix}/runs") },
        }),
    );
    Ok(job)
}

/// JSON merge of `patch` over `base` (objects merge key by key; anything else replaces).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) if v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

/// The operator running in-process.
pub struct RunningOperator {
    pub metrics: Arc<Metrics>,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), megatron_operator::RunError>>,
}

impl RunningOperator {
    /// Starts one replica.
    pub async fn start(config: OperatorConfig) -> Result<Self> {
        // Operator logs on stderr when asked for (RUST_LOG=megatron_operator=debug).
        if std::env::var_os("RUST_LOG").is_some() {
            megatron_operator::telemetry::init(megatron_operator::telemetry::LogFormat::Text);
        }
        let metrics = Arc::new(Metrics::default());
        let client = megatron_operator::client::build(kube_config().await?, metrics.clone())?;
        Self::start_with(client, config, metrics).await
    }

    /// Starts one replica on `client` (built with `megatron_operator::client::build` and `metrics`).
    pub async fn start_with(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (shutdown, signal) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = oneshot::channel();
        let operator = Operator::new(client, config, metrics.clone());
        let handle = tokio::spawn(operator.run(
            async move {
                let _ = signal.await;
            },
            Some(bound_tx),
        ));
        let addr = bound_rx
            .await
            .context("the operator did not start its HTTP server")?;
        Ok(Self {
            metrics,
            addr,
            shutdown: Some(shutdown),
            handle,
        })
    }

    /// Whether this replica currently leads.
    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    /// Reconciliations started so far.
    pub fn reconciliations(&self) -> u64 {
        self.metrics.reconciliations.get()
    }

    /// Writes (non-GET requests) to `resource` so far.
    pub fn writes(&self, resource: &str) -> u64 {
        self.metrics.writes_for(resource)
    }

    /// GETs `path` from the HTTP server.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Graceful shutdown (as on SIGTERM); returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), megatron_operator::RunError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.handle).await.expect("operator task panicked")
    }

    /// Whether `run` has returned.
    pub fn finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Makes the tiny model (a Megatron-LM checkpoint at TP 2, the example's architecture) and the tiny
/// SQuAD data with the repository's Python helpers, and uploads them under `prefix`.
pub async fn seed_inputs(store: &Arc<dyn ObjectStore>, prefix: &str, work: &Path) -> Result<()> {
    let python = std::env::var("MEGATRON_PYTHON")
        .context("MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` first")?;
    let root = e2e::workspace_root();
    let _ = std::fs::remove_dir_all(work);
    let model = work.join("tiny-bert");
    let data = work.join("data");
    for (script, args) in [
        (
            root.join("e2e/tests/python/tiny_megatron_bert.py"),
            vec![model.display().to_string()],
        ),
        (
            root.join("trainer-image/tests/python/data_make_datasets.py"),
            vec![
                "--out".into(),
                data.display().to_string(),
                "--train".into(),
                "64".into(),
                "--dev".into(),
                "16".into(),
            ],
        ),
    ] {
        let out = Command::new(&python).arg(&script).args(&args).output()?;
        ensure!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files = vec![
        (
            data.join("squad/train.json"),
            "squad-tiny/train.json".to_owned(),
        ),
        (
            data.join("squad/dev.json"),
            "squad-tiny/dev.json".to_owned(),
        ),
    ];
    for rel in [
        "latest_checkpointed_iteration.txt",
        "iter_0000100/mp_rank_00/model_optim_rng.pt",
        "iter_0000100/mp_rank_01/model_optim_rng.pt",
    ] {
        files.push((model.join(rel), format!("tiny-bert/{rel}")));
    }
    for (local, key) in files {
        let bytes =
            std::fs::read(&local).with_context(|| format!("reading {}", local.display()))?;
        store
            .put(
                &Key::from(format!("{prefix}/{key}")),
                PutPayload::from(bytes),
            )
            .await
            .with_context(|| format!("uploading {key} to the local S3 server"))?;
    }
    Ok(())
}

/// The S3 credentials Secret a spec names (`s3-credentials`, values never printed) in
/// `namespace`, and a client of `bucket` on the local S3 server with the same keys.
pub async fn s3_secret_and_store(
    cluster: &e2e::Cluster,
    namespace: &str,
    bucket: &str,
) -> Result<Arc<dyn ObjectStore>> {
    let env = &cluster.env;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "s3-credentials" },
        "stringData": {
            "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID")?,
            "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY")?,
        },
    }))?;
    Api::<Secret>::namespaced(cluster.client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(env.s3_endpoint()?)
            .with_allow_http(true)
            .with_region(env.get("AWS_REGION").unwrap_or("us-east-1"))
            .with_bucket_name(bucket)
            .with_access_key_id(env.get("AWS_ACCESS_KEY_ID")?)
            .with_secret_access_key(env.get("AWS_SECRET_ACCESS_KEY")?)
            .build()?,
    ))
}
