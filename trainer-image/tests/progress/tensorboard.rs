//! TensorBoard event files written by the progress reporter, read back by
//! real TensorBoard (`tests/python/progress_tensorboard.py`: its raw record
//! loader, which checks the CRCs, and the `EventAccumulator` its scalars
//! dashboard uses): exact tags, steps and values.

use crate::support::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use megatron_trainer::progress::{Reporter, ReporterConfig};
use megatron_trainer::train::StepStats;
use serde_json::Value;

/// Runs TensorBoard's readers on `logdir`.
fn tensorboard_read(logdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/progress_tensorboard.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(logdir)
        .output()
        .expect("run the TensorBoard reader");
    assert!(
        out.status.success(),
        "progress_tensorboard.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

fn stats(step: i64, total: i64) -> StepStats {
    StepStats {
        step,
        total_steps: total,
        epoch: step as f64 / 3.0,
        loss: 1.0 / step as f64 + 0.1,
        learning_rate: 1e-4 * (1.0 - step as f64 / 10.0),
        grad_norm: Some(2.5 + step as f64 * 0.01),
        loss_scale: None,
        samples_per_second: 100.0 + step as f64,
        tokens_per_second: 12_800.0 + step as f64,
        eta_seconds: (total - step) as f64,
        skipped: false,
    }
}

fn reporter(dir: &Path, rank0: bool) -> Reporter {
    Reporter::new(ReporterConfig {
        is_rank0: rank0,
        tensorboard_dir: Some(dir.to_path_buf()),
        log_interval_steps: 2,
        ..Default::default()
    })
    .expect("reporter")
}

/// The series `tag` as (step, value) pairs.
fn series(read: &Value, tag: &str) -> Vec<(i64, f64)> {
    read["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar series {tag} in {read}"))
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// What TensorBoard stores: the value as a 32-bit float.
fn f32v(v: f64) -> f64 {
    f64::from(v as f32)
}

#[test]
fn scalars_read_back_by_tensorboard() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = reporter(dir.path(), true);
    let file = r.tensorboard_file().unwrap().to_path_buf();
    let all: Vec<StepStats> = (1..=5).map(|s| stats(s, 5)).collect();
    for (i, s) in all.iter().enumerate() {
        r.step(s);
        if i == 3 {
            let val =
                BTreeMap::from([("val_loss".to_string(), 0.75), ("val_f1".to_string(), 61.3)]);
            r.validation(4, s.epoch, &val);
        }
    }
    r.test_metrics(&BTreeMap::from([("test_f1".to_string(), 60.1)]));
    r.flush();

    let name = file.file_name().unwrap().to_str().unwrap();
    let rest = name.strip_prefix("events.out.tfevents.").expect(name);
    let (secs, host) = rest.split_once('.').expect(name);
    assert!(
        secs.len() == 10 && secs.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    assert!(!host.is_empty(), "{name}");

    let read = tensorboard_read(dir.path());
    assert_eq!(read["files"].as_array().unwrap().len(), 1);
    assert_eq!(read["file_versions"], serde_json::json!(["brain.Event:2"]));
    // The version record, 3 training logs (steps 2, 4, 5), one validation, one test.
    assert_eq!(read["records"], 6);
    let mut tags: Vec<&str> = read["scalars"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        [
            "test_f1",
            "throughput/samples_per_second",
            "throughput/tokens_per_second",
            "train/epoch",
            "train/grad_norm",
            "train/learning_rate",
            "train/loss",
            "val_f1",
            "val_loss",
        ]
    );
    // train/loss is the mean over the steps since the previous log.
    let l = |s: usize| all[s - 1].loss;
    assert_eq!(
        series(&read, "train/loss"),
        [
            (2, f32v((l(1) + l(2)) / 2.0)),
            (4, f32v((l(3) + l(4)) / 2.0)),
            (5, f32v(l(5)))
        ]
    );
    for (tag, pick) in [
        (
            "train/learning_rate",
            (|s: &StepStats| s.learning_rate) as fn(&StepStats) -> f64,
        ),
        ("train/epoch", |s| s.epoch),
        ("train/grad_norm", |s| s.grad_norm.unwrap()),
        ("throughput/samples_per_second", |s| s.samples_per_second),
        ("throughput/tokens_per_second", |s| s.tokens_per_second),
    ] {
        let want: Vec<(i64, f64)> = [2, 4, 5]
            .iter()
            .map(|&s| (s as i64, f32v(pick(&all[s - 1]))))
            .collect();
        assert_eq!(series(&read, tag), want, "{tag}");
    }
    assert_eq!(series(&read, "val_loss"), [(4, 0.75)]);
    assert_eq!(series(&read, "val_f1"), [(4, f32v(61.3))]);
    assert_eq!(series(&read, "test_f1"), [(5, f32v(60.1))]);
}

#[test]
fn a_restart_appends_a_second_file_that_tensorboard_merges() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = reporter(dir.path(), true);
    first.step(&stats(2, 4));
    let second_dir_file = {
        // Same second, same host: the second writer must not clobber the first.
        let mut second = reporter(dir.path(), true);
        second.step(&stats(4, 4));
        second.tensorboard_file().unwrap().to_path_buf()
    };
    assert_ne!(first.tensorboard_file().unwrap(), second_dir_file);
    drop(first);
    let read = tensorboard_read(dir.path());
    assert_eq!(read["files"].as_array().unwrap().len(), 2);
    let steps: Vec<i64> = series(&read, "train/loss").iter().map(|p| p.0).collect();
    assert_eq!(steps, [2, 4]);
}

#[test]
fn only_rank0_writes_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = reporter(dir.path(), false);
    assert!(r.tensorboard_file().is_none());
    r.step(&stats(2, 2));
    r.validation(2, 1.0, &BTreeMap::from([("val_loss".to_string(), 1.0)]));
    drop(r);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
