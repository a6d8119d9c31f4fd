//! Our model against Hugging Face transformers (fp32, eval, dropout off):
//! `MegatronBertModel` / `MegatronBertForQuestionAnswering` for the pre-LN
//! architecture, `BertModel` / `BertForQuestionAnswering` for post-LN:
//! sequence output (non-pad positions), pooled output, QA logits, QA loss and
//! every parameter gradient of the QA loss; plus NeMo-shaped token and
//! sequence classification heads and losses.

use crate::support::common;
use crate::support::model_util;

use megatron_trainer::model::{
    BertConfig, BertTaskModel, HeadConfig, HeadOutput, StateDict, question_answering_loss,
    sequence_classification_loss, token_classification_loss,
};
use megatron_trainer::parallel::TpGroup;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-5;

fn check_against_hf(arch: &str) {
    let dir = model_util::hf_reference(&common::python(), arch);
    let cfg: BertConfig = model_util::config(&dir);
    let weights = model_util::read(dir.join("weights.safetensors"));
    let io = model_util::read(dir.join("io.safetensors"));
    let hf_grads = model_util::read(dir.join("grads.safetensors"));

    let mut model = BertTaskModel::new(
        &cfg,
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    model.load_state_dict(&weights).unwrap();

    let (ids, types, mask) = (
        &io["input_ids"],
        &io["token_type_ids"],
        &io["attention_mask"],
    );
    let seq = model
        .encoder
        .forward(ids, Some(types), Some(mask), false)
        .unwrap();
    let valid = mask.unsqueeze(-1);
    let d_seq = model_util::max_abs_diff_masked(&seq, &io["sequence_output"], Some(&valid));
    let d_pool = model_util::max_abs_diff_masked(
        &model.encoder.pool(&seq).unwrap(),
        &io["pooled_output"],
        None,
    );
    let HeadOutput::Span {
        start_logits,
        end_logits,
    } = model.forward(ids, Some(types), Some(mask), false).unwrap()
    else {
        panic!("QA head must return span logits")
    };
    let d_start = model_util::max_abs_diff_masked(&start_logits, &io["start_logits"], Some(mask));
    let d_end = model_util::max_abs_diff_masked(&end_logits, &io["end_logits"], Some(mask));
    println!(
        "{arch}: max |diff| sequence {d_seq:e} pooled {d_pool:e} start {d_start:e} end {d_end:e}"
    );
    for (what, d) in [
        ("sequence output", d_seq),
        ("pooled", d_pool),
        ("start", d_start),
        ("end", d_end),
    ] {
        assert!(d <= TOL, "{arch}: {what} differs from HF by {d:e}");
    }

    let loss = question_answering_loss(
        &start_logits,
        &end_logits,
        &io["start_positions"],
        &io["end_positions"],
    )
    .unwrap();
    let d_loss = (loss.double_value(&[]) - io["loss"].double_value(&[0])).abs();
    assert!(d_loss <= TOL, "{arch}: QA loss differs by {d_loss:e}");
    loss.backward();
    let ours = model.gradients();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        hf_grads.keys().collect::<Vec<_>>(),
        "{arch}: the same parameters must receive gradients"
    );
    let mut worst = (0.0, String::new());
    for (name, g) in &hf_grads {
        let d = model_util::max_rel_diff(&ours[name], g);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    println!(
        "{arch}: worst relative gradient diff {:e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= TOL,
        "{arch}: gradient of {} differs by {:e} (relative)",
        worst.1,
        worst.0
    );

    // Two-layer NeMo heads on the reference sequence output.
    let heads = model_util::read(dir.join("heads.safetensors"));
    for (task, head_cfg) in [
        ("token", HeadConfig::token_classification(5)),
        ("sequence", HeadConfig::sequence_classification(5)),
    ] {
        let mut m = BertTaskModel::new(&cfg, &head_cfg, &TpGroup::single(), Device::Cpu).unwrap();
        let mut sd: StateDict = weights
            .iter()
            .filter(|(k, _)| !k.starts_with("classifier."))
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        sd.extend(
            model_util::strip_prefix(&heads, task)
                .into_iter()
                .filter(|(k, _)| k.starts_with("classifier.")),
        );
        m.load_state_dict(&sd).unwrap();
        let out = m.forward(ids, Some(types), Some(mask), false).unwrap();
        let (logits, loss) = match out {
            HeadOutput::TokenLogits(l) => {
                let loss = token_classification_loss(&l, &heads["token.labels"], Some(mask), -100)
                    .unwrap();
                (l, loss)
            }
            HeadOutput::SequenceLogits(l) => {
                let loss = sequence_classification_loss(&l, &heads["sequence.labels"]).unwrap();
                (l, loss)
            }
            HeadOutput::Span { .. } => panic!("wrong head"),
        };
        let row_mask = if task == "token" {
            Some(mask.unsqueeze(-1))
        } else {
            None
        };
        let d = model_util::max_abs_diff_masked(
            &logits,
            &heads[&format!("{task}.logits")],
            row_mask.as_ref(),
        );
        let dl = (loss.double_value(&[]) - heads[&format!("{task}.loss")].double_value(&[0])).abs();
        println!("{arch}: {task} head logits diff {d:e}, loss diff {dl:e}");
        assert!(
            d <= TOL && dl <= TOL,
            "{arch}: {task} head differs (logits {d:e}, loss {dl:e})"
        );
    }
}

#[test]
fn megatron_pre_ln_matches_hf_megatron_bert() {
    check_against_hf("megatron");
}

#[test]
fn bert_post_ln_matches_hf_bert() {
    check_against_hf("bert");
}

#[test]
fn load_state_dict_names_the_bad_key() {
    let dir = model_util::hf_reference(&common::python(), "megatron");
    let cfg = model_util::config(&dir);
    let mut weights = model_util::read(dir.join("weights.safetensors"));
    let mut model = BertTaskModel::new(
        &cfg,
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )
    .unwrap();
    let qkv = "encoder.layers.1.self_attention.query_key_value.weight".to_string();
    let good = weights
        .insert(
            qkv.clone(),
            Tensor::zeros([5, 5], (Kind::Float, Device::Cpu)),
        )
        .unwrap();
    let err = model.load_state_dict(&weights).unwrap_err().to_string();
    assert!(err.contains(&qkv) && err.contains("[5, 5]"), "{err}");
    weights.insert(qkv.clone(), good);
    weights.remove("encoder.final_layernorm.bias");
    let err = model.load_state_dict(&weights).unwrap_err().to_string();
    assert!(err.contains("encoder.final_layernorm.bias"), "{err}");
    // Fine-tuning start: no head in the checkpoint, extra lm_head reported.
    weights.insert(
        "encoder.final_layernorm.bias".into(),
        Tensor::zeros([64], (Kind::Float, Device::Cpu)),
    );
    weights.retain(|k, _| !k.starts_with("classifier."));
    weights.insert(
        "lm_head.bias".into(),
        Tensor::zeros([128], (Kind::Float, Device::Cpu)),
    );
    let ignored = model.load_pretrained(&weights).unwrap();
    assert_eq!(ignored, ["lm_head.bias"]);
    assert!(
        model.load_state_dict(&weights).is_err(),
        "strict load must reject a missing head"
    );
}
