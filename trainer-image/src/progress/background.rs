//! The reporter's background thread: a small tokio runtime of its own that
//! serves `/metrics` and runs the status writer, so neither ever blocks the
//! training thread (and the reporter works whether or not its caller runs
//! inside another runtime).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::JobRef;
use super::client::{KubeClientError, job_api};
use super::http;
use super::metrics::TrainerMetrics;
use super::status::StatusWriter;

/// How long dropping the reporter waits for pending status writes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the reporter's background thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The thread's tokio runtime could not be built.
    #[error("cannot start the progress runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OS refused the thread.
    #[error("cannot start the progress thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The thread stopped (panicked) before saying it was ready.
    #[error("the progress thread ended before it was ready")]
    Ended,
    /// `/metrics` could not be bound (usually the port is taken).
    #[error("cannot serve /metrics on {addr}: {source} (choose another --metrics-addr port)")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// No API handle for the status writer.
    #[error(transparent)]
    Client(#[from] KubeClientError),
}

/// What the status writer needs.
pub struct StatusTarget {
    /// The object to write.
    pub job: JobRef,
    /// Explicit kubeconfig, else inferred.
    pub kubeconfig: Option<PathBuf>,
    /// Least time between progress writes.
    pub interval: Duration,
    /// The training thread's handle.
    pub writer: StatusWriter,
}

/// The running background thread.
pub struct Background {
    stop: watch::Sender<bool>,
    writer: Option<StatusWriter>,
    thread: Option<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
}

impl Background {
    /// Starts the thread: binds `/metrics` on `metrics_addr` and connects the
    /// status writer; returns once both are ready or with the first error.
    pub fn start(
        metrics: Arc<TrainerMetrics>,
        metrics_addr: Option<SocketAddr>,
        status: Option<StatusTarget>,
    ) -> Result<Self, BackgroundError> {
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Option<SocketAddr>, BackgroundError>>();
        let writer = status.as_ref().map(|s| s.writer.clone());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BackgroundError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(run(metrics, metrics_addr, status, stopped, ready_tx));
            })
            .map_err(BackgroundError::Thread)?;
        let ready = ready_rx.recv().unwrap_or(Err(BackgroundError::Ended));
        match ready {
            Ok(metrics_addr) => Ok(Self {
                stop,
                writer,
                thread: Some(thread),
                metrics_addr,
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The address `/metrics` is served on (the bound port when 0 was asked for).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
}

async fn run(
    metrics: Arc<TrainerMetrics>,
    metrics_addr: Option<SocketAddr>,
    status: Option<StatusTarget>,
    mut stopped: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<Option<SocketAddr>, BackgroundError>>,
) {
    let mut server = None;
    let mut bound = None;
    if let Some(addr) = metrics_addr {
        let mut stop = stopped.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match http::serve(addr, metrics.clone(), shutdown).await {
            Ok((addr, serving)) => {
                bound = Some(addr);
                server = Some(tokio::spawn(serving));
            }
            Err(source) => {
                let _ = ready.send(Err(BackgroundError::Metrics { addr, source }));
                return;
            }
        }
    }
    let mut writer = None;
    if let Some(target) = status {
        match job_api(target.kubeconfig.as_deref(), &target.job).await {
            Ok(api) => writer = Some((target, api)),
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        }
    }
    let _ = ready.send(Ok(bound));
    if let Some(addr) = bound {
        tracing::info!(%addr, "serving trainer metrics on /metrics");
    }
    match writer {
        Some((target, api)) => {
            target
                .writer
                .run(api, target.job, target.interval, metrics)
                .await
        }
        None => {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }
    if let Some(server) = server {
        // The writer returns only once closed, which comes with the stop signal.
        let _ = stopped.wait_for(|s| *s).await;
        if let Ok(Err(e)) = server.await {
            tracing::warn!("the /metrics server failed: {e}");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.close(Instant::now() + CLOSE_TIMEOUT);
        }
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
