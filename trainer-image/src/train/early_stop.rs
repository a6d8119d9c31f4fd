//! Early stopping on a validation metric (Lightning's `EarlyStopping`
//! rule: an improvement must beat the best value by more than `minDelta`).

use std::collections::BTreeMap;

use crds::{EarlyStopping, Metric, MetricMode};

use super::{EarlyStopState, TrainError, TrainResult};

/// Watches validations and says when to stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EarlyStopper {
    spec: Option<EarlyStopping>,
    state: EarlyStopState,
}

impl EarlyStopper {
    /// A stopper for `spec.training.earlyStopping` (None: never stops).
    pub fn new(spec: Option<EarlyStopping>) -> Self {
        Self {
            spec,
            state: EarlyStopState::default(),
        }
    }

    /// Records one validation's metrics; returns true when the monitored
    /// metric has not improved for `patience` validations in a row.
    pub fn observe(&mut self, metrics: &BTreeMap<String, f64>) -> TrainResult<bool> {
        let Some(spec) = &self.spec else {
            return Ok(false);
        };
        let name = spec.monitor.as_str();
        let Some(&value) = metrics.get(name) else {
            return Err(TrainError::InvalidInput(format!(
                "spec.training.earlyStopping.monitor is {name}, but this task's validation \
                 reports only {:?}: monitor one of those",
                metrics.keys().collect::<Vec<_>>()
            )));
        };
        let delta = spec.min_delta.abs();
        let improved = match self.state.best {
            None => !value.is_nan(),
            Some(best) => match spec.mode() {
                MetricMode::Min => Metric::improves(MetricMode::Min, value + delta, best),
                MetricMode::Max => Metric::improves(MetricMode::Max, value - delta, best),
            },
        };
        if improved {
            self.state.best = Some(value);
            self.state.bad_validations = 0;
        } else {
            self.state.bad_validations += 1;
        }
        Ok(self.state.bad_validations >= spec.patience)
    }

    /// The bookkeeping to checkpoint.
    pub fn state(&self) -> EarlyStopState {
        self.state.clone()
    }

    /// Restores checkpointed bookkeeping.
    pub fn load_state(&mut self, state: EarlyStopState) {
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: f64) -> BTreeMap<String, f64> {
        [("val_loss".to_string(), v)].into()
    }

    #[test]
    fn stops_after_patience_without_improvement_beyond_min_delta() {
        let mut s = EarlyStopper::new(Some(EarlyStopping {
            monitor: Metric::ValLoss,
            mode: None,
            patience: 2,
            min_delta: 0.1,
        }));
        assert!(!s.observe(&m(1.0)).unwrap());
        assert!(!s.observe(&m(0.95)).unwrap(), "within min_delta: bad 1");
        assert!(!s.observe(&m(0.5)).unwrap(), "improved: reset");
        assert!(!s.observe(&m(0.45)).unwrap());
        assert!(s.observe(&m(0.6)).unwrap(), "second bad validation stops");
        let e = s
            .observe(&[("val_f1".to_string(), 1.0)].into())
            .unwrap_err();
        assert!(
            e.is_invalid_input() && e.to_string().contains("val_loss"),
            "{e}"
        );
    }
}
