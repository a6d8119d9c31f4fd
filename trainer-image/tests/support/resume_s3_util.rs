//! Shared setup of the S3 resume tests (resume_s3.rs, resume_s3_outage.rs):
//! a store on the e2e S3 server with quick retries, a checkpointer writing to
//! it in small parts, and a save that must commit.
#![allow(dead_code)]

use megatron_trainer::model::BertTaskModel;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::storage::{Store, TransferOptions};
use megatron_trainer::train::{CheckpointRequest, SaveReason, TrainState};
use serde_json::json;

use super::resume_util::spec;

/// A store under a fresh prefix for `test`, the bucket created.
pub fn s3_store(rt: &tokio::runtime::Runtime, test: &str) -> Store {
    let mut cfg = super::storage_util::s3_config(&super::storage_util::unique_prefix(test), &[]);
    cfg.retry = super::storage_util::quick_retries(2);
    let store = Store::s3(cfg).unwrap();
    rt.block_on(store.create_bucket()).unwrap();
    store
}

/// A checkpointer of `work` publishing to `store` in 5 MiB parts, one at a time.
pub fn checkpointer(store: &Store, work: std::path::PathBuf, keep_last: i32) -> Checkpointer {
    let mut cfg = CheckpointerConfig::single_process(
        "megatron_bert",
        work,
        spec(json!({"keepLast": keep_last})),
    )
    .with_remote(store.clone());
    cfg.transfer = TransferOptions {
        part_size: 5 * 1024 * 1024,
        concurrency: 1,
        ..TransferOptions::default()
    };
    Checkpointer::new(cfg).unwrap()
}

/// Saves `state` as an interval checkpoint, which must commit.
pub fn save(ckpt: &mut Checkpointer, model: &BertTaskModel, state: &TrainState) {
    ckpt.save(CheckpointRequest {
        reason: SaveReason::Interval,
        model,
        state,
    })
    .unwrap_or_else(|e| panic!("save at step {}: {e}", state.step))
    .expect("a new step commits");
}
