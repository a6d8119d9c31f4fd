//! How long rank pods get between SIGTERM and SIGKILL when the operator deletes them.
//!
//! A gang stopped whole (a Kueue eviction, `suspend`) saves a checkpoint on SIGTERM: its
//! ranks finish the current step, then write and upload their shards. So its pods get the
//! larger of the configured grace and twice the time that took when last measured (the
//! newest checkpoint's `durationSeconds` plus one step at the reported throughput), plus a
//! margin. A gang restarted after a failure cannot checkpoint (a rank is gone), and its
//! survivors may sit in a collective that never returns: their pods get a short grace, so
//! the restart is not held up by the full one.

/// Grace of the pods of a gang restarted after a failure (at most the configured one).
pub const RESTART_GRACE_SECONDS: i64 = 10;
/// Added to twice the measured stop time.
pub const STOP_MARGIN_SECONDS: i64 = 30;
/// Upper bound of a sized grace: one day, the CRD's limit for the configured one.
pub const MAX_GRACE_SECONDS: i64 = 86_400;

/// Grace of the pods of a gang stopped whole: `configured`, or more when the last measured
/// `stop_seconds` (one step and one checkpoint) need it.
pub fn for_stop(configured: i64, stop_seconds: Option<f64>) -> i64 {
    let needed = stop_seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(0, |s| {
            (2.0 * s).ceil().min(MAX_GRACE_SECONDS as f64) as i64 + STOP_MARGIN_SECONDS
        });
    configured.max(needed).min(MAX_GRACE_SECONDS)
}

/// Grace of the pods of a gang restarted after a failure.
pub fn for_restart(configured: i64) -> i64 {
    configured.clamp(0, RESTART_GRACE_SECONDS)
}

/// Seconds a stop takes: one step at `samples_per_second` for `global_batch_size` samples,
/// plus the last checkpoint's save; `None` before the first measured checkpoint.
pub fn stop_seconds(
    checkpoint_seconds: Option<f64>,
    global_batch_size: i64,
    samples_per_second: Option<f64>,
) -> Option<f64> {
    let step = samples_per_second
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(0.0, |s| global_batch_size.max(0) as f64 / s);
    checkpoint_seconds.map(|c| c + step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_grace_holds_until_a_checkpoint_needs_more() {
        assert_eq!(for_stop(60, None), 60);
        assert_eq!(for_stop(60, Some(10.0)), 60);
        // 2 x 40 s + 30 s.
        assert_eq!(for_stop(60, Some(40.0)), 110);
        assert_eq!(for_stop(60, Some(f64::NAN)), 60);
        assert_eq!(for_stop(60, Some(1e12)), MAX_GRACE_SECONDS);
    }

    #[test]
    fn a_stop_is_one_step_and_one_checkpoint() {
        assert_eq!(stop_seconds(None, 256, Some(64.0)), None);
        assert_eq!(stop_seconds(Some(20.0), 256, Some(64.0)), Some(24.0));
        assert_eq!(stop_seconds(Some(20.0), 256, None), Some(20.0));
    }

    #[test]
    fn a_restart_after_a_failure_waits_briefly() {
        assert_eq!(for_restart(60), RESTART_GRACE_SECONDS);
        assert_eq!(for_restart(3), 3);
    }
}
