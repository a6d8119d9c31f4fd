//! The checkpoint-set commit protocol on the local S3 server and on a local
//! directory: only manifested, size-consistent sets count; retention deletes
//! manifests before files and never the newest complete set.

use crate::support::storage_util;
use crate::support::temp_dir::TempDir;

use std::collections::BTreeSet;

use bytes::Bytes;
use megatron_trainer::storage::{CheckpointSets, SetFile, Store, TransferOptions};
use serde_json::json;
use storage_util::*;

fn rank_files(dir: &TempDir, step: u64, sizes: &[u64]) -> Vec<SetFile> {
    sizes
        .iter()
        .enumerate()
        .map(|(rank, &size)| {
            let path = dir.path().join(format!("s{step}-r{rank}.pt"));
            write_random_file(&path, size, step * 10 + rank as u64);
            SetFile {
                name: format!("mp_rank_{rank:02}/model_optim_rng.pt"),
                path,
            }
        })
        .collect()
}

async fn exercise_protocol(store: Store, dir: TempDir) {
    let sets = CheckpointSets::new(store.clone());
    let opts = TransferOptions {
        part_size: 5 * MIB as usize,
        concurrency: 4,
        ..TransferOptions::default()
    };
    assert_eq!(sets.latest_complete().await.unwrap(), None);

    // Step 100: committed.
    let files100 = rank_files(&dir, 100, &[12 * MIB + 5, 3000]);
    let set100 = sets
        .commit(
            100,
            &files100,
            json!({"tensor_model_parallel_size": 2}),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(set100.name, "step-000000000100");
    assert_eq!(set100.manifest.files.len(), 2);

    // Step 200: files uploaded, manifest never written (a crashed writer).
    let files200 = rank_files(&dir, 200, &[4000, 4000]);
    let mut entries = Vec::new();
    for f in &files200 {
        entries.push(
            sets.upload_file(200, &f.name, &f.path, &opts)
                .await
                .unwrap(),
        );
    }
    let latest = sets.latest_complete().await.unwrap().unwrap();
    assert_eq!(
        latest.manifest.step, 100,
        "a set without manifest must be ignored"
    );
    assert_eq!(latest.manifest.metadata["tensor_model_parallel_size"], 2);

    // A manifest promising a file that is not there is refused.
    let mut missing = entries.clone();
    missing[1].name = "mp_rank_09/model_optim_rng.pt".into();
    let err = sets
        .write_manifest(200, missing, json!(null))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mp_rank_09/model_optim_rng.pt") && err.contains("missing"),
        "{err}"
    );

    // Step 300: committed, then one file replaced by a shorter object -> not complete.
    let files300 = rank_files(&dir, 300, &[2000, 2000]);
    sets.commit(300, &files300, json!(null), &opts)
        .await
        .unwrap();
    assert_eq!(
        sets.latest_complete().await.unwrap().unwrap().manifest.step,
        300
    );
    store
        .put_bytes(
            "step-000000000300/mp_rank_01/model_optim_rng.pt",
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    assert_eq!(
        sets.latest_complete().await.unwrap().unwrap().manifest.step,
        100
    );
    // A set cannot be committed twice.
    let err = sets
        .commit(300, &files300, json!(null), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already committed"), "{err}");

    // Committing 200 makes it the newest complete set (300 is broken).
    let set200 = sets
        .write_manifest(200, entries, json!(null))
        .await
        .unwrap();
    assert_eq!(sets.latest_complete().await.unwrap().unwrap(), set200);

    // Download verifies every file.
    let out = dir.path().join("restore");
    sets.download(&set100, &out, &opts).await.unwrap();
    for (f, m) in files100.iter().zip(&set100.manifest.files) {
        assert_eq!(sha256_file(&out.join(&f.name)), sha256_file(&f.path));
        assert_eq!(sha256_file(&f.path), m.sha256);
    }
    // Same size, different bytes: the checksum catches it.
    let corrupt = vec![0u8; 3000];
    store
        .put_bytes(
            "step-000000000100/mp_rank_01/model_optim_rng.pt",
            Bytes::from(corrupt),
        )
        .await
        .unwrap();
    let err = sets
        .download(&set100, &dir.path().join("restore2"), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sha256 mismatch") && err.contains("mp_rank_01"),
        "{err}"
    );

    assert_eq!(CheckpointSets::step_of("step-000000000400"), Some(400));
    assert_eq!(CheckpointSets::step_of("step-400"), None);
    // Step 400 complete; retention keeps 2 complete sets (400, 200), removes 100,
    // and removes broken 300? No: 300 is older than 400 and incomplete -> removed.
    let files400 = rank_files(&dir, 400, &[1000, 1000]);
    sets.commit(400, &files400, json!(null), &opts)
        .await
        .unwrap();
    // An in-progress set newer than the newest complete one must survive.
    sets.upload_file(500, &files400[0].name, &files400[0].path, &opts)
        .await
        .unwrap();
    let report = sets.retain(2, &BTreeSet::new()).await.unwrap();
    assert_eq!(report.removed_sets, vec!["step-000000000100".to_string()]);
    assert_eq!(
        report.removed_incomplete,
        vec!["step-000000000300".to_string()]
    );
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.iter().all(|k| !k.starts_with("step-000000000100/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.starts_with("step-000000000300/")),
        "{keys:?}"
    );
    assert!(keys.contains(&"step-000000000500/mp_rank_00/model_optim_rng.pt".to_string()));
    let complete: Vec<u64> = sets
        .list_complete()
        .await
        .unwrap()
        .iter()
        .map(|s| s.manifest.step)
        .collect();
    assert_eq!(complete, vec![200, 400]);
    assert_eq!(
        sets.latest_complete().await.unwrap().unwrap().manifest.step,
        400
    );
    // keepLast 0 keeps only the protected (best) sets.
    let best = BTreeSet::from([CheckpointSets::set_name(200)]);
    let report = sets.retain(0, &best).await.unwrap();
    assert_eq!(report.removed_sets, vec![CheckpointSets::set_name(400)]);
    assert!(report.removed_incomplete.is_empty(), "{report:?}");
    assert!(
        store
            .list("")
            .await
            .unwrap()
            .iter()
            .any(|o| o.key == "step-000000000500/mp_rank_00/model_optim_rng.pt"),
        "the in-progress set newer than every complete one stays"
    );
    assert_eq!(
        sets.list_complete()
            .await
            .unwrap()
            .iter()
            .map(|s| s.manifest.step)
            .collect::<Vec<_>>(),
        vec![200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_protocol_on_s3() {
    let store = s3_store("sets").await;
    exercise_protocol(store.clone(), TempDir::new("sets-s3")).await;
    delete_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_protocol_on_local_directory() {
    let dir = TempDir::new("sets-local");
    let store = Store::local(dir.path().join("store")).unwrap();
    exercise_protocol(store, dir).await;
}

#[tokio::test]
async fn bad_file_names_are_refused() {
    let dir = TempDir::new("names");
    let sets = CheckpointSets::new(Store::local(dir.path().join("store")).unwrap());
    let src = dir.path().join("f");
    std::fs::write(&src, b"x").unwrap();
    for bad in ["", "manifest.json", "../x", "/abs", "a//b"] {
        let err = sets
            .upload_file(1, bad, &src, &TransferOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("file name '{bad}'")), "{err}");
    }
}
