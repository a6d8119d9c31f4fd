//! Wires the reconciler to watches of MegatronFineTunes, their children, rank pods and nodes,
//! and runs it while this replica leads.

use std::{
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crds::MegatronFineTune;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Node, Pod, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
    scheduling::v1beta1::PodGroup,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    children::{JOB_LABEL, MANAGED_SELECTOR},
    config::{GangScheduling, OperatorConfig},
    context::Context,
    http::{self, Health},
    kueue::workload::{ResourceFlavor, Workload},
    leader::{Election, LeaseConfig},
    metrics::Metrics,
    reconciler,
    stores::Stores,
};

/// The operator: a client, its settings and its metrics.
pub struct Operator {
    client: Client,
    config: Arc<OperatorConfig>,
    metrics: Arc<Metrics>,
}

/// Why `Operator::run` returned with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Leadership was lost while reconciling; the process should exit so a fresh one rejoins.
    #[error("lost the leader lease")]
    LostLeadership,
    /// Leader election could not start.
    #[error("leader election failed: {0}")]
    Election(#[from] kube_lease_manager::LeaseManagerError),
    /// The HTTP server failed.
    #[error("metrics server failed: {0}")]
    Http(#[from] std::io::Error),
    /// `--gang-scheduling pod-group` on a cluster that does not serve PodGroups.
    #[error(
        "--gang-scheduling pod-group: the cluster does not serve scheduling.k8s.io/v1beta1 \
         PodGroups ({0}); enable the feature gate GenericWorkload on the API server, \
         controller manager and scheduler and --runtime-config scheduling.k8s.io/v1beta1=true \
         on the API server (Kubernetes 1.37+), or run with --gang-scheduling none"
    )]
    GangSchedulingApi(kube::Error),
}

