//! The status writer: server-side apply of the trainer's status fields,
//! off the training thread.
//!
//! The training thread only edits the desired [`TrainerStatus`] under a lock
//! ([`StatusWriter::update`]); a task on the reporter's background runtime
//! sends the latest snapshot (changes coalesce), progress at most every
//! `interval` and urgent changes (validation, checkpoints, artifacts, result)
//! at once. Every apply sends all of the trainer's fields with field manager
//! `megatron-trainer` and `force`, so the trainer owns exactly those fields and
//! the operator's (phase, conditions, ...) are never touched. Before the first
//! apply the writer reads the status once and keeps what an earlier attempt
//! wrote (see [`TrainerStatus::inherit`]). Transient errors are retried with
//! backoff and logged as warnings; permanent ones (401, 403, 404, 400, 422)
//! are logged once, clearly, and reported to [`StatusWriter::wait_written`].

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use tokio::sync::Notify;

use super::JobRef;
use super::metrics::TrainerMetrics;
use super::trainer_status::TrainerStatus;

/// Field manager of the trainer's status applies.
pub const FIELD_MANAGER: &str = "megatron-trainer";

/// Longest wait for one API request before it counts as a transient failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Least time between two warnings about transient failures.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why [`StatusWriter::wait_written`] returned before the status was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StatusWaitError {
    /// The API server refused the status for good (credentials, RBAC, a
    /// missing object, a rejected body); the message says what to fix.
    #[error("{message}")]
    Refused {
        /// What happened and what to do.
        message: String,
    },
    /// Nothing was accepted within the timeout.
    #[error(
        "the API server did not accept the status within {}s: {}",
        after.as_secs(),
        cause.as_deref().unwrap_or("no answer yet")
    )]
    Timeout {
        /// How long we waited.
        after: Duration,
        /// The latest transient failure, if any attempt finished.
        cause: Option<String>,
    },
}

/// A failed apply, as waiters see it.
#[derive(Debug, Clone)]
struct Failure {
    /// The snapshot version that failed.
    version: u64,
    /// Retrying cannot help (RBAC, missing object, rejected body).
    permanent: bool,
    /// What happened and what to do, for logs and errors.
    message: String,
}

#[derive(Debug, Default)]
struct State {
    desired: TrainerStatus,
    /// Bumped by every change.
    version: u64,
    /// Highest version that must be written without waiting for the interval.
    urgent: u64,
    /// Highest version the API server accepted.
    written: u64,
    /// The latest attempt's failure; cleared by a success.
    failure: Option<Failure>,
    /// Set when the reporter is dropped: write what is pending until the deadline, then stop.
    closing: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled after every write attempt.
    attempted: Condvar,
    /// Wakes the writer task.
    wake: Notify,
    /// Cuts a retry delay short when closing.
    closed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The training thread's handle on the status writer.
#[derive(Debug, Clone, Default)]
pub struct StatusWriter {
    shared: Arc<Shared>,
}

impl StatusWriter {
    /// Edits the desired status; `urgent` changes are written at once, others
    /// within the interval. Never blocks on the API server.
    pub fn update(&self, urgent: bool, edit: impl FnOnce(&mut TrainerStatus)) {
        let mut state = self.shared.lock();
        edit(&mut state.desired);
        state.version += 1;
        if urgent {
            state.urgent = state.version;
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Blocks until everything changed so far is accepted by the API server,
    /// a permanent error refuses it, or `timeout` passes (then the latest
    /// transient error is returned).
    pub fn wait_written(&self, timeout: Duration) -> Result<(), StatusWaitError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        let target = state.version;
        loop {
            if state.written >= target {
                return Ok(());
            }
            if let Some(f) = state
                .failure
                .as_ref()
                .filter(|f| f.permanent && f.version >= target)
            {
                return Err(StatusWaitError::Refused {
                    message: f.message.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StatusWaitError::Timeout {
                    after: timeout,
                    cause: state.failure.as_ref().map(|f| f.message.clone()),
                });
            }
            state = self
                .shared
                .attempted
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Asks the writer task to write what is pending and stop, giving up at
    /// `deadline`.
    pub fn close(&self, deadline: Instant) {
        self.shared.lock().closing = Some(deadline);
        self.shared.wake.notify_one();
        self.shared.closed.notify_one();
    }

    /// The writer task: runs until [`StatusWriter::close`]'s work is done.
    pub async fn run(
        &self,
        api: Api<DynamicObject>,
        job: JobRef,
        interval: Duration,
        metrics: Arc<TrainerMetrics>,
    ) {
        let mut task = Task {
            shared: &self.shared,
            api,
            job,
            metrics,
            log: FailureLog::default(),
            backoff: FIRST_BACKOFF,
        };
        if task.inherit().await {
            task.write_loop(interval).await;
        }
    }
}

/// The state of the writer task.
struct Task<'a> {
    shared: &'a Shared,
    api: Api<DynamicObject>,
    job: JobRef,
    metrics: Arc<TrainerMetrics>,
    log: FailureLog,
    backoff: Duration,
}

impl Task<'_> {
    /// Reads the status once and keeps an earlier attempt's fields. Returns
    /// false when closing came first.
    async fn inherit(&mut self) -> bool {
        loop {
            let read =
                tokio::time::timeout(REQUEST_TIMEOUT, self.api.get_status(&self.job.name)).await;
            let error = match read {
                Ok(Ok(object)) => {
                    let status = object.data.get("status").cloned().unwrap_or_default();
                    let (earlier, unreadable) = TrainerStatus::from_status(&status);
                    if !unreadable.is_empty() {
                        tracing::warn!(
                            "not keeping unreadable status fields of MegatronFineTune {}/{}: {}",
                            self.job.namespace,
                            self.job.name,
                            unreadable.join("; ")
                        );
                    }
                    self.shared.lock().desired.inherit(earlier);
                    self.backoff = FIRST_BACKOFF;
                    return true;
                }
                Ok(Err(e)) => classify(&e, &self.job),
                Err(_) => transient_timeout(),
            };
            self.metrics.status_write_errors.inc();
            let permanent = error.permanent;
            self.log.report(&error);
            // Version 0: tells waiters the cause without failing any write.
            self.shared.lock().failure = Some(error);
            self.shared.attempted.notify_all();
            if permanent {
                // Writes will report the same problem to waiters; try them.
                return true;
            }
            if !self.sleep_backoff().await {
                return false;
            }
        }
    }

    async fn write_loop(&mut self, interval: Duration) {
        let mut last_attempt: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let (pending, due, body, version) = {
                let state = self.shared.lock();
                let refused = state.failure.as_ref().is_some_and(|f| f.permanent);
                if let Some(deadline) = state.closing
                    && (state.written >= state.version || now >= deadline || refused)
                {
                    return;
                }
                let pending = state.version > state.written;
                let due = match last_attempt {
                    _ if state.urgent > state.written || state.closing.is_some() => now,
                    None => now,
                    Some(at) => at + interval,
                };
                let body =
                    (pending && now >= due).then(|| state.desired.apply_body(&self.job.name));
                (pending, due, body, state.version)
            };
            if let Some(body) = body {
                last_attempt = Some(Instant::now());
                if !self.apply(body, version).await && !self.sleep_backoff().await {
                    return;
                }
                continue;
            }
            if pending {
                tokio::select! {
                    () = self.shared.wake.notified() => {}
                    () = tokio::time::sleep_until(due.into()) => {}
                }
            } else {
                self.shared.wake.notified().await;
            }
        }
    }

    /// One apply of snapshot `version`; true when accepted.
    async fn apply(&mut self, body: serde_json::Value, version: u64) -> bool {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let sent = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.api
                .patch_status(&self.job.name, &params, &Patch::Apply(&body)),
        )
        .await;
        let error = match sent {
            Ok(Ok(_)) => {
                let mut state = self.shared.lock();
                state.written = state.written.max(version);
                state.failure = None;
                drop(state);
                self.shared.attempted.notify_all();
                self.log.recovered(&self.job);
                self.backoff = FIRST_BACKOFF;
                return true;
            }
            Ok(Err(e)) => classify(&e, &self.job),
            Err(_) => transient_timeout(),
        };
        self.metrics.status_write_errors.inc();
        self.log.report(&error);
        self.shared.lock().failure = Some(Failure { version, ..error });
        self.shared.attempted.notify_all();
        false
    }

