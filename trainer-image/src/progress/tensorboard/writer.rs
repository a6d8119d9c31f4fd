//! [`EventWriter`]: appends scalar summaries to a TensorBoard event file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::proto::{Event, Summary, SummaryValue, What};
use super::record::write_record;

/// The file format version TensorBoard expects in the first record.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Writes `events.out.tfevents.<unix seconds>.<host>` in a log directory:
/// the file version record first, then one record per [`EventWriter::scalars`]
/// call. Every call is flushed to the file, so TensorBoard sees it at once and a
/// crash loses nothing written.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` (and parents) and a new event file in it.
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = wall_time();
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let base = format!("events.out.tfevents.{:010}.{host}", now as u64);
        // A second writer in the same second (a quick restart) gets a suffix.
        let (path, file) = (0..)
            .map(|n| match n {
                0 => dir.join(&base),
                n => dir.join(format!("{base}.{n}")),
            })
            .find_map(
                |path| match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(file) => Some(Ok((path, file))),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                    Err(e) => Some(Err(e)),
                },
            )
            .expect("an unbounded range finds a free name or an error")?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time: now,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        Ok(writer)
    }

    /// The event file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event holding the scalars `(tag, value)` at `step`.
    /// Values are stored as 32-bit floats (TensorBoard's `simple_value`);
    /// non-finite values are kept (TensorBoard shows NaN/inf).
    pub fn scalars<'a>(
        &mut self,
        step: i64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> io::Result<()> {
        let value: Vec<SummaryValue> = values
            .into_iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.to_owned(),
                simple_value: Some(v as f32),
            })
            .collect();
        if value.is_empty() {
            return Ok(());
        }
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// Flushes buffered bytes to the file (every write already does).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        write_record(&mut self.out, &event.encode_to_vec())?;
        self.out.flush()
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
