//! `spec.checkpointing.resume`: Never ignores checkpoints, Auto takes the
//! newest complete one (skipping a corrupt shard), From starts from another
//! job's checkpoint until the job has its own; unusable input is a clear
//! invalid-input error.

use crate::support::resume_util;

use megatron_trainer::model::BertTaskModel;
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig, ResumeSource};
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_util::*;
use serde_json::json;

fn ckpt(dir: &std::path::Path, spec_json: serde_json::Value) -> Checkpointer {
    Checkpointer::new(CheckpointerConfig::single_process(
        "megatron_bert",
        dir,
        spec(spec_json),
    ))
    .unwrap()
}

fn save(c: &mut Checkpointer, model: &BertTaskModel, step: i64) {
    let state = filled_state(model, step, step);
    c.save(CheckpointRequest {
        reason: SaveReason::Interval,
        model,
        state: &state,
    })
    .unwrap()
    .unwrap();
}

#[test]
fn never_auto_and_from() {
    let dir = test_dir("policy");
    let model = tiny_model(&TpGroup::single(), 11);
    let other = dir.join("other-job");
    let mut o = ckpt(&other, json!({"keepLast": 5}));
    save(&mut o, &model, 3);
    save(&mut o, &model, 5);

    // Never: checkpoints are there, but not used.
    let mut never = ckpt(&other, json!({"resume": {"policy": "Never"}}));
    assert!(never.find_latest().unwrap().is_none());
    // Auto in a job without checkpoints: start fresh.
    let mine = dir.join("my-job");
    assert!(ckpt(&mine, json!({})).find_latest().unwrap().is_none());

    // From a set directory of the other job.
    let from_set = other.join("step-000000000003");
    let spec_from = json!({"resume": {"policy": "From", "from": from_set.display().to_string()}});
    let mut c = ckpt(&mine, spec_from.clone());
    let p = c.find_latest().unwrap().unwrap();
    assert_eq!((p.step, p.source), (3, ResumeSource::From));
    assert_eq!(p.uri.as_str(), from_set.display().to_string());
    let mut fresh = tiny_model(&TpGroup::single(), 12);
    let state = c.restore(&p, &mut fresh).unwrap();
    assert_same_state(&state, &filled_state(&model, 3, 3));
    // From a checkpoints root: its newest complete set.
    let spec_root = json!({"resume": {"policy": "From", "from": other.display().to_string()}});
    assert_eq!(
        ckpt(&mine, spec_root).find_latest().unwrap().unwrap().step,
        5
    );

    // Once the job has its own checkpoint, From behaves like Auto.
    save(&mut c, &model, 7);
    let p = ckpt(&mine, spec_from).find_latest().unwrap().unwrap();
    assert_eq!((p.step, p.source), (7, ResumeSource::Own));

    // From an empty place: invalid input naming the field.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = ckpt(
        &dir.join("job3"),
        json!({"resume": {"policy": "From", "from": empty.join("step-000000000009").display().to_string()}}),
    )
    .find_latest()
    .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(
        err.to_string().contains("spec.checkpointing.resume.from"),
        "{err}"
    );
    let err = ckpt(
        &dir.join("job4"),
        json!({"resume": {"policy": "From", "from": "relative/path"}}),
    )
    .find_latest()
    .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

#[test]
fn newer_set_of_a_newer_writer_is_an_error_and_kept() {
    // As if a newer trainer wrote step 4: metadata this one cannot read, or
    // a newer manifest format. Neither may be skipped nor withdrawn.
    type Mutation = fn(&mut serde_json::Value);
    let cases: [(&str, Mutation, &str); 2] = [
        (
            "metadata",
            |m| m["metadata"] = json!({"layout": "future-v9"}),
            "cannot read",
        ),
        (
            "format",
            |m| m["format_version"] = json!(99),
            "upgrade the trainer image",
        ),
    ];
    for (case, mutate, needle) in cases {
        let dir = test_dir(&format!("policy-foreign-{case}"));
        let model = tiny_model(&TpGroup::single(), 11);
        let mut c = ckpt(&dir, json!({"keepLast": 3}));
        save(&mut c, &model, 2);
        save(&mut c, &model, 4);
        let manifest = dir.join("step-000000000004/manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        mutate(&mut m);
        std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

        let err = ckpt(&dir, json!({})).find_latest().unwrap_err();
        assert!(err.is_invalid_input(), "{case}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("step-000000000004") && msg.contains(needle),
            "{case}: {msg}"
        );
        assert!(
            manifest.exists(),
            "{case}: a newer writer's set is never withdrawn"
        );
        assert!(
            !dir.join("step-000000000004/manifest.json.rejected")
                .exists(),
            "{case}"
        );
    }
}

#[test]
fn corrupt_local_shard_falls_back_and_tp_mismatch_is_invalid() {
    let dir = test_dir("policy-corrupt");
    let model = tiny_model(&TpGroup::single(), 11);
    let mut c = ckpt(&dir, json!({"keepLast": 3}));
    save(&mut c, &model, 2);
    save(&mut c, &model, 4);
    let shard = dir.join("step-000000000004/mp_rank_00/megatron_bert--step=4-epoch=0.ckpt");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len() - 100;
    bytes[n] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let p = ckpt(&dir, json!({})).find_latest().unwrap().unwrap();
    assert_eq!(p.step, 2, "the corrupt step-4 set is skipped");
    assert_eq!(
        p.file,
        dir.join("step-000000000002/mp_rank_00/megatron_bert--step=2-epoch=0.ckpt")
    );
    assert!(
        !dir.join("step-000000000004/manifest.json").exists()
            && dir
                .join("step-000000000004/manifest.json.rejected")
                .exists(),
        "the corrupt set is withdrawn, so retention does not count it"
    );

    // A run with another tensor-parallel size cannot use these checkpoints.
    let mut cfg = CheckpointerConfig::single_process("megatron_bert", &dir, spec(json!({})));
    cfg.tp_size = 2;
    let err = Checkpointer::new(cfg).unwrap().find_latest().unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(
        err.to_string()
            .contains("tensor-parallel size 1, this run uses 2"),
        "{err}"
    );

    // Bad settings are invalid input, not panics.
    let bad = CheckpointerConfig::single_process("a/b", &dir, spec(json!({})));
    assert!(Checkpointer::new(bad).unwrap_err().is_invalid_input());
    let bad = CheckpointerConfig::single_process("x", &dir, spec(json!({"keepLast": 0})));
    let err = Checkpointer::new(bad).unwrap_err();
    assert!(err.to_string().contains("keepLast"), "{err}");
}
