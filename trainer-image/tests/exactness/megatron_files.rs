//! The end-to-end proof: Megatron-LM BERT checkpoint *files*, as
//! Megatron-LM saves them, give the same QA outputs in our trainer as the
//! same weights in Hugging Face's `MegatronBertForQuestionAnswering`.
//!
//! `tests/python/exactness_megatron_files.py` writes random tiny checkpoints
//! (every checkpoint_version 0/1.0/2.0/3.0 with its QKV row layout, both
//! naming generations, zip and legacy containers, fp16 and fp32, source
//! TP 1/2/4) and the HF outputs on a padded batch. Each checkpoint is loaded
//! with `checkpoint::megatron::load` into `BertTaskModel` at TP=1 (in this
//! process), TP=2 and TP=4 (one set of real rank processes per size on the
//! CPU ring backend, each handling every variant); sequence output and
//! start/end logits must match HF within 1e-5 on non-pad positions.

use crate::support::common;
use crate::support::model_util;

use std::path::{Path, PathBuf};

use megatron_trainer::checkpoint::megatron;
use megatron_trainer::comm;
use megatron_trainer::model::{BertTaskModel, HeadConfig, HeadOutput};
use megatron_trainer::parallel::TpGroup;
use tch::Device;
use torch_pickle::Container;

const TOL: f64 = 1e-5;
const ROOT_VAR: &str = "EXACTNESS_MEGATRON_FILES_DIR";
const TEST: &str = "megatron_checkpoint_files_match_hugging_face_at_tp_1_2_4";

#[derive(serde::Deserialize)]
struct Variant {
    name: String,
    version: i64,
    legacy: bool,
    dtype: String,
    tp: i64,
}

/// Loads every variant at this rank of `group` and compares with HF;
/// returns the worst difference and the variant/output it was seen on.
fn check_variants(root: &Path, group: &TpGroup) -> (f64, String) {
    let (tp, rank) = (group.size(), group.rank());
    let variants: Vec<Variant> =
        serde_json::from_str(&std::fs::read_to_string(root.join("variants.json")).unwrap())
            .unwrap();
    assert!(variants.len() >= 16, "the fixture lists every variant");
    let io = model_util::read(root.join("io.safetensors"));
    let head = model_util::read(root.join("head.safetensors"));
    let (ids, types, mask) = (
        &io["input_ids"],
        &io["token_type_ids"],
        &io["attention_mask"],
    );
    let mut worst = (0.0f64, String::new());
    for v in &variants {
        let at = format!("{} at TP={tp} rank {rank}", v.name);
        let (config, shard, info) = megatron::load(&root.join(&v.name), tp, rank)
            .unwrap_or_else(|e| panic!("{at}: loading failed: {e}"));
        assert_eq!(info.checkpoint_version, v.version as f64, "{at}: version");
        assert_eq!(info.tensor_parallel_size, v.tp, "{at}: source TP");
        assert_eq!(info.dtype, v.dtype, "{at}: dtype");
        let want_container = if v.legacy {
            Container::Legacy
        } else {
            Container::Zip
        };
        assert_eq!(info.container, want_container, "{at}: container");

        let mut model = BertTaskModel::new(
            &config,
            &HeadConfig::question_answering(),
            group,
            Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{at}: building the model: {e}"));
        let mut sd = shard;
        sd.extend(head.iter().map(|(k, t)| (k.clone(), t.shallow_clone())));
        model
            .load_state_dict(&sd)
            .unwrap_or_else(|e| panic!("{at}: loading the state dict: {e}"));
        let seq = model
            .encoder
            .forward(ids, Some(types), Some(mask), false)
            .unwrap();
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = model.head.forward(&seq, false).unwrap()
        else {
            panic!("{at}: the QA head must give span logits")
        };
        let hf = model_util::read(root.join(&v.name).join("hf.safetensors"));
        for (what, ours, theirs, m) in [
            (
                "sequence output",
                &seq,
                &hf["sequence_output"],
                mask.unsqueeze(-1),
            ),
            (
                "start logits",
                &start_logits,
                &hf["start_logits"],
                mask.shallow_clone(),
            ),
            (
                "end logits",
                &end_logits,
                &hf["end_logits"],
                mask.shallow_clone(),
            ),
        ] {
            let d = model_util::max_abs_diff_masked(ours, theirs, Some(&m));
            assert!(d <= TOL, "{at}: {what} differs from HF by {d:e}");
            if d >= worst.0 {
                worst = (d, format!("{} {what}", v.name));
            }
        }
    }
    worst
}

#[test]
fn megatron_checkpoint_files_match_hugging_face_at_tp_1_2_4() {
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let topo = comm::init_from_env(common::rank_child().unwrap().world).expect("rendezvous");
        let group = TpGroup::new(topo.tp.clone());
        let root = PathBuf::from(std::env::var(ROOT_VAR).unwrap());
        let (d, at) = check_variants(&root, &group);
        common::emit("worst", format!("{d:e} ({at})"));
        return;
    }
    let root =
        std::env::temp_dir().join(format!("megatron-exactness-files-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(root.clone());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/exactness_megatron_files.py");
    let out = std::process::Command::new(common::python())
        .arg(&script)
        .arg(&root)
        .output()
        .expect("running the Python reference");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let (d, at) = check_variants(&root, &TpGroup::single());
    println!("TP=1: worst difference from HF {d:e} ({at})");
    for tp in [2, 4] {
        let outs = common::Ranks::new(module_path!(), TEST, tp)
            .env(ROOT_VAR, root.display())
            .run_ok();
        for o in &outs {
            println!(
                "TP={tp} rank {}: worst difference from HF {}",
                o.rank,
                o.expect_value("worst")
            );
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