impl Operator {
    /// Builds an operator around `client` (build it with `client::build` to count API writes).
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            config: Arc::new(config),
            metrics,
        }
    }

    /// Serves HTTP, joins the election, and reconciles while leading until `shutdown` resolves.
    /// `bound` receives the metrics server's address once it listens.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    ) -> Result<(), RunError> {
        self.check_gang_scheduling_api().await?;
        let shutdown = shutdown.shared();
        let jobs_api = self.jobs_api();
        let ready = Arc::new(AtomicBool::new(false));
        let (job_reader, job_writer) = reflector::store::<MegatronFineTune>();
        let refresh_reader = job_reader.clone();
        let refresh_metrics = self.metrics.clone();
        let health = Health {
            ready: ready.clone(),
            metrics: self.metrics.clone(),
            refresh: Arc::new(move || {
                let jobs = refresh_reader.state();
                refresh_metrics.set_job_phases(jobs.iter().map(|j| crate::api::phase_name(j)));
                refresh_metrics.set_restart_budgets(jobs.iter().filter_map(|j| {
                    let left = crate::api::restart_budget(j)?;
                    Some((j.namespace().unwrap_or_default(), j.name_any(), left))
                }));
            }),
        };
        let (addr, server) =
            http::serve(self.config.metrics_addr, health, shutdown.clone()).await?;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        if let Some(bound) = bound {
            let _ = bound.send(addr);
        }
        let server = tokio::spawn(server);
        ready.store(true, Ordering::Relaxed);

        let election = if self.config.leader_election {
            let lease = LeaseConfig {
                name: self.config.lease_name.clone(),
                namespace: self.config.lease_namespace.clone(),
                identity: self.config.identity.clone().unwrap_or_else(random_identity),
                duration: std::time::Duration::from_secs(self.config.lease_duration_seconds),
                grace: std::time::Duration::from_secs(self.config.lease_grace_seconds),
            };
            info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "joining leader election");
            let mut election = Election::start(self.client.clone(), &lease).await?;
            tokio::select! {
                won = election.wait_for_leadership() => {
                    if !won {
                        return Err(RunError::LostLeadership);
                    }
                }
                () = shutdown.clone() => {
                    election.resign().await;
                    let _ = server.await;
                    return Ok(());
                }
            }
            info!("became the leader");
            Some(election)
        } else {
            None
        };
        self.metrics.leader.set(1);

        let lost = Arc::new(AtomicBool::new(false));
        // The controller stops on shutdown or when leadership is lost, whichever comes first.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut leader_watch = election.as_ref().map(|e| e.is_leader.clone());
        let stop_watcher = {
            let lost = lost.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let lost_leadership = async {
                    match leader_watch.as_mut() {
                        Some(watch) => {
                            let _ = watch.wait_for(|leader| !*leader).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = lost_leadership => lost.store(true, Ordering::Relaxed),
                    () = shutdown => {}
                }
                let _ = stop_tx.send(());
            })
        };
        let stop = async move {
            let _ = stop_rx.await;
        };
        self.controller(jobs_api, job_reader, job_writer, stop)
            .await;
        // The watcher holds a clone of the leader channel: it must be gone before resigning,
        // or the election task never sees the channel close and keeps renewing the Lease.
        stop_watcher.abort();
        let _ = stop_watcher.await;
        self.metrics.leader.set(0);
        if let Some(election) = election {
            election.resign().await;
        }
        if lost.load(Ordering::Relaxed) {
            warn!("lost the leader lease: stopping");
            server.abort();
            return Err(RunError::LostLeadership);
        }
        let _ = server.await;
        info!("stopped");
        Ok(())
    }

    /// Fails fast when PodGroups are asked for but not served: the API server would drop the
    /// pods' `schedulingGroup` and place the gang pod by pod without a word.
    async fn check_gang_scheduling_api(&self) -> Result<(), RunError> {
        if self.config.gang_scheduling != GangScheduling::PodGroup {
            return Ok(());
        }
        let groups: Api<PodGroup> = watched(&self.client, self.config.namespace.as_deref());
        match groups.list_metadata(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                Err(RunError::GangSchedulingApi(kube::Error::Api(status)))
            }
            // Other errors (RBAC, a blip) surface later through the PodGroup cache's backoff.
            _ => Ok(()),
        }
    }

    fn jobs_api(&self) -> Api<MegatronFineTune> {
        watched(&self.client, self.config.namespace.as_deref())
    }

    async fn controller(
        &self,
        jobs: Api<MegatronFineTune>,
        job_reader: Store<MegatronFineTune>,
        job_writer: reflector::store::Writer<MegatronFineTune>,
        stop: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let (trigger, triggers) =
            futures::channel::mpsc::unbounded::<ObjectRef<MegatronFineTune>>();
        let mut caches = Caches {
            client: self.client.clone(),
            namespace: self.config.namespace.clone(),
            trigger,
            tasks: Vec::new(),
        };
        let stores = caches.stores(&self.config);
        info!("waiting for the caches to fill");
        stores.ready().await;
        info!("caches ready, reconciling");
        let context = Arc::new(self.context(stores));
        let job_stream = reflector(job_writer, watcher(jobs, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        Controller::for_stream(job_stream, job_reader)
            .with_config(
                kube::runtime::controller::Config::default().concurrency(self.config.concurrency),
            )
            .reconcile_on(triggers)
            .graceful_shutdown_on(stop)
            .run(reconciler::reconcile, reconciler::error_policy, context)
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "reconcile request failed");
                }
            })
            .await;
        caches.abort();
    }

    /// What every reconcile shares: the client, settings, metrics, the Event recorder and the caches.
    fn context(&self, stores: Stores) -> Context {
        let reporter = Reporter {
            controller: "megatron-operator".into(),
            instance: self
                .config
                .identity
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        Context {
            client: self.client.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            recorder: Recorder::new(self.client.clone(), reporter),
            stores,
        }
    }
}

