//! Resume through the real S3 server of the e2e cluster (`e2e/cluster/up`):
//! restore into a fresh model, fall back past a corrupt or missing shard
//! (the server stopping mid-upload: resume_s3_outage.rs).

use crate::support::resume_s3_util;
use crate::support::resume_util;
use crate::support::storage_util;

use bytes::Bytes;
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::ResumeSource;
use megatron_trainer::train::TrainState;
use resume_s3_util::{checkpointer, s3_store, save};
use resume_util::*;

#[test]
fn restore_from_s3_into_a_fresh_model() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = s3_store(&rt, "resume-restore");
    let dir = test_dir("s3-restore");
    let tp = TpGroup::single();
    let model = tiny_model(&tp, 5);
    let mut writer = checkpointer(&store, dir.join("writer"), 2);
    let early = filled_state(&model, 4, 40);
    save(&mut writer, &model, &early);
    let state = filled_state(&model, 8, 80);
    save(&mut writer, &model, &state);

    // A new "process": another working directory, a differently initialised model.
    let mut reader = checkpointer(&store, dir.join("reader"), 2);
    let point = reader.find_latest().unwrap().expect("a committed set");
    assert_eq!(point.step, 8);
    assert_eq!(point.source, ResumeSource::Own);
    assert!(point.uri.as_str().starts_with("s3://"), "{:?}", point.uri);
    assert!(
        point.uri.as_str().ends_with("/step-000000000008"),
        "{:?}",
        point.uri
    );
    assert!(
        point.file.starts_with(dir.join("reader")),
        "downloaded locally"
    );
    let mut fresh = tiny_model(&tp, 6);
    let restored = reader.restore(&point, &mut fresh).unwrap();
    assert_same_dict("model", &fresh.state_dict(), &model.state_dict());
    assert_same_state(&restored, &state);
    assert!(
        !point.file.exists(),
        "the downloaded copy is removed after the restore"
    );
    rt.block_on(storage_util::delete_all(&store));
}

#[test]
fn corrupt_or_missing_newest_shard_falls_back_to_the_previous_set() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = s3_store(&rt, "resume-fallback");
    let dir = test_dir("s3-fallback");
    let tp = TpGroup::single();
    let model = tiny_model(&tp, 5);
    let mut writer = checkpointer(&store, dir.join("writer"), 3);
    let states: Vec<TrainState> = [4, 8, 12]
        .iter()
        .map(|&s| filled_state(&model, s, s))
        .collect();
    for s in &states {
        save(&mut writer, &model, s);
    }
    let shard = |step: u64| {
        format!("step-{step:012}/mp_rank_00/megatron_bert--step={step}-epoch=0.ckpt").replace(
            "epoch=0",
            &format!("epoch={}", (step as f64 / 7.0).floor() as i64),
        )
    };

    // Same size, one byte flipped: only the sha256 tells.
    let key = shard(12);
    let mut bytes = rt.block_on(store.get_bytes(&key)).unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    rt.block_on(store.put_bytes(&key, Bytes::from(bytes)))
        .unwrap();
    let mut reader = checkpointer(&store, dir.join("reader"), 3);
    let point = reader
        .find_latest()
        .unwrap()
        .expect("an older complete set");
    assert_eq!(point.step, 8, "the corrupt step-12 set is skipped");
    let mut fresh = tiny_model(&tp, 6);
    assert_same_state(&reader.restore(&point, &mut fresh).unwrap(), &states[1]);
    // The unusable set is withdrawn (its manifest kept aside for inspection)...
    let keys: Vec<String> = rt
        .block_on(store.list("step-000000000012"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.contains(&"step-000000000012/manifest.json.rejected".to_string()),
        "{keys:?}"
    );
    assert!(
        !keys.contains(&"step-000000000012/manifest.json".to_string()),
        "{keys:?}"
    );
    // ...so the resumed run can save step 12 again.
    let mut redo = filled_state(&model, 12, 120);
    redo.epoch = states[2].epoch;
    save(&mut reader, &model, &redo);
    let mut check = checkpointer(&store, dir.join("check"), 3);
    let point = check.find_latest().unwrap().unwrap();
    assert_eq!(point.step, 12);
    assert_same_state(&check.restore(&point, &mut fresh).unwrap(), &redo);

    // Missing shards in steps 12 and 8: back to step 4.
    rt.block_on(store.delete(&shard(12))).unwrap();
    rt.block_on(store.delete(&shard(8))).unwrap();
    let mut reader = checkpointer(&store, dir.join("reader2"), 3);
    let point = reader.find_latest().unwrap().expect("the oldest set");
    assert_eq!(point.step, 4);
    let mut fresh = tiny_model(&tp, 7);
    assert_same_state(&reader.restore(&point, &mut fresh).unwrap(), &states[0]);
    assert_same_dict("model", &fresh.state_dict(), &model.state_dict());
    rt.block_on(storage_util::delete_all(&store));
}
