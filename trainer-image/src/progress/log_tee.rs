//! The run's log as a file: every line the trainer logs goes to stderr (what
//! `kubectl logs` shows) and is also appended to a file that the job
//! publishes under `logs/`, so the log outlives the pod. Lines logged before
//! the file is opened are kept in memory (up to [`EARLY_LIMIT`] bytes) and
//! written to it first. The file holds exactly the stderr lines, so the
//! same rule applies: secrets are never logged.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Bytes of early log lines kept until the file is opened.
pub const EARLY_LIMIT: usize = 4 << 20;

enum Sink {
    /// Not opened yet: lines so far, and whether some were dropped.
    Early(Vec<u8>, bool),
    File(std::fs::File),
    /// Writing the file failed once: stderr only from then on.
    Off,
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Early(Vec::new(), false));

/// A writer for the tracing subscriber: stderr plus the run's log file.
pub struct TeeWriter;

/// Makes a [`TeeWriter`] (pass to `tracing_subscriber::fmt().with_writer`).
pub fn writer() -> TeeWriter {
    TeeWriter
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
        let failed = match &mut *sink {
            Sink::Early(early, dropped) => {
                if early.len() + buf.len() <= EARLY_LIMIT {
                    early.extend_from_slice(buf);
                } else {
                    *dropped = true;
                }
                false
            }
            Sink::File(file) => file.write_all(buf).is_err(),
            Sink::Off => false,
        };
        if failed {
            *sink = Sink::Off;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Starts appending the log to `path`, beginning with the lines logged so far.
pub fn open(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Appends: a restarted container of the same attempt keeps the log of the one before.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Sink::Early(early, dropped) = &*sink {
        if *dropped {
            writeln!(
                file,
                "(the first {EARLY_LIMIT} bytes of the log follow; later early lines were dropped)"
            )?;
        }
        file.write_all(early)?;
    }
    *sink = Sink::File(file);
    Ok(())
}

/// Flushes the file (each line is written through already; this syncs it).
pub fn flush() {
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Sink::File(file) = &mut *sink {
        let _ = file.flush();
    }
}
