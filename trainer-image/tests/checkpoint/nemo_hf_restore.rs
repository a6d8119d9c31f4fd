//! A QA .nemo built by Python in NeMo 1.x's own layout (uuid-named
//! artifacts, `tar.add(folder, arcname=".")`, QKV rows in the archive's
//! Megatron checkpoint version, either module-name generation, gzip or plain
//! tar, TP=1 or TP=2) restores in our `BertTaskModel` and gives the same
//! start/end logits as Hugging Face `MegatronBertForQuestionAnswering` on
//! the same weights; broken archives give errors naming the member.

use crate::support::checkpoint_util;
use crate::support::nemo_util;
use crate::support::temp_dir::TempDir;

use std::path::PathBuf;

use checkpoint_util::{read_safetensors, run_python};
use megatron_trainer::checkpoint::nemo::{self, NemoTask};
use megatron_trainer::model::{BertTaskModel, Task};
use megatron_trainer::parallel::TpGroup;
use nemo_util::*;
use tch::Device;

const TOL: f64 = 1e-5;

/// Runs the Python builder once for all `cases` (see nemo_reference.py);
/// returns each case's archive path.
fn make(dir: &TempDir, cases: &[&str]) -> Vec<PathBuf> {
    let mut args = vec!["make-qa", "--out", dir.path().to_str().unwrap()];
    for c in cases {
        args.extend_from_slice(&["--case", c]);
    }
    let out = run_python("nemo_reference.py", &args);
    assert_eq!(out.trim(), "ok", "{out}");
    cases
        .iter()
        .map(|c| dir.path().join(c).join("model.nemo"))
        .collect()
}

fn restore_and_compare(dir: &TempDir, nemo_path: &std::path::Path, what: &str) {
    let io = read_safetensors(&dir.join("io.safetensors"));
    let m = nemo::read_nemo(nemo_path, 1, 0).unwrap();
    assert_eq!(m.task, NemoTask::QuestionAnswering);
    assert_eq!(m.head.task, Task::QuestionAnswering);
    assert!(m.has_head_weights);
    assert_eq!(
        m.config.vocab_size, 100,
        "vocabulary size from the vocab artifact"
    );
    assert_eq!(m.config.padded_vocab_size, 128);
    let mut model =
        BertTaskModel::new(&m.config, &m.head, &TpGroup::single(), Device::Cpu).unwrap();
    m.load_into(&mut model).unwrap();
    let mask = &io["attention_mask"];
    let (start, end) = span_logits(&model, &io["input_ids"], &io["token_type_ids"], mask);
    let ds = max_diff_masked(&start, &io["start_logits"], mask);
    let de = max_diff_masked(&end, &io["end_logits"], mask);
    println!("{what}: max |diff| vs HF start {ds:e} end {de:e}");
    assert!(ds <= TOL && de <= TOL, "{what}: start {ds:e} end {de:e}");

    // The canonical weights equal the ones Python started from.
    let full = read_safetensors(&dir.join("full.safetensors"));
    let want = shards(&m.config, &full, 1).remove(0);
    assert_same(what, &m.state_dict, &want);
    // Resharded to TP=2: each rank's shard is the cut of the full model.
    let want2 = shards(&m.config, &full, 2);
    for rank in 0..2 {
        let r = nemo::read_nemo(nemo_path, 2, rank).unwrap();
        assert_same(
            &format!("{what} rank {rank}/2"),
            &r.state_dict,
            &want2[rank as usize],
        );
        assert_eq!(r.config.padded_vocab_size, 256);
    }
}

#[test]
fn nemo_1x_qa_archives_restore_and_match_hugging_face() {
    let cases = [
        ("tp1 v3.0 gzip", "tp1~v3.0"),
        ("tp2 v0 transformer/attention names", "tp2~v0~old"),
        ("tp2 v1.0", "tp2~v1.0"),
        ("tp1 v0 plain tar", "tp1~v0~plain"),
    ];
    let dir = TempDir::new("nemo-hf");
    let paths = make(&dir, &cases.map(|c| c.1));
    for ((what, _), path) in cases.iter().zip(paths) {
        restore_and_compare(&dir, &path, what);
    }
}

#[test]
fn broken_archives_name_the_member() {
    let key = "bert_model.language_model.encoder.layers.1.mlp.dense_h_to_4h.weight";
    let bad_key = format!("tp2~bad={key}");
    let cases: [(&str, Vec<&str>); 5] = [
        (
            "omit=model_config.yaml",
            vec!["model_config.yaml is missing"],
        ),
        (
            "tp2~omit=mp_rank_01/model_weights.ckpt",
            vec!["mp_rank_01/model_weights.ckpt is missing"],
        ),
        (
            &bad_key,
            vec![
                "mp_rank_00/model_weights.ckpt",
                key,
                "shape [127, 64]",
                "expected [128, 64]",
            ],
        ),
        (
            "bad=classifier.mlp.layer0.weight",
            vec!["model_weights.ckpt", "classifier"],
        ),
        (
            "omit=vocab",
            vec!["_vocab.txt", "tokenizer vocabulary", "is missing"],
        ),
    ];
    let dir = TempDir::new("nemo-bad");
    let paths = make(&dir, &cases.each_ref().map(|c| c.0));
    for ((case, needles), path) in cases.iter().zip(paths) {
        let err = nemo::read_nemo(&path, 1, 0).unwrap_err();
        let text = err.to_string();
        println!("{case}: {text}");
        assert!(err.is_invalid_input(), "{text}");
        for n in needles {
            assert!(
                text.contains(n),
                "error for {case} should mention {n}: {text}"
            );
        }
    }
}
