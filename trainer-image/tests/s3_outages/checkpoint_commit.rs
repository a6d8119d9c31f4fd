//! The S3 server stops in the middle of a checkpoint commit
//! (e2e/cluster/restart-s3): the upload fails with a clear error, the previous
//! set stays the latest, and once the server is back a retry completes and the
//! abandoned multipart upload can be cleaned up.

use crate::support::storage_util;
use crate::support::temp_dir::TempDir;

use std::time::Duration;

use megatron_trainer::storage::{CheckpointSets, SetFile, Store, TransferOptions};
use serde_json::json;
use storage_util::*;

#[test]
fn server_stopped_mid_upload_then_retry_completes() {
    let _outage = storage_util::outage();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(stop_mid_upload_then_retry());
}

async fn stop_mid_upload_then_retry() {
    let env = cluster_env();
    let endpoint = env["MEGATRON_S3_ENDPOINT"].clone();
    let prefix = unique_prefix("restart");
    let mut cfg = s3_config(&prefix, &[]);
    cfg.retry = quick_retries(3);
    let store = Store::s3(cfg).unwrap();
    store.create_bucket().await.unwrap();
    let sets = CheckpointSets::new(store.clone());
    let dir = TempDir::new("restart");
    let opts = TransferOptions {
        part_size: 5 * MIB as usize,
        concurrency: 1,
        ..TransferOptions::default()
    };

    let small = dir.path().join("small.pt");
    write_random_file(&small, 1000, 1);
    let first = vec![SetFile {
        name: "mp_rank_00/model_optim_rng.pt".into(),
        path: small,
    }];
    sets.commit(1, &first, json!(null), &opts).await.unwrap();

    let big = dir.path().join("big.pt");
    write_random_file(&big, 200 * MIB, 2);
    let second = vec![SetFile {
        name: "mp_rank_00/model_optim_rng.pt".into(),
        path: big,
    }];
    let commit = {
        let (sets, second, opts) = (sets.clone(), second.clone(), opts.clone());
        tokio::spawn(async move { sets.commit(2, &second, json!(null), &opts).await })
    };
    // Stop the server once the multipart upload is under way.
    let mut seen = false;
    for _ in 0..500 {
        if !store.list_multipart_uploads("").await.unwrap().is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "the multipart upload never showed up");
    let _restart = StartOnDrop;
    restart_s3("--stop-only");
    let err = commit
        .await
        .unwrap()
        .expect_err("the upload must fail while the server is down")
        .to_string();
    eprintln!("error while the server was down: {err}");
    assert!(err.contains(&endpoint), "{err}");
    assert!(
        err.contains("step-000000000002/mp_rank_00/model_optim_rng.pt"),
        "{err}"
    );
    assert!(err.contains(TEST_BUCKET), "{err}");
    assert!(!err.contains(&env["AWS_SECRET_ACCESS_KEY"]), "{err}");

    restart_s3("--start-only");
    let latest = sets.latest_complete().await.unwrap().unwrap();
    assert_eq!(
        latest.manifest.step, 1,
        "the previous set must stay the latest"
    );
    // The upload could not be aborted while the server was down; clean it up.
    let stale = store
        .cleanup_stale_multipart("", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(store.list_multipart_uploads("").await.unwrap().is_empty());

    let set = sets.commit(2, &second, json!(null), &opts).await.unwrap();
    assert_eq!(sets.latest_complete().await.unwrap().unwrap(), set);
    delete_all(&store).await;
}
