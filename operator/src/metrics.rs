//! Prometheus metrics served on `/metrics` (prefix `megatron_operator_`).

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of an API write: the HTTP verb as Kubernetes names it and the resource (with `/subresource`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// Plural resource name, e.g. `statefulsets` or `megatronfinetunes/status`.
    pub resource: String,
}

/// Labels carrying one string value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Short machine-readable reason.
    pub reason: String,
}

/// Labels naming one MegatronFineTune (prefixed: `namespace` and `job` are Prometheus' own
/// target labels).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's namespace.
    pub job_namespace: String,
    /// The job's name.
    pub job_name: String,
}

/// Labels of the jobs-by-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// MegatronFineTune phase.
    pub phase: String,
}

/// Every metric the operator exports. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Reconciliations started.
    pub reconciliations: Counter,
    /// Failed reconciliations by error reason.
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    /// Wall time of one reconciliation.
    pub reconcile_duration: Histogram,
    /// Jobs per phase, refreshed from the informer cache on every scrape.
    pub jobs: Family<PhaseLabels, Gauge>,
    /// Gang restarts performed, by reason.
    pub gang_restarts: Family<ReasonLabels, Counter>,
    /// Restarts without a newer checkpoint each unfinished job has left before it fails.
    pub restart_budget: Family<JobLabels, Gauge>,
    /// Gangs stopped because Kueue evicted their Workload, by Kueue's reason.
    pub evictions: Family<ReasonLabels, Counter>,
    /// Seconds jobs waited in a Kueue queue before admission.
    pub queue_wait: Histogram,
    /// Non-read requests sent to the API server.
    pub api_writes: Family<WriteLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("megatron_operator");
        let reconciliations = Counter::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            reconcile_duration.clone(),
        );
        let jobs = Family::<PhaseLabels, Gauge>::default();
        registry.register("jobs", "MegatronFineTune objects by phase", jobs.clone());
        let gang_restarts = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gang_restarts",
            "Whole-gang restarts by reason",
            gang_restarts.clone(),
        );
        let restart_budget = Family::<JobLabels, Gauge>::default();
        registry.register(
            "job_restart_budget",
            "Restarts without a newer checkpoint an unfinished job has left before it fails \
             (spec.runPolicy.maxRestarts - status.countedRestarts)",
            restart_budget.clone(),
        );
        let evictions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "evictions",
            "Gangs stopped because Kueue evicted their Workload, by Kueue's reason",
            evictions.clone(),
        );
        let queue_wait = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "queue_wait_seconds",
            "Seconds a job waited in its Kueue queue (phase Queued) before admission",
            queue_wait.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Non-read API requests by verb and resource",
            api_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the elected leader",
            leader.clone(),
        );
        Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            jobs,
            gang_restarts,
            restart_budget,
            evictions,
            queue_wait,
            api_writes,
            leader,
        }
    }
}

impl Metrics {
    /// Records one finished reconciliation.
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Counts a failed reconciliation.
    pub fn count_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a gang restart.
    pub fn count_restart(&self, reason: &str) {
        self.gang_restarts
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Replaces the per-job restart budgets: `(namespace, name, restarts left)` of each
    /// unfinished job.
    pub fn set_restart_budgets(&self, budgets: impl IntoIterator<Item = (String, String, i64)>) {
        self.restart_budget.clear();
        for (job_namespace, job_name, left) in budgets {
            self.restart_budget
                .get_or_create(&JobLabels {
                    job_namespace,
                    job_name,
                })
                .set(left);
        }
    }

    /// Counts a gang stopped for a Kueue eviction.
    pub fn count_eviction(&self, reason: &str) {
        self.evictions
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records how long a job waited in its queue before admission.
    pub fn observe_queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Replaces the per-phase job counts.
    pub fn set_job_phases<'a>(&self, phases: impl IntoIterator<Item = &'a str>) {
        self.jobs.clear();
        for phase in phases {
            self.jobs
                .get_or_create(&PhaseLabels {
                    phase: phase.to_owned(),
                })
                .inc();
        }
    }

    /// Writes found for a resource (all verbs), for tests and benchmarks.
    pub fn writes_for(&self, resource: &str) -> u64 {
        // Family has no iterator; probe the verbs we know.
        ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .filter_map(|verb| {
                self.api_writes
                    .get(&WriteLabels {
                        verb: (*verb).to_owned(),
                        resource: resource.to_owned(),
                    })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
