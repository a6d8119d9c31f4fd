//! The end of a rank's life under the operator: the termination message of a
//! permanent failure, and sleeping after success until the pod is deleted
//! (under `restartPolicy: Always` an exit would run the trainer again).

use std::io::Write;
use std::path::PathBuf;

/// Kubernetes reads at most this many bytes of the termination message.
const MAX_MESSAGE: usize = 4096;

/// Writes `message` to the container's termination log when it is writable:
/// `MEGATRON_TERMINATION_LOG` (created) or the existing `/dev/termination-log`.
/// The operator shows it as the failed job's condition message.
pub fn write_termination_message(message: &str) {
    let (path, create) = match std::env::var_os("MEGATRON_TERMINATION_LOG") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from("/dev/termination-log"), false),
    };
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(create)
        .open(&path);
    if let Ok(mut f) = file {
        let _ = f.write_all(&message.as_bytes()[..end]);
    }
}

/// Blocks until SIGTERM or SIGINT arrives (the operator scales the gang to
/// zero after reading the result); returns then, so the process exits 0.
pub fn sleep_until_terminated() {
    tracing::info!("run finished: waiting to be terminated (the operator scales the job down)");
    if let Err(e) = super::stop_signal::install() {
        tracing::error!("cannot wait for SIGTERM ({e}); sleeping");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    super::stop_signal::wait();
    tracing::info!("terminated");
}
