//! Bytes, rate and ETA of a download, reported at most every few seconds (and at the end).

use std::time::{Duration, Instant};

use crds::DownloadProgress;

/// Least time between two reports.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Counts the bytes of one file and reports [`DownloadProgress`] to `observer`.
pub struct Meter<'a> {
    file: String,
    total: Option<u64>,
    bytes: u64,
    /// Bytes and time at the last report, for the recent rate.
    mark: (u64, Instant),
    started: Instant,
    observer: &'a mut dyn FnMut(&DownloadProgress),
}

impl<'a> Meter<'a> {
    /// A meter for `file` starting at `bytes` already present (a resumed download).
    pub fn new(file: &str, bytes: u64, observer: &'a mut dyn FnMut(&DownloadProgress)) -> Self {
        let now = Instant::now();
        Self {
            file: file.to_owned(),
            total: None,
            bytes,
            mark: (bytes, now),
            started: now,
            observer,
        }
    }

    /// Sets the size once the source announces it.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Sets the count (a restarted download starts again from 0).
    pub fn reset(&mut self, bytes: u64) {
        self.bytes = bytes;
        self.mark = (bytes, Instant::now());
    }

    /// Adds `n` received bytes; reports when the last report is old enough.
    pub fn add(&mut self, n: u64) {
        self.bytes += n;
        if self.mark.1.elapsed() >= REPORT_EVERY {
            self.report();
        }
    }

    /// Reports now (the start and the end of a file).
    pub fn report(&mut self) {
        let now = Instant::now();
        let (mark_bytes, mark_time) = self.mark;
        let window = now.duration_since(mark_time).as_secs_f64();
        let rate = if window >= 0.5 {
            Some((self.bytes.saturating_sub(mark_bytes)) as f64 / window)
        } else {
            let all = now.duration_since(self.started).as_secs_f64();
            (all >= 0.5).then(|| self.bytes as f64 / all)
        };
        let eta = match (self.total, rate) {
            (Some(t), Some(r)) if r > 0.0 => {
                Some((t.saturating_sub(self.bytes) as f64 / r).ceil() as i64)
            }
            _ => None,
        };
        self.mark = (self.bytes, now);
        (self.observer)(&DownloadProgress {
            file: self.file.clone(),
            bytes: self.bytes as i64,
            total_bytes: self.total.map(|t| t as i64),
            bytes_per_second: rate,
            eta_seconds: eta,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_bytes_rate_and_eta() {
        let p = DownloadProgress {
            file: "model_optim_rng.pt".into(),
            bytes: 412_000_000,
            total_bytes: Some(1_340_200_000),
            bytes_per_second: Some(85_300_000.0),
            eta_seconds: Some(11),
        };
        assert_eq!(
            p.summary(),
            "model_optim_rng.pt: 412.0 of 1340.2 MB at 85.3 MB/s, ETA 11s"
        );
    }

    #[test]
    fn reports_the_total_and_an_eta_at_the_end() {
        let mut seen = Vec::new();
        let mut observer = |p: &DownloadProgress| seen.push(p.clone());
        let mut meter = Meter::new("f", 10, &mut observer);
        meter.set_total(Some(110));
        meter.add(100);
        meter.report();
        drop(meter);
        let last = seen.last().unwrap();
        assert_eq!((last.bytes, last.total_bytes), (110, Some(110)));
    }
}
