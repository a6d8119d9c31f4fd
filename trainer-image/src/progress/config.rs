//! What a [`Reporter`](super::Reporter) reports to: [`ReporterConfig`] and the
//! job object [`JobRef`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::train::{TrainError, TrainResult};

/// The MegatronFineTune object whose status rank 0 writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    /// metadata.name.
    pub name: String,
    /// metadata.namespace.
    pub namespace: String,
    /// The gang attempt (`MEGATRON_ATTEMPT` = status.restarts when the gang started),
    /// echoed in `status.result.attempt`.
    pub attempt: i32,
}

impl JobRef {
    /// Reads `MEGATRON_JOB_NAME`, `MEGATRON_JOB_NAMESPACE` and `MEGATRON_ATTEMPT`
    /// (set by the operator). `None` when `MEGATRON_JOB_NAME` is unset or empty
    /// (a run outside the operator); an error names a missing namespace or a
    /// malformed attempt.
    pub fn from_env() -> TrainResult<Option<Self>> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`JobRef::from_env`] over any variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> TrainResult<Option<Self>> {
        let Some(name) = lookup("MEGATRON_JOB_NAME").filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let namespace = lookup("MEGATRON_JOB_NAMESPACE")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                TrainError::InvalidInput(format!(
                    "MEGATRON_JOB_NAME is {name:?} but MEGATRON_JOB_NAMESPACE is unset: set both \
                     (the operator does) or neither"
                ))
            })?;
        let attempt = match lookup("MEGATRON_ATTEMPT").filter(|a| !a.is_empty()) {
            None => 0,
            Some(text) => text
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| {
                    TrainError::InvalidInput(format!(
                        "MEGATRON_ATTEMPT={text:?} is not a non-negative integer (the gang \
                         attempt, status.restarts)"
                    ))
                })?,
        };
        Ok(Some(Self {
            name,
            namespace,
            attempt,
        }))
    }
}

/// How a run reports its progress. Only rank 0 reports (`is_rank0`); other
/// ranks log at debug level.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Whether this process is global rank 0.
    pub is_rank0: bool,
    /// The object whose status to write; `None` outside the operator.
    pub job: Option<JobRef>,
    /// Where to serve `/metrics` (e.g. `0.0.0.0:9400`); `None`: no server.
    pub metrics_addr: Option<SocketAddr>,
    /// Where to write TensorBoard event files; `None`: none.
    pub tensorboard_dir: Option<PathBuf>,
    /// Log, record metrics and TensorBoard scalars every this many steps
    /// (spec.training.logIntervalSteps; 0 is treated as 1).
    pub log_interval_steps: i64,
    /// A kubeconfig file for the status writer; `None`: in-cluster
    /// configuration or `KUBECONFIG` (kube's usual inference).
    pub kubeconfig: Option<PathBuf>,
    /// Least time between two progress writes to the status; validation,
    /// checkpoint, artifact and result writes go out at once.
    pub status_interval: Duration,
    /// How long [`Reporter::finish`](super::Reporter::finish) retries
    /// transient errors before giving up.
    pub finish_timeout: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            is_rank0: true,
            job: None,
            metrics_addr: None,
            tensorboard_dir: None,
            log_interval_steps: 10,
            kubeconfig: None,
            status_interval: Duration::from_secs(10),
            finish_timeout: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn job_ref_from_variables() {
        assert_eq!(JobRef::from_lookup(lookup(&[])).unwrap(), None);
        let job = JobRef::from_lookup(lookup(&[
            ("MEGATRON_JOB_NAME", "squad"),
            ("MEGATRON_JOB_NAMESPACE", "ml"),
            ("MEGATRON_ATTEMPT", "3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            job,
            JobRef {
                name: "squad".into(),
                namespace: "ml".into(),
                attempt: 3
            }
        );
        let err = JobRef::from_lookup(lookup(&[("MEGATRON_JOB_NAME", "squad")])).unwrap_err();
        assert!(err.to_string().contains("MEGATRON_JOB_NAMESPACE"), "{err}");
        let err = JobRef::from_lookup(lookup(&[
            ("MEGATRON_JOB_NAME", "squad"),
            ("MEGATRON_JOB_NAMESPACE", "ml"),
            ("MEGATRON_ATTEMPT", "-1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("MEGATRON_ATTEMPT"), "{err}");
    }
}
