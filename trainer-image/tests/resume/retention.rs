//! Retention: `keepLast` newest sets plus the top-k best by the monitored
//! metric stay, everything else is deleted, and only after the new set's
//! manifest exists (a save that fails to commit deletes nothing). Locally
//! and against the real S3 server of the e2e cluster.

use crate::support::resume_util;
use crate::support::storage_util;

use std::collections::BTreeSet;

use megatron_trainer::model::BertTaskModel;
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig, contents, last_file};
use megatron_trainer::storage::{RetryPolicy, Store};
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_util::*;
use serde_json::json;

fn retention_spec() -> crds::CheckpointingSpec {
    spec(json!({"keepLast": 2, "best": {"monitor": "val_loss", "topK": 2}}))
}

fn save(ckpt: &mut Checkpointer, model: &BertTaskModel, step: i64, reason: SaveReason) {
    let state = filled_state(model, step, step);
    ckpt.save(CheckpointRequest {
        reason,
        model,
        state: &state,
    })
    .unwrap_or_else(|e| panic!("save at step {step}: {e}"))
    .expect("a new step commits");
}

fn sets(names: &[u64]) -> BTreeSet<String> {
    names.iter().map(|s| format!("step-{s:012}")).collect()
}

/// Runs the save sequence; `stored_sets` lists the set directories present
/// (complete or not) in the set store.
fn run_sequence(ckpt: &mut Checkpointer, stored_sets: &dyn Fn() -> BTreeSet<String>) {
    let model = tiny_model(&TpGroup::single(), 3);
    let rank_dir = ckpt.rank_dir();
    let top_files = || -> BTreeSet<String> {
        std::fs::read_dir(&rank_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("--val_loss="))
            .collect()
    };
    let f = |v: &str| format!("megatron_bert--val_loss={v}-epoch=0.ckpt");

    save(ckpt, &model, 1, SaveReason::Validation(val_loss(0.9)));
    save(ckpt, &model, 2, SaveReason::Interval);
    save(ckpt, &model, 3, SaveReason::Validation(val_loss(0.5)));
    assert_eq!(
        stored_sets(),
        sets(&[1, 2, 3]),
        "best 0.9 and 0.5 plus newest 2, 3"
    );
    assert_eq!(top_files(), [f("0.90"), f("0.50")].into());

    save(ckpt, &model, 4, SaveReason::Validation(val_loss(0.7)));
    assert_eq!(stored_sets(), sets(&[3, 4]), "0.9 pushed out of the top 2");
    assert_eq!(top_files(), [f("0.50"), f("0.70")].into());

    save(ckpt, &model, 5, SaveReason::Interval);
    save(ckpt, &model, 6, SaveReason::Validation(val_loss(0.4)));
    assert_eq!(
        stored_sets(),
        sets(&[3, 5, 6]),
        "best 0.4 (6), 0.5 (3); newest 5, 6"
    );
    assert_eq!(top_files(), [f("0.40"), f("0.50")].into());
    let best: Vec<u64> = ckpt.best().iter().map(|b| b.step).collect();
    assert_eq!(best, vec![6, 3]);
    let last = contents::read(&rank_dir.join(last_file("megatron_bert"))).unwrap();
    assert_eq!(last.state.step, 6, "-last.ckpt holds the newest save");
    // The top-k file of step 3 still holds step 3.
    let third = contents::read(&rank_dir.join(f("0.50"))).unwrap();
    assert_eq!(third.state.step, 3);
}

