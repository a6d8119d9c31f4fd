//! Clear errors from the local S3 server (wrong credentials, missing bucket,
//! unreachable endpoint) that never contain the secret, and cleanup of
//! multipart uploads a crashed writer left behind.

use crate::support::storage_util;
use crate::support::temp_dir::TempDir;

use std::time::Duration;

use megatron_trainer::storage::{RetryPolicy, S3Config, Store, TransferOptions};
use object_store::{ObjectStoreExt, PutPayload};
use storage_util::*;

const WRONG_SECRET: &str = "wrong-secret-do-not-print-4f1c9a";

fn quick_retry(mut cfg: S3Config) -> S3Config {
    cfg.retry = RetryPolicy {
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    cfg
}

#[tokio::test]
async fn wrong_credentials_name_bucket_and_endpoint_but_not_the_secret() {
    let env = cluster_env();
    let endpoint = env["MEGATRON_S3_ENDPOINT"].clone();
    s3_store("creds").await; // the bucket exists
    let real_secret = env["AWS_SECRET_ACCESS_KEY"].clone();
    for (id, secret) in [
        (env["AWS_ACCESS_KEY_ID"].as_str(), WRONG_SECRET),
        ("AKIAUNKNOWNKEY000000", WRONG_SECRET),
    ] {
        let cfg = quick_retry(s3_config(
            "creds",
            &[("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)],
        ));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains(WRONG_SECRET), "{shown}");
        let store = Store::s3(cfg).unwrap();
        assert!(!format!("{store:?}").contains(WRONG_SECRET));
        for err in [
            store.check_access().await.unwrap_err(),
            store.get_bytes("x").await.unwrap_err(),
            store.put_bytes("x", "data".into()).await.unwrap_err(),
        ] {
            let text = format!("{err} | {err:?}");
            eprintln!("{err}");
            assert!(text.contains(TEST_BUCKET), "{text}");
            assert!(text.contains(&endpoint), "{text}");
            assert!(
                text.contains("AWS_SECRET_ACCESS_KEY"),
                "should say what to check: {text}"
            );
            assert!(!text.contains(WRONG_SECRET), "secret leaked: {text}");
            assert!(!text.contains(&real_secret), "secret leaked: {text}");
        }
    }
}

#[tokio::test]
async fn missing_bucket_is_named() {
    let env = cluster_env();
    let endpoint = env["MEGATRON_S3_ENDPOINT"].clone();
    let mut cfg = quick_retry(s3_config("p", &[]));
    cfg.bucket = format!("no-such-bucket-{}", std::process::id());
    let store = Store::s3(cfg.clone()).unwrap();
    let dir = TempDir::new("nobucket");
    // Read-only operations: SeaweedFS creates a missing bucket on PUT
    // (AWS answers NoSuchBucket), so writes would not show the error here.
    for err in [
        store.check_access().await.unwrap_err(),
        store.list("ckpt").await.unwrap_err(),
        store
            .download_file("f", &dir.path().join("f"), &TransferOptions::default())
            .await
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "bucket '{}' does not exist at endpoint {endpoint}",
                cfg.bucket
            )),
            "{text}"
        );
        assert!(!text.contains(&env["AWS_SECRET_ACCESS_KEY"]), "{text}");
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_named() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = quick_retry(s3_config("p", &[("MEGATRON_S3_ENDPOINT", &endpoint)]));
    let err = Store::s3(cfg)
        .unwrap()
        .check_access()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot reach the S3 endpoint {endpoint}")),
        "{err}"
    );
    assert!(err.contains(TEST_BUCKET), "{err}");
}

#[tokio::test]
async fn stale_multipart_uploads_are_listed_and_aborted() {
    let store = s3_store("stale").await;
    let path = store.path("ckpt/abandoned.bin").unwrap();
    let mut upload = store.object_store().put_multipart(&path).await.unwrap();
    upload
        .put_part(PutPayload::from(vec![1u8; 5 * MIB as usize]))
        .await
        .unwrap();
    // The writer "crashes": neither complete nor abort is ever called.
    std::mem::forget(upload);

    let pending = store.list_multipart_uploads("ckpt").await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, "ckpt/abandoned.bin");
    // Too young: kept.
    let aborted = store
        .cleanup_stale_multipart("ckpt", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(aborted.is_empty());
    assert_eq!(store.list_multipart_uploads("").await.unwrap().len(), 1);
    // Old enough: aborted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let aborted = store
        .cleanup_stale_multipart("", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(aborted.len(), 1);
    assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
    assert!(
        store.list("").await.unwrap().is_empty(),
        "no object was created"
    );
}

/// Cancels uploads at several points (while the create request may still be in flight, and
/// with part PUTs the server is still writing): none may leave a multipart upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_upload_aborts_its_multipart_upload() {
    let store = s3_store("abort").await;
    let dir = TempDir::new("abort");
    let src = dir.path().join("f.bin");
    write_random_file(&src, 100 * MIB, 3);
    let opts = TransferOptions {
        part_size: 5 * MIB as usize,
        concurrency: 2,
        ..TransferOptions::default()
    };
    for (round, cancel_after_ms) in [0u64, 0, 30, 150, 400].into_iter().enumerate() {
        let key = format!("cancelled-{round}.bin");
        let task = {
            let (store, src, opts, key) = (store.clone(), src.clone(), opts.clone(), key.clone());
            tokio::spawn(async move { store.upload_file(&src, &key, &opts).await })
        };
        // Wait until the multipart upload exists, then cancel the uploading future.
        let mut seen = false;
        for _ in 0..400 {
            if !store.list_multipart_uploads("").await.unwrap().is_empty() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(seen, "round {round}: the multipart upload never showed up");
        tokio::time::sleep(Duration::from_millis(cancel_after_ms)).await;
        task.abort();
        assert!(
            task.await.unwrap_err().is_cancelled(),
            "round {round}: the upload finished before cancel"
        );
        let mut left = Vec::new();
        for _ in 0..100 {
            left = store.list_multipart_uploads("").await.unwrap();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            left.is_empty(),
            "round {round} (cancelled {cancel_after_ms} ms in): not aborted: {left:?}"
        );
    }
    assert!(
        store.list("").await.unwrap().is_empty(),
        "no object was created"
    );
}

#[tokio::test]
async fn read_only_identity_reads_but_cannot_write() {
    let env = cluster_env();
    let admin = s3_store("readonly").await;
    admin.put_bytes("data.txt", "hello".into()).await.unwrap();
    let prefix = admin.s3_config().unwrap().prefix.clone();
    let ro = Store::s3(quick_retry(s3_config(
        &prefix,
        &[
            (
                "AWS_ACCESS_KEY_ID",
                &env["MEGATRON_S3_READONLY_ACCESS_KEY_ID"],
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                &env["MEGATRON_S3_READONLY_SECRET_ACCESS_KEY"],
            ),
        ],
    )))
    .unwrap();
    ro.check_access().await.unwrap();
    assert_eq!(ro.get_bytes("data.txt").await.unwrap().as_ref(), b"hello");
    let err = ro
        .put_bytes("other.txt", "x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was denied") && err.contains(TEST_BUCKET),
        "{err}"
    );
    assert!(
        !err.contains(&env["MEGATRON_S3_READONLY_SECRET_ACCESS_KEY"]),
        "{err}"
    );
}