/// A namespaced kind the operator caches.
trait Cached:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The child, pod and node caches. Each runs in its own task (so it is complete before the
/// first reconcile) and sends the job each change concerns to the controller.
struct Caches {
    client: Client,
    namespace: Option<String>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<MegatronFineTune>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Caches {
    /// Starts every cache the reconciler reads (Workloads only with Kueue, PodGroups only
    /// with gang scheduling).
    fn stores(&mut self, config: &OperatorConfig) -> Stores {
        let pods = self.cache(watcher::Config::default().labels(JOB_LABEL), |pod: &Pod| {
            job_of_pod(pod).into_iter().collect()
        });
        Stores {
            stateful_sets: self.managed::<StatefulSet>(),
            services: self.managed::<Service>(),
            config_maps: self.managed::<ConfigMap>(),
            service_accounts: self.managed::<ServiceAccount>(),
            roles: self.managed::<Role>(),
            role_bindings: self.managed::<RoleBinding>(),
            nodes: self.nodes(pods.clone()),
            pods,
            workloads: config.kueue.then(|| self.managed::<Workload>()),
            resource_flavors: config.kueue.then(|| self.resource_flavors()),
            pod_groups: (config.gang_scheduling == GangScheduling::PodGroup)
                .then(|| self.managed::<PodGroup>()),
        }
    }

    /// A cache of the operator's children of kind `K`, each triggering its owner job.
    fn managed<K: Cached>(&mut self) -> Store<K> {
        self.cache(
            watcher::Config::default().labels(MANAGED_SELECTOR),
            owner_job,
        )
    }

    /// Nodes: a readiness change triggers the jobs with pods on the node.
    fn nodes(&mut self, pods: Store<Pod>) -> Store<Node> {
        let (reader, writer) = reflector::store();
        let trigger = self.trigger.clone();
        let stream = reflector(
            writer,
            watcher(
                Api::<Node>::all(self.client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects()
        .predicate_filter(node_readiness, PredicateConfig::default());
        self.tasks.push(tokio::spawn(stream.for_each(move |node| {
            if let Ok(node) = node {
                let name = node.name_any();
                for pod in pods.state() {
                    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                        && let Some(job) = job_of_pod(&pod)
                    {
                        let _ = trigger.unbounded_send(job);
                    }
                }
            }
            async {}
        })));
        reader
    }

    /// Kueue's ResourceFlavors (cluster-scoped), read for every admitted job's placement; a
    /// change triggers nothing (the next reconcile of each job reads it).
    fn resource_flavors(&mut self) -> Store<ResourceFlavor> {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<ResourceFlavor>::all(self.client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        self.tasks.push(tokio::spawn(stream.for_each(|_| async {})));
        reader
    }

    /// Starts a cache of `K` whose changes trigger the jobs `jobs_of` names.
    fn cache<K: Cached>(
        &mut self,
        config: watcher::Config,
        jobs_of: fn(&K) -> Vec<ObjectRef<MegatronFineTune>>,
    ) -> Store<K> {
        let api = watched(&self.client, self.namespace.as_deref());
        let (reader, writer) = reflector::store();
        let trigger = self.trigger.clone();
        let stream = reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects();
        self.tasks.push(tokio::spawn(stream.for_each(move |object| {
            if let Ok(object) = object {
                for job in jobs_of(&object) {
                    let _ = trigger.unbounded_send(job);
                }
            }
            async {}
        })));
        reader
    }

    /// Stops every cache task.
    fn abort(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// `K` in the watched namespace (all namespaces when none is set).
fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The job owning a child (controller owner reference of kind MegatronFineTune).
fn owner_job<K: Resource>(child: &K) -> Vec<ObjectRef<MegatronFineTune>> {
    let Some(namespace) = child.meta().namespace.as_deref() else {
        return Vec::new();
    };
    child
        .owner_references()
        .iter()
        .filter(|o| {
            o.controller == Some(true)
                && o.kind == "MegatronFineTune"
                && o.api_version.starts_with("megatron.dev/")
        })
        .map(|o| ObjectRef::new(&o.name).within(namespace))
        .collect()
}

fn job_of_pod(pod: &Pod) -> Option<ObjectRef<MegatronFineTune>> {
    let name = pod.labels().get(JOB_LABEL)?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

/// Node events matter only when readiness changes.
fn node_readiness(node: &Node) -> Option<u64> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ready.status.hash(&mut hasher);
    Some(hasher.finish())
}

fn random_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "megatron-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}
