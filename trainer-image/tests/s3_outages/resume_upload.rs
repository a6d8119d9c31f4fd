//! The S3 server of the e2e cluster stops in the middle of a checkpoint
//! upload (e2e/cluster/restart-s3): the save fails with a retryable error,
//! the previous checkpoint stays the latest, a restarted gang resumes from
//! it (aborting the abandoned multipart upload), and saving works again once
//! the server is back. In the `s3_outages` binary: nothing else uses S3 during the outage.

use crate::support::resume_s3_util;
use crate::support::resume_util;
use crate::support::storage_util;

use std::time::Duration;

use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_s3_util::{checkpointer, s3_store, save};
use resume_util::*;
use storage_util::{StartOnDrop, restart_s3};
use tch::{Kind, Tensor};

#[test]
fn s3_stopped_mid_upload_keeps_the_previous_checkpoint_and_recovers() {
    let _outage = storage_util::outage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = s3_store(&rt, "resume-outage");
    let env = storage_util::cluster_env();
    let dir = test_dir("s3-outage");
    let tp = TpGroup::single();
    let model = tiny_model(&tp, 5);
    let mut ckpt = checkpointer(&store, dir.join("work"), 2);
    save(&mut ckpt, &model, &filled_state(&model, 1, 1));

    // A ~200 MB file so the multipart upload is under way long enough.
    let mut big = filled_state(&model, 2, 2);
    big.optimizer.exp_avg.insert(
        "zz.padding".into(),
        Tensor::zeros([50_000_000], (Kind::Float, tch::Device::Cpu)),
    );
    big.optimizer.exp_avg_sq.insert(
        "zz.padding".into(),
        Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)),
    );
    let watcher = {
        let store = store.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            for _ in 0..3000 {
                if !rt
                    .block_on(store.list_multipart_uploads(""))
                    .unwrap()
                    .is_empty()
                {
                    restart_s3("--stop-only");
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    let _restart = StartOnDrop;
    let err = ckpt
        .save(CheckpointRequest {
            reason: SaveReason::Interval,
            model: &model,
            state: &big,
        })
        .expect_err("the upload must fail while the server is down");
    assert!(
        watcher.join().unwrap(),
        "the multipart upload never showed up"
    );
    let msg = err.to_string();
    eprintln!("error while the server was down: {msg}");
    assert!(!err.is_invalid_input(), "an outage is retryable: {msg}");
    assert!(
        msg.contains("step 2") && msg.contains("previous checkpoint stays the latest"),
        "{msg}"
    );
    assert!(msg.contains(&env["MEGATRON_S3_ENDPOINT"]), "{msg}");
    assert!(!msg.contains(&env["AWS_SECRET_ACCESS_KEY"]), "{msg}");

    restart_s3("--start-only");
    // A restarted gang resumes from step 1 and aborts the abandoned upload.
    let mut restarted = checkpointer(&store, dir.join("restarted"), 2);
    let point = restarted.find_latest().unwrap().expect("step 1 stays");
    assert_eq!(point.step, 1);
    assert!(
        rt.block_on(store.list_multipart_uploads(""))
            .unwrap()
            .is_empty()
    );
    // Saving works again; the step-2 leftovers go with the next retention.
    let next = filled_state(&model, 3, 3);
    save(&mut ckpt, &model, &next);
    let mut again = checkpointer(&store, dir.join("again"), 2);
    let point = again.find_latest().unwrap().unwrap();
    assert_eq!(point.step, 3);
    let mut fresh = tiny_model(&tp, 9);
    assert_same_state(&again.restore(&point, &mut fresh).unwrap(), &next);
    rt.block_on(storage_util::delete_all(&store));
}
