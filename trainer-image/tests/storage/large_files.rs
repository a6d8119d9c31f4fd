//! Large-file round trips against the local S3 server (e2e/cluster/up):
//! multipart upload and concurrent ranged download of a 200 MB file, sha256
//! and bytes equal, memory bounded; the local-directory twin behaves the same.

use crate::support::common;
use crate::support::storage_util;
use crate::support::temp_dir::TempDir;

use megatron_trainer::storage::{Store, TransferOptions};
use object_store::ObjectStoreExt;
use storage_util::*;

const SIZE: u64 = 200 * MIB + 12_345;
/// RSS growth allowed during a transfer (parts in flight are 8 x 16 MiB).
const RSS_BUDGET: u64 = 256 * MIB;

/// Alone in a child process: the memory bound is read from the process's peak RSS.
#[test]
fn large_file_round_trip_is_multipart_ranged_and_memory_bounded() {
    common::alone(
        module_path!(),
        "large_file_round_trip_is_multipart_ranged_and_memory_bounded",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(large_file_round_trip())
        },
    );
}

async fn large_file_round_trip() {
    let store = s3_store("large").await;
    let dir = TempDir::new("large");
    let src = dir.path().join("model.bin");
    let expected_sha = write_random_file(&src, SIZE, 7);
    let opts = TransferOptions::default();

    let rss_before = proc_status_bytes("VmRSS");
    reset_peak_rss();
    let up = store
        .upload_file(&src, "ckpt/model.bin", &opts)
        .await
        .unwrap();
    let upload_growth = proc_status_bytes("VmHWM").saturating_sub(rss_before);
    assert_eq!(up.size, SIZE);
    assert_eq!(up.sha256, expected_sha);
    assert!(
        upload_growth < RSS_BUDGET,
        "upload grew RSS by {} MiB (budget {} MiB)",
        upload_growth / MIB,
        RSS_BUDGET / MIB
    );

    // A multipart object's ETag ends in "-<parts>".
    let meta = store
        .object_store()
        .head(&store.path("ckpt/model.bin").unwrap())
        .await
        .unwrap();
    assert_eq!(meta.size, SIZE);
    let etag = meta.e_tag.expect("S3 returns an ETag");
    let parts: u64 = etag
        .trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("ETag {etag} is not a multipart ETag"));
    assert_eq!(parts, SIZE.div_ceil(opts.part_size as u64));
    assert!(parts >= 4);

    let dest = dir.path().join("out/model.bin");
    let rss_before = proc_status_bytes("VmRSS");
    reset_peak_rss();
    let down = store
        .download_file("ckpt/model.bin", &dest, &opts)
        .await
        .unwrap();
    let download_growth = proc_status_bytes("VmHWM").saturating_sub(rss_before);
    assert_eq!(down, up);
    assert_eq!(sha256_file(&dest), expected_sha);
    assert!(
        download_growth < RSS_BUDGET,
        "download grew RSS by {} MiB (budget {} MiB)",
        download_growth / MIB,
        RSS_BUDGET / MIB
    );
    eprintln!(
        "RSS growth: upload {} MiB, download {} MiB; {parts} parts",
        upload_growth / MIB,
        download_growth / MIB
    );

    // Odd part sizes and other concurrency give the same bytes.
    let odd = TransferOptions {
        part_size: 7_000_003,
        concurrency: 3,
        ..TransferOptions::default()
    };
    let dest2 = dir.path().join("out/model-odd.bin");
    let down2 = store
        .download_file("ckpt/model.bin", &dest2, &odd)
        .await
        .unwrap();
    assert_eq!(down2, up);
    assert_eq!(sha256_file(&dest2), expected_sha);
    // Spot-check bytes at part boundaries through single ranged reads.
    let data = std::fs::read(&src).unwrap();
    let path = store.path("ckpt/model.bin").unwrap();
    for start in [0u64, 7_000_000, 16 * MIB - 3, SIZE - 10] {
        let range = start..(start + 10).min(SIZE);
        let got = store
            .object_store()
            .get_range(&path, range.clone())
            .await
            .unwrap();
        assert_eq!(&got[..], &data[range.start as usize..range.end as usize]);
    }

    // verified download rejects a wrong checksum and leaves no file behind
    let mut wrong = up.clone();
    wrong.sha256 = "0".repeat(64);
    let dest3 = dir.path().join("out/model-wrong.bin");
    let err = store
        .download_file_verified("ckpt/model.bin", &dest3, &wrong, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains("ckpt/model.bin"), "{err}");
    assert!(!dest3.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        2
    );
    delete_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_twin_round_trips_the_same_way() {
    let dir = TempDir::new("local-twin");
    let store = Store::local(dir.path().join("store")).unwrap();
    let src = dir.path().join("src.bin");
    let size = 40 * MIB + 1;
    let expected_sha = write_random_file(&src, size, 11);
    let opts = TransferOptions {
        part_size: 8 * MIB as usize,
        concurrency: 4,
        ..TransferOptions::default()
    };
    let up = store.upload_file(&src, "a/b/src.bin", &opts).await.unwrap();
    assert_eq!((up.size, up.sha256.as_str()), (size, expected_sha.as_str()));
    assert_eq!(
        sha256_file(&dir.path().join("store/a/b/src.bin")),
        expected_sha
    );
    let listed = store.list("a").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        ("a/b/src.bin", size)
    );
    let dest = dir.path().join("dest.bin");
    let down = store
        .download_file("a/b/src.bin", &dest, &opts)
        .await
        .unwrap();
    assert_eq!(down, up);
    assert_eq!(sha256_file(&dest), expected_sha);
    // A small file takes the single-request path.
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    let d = store.upload_file(&small, "small.txt", &opts).await.unwrap();
    assert_eq!(d.size, 5);
    assert_eq!(
        store.get_bytes("small.txt").await.unwrap().as_ref(),
        b"hello"
    );
    let err = store.get_bytes("missing.txt").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn local_directory_stale_uploads_are_cleaned() {
    let dir = TempDir::new("local-stale");
    let store = Store::local(dir.path().join("store")).unwrap();
    let path = store.path("ckpt/abandoned.bin").unwrap();
    let mut upload = store.object_store().put_multipart(&path).await.unwrap();
    upload
        .put_part(object_store::PutPayload::from(vec![1u8; 1024]))
        .await
        .unwrap();
    std::mem::forget(upload); // a crashed writer
    let pending = store.list_multipart_uploads("").await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].key.starts_with("ckpt/abandoned.bin#"),
        "{pending:?}"
    );
    assert!(
        store.list("").await.unwrap().is_empty(),
        "staging files are not objects"
    );
    let kept = store
        .cleanup_stale_multipart("", std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(kept.is_empty());
    let removed = store
        .cleanup_stale_multipart("ckpt", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
}
