//! The reporter's structured logs, captured as JSON lines from a real
//! `tracing-subscriber`: one `training progress` event per log interval (and
//! at the last step) with step/total, mean loss, lr, grad norm, throughput,
//! ETA and epoch; other ranks log only at debug level.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use megatron_trainer::progress::{Reporter, ReporterConfig};
use megatron_trainer::train::StepStats;
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `body` with a JSON subscriber at `level`; returns the events' JSON.
fn capture(level: tracing::Level, body: impl FnOnce()) -> Vec<Value> {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, body);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

fn stats(step: i64) -> StepStats {
    StepStats {
        step,
        total_steps: 5,
        epoch: step as f64 * 0.5,
        loss: step as f64,
        learning_rate: 2e-5,
        grad_norm: Some(0.5),
        loss_scale: None,
        samples_per_second: 8.0,
        tokens_per_second: 1024.0,
        eta_seconds: (5 - step) as f64 * 61.0,
        skipped: false,
    }
}

fn run(rank0: bool) {
    let mut r = Reporter::new(ReporterConfig {
        is_rank0: rank0,
        log_interval_steps: 2,
        ..Default::default()
    })
    .unwrap();
    for step in 1..=5 {
        r.step(&stats(step));
    }
    r.validation(5, 2.5, &BTreeMap::from([("val_f1".to_string(), 40.5)]));
}

fn with_message<'a>(events: &'a [Value], message: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["fields"]["message"] == message)
        .collect()
}

#[test]
fn rank0_logs_each_interval_with_all_figures() {
    let events = capture(tracing::Level::INFO, || run(true));
    let progress = with_message(&events, "training progress");
    let steps: Vec<i64> = progress
        .iter()
        .map(|e| e["fields"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 5]);
    let at4 = &progress[1]["fields"];
    assert_eq!(progress[1]["level"], "INFO");
    assert_eq!(at4["total_steps"], 5);
    assert_eq!(at4["loss"], 3.5, "mean of steps 3 and 4");
    assert_eq!(at4["lr"], 2e-5);
    assert_eq!(at4["grad_norm"], 0.5);
    assert_eq!(at4["samples_per_second"], 8.0);
    assert_eq!(at4["tokens_per_second"], 1024.0);
    assert_eq!(at4["eta"], "1m01s");
    assert_eq!(at4["epoch"], 2.0);
    let validation = with_message(&events, "validation");
    assert_eq!(validation.len(), 1);
    assert_eq!(validation[0]["fields"]["metrics"], "val_f1=40.5");
}

#[test]
fn other_ranks_log_at_debug_only() {
    let info = capture(tracing::Level::INFO, || run(false));
    assert!(info.is_empty(), "{info:?}");
    let debug = capture(tracing::Level::DEBUG, || run(false));
    let steps: Vec<i64> = debug
        .iter()
        .filter(|e| e["fields"]["message"] == "training progress (not rank 0)")
        .map(|e| e["fields"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 5]);
    assert!(debug.iter().all(|e| e["level"] == "DEBUG"), "{debug:?}");
}
