//! Learning-rate schedules: linear warmup from 0, then linear or cosine decay
//! to `minLearningRate` at the last step, or constant.
//!
//! With `minLearningRate: 0` the factors are Hugging Face's
//! `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` and
//! `get_constant_schedule_with_warmup` evaluated the same way (so the same
//! floating-point numbers); a minimum lifts the decay like
//! `get_cosine_with_min_lr_schedule_with_warmup`
//! (`factor * (1 - min/peak) + min/peak`), for linear decay too (NeMo's
//! `WarmupAnnealing`).

use crds::{SchedulerName, SchedulerSpec};

/// The learning rate of each optimizer step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    name: SchedulerName,
    peak_lr: f64,
    min_ratio: f64,
    warmup_steps: i64,
    total_steps: i64,
}

impl LrSchedule {
    /// The schedule of `spec` for a run of `total_steps` optimizer steps
    /// peaking at `peak_lr` after warmup (`warmupSteps`, or `warmupRatio` of
    /// the total; capped at the total).
    pub fn new(spec: &SchedulerSpec, peak_lr: f64, total_steps: i64) -> Self {
        let total_steps = total_steps.max(1);
        let min_ratio = if peak_lr > 0.0 {
            spec.min_learning_rate / peak_lr
        } else {
            0.0
        };
        Self {
            name: spec.name,
            peak_lr,
            min_ratio,
            warmup_steps: spec.warmup_steps(total_steps).clamp(0, total_steps),
            total_steps,
        }
    }

    /// Warmup steps.
    pub fn warmup_steps(&self) -> i64 {
        self.warmup_steps
    }

    /// The learning rate of optimizer step `step` (0-based: the first step
    /// uses `lr(0)`, which is 0 with warmup, as with PyTorch's `LambdaLR`).
    pub fn lr(&self, step: i64) -> f64 {
        self.peak_lr * self.factor(step)
    }

    /// `lr(step) / peak_lr`.
    pub fn factor(&self, step: i64) -> f64 {
        let step = step.max(0);
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1) as f64;
        let decayed = match self.name {
            SchedulerName::Constant => return 1.0,
            SchedulerName::Linear => ((self.total_steps - step) as f64 / decay_steps).max(0.0),
            SchedulerName::Cosine => {
                let progress = ((step - self.warmup_steps) as f64 / decay_steps).min(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
        };
        (decayed * (1.0 - self.min_ratio) + self.min_ratio).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: SchedulerName, warmup: Option<i64>, min: f64) -> SchedulerSpec {
        SchedulerSpec {
            name,
            warmup_steps: warmup,
            warmup_ratio: None,
            min_learning_rate: min,
        }
    }

    #[test]
    fn linear_warmup_then_decay_to_min() {
        let s = LrSchedule::new(&spec(SchedulerName::Linear, Some(2), 0.0), 1.0, 10);
        let lrs: Vec<f64> = (0..11).map(|i| s.lr(i)).collect();
        assert_eq!(&lrs[..3], &[0.0, 0.5, 1.0]);
        assert_eq!(lrs[6], 0.5);
        assert_eq!(lrs[10], 0.0);
        let s = LrSchedule::new(&spec(SchedulerName::Linear, None, 0.1), 1.0, 10);
        assert_eq!(s.lr(0), 1.0);
        assert!((s.lr(10) - 0.1).abs() < 1e-15);
        assert!((s.lr(5) - 0.55).abs() < 1e-15);
    }

    #[test]
    fn cosine_and_constant() {
        let s = LrSchedule::new(&spec(SchedulerName::Cosine, Some(0), 0.0), 2.0, 4);
        assert!((s.lr(2) - 1.0).abs() < 1e-12);
        assert!(s.lr(4).abs() < 1e-12);
        let s = LrSchedule::new(&spec(SchedulerName::Constant, Some(4), 0.0), 2.0, 8);
        assert_eq!((s.lr(1), s.lr(4), s.lr(8)), (0.5, 2.0, 2.0));
    }
}
