//! Formatting for the progress log lines.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Seconds as `1h02m03s`, `4m05s` or `6s` (`?` when not finite).
pub fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let total = seconds.max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Metrics as `name=value` pairs in name order, e.g. `val_f1=88.1 val_loss=0.93`.
pub fn format_metrics(metrics: &BTreeMap<String, f64>) -> String {
    let mut out = String::new();
    for (name, value) in metrics {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{name}={value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(6.4), "6s");
        assert_eq!(format_duration(245.0), "4m05s");
        assert_eq!(format_duration(3723.0), "1h02m03s");
        assert_eq!(format_duration(f64::INFINITY), "?");
        assert_eq!(format_duration(-3.0), "0s");
    }

    #[test]
    fn metrics_in_name_order() {
        let m = BTreeMap::from([("val_loss".to_string(), 0.5), ("val_f1".to_string(), 88.25)]);
        assert_eq!(format_metrics(&m), "val_f1=88.25 val_loss=0.5");
    }
}