    /// Sleeps the current backoff (doubling it), cut short by closing; false
    /// when closing and the retry would come after the deadline.
    async fn sleep_backoff(&mut self) -> bool {
        let wake = Instant::now() + self.backoff;
        if self.shared.lock().closing.is_some_and(|d| wake >= d) {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(self.backoff) => {}
            () = self.shared.closed.notified() => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// Logs failures without flooding: a permanent error once per HTTP status,
/// transient ones at most every [`WARN_EVERY`].
#[derive(Default)]
struct FailureLog {
    permanent_logged: BTreeSet<String>,
    last_warning: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl FailureLog {
    fn report(&mut self, failure: &Failure) {
        self.failing = true;
        if failure.permanent {
            if self.permanent_logged.insert(failure.message.clone()) {
                tracing::error!("status not written: {}", failure.message);
            }
            return;
        }
        let now = Instant::now();
        if self.last_warning.is_some_and(|at| now - at < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        let more = std::mem::take(&mut self.suppressed);
        tracing::warn!(
            "status write failed, retrying ({} similar failures not logged): {}",
            more,
            failure.message
        );
        self.last_warning = Some(now);
    }

    fn recovered(&mut self, job: &JobRef) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(
                "status of MegatronFineTune {}/{} written again after failures",
                job.namespace,
                job.name
            );
        }
        self.last_warning = None;
        self.suppressed = 0;
    }
}

fn transient_timeout() -> Failure {
    Failure {
        version: 0,
        permanent: false,
        message: format!(
            "the API server did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ),
    }
}

/// Sorts an API error into permanent or transient, with a message saying what to do.
fn classify(error: &kube::Error, job: &JobRef) -> Failure {
    let object = format!("MegatronFineTune {}/{}", job.namespace, job.name);
    let (permanent, message) = match error {
        kube::Error::Api(status) => match status.code {
            401 => (
                true,
                format!(
                    "the API server rejected the credentials (401 Unauthorized) writing the status \
                     of {object}: check the pod's ServiceAccount token or the kubeconfig"
                ),
            ),
            403 => (
                true,
                format!(
                    "writing the status of {object} is forbidden (403): {}; the pod's \
                     ServiceAccount needs get and patch on megatronfinetunes/status for this \
                     object (the operator's per-job Role grants them)",
                    status.message
                ),
            ),
            404 => (
                true,
                format!(
                    "{object} not found (404): the object was deleted, or MEGATRON_JOB_NAME / \
                     MEGATRON_JOB_NAMESPACE name another object"
                ),
            ),
            400 | 422 => (
                true,
                format!(
                    "the API server rejected the trainer's status of {object} ({}): {}; the CRD \
                     in the cluster may be older than this trainer",
                    status.code, status.message
                ),
            ),
            code => (
                false,
                format!(
                    "the API server answered {code} for the status of {object}: {}",
                    status.message
                ),
            ),
        },
        other => (
            false,
            format!("cannot reach the API server for the status of {object}: {other}"),
        ),
    };
    Failure {
        version: 0,
        permanent,
        message,
    }
}