#[test]
fn keep_last_and_top_k_locally() {
    let dir = test_dir("retention-local");
    let work = dir.join("work");
    let mut ckpt = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        &work,
        retention_spec(),
    ))
    .unwrap();
    let stored = || -> BTreeSet<String> {
        std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("step-"))
            .collect()
    };
    run_sequence(&mut ckpt, &stored);

    // A save whose upload fails: nothing is deleted, the newest set stays 6.
    let before = list_files(&work);
    let blocker = work.join("step-000000000007");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let model = tiny_model(&TpGroup::single(), 3);
    let state = filled_state(&model, 7, 7);
    let err = ckpt
        .save(CheckpointRequest {
            reason: SaveReason::Validation(val_loss(0.1)),
            model: &model,
            state: &state,
        })
        .expect_err("the set directory cannot be created");
    assert!(
        !err.is_invalid_input(),
        "a storage failure is retryable: {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("step 7") && msg.contains("previous checkpoint stays the latest"),
        "{msg}"
    );
    std::fs::remove_file(&blocker).unwrap();
    let after: Vec<String> = list_files(&work)
        .into_iter()
        .filter(|f| !f.ends_with("megatron_bert-last.ckpt"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|f| !f.ends_with("megatron_bert-last.ckpt"))
        .collect();
    assert_eq!(after, before, "a failed save deletes nothing");
    let mut fresh = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        &work,
        retention_spec(),
    ))
    .unwrap();
    assert_eq!(fresh.find_latest().unwrap().unwrap().step, 6);
    // The retry commits and retention resumes: 0.1 is the new best.
    ckpt.save(CheckpointRequest {
        reason: SaveReason::Validation(val_loss(0.1)),
        model: &model,
        state: &state,
    })
    .unwrap()
    .unwrap();
    assert_eq!(stored(), sets(&[6, 7]));
}

#[test]
fn keep_last_and_top_k_on_s3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut s3 = storage_util::s3_config(&storage_util::unique_prefix("resume-retention"), &[]);
    s3.retry = RetryPolicy {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(5),
        init_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(500),
    };
    let store = Store::s3(s3).unwrap();
    rt.block_on(store.create_bucket()).unwrap();
    let dir = test_dir("retention-s3");
    let mut ckpt = Checkpointer::new(
        CheckpointerConfig::single_process("megatron_bert", dir.join("work"), retention_spec())
            .with_remote(store.clone()),
    )
    .unwrap();
    let stored = || -> BTreeSet<String> {
        rt.block_on(store.list(""))
            .unwrap()
            .into_iter()
            .filter_map(|o| o.key.split_once('/').map(|(s, _)| s.to_string()))
            .collect()
    };
    run_sequence(&mut ckpt, &stored);
    // Nothing of the sets lands in the working directory with a remote store.
    assert!(
        !list_files(&dir.join("work"))
            .iter()
            .any(|f| f.starts_with("step-"))
    );
    rt.block_on(storage_util::delete_all(&store));
}

/// keepLast 0 keeps only the best sets: a save outside the top-k is deleted
/// as soon as it commits, and the reported latest checkpoint is then the
/// newest best set (which exists and is what a resume uses), never the
/// deleted one.
#[test]
fn keep_last_zero_reports_a_kept_set_as_latest() {
    let dir = test_dir("retention-keep0");
    let model = tiny_model(&TpGroup::single(), 3);
    let mut ckpt = Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        &dir,
        spec(json!({"keepLast": 0, "best": {"monitor": "val_loss", "topK": 1}})),
    ))
    .unwrap();
    let mut save_with = |step: i64, loss: f64| {
        let state = filled_state(&model, step, step);
        ckpt.save(CheckpointRequest {
            reason: SaveReason::Validation(val_loss(loss)),
            model: &model,
            state: &state,
        })
        .unwrap()
        .expect("a new step commits")
    };
    let first = save_with(2, 0.5);
    assert_eq!(first.latest.step, 2);
    let second = save_with(4, 0.9);
    assert!(
        second
            .removed
            .removed_sets
            .contains(&"step-000000000004".to_string())
    );
    assert_eq!(
        second.latest.step, 2,
        "the deleted step-4 set is not reported"
    );
    assert!(
        second.latest.uri.as_str().ends_with("step-000000000002"),
        "{:?}",
        second.latest.uri
    );
    assert!(dir.join("step-000000000002/manifest.json").exists());
}
