//! Two data-parallel replicas (TP=1, DP=2, two processes): only replica 0
//! writes the file, it holds both replicas' generator states, and each
//! replica gets its own back on restore.

use crate::support::common;
use crate::support::resume_util;

use megatron_trainer::comm::init_from_env;
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::parallel::random::cpu_rng_state;
use megatron_trainer::resume::{Checkpointer, CheckpointerConfig};
use megatron_trainer::train::{CheckpointRequest, SaveReason};
use resume_util::*;
use serde_json::json;

#[test]
fn replicas_get_their_own_generators_back() {
    if common::rank_child().is_some() {
        let topo = init_from_env(1).unwrap();
        assert_eq!((topo.dp_size, topo.tp_size), (2, 1));
        let dir = std::path::PathBuf::from(std::env::var("RESUME_WORK").unwrap());
        let tp = TpGroup::new(topo.tp.clone());
        let model = tiny_model(&tp, 5);
        let mut state = filled_state(&model, 6, 6);
        tch::manual_seed(100 + topo.dp_rank as i64);
        let mine = cpu_rng_state();
        state.rng.cpu = Some(mine.copy());
        let cfg = || {
            CheckpointerConfig::from_topology(
                "megatron_bert",
                dir.join("work"),
                spec(json!({"keepLast": 1})),
                &topo,
            )
        };
        let mut ckpt = Checkpointer::new(cfg()).unwrap();
        let saved = ckpt
            .save(CheckpointRequest {
                reason: SaveReason::Interval,
                model: &model,
                state: &state,
            })
            .unwrap()
            .unwrap();
        assert_eq!(saved.latest.step, 6);

        let mut fresh = tiny_model(&tp, 77);
        let mut reader = Checkpointer::new(cfg()).unwrap();
        let point = reader.find_latest().unwrap().unwrap();
        let restored = reader.restore(&point, &mut fresh).unwrap();
        assert_same(
            "own cpu generator",
            restored.rng.cpu.as_ref().unwrap(),
            &mine,
        );
        assert_same_dict("model", &fresh.state_dict(), &model.state_dict());
        common::emit("rng_sum", mine.sum(tch::Kind::Int64).int64_value(&[]));
        return;
    }
    let dir = test_dir("data-parallel");
    let outs = common::Ranks::new(module_path!(), "replicas_get_their_own_generators_back", 2)
        .env("RESUME_WORK", dir.display())
        .run_ok();
    assert_ne!(
        outs[0].expect_value("rng_sum"),
        outs[1].expect_value("rng_sum"),
        "the replicas had different generators"
    );
    assert_eq!(
        list_files(&dir.join("work")),
        vec![
            "mp_rank_00/megatron_bert-last.ckpt",
            "step-000000000006/manifest.json",
            "step-000000000006/mp_rank_00/megatron_bert--step=6-epoch=0.ckpt",
        ],
        "one file: replica 1 writes nothing"
    );
}
