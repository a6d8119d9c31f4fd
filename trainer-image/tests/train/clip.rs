//! Global gradient-norm clipping across tensor-parallel shards against
//! `torch.nn.utils.clip_grad_norm_` on the full model: two processes hold
//! TP=2 shards of the Hugging Face reference Megatron-BERT
//! (`tests/python/model_reference.py`), backpropagate the same QA loss, clip
//! with `clip_grad_norm`, and must report torch's norm and end with torch's
//! clipped gradients (`tests/python/train_clip_reference.py`).

use crate::support::common;
use crate::support::model_util;
use crate::support::temp_dir::TempDir;
use crate::support::train_util;

use std::path::PathBuf;

use megatron_trainer::comm;
use megatron_trainer::model::{
    BertTaskModel, HeadConfig, HeadOutput, gather_state_dict, question_answering_loss,
    shard_state_dict,
};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::clip::clip_grad_norm;
use tch::Device;

const REF_DIR_VAR: &str = "TRAIN_CLIP_REFERENCE_DIR";

fn clip_tp2_matches_torch_on(test: &str, tp: usize) {
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let dir = PathBuf::from(std::env::var(REF_DIR_VAR).unwrap());
        let topo = comm::init_from_env(tp).expect("rendezvous");
        let group = TpGroup::new(topo.tp.clone());
        let cfg = model_util::config(&dir);
        let io = model_util::read(dir.join("io.safetensors"));
        let weights = model_util::read(dir.join("weights.safetensors"));
        let clipped = model_util::read(dir.join("clipped.safetensors"));
        let max_norm: f64 = std::env::var("MAX_NORM").unwrap().parse().unwrap();
        let mut model =
            BertTaskModel::new(&cfg, &HeadConfig::question_answering(), &group, Device::Cpu)
                .unwrap();
        model
            .load_state_dict(&shard_state_dict(&weights, tp as i64, group.rank()).unwrap())
            .unwrap();
        let out = model
            .forward(
                &io["input_ids"],
                Some(&io["token_type_ids"]),
                Some(&io["attention_mask"]),
                false,
            )
            .unwrap();
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = out
        else {
            panic!("span head")
        };
        question_answering_loss(
            &start_logits,
            &end_logits,
            &io["start_positions"],
            &io["end_positions"],
        )
        .unwrap()
        .backward();
        let norm = clip_grad_norm(&model, &group, max_norm).unwrap();
        let torch_norm = clipped["total_norm"].double_value(&[0]);
        let norm_diff = (norm - torch_norm).abs() / torch_norm;
        assert!(
            norm_diff < 1e-5,
            "rank {}: norm {norm} vs torch {torch_norm}",
            group.rank()
        );
        let gathered = gather_state_dict(&model.gradients(), group.group().as_ref()).unwrap();
        let mut worst = (0.0f64, String::new());
        for (name, g) in &gathered {
            let d = model_util::max_rel_diff(g, &clipped[name]);
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
        assert!(
            worst.0 < 1e-5,
            "clipped gradient of {} differs by {:e}",
            worst.1,
            worst.0
        );
        common::emit("norm", format!("{norm:.9e}"));
        common::emit("norm_rel_diff", format!("{norm_diff:e}"));
        common::emit("grad_rel_diff", format!("{:e}", worst.0));
        return;
    }
    let dir = model_util::hf_reference(&common::python(), "megatron");
    // Half the reference norm, so clipping scales every gradient by about 0.5.
    let unclipped = TempDir::new("train-clip");
    let probe = unclipped.join("probe.safetensors");
    train_util::run_python(
        &common::python(),
        "train_clip_reference.py",
        &[
            "--grads".as_ref(),
            dir.join("grads.safetensors").as_os_str(),
            "--max-norm".as_ref(),
            "1e30".as_ref(),
            "--out".as_ref(),
            probe.as_os_str(),
        ],
    );
    let full_norm = model_util::read(&probe)["total_norm"].double_value(&[0]);
    let max_norm = full_norm / 2.0;
    train_util::run_python(
        &common::python(),
        "train_clip_reference.py",
        &[
            "--grads".as_ref(),
            dir.join("grads.safetensors").as_os_str(),
            "--max-norm".as_ref(),
            max_norm.to_string().as_ref(),
            "--out".as_ref(),
            dir.join("clipped.safetensors").as_os_str(),
        ],
    );
    let outs = common::Ranks::new(module_path!(), test, tp)
        .env(REF_DIR_VAR, dir.display())
        .env("MAX_NORM", max_norm)
        .run_ok();
    assert_eq!(
        outs[0].expect_value("norm"),
        outs[1].expect_value("norm"),
        "every rank gets the same norm"
    );
    for o in &outs {
        println!(
            "rank {}: norm {} (torch {full_norm:.9e}), norm rel diff {}, clipped grad rel diff {}",
            o.rank,
            o.expect_value("norm"),
            o.expect_value("norm_rel_diff"),
            o.expect_value("grad_rel_diff")
        );
    }
}

#[test]
fn tp2_clip_grad_norm_matches_torch_on_the_full_model() {
    clip_tp2_matches_torch_on("tp2_clip_grad_norm_matches_torch_on_the_full_model", 2);
}
