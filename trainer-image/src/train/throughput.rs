//! Throughput over a sliding window of recent optimizer steps.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples, tokens and time of the last `capacity` steps.
#[derive(Debug, Clone)]
pub struct Throughput {
    capacity: usize,
    steps: VecDeque<(Duration, f64, f64)>,
}

impl Throughput {
    /// A window of `capacity` steps (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            steps: VecDeque::new(),
        }
    }

    /// Adds a step that took `elapsed` for `samples` samples and `tokens` tokens.
    pub fn record(&mut self, elapsed: Duration, samples: f64, tokens: f64) {
        if self.steps.len() == self.capacity {
            self.steps.pop_front();
        }
        self.steps.push_back((elapsed, samples, tokens));
    }

    fn totals(&self) -> (f64, f64, f64) {
        self.steps
            .iter()
            .fold((0.0, 0.0, 0.0), |(t, s, k), (d, ds, dk)| {
                (t + d.as_secs_f64(), s + ds, k + dk)
            })
    }

    /// Samples per second over the window.
    pub fn samples_per_second(&self) -> f64 {
        let (t, s, _) = self.totals();
        if t > 0.0 { s / t } else { 0.0 }
    }

    /// Tokens per second over the window.
    pub fn tokens_per_second(&self) -> f64 {
        let (t, _, k) = self.totals();
        if t > 0.0 { k / t } else { 0.0 }
    }

    /// Mean seconds per step over the window.
    pub fn seconds_per_step(&self) -> f64 {
        let (t, _, _) = self.totals();
        if self.steps.is_empty() {
            0.0
        } else {
            t / self.steps.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_drops_old_steps() {
        let mut t = Throughput::new(2);
        t.record(Duration::from_secs(10), 1.0, 10.0);
        t.record(Duration::from_secs(1), 4.0, 40.0);
        t.record(Duration::from_secs(1), 4.0, 40.0);
        assert_eq!(t.samples_per_second(), 4.0);
        assert_eq!(t.tokens_per_second(), 40.0);
        assert_eq!(t.seconds_per_step(), 1.0);
    }
}
