//! This rank's copy of the run's log ([`crate::progress::log_tee`]) as an
//! output: `logs/attempt-<attempt>/rank-<rank>.log` under the job's outputs,
//! published with each checkpoint and when the rank ends, so a restarted or
//! deleted pod's log stays readable.

use std::path::PathBuf;

use super::Outputs;
use crate::progress::log_tee;

/// This rank's log file and its key under the job root.
#[derive(Debug, Clone)]
pub struct RunLogFile {
    /// The local file.
    pub path: PathBuf,
    /// Its key under the job root (`logs/attempt-0/rank-0000.log`).
    pub key: String,
}

impl RunLogFile {
    /// Starts writing the log of global rank `rank` in gang attempt
    /// `attempt` under `outputs`; `None`, with a warning, when the file
    /// cannot be created (the run goes on, logging to stderr only).
    pub fn open(outputs: &Outputs, attempt: i32, rank: usize) -> Option<Self> {
        let key = format!("logs/attempt-{attempt}/rank-{rank:04}.log");
        let dir = match outputs.local_dir(&format!("logs/attempt-{attempt}")) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the run's log in a file");
                return None;
            }
        };
        let path = dir.join(format!("rank-{rank:04}.log"));
        match log_tee::open(&path) {
            Ok(()) => Some(Self { path, key }),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot keep the run's log in a file");
                None
            }
        }
    }

    /// Uploads the log as it is now (S3 outputs); a failure is a warning.
    pub fn publish(&self, outputs: &Outputs, runtime: &tokio::runtime::Runtime) {
        log_tee::flush();
        if let Err(e) = outputs.publish_file(runtime, &self.path, &self.key) {
            tracing::warn!(key = %self.key, error = %e, "publishing the run's log failed");
        }
    }
}
