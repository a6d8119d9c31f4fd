//! Benchmark (ignored by default): saving and restoring a training
//! checkpoint of a mid-size model (hidden 1024, 2 layers, vocab 30522:
//! 56M parameters, ~0.7 GB with AdamW moments) through the Checkpointer,
//! locally and through S3, side by side with Python's torch.save /
//! torch.load(weights_only=True) of the same tensors. Run:
//! `cargo test --release -p megatron-trainer --test benches -- resume --ignored --nocapture`

use crate::support::common;
use crate::support::resume_util;
use crate::support::storage_util;

use std::process::Command;
use std::time::Instant;

use megatron_trainer::model::{BertConfig, BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::storage::Store;
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_util::*;
use serde_json::json;

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_save_and_restore() {
    let dir = test_dir("bench");
    let mut cfg = BertConfig::megatron_345m(30522);
    cfg.num_layers = 2;
    let tp = TpGroup::single();
    tch::manual_seed(1);
    let model = BertTaskModel::new(
        &cfg,
        &HeadConfig::sequence_classification(3),
        &tp,
        tch::Device::Cpu,
    )
    .unwrap();
    let state = filled_state(&model, 6, 6);
    let shapes: serde_json::Map<String, serde_json::Value> = model
        .state_dict()
        .iter()
        .map(|(k, t)| (k.clone(), json!(t.size())))
        .collect();
    let shapes_file = dir.join("shapes.json");
    std::fs::write(&shapes_file, serde_json::to_vec(&shapes).unwrap()).unwrap();
    let py = Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/resume_bench.py"
        ))
        .arg(&shapes_file)
        .arg(dir.join("reference.pt"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let (py_save, py_load) = (
        reference["save_s"].as_f64().unwrap(),
        reference["load_s"].as_f64().unwrap(),
    );

    let request = || CheckpointRequest {
        reason: SaveReason::Interval,
        model: &model,
        state: &state,
    };
    let spec_json = json!({"keepLast": 1});
    // Local: write the file, copy it into the set, sha256, manifest.
    let mut local = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        dir.join("local"),
        spec(spec_json.clone()),
    ))
    .unwrap();
    let (_, local_save) = timed(|| local.save(request()).unwrap().unwrap());
    let bytes = std::fs::metadata(dir.join("local/mp_rank_00/megatron_bert-last.ckpt"))
        .unwrap()
        .len();
    let mut fresh = BertTaskModel::new(
        &cfg,
        &HeadConfig::sequence_classification(3),
        &tp,
        tch::Device::Cpu,
    )
    .unwrap();
    let mut reader = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        dir.join("local"),
        spec(spec_json.clone()),
    ))
    .unwrap();
    let (_, local_restore) = timed(|| {
        let p = reader.find_latest().unwrap().unwrap();
        reader.restore(&p, &mut fresh).unwrap()
    });

    // S3 (the e2e cluster's SeaweedFS on this machine).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::s3(storage_util::s3_config(
        &storage_util::unique_prefix("resume-bench"),
        &[],
    ))
    .unwrap();
    rt.block_on(store.create_bucket()).unwrap();
    let mut s3 = Checkpointer::new(
        CheckpointerConfig::single_process(
            "megatron_bert",
            dir.join("s3w"),
            spec(spec_json.clone()),
        )
        .with_remote(store.clone()),
    )
    .unwrap();
    let (_, s3_save) = timed(|| s3.save(request()).unwrap().unwrap());
    let mut s3r = Checkpointer::new(
        CheckpointerConfig::single_process("megatron_bert", dir.join("s3r"), spec(spec_json))
            .with_remote(store.clone()),
    )
    .unwrap();
    let (_, s3_restore) = timed(|| {
        let p = s3r.find_latest().unwrap().unwrap();
        s3r.restore(&p, &mut fresh).unwrap()
    });
    rt.block_on(storage_util::delete_all(&store));
    let _ = std::fs::remove_dir_all(&dir);

    let mb = bytes as f64 / 1e6;
    println!(
        "checkpoint file: {mb:.0} MB (python reference file {:.0} MB)",
        reference["bytes"].as_f64().unwrap() / 1e6
    );
    println!("{:<46} {:>8} {:>8} {:>7}", "", "ours s", "torch s", "ratio");
    for (what, ours, theirs) in [
        (
            "save, local set (write+link+sha256+manifest)",
            local_save,
            py_save,
        ),
        ("find+verify+restore, local set", local_restore, py_load),
        ("save, S3 set (write+upload+manifest)", s3_save, py_save),
        ("find+download+verify+restore, S3 set", s3_restore, py_load),
    ] {
        println!(
            "{what:<46} {ours:>8.2} {theirs:>8.2} {:>7.2}",
            ours / theirs
        );
    }
}
