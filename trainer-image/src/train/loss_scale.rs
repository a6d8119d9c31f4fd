//! Loss scaling for fp16 training (`torch.cuda.amp.GradScaler` semantics,
//! with Megatron's minimum scale).
//!
//! The loss is multiplied by the scale before backward and the gradients
//! divided by it before clipping. A step whose gradients hold an inf or NaN
//! is skipped; with dynamic scaling the scale then halves (not below
//! `minScale`), and doubles after `growthInterval` clean steps in a row. The
//! overflow test is the global gradient norm, which every rank computes to
//! the same value (see [`super::clip`]), so all ranks skip together.

use super::{LossScaleState, TrainError, TrainResult};

/// Factor applied to the scale on overflow.
pub const BACKOFF_FACTOR: f64 = 0.5;
/// Factor applied after `growthInterval` clean steps.
pub const GROWTH_FACTOR: f64 = 2.0;

/// A (dynamic) loss scaler.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    scale: f64,
    growth_tracker: i64,
    dynamic: bool,
    growth_interval: i64,
    min_scale: f64,
}

impl LossScaler {
    /// A scaler configured by `spec.training.lossScaling`.
    pub fn new(spec: &crds::LossScaling) -> TrainResult<Self> {
        if !(spec.initial_scale.is_finite() && spec.initial_scale > 0.0) {
            return Err(TrainError::InvalidInput(format!(
                "spec.training.lossScaling.initialScale must be a positive number, got {}",
                spec.initial_scale
            )));
        }
        if spec.growth_interval < 1 {
            return Err(TrainError::InvalidInput(format!(
                "spec.training.lossScaling.growthInterval must be at least 1, got {}",
                spec.growth_interval
            )));
        }
        if !(spec.min_scale > 0.0 && spec.min_scale <= spec.initial_scale) {
            return Err(TrainError::InvalidInput(format!(
                "spec.training.lossScaling.minScale must be above 0 and at most initialScale \
                 ({}), got {}",
                spec.initial_scale, spec.min_scale
            )));
        }
        Ok(Self {
            scale: spec.initial_scale,
            growth_tracker: 0,
            dynamic: spec.dynamic,
            growth_interval: spec.growth_interval,
            min_scale: spec.min_scale,
        })
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Records a step's outcome: `found_inf` skips it (and backs off),
    /// otherwise counts towards growth. Returns whether the step may be
    /// applied.
    pub fn update(&mut self, found_inf: bool) -> bool {
        if found_inf {
            if self.dynamic {
                self.scale = (self.scale * BACKOFF_FACTOR).max(self.min_scale);
            }
            self.growth_tracker = 0;
            return false;
        }
        if self.dynamic {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= GROWTH_FACTOR;
                self.growth_tracker = 0;
            }
        }
        true
    }

    /// The resumable state.
    pub fn state(&self) -> LossScaleState {
        LossScaleState {
            scale: self.scale,
            growth_tracker: self.growth_tracker,
        }
    }

    /// Restores a saved state.
    pub fn load_state(&mut self, state: LossScaleState) -> TrainResult<()> {
        if !(state.scale.is_finite() && state.scale > 0.0) || state.growth_tracker < 0 {
            return Err(TrainError::InvalidInput(format!(
                "checkpoint loss-scaler state is invalid (scale {}, growth tracker {})",
                state.scale, state.growth_tracker
            )));
        }
        self.scale = state.scale;
        self.growth_tracker = state.growth_tracker;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = LossScaler::new(&crds::LossScaling {
            initial_scale: 8.0,
            dynamic: true,
            growth_interval: 2,
            min_scale: 2.0,
        })
        .unwrap();
        assert!(!s.update(true));
        assert_eq!(s.scale(), 4.0);
        assert!(!s.update(true));
        assert!(!s.update(true));
        assert_eq!(s.scale(), 2.0, "not below minScale");
        assert!(s.update(false));
        assert_eq!(s.scale(), 2.0);
        assert!(s.update(false));
        assert_eq!(s.scale(), 4.0);
        assert_eq!(s.state().growth_tracker, 0);
    }

    #[test]
    fn min_scale_must_be_positive_and_at_most_the_initial_scale() {
        for min_scale in [0.0, -1.0, 16.0] {
            let e = LossScaler::new(&crds::LossScaling {
                initial_scale: 8.0,
                min_scale,
                ..Default::default()
            })
            .unwrap_err();
            assert!(
                e.is_invalid_input() && e.to_string().contains("minScale"),
                "{e}"
            );
        }
    }

    #[test]
    fn static_scale_skips_without_changing() {
        let mut s = LossScaler::new(&crds::LossScaling {
            initial_scale: 128.0,
            dynamic: false,
            ..Default::default()
        })
        .unwrap();
        assert!(!s.update(true));
        assert!(s.update(false));
        assert_eq!(s.scale(), 128.0);
    }
}
