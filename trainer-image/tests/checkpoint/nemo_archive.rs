//! Our .nemo archives: Python (tarfile + torch.load) finds exactly NeMo
//! 1.x's members, config fields, keys, shapes and values, at TP=1 and TP=2
//! (written from the full model and from per-rank shards); reading them back
//! gives the same tensors at the same or another tensor-parallel size.

use crate::support::checkpoint_util;
use crate::support::nemo_util;
use crate::support::temp_dir::TempDir;

use checkpoint_util::run_python;
use megatron_trainer::checkpoint::nemo::{
    self, DEFAULT_COMPRESSION, NemoContents, NemoTask, NemoWeights,
};
use megatron_trainer::model::{BertConfig, HeadConfig, StateDict};
use nemo_util::*;

struct Case {
    head: HeadConfig,
    task: &'static str,
    labels: Option<Vec<String>>,
}

fn contents<'a>(
    cfg: &'a BertConfig,
    case: &'a Case,
    weights: NemoWeights<'a>,
    tp: i64,
    vocab: &'a std::path::Path,
) -> NemoContents<'a> {
    NemoContents {
        config: cfg,
        head: &case.head,
        weights,
        tp_size: tp,
        pretrained_model_name: "megatron-bert-uncased",
        vocab_file: vocab,
        do_lower_case: true,
        label_names: case.labels.as_deref(),
        dataset: serde_json::Map::new(),
        include_pooler: false,
        compression_level: DEFAULT_COMPRESSION,
    }
}

fn python_check(dir: &TempDir, nemo: &std::path::Path, case: &Case, tp: i64) {
    let out = run_python(
        "nemo_reference.py",
        &[
            "check",
            "--nemo",
            nemo.to_str().unwrap(),
            "--full",
            dir.join("full.safetensors").to_str().unwrap(),
            "--config",
            dir.join("config.json").to_str().unwrap(),
            "--vocab",
            dir.join("vocab.txt").to_str().unwrap(),
            "--tp",
            &tp.to_string(),
            "--task",
            case.task,
            "--labels",
            &case
                .labels
                .as_ref()
                .map(|l| l.join(","))
                .unwrap_or_default(),
        ],
    );
    println!("{case_task} tp={tp}: {out}", case_task = case.task);
    assert!(out.starts_with("ok:"), "{out}");
}

#[test]
fn python_reads_exactly_what_nemo_1x_writes() {
    let cfg = tiny_config();
    let labels: Vec<String> = ["O", "B-Disease", "I-Disease"].map(String::from).into();
    let cases = [
        Case {
            head: HeadConfig::question_answering(),
            task: "qa",
            labels: None,
        },
        Case {
            head: HeadConfig::token_classification(3),
            task: "token",
            labels: Some(labels.clone()),
        },
        Case {
            head: HeadConfig::sequence_classification(3),
            task: "text",
            labels: Some(labels),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let dir = TempDir::new("nemo-py");
        write_vocab(&dir.join("vocab.txt"), cfg.vocab_size);
        write_config_json(&dir.join("config.json"), &cfg);
        let full = random_full(&cfg, &case.head, i as i64);
        assert!(full.contains_key("pooler.dense.weight"));
        save_safetensors(&dir.join("full.safetensors"), &full);
        let vocab = dir.join("vocab.txt");
        // TP=1 from the full model.
        let p1 = dir.join("tp1.nemo");
        let w = nemo::write_nemo(
            &p1,
            &contents(&cfg, case, NemoWeights::Full(&full), 1, &vocab),
        )
        .unwrap();
        assert_eq!(w.dropped, ["pooler.dense.bias", "pooler.dense.weight"]);
        python_check(&dir, &p1, case, 1);
        // TP=2 from per-rank shards (vocabulary already padded for TP=2)
        // and, for QA, from TP=1-padded shards that must be re-padded.
        let p2 = dir.join("tp2.nemo");
        let s2 = shards(&cfg, &full, 2);
        nemo::write_nemo(
            &p2,
            &contents(&cfg, case, NemoWeights::Shards(&s2), 2, &vocab),
        )
        .unwrap();
        python_check(&dir, &p2, case, 2);
        if case.task == "qa" {
            let s1 = shards(&cfg, &full, 1);
            let bytes_before = std::fs::read(&p2).unwrap();
            nemo::write_nemo(
                &p2,
                &contents(&cfg, case, NemoWeights::Shards(&s1), 2, &vocab),
            )
            .unwrap();
            python_check(&dir, &p2, case, 2);
            assert_eq!(
                std::fs::read(&p2).unwrap(),
                bytes_before,
                "the same model must give the same archive bytes"
            );
        }
    }
}

fn without_pooler(sd: &StateDict) -> StateDict {
    sd.iter()
        .filter(|(k, _)| !k.starts_with("pooler."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect()
}

#[test]
fn reads_back_at_any_tensor_parallel_size() {
    let cfg = tiny_config();
    let head = HeadConfig::token_classification(3);
    let labels: Vec<String> = ["O", "B", "I"].map(String::from).into();
    let case = Case {
        head: head.clone(),
        task: "token",
        labels: Some(labels.clone()),
    };
    let dir = TempDir::new("nemo-read");
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let full = random_full(&cfg, &head, 7);
    let mut dataset = serde_json::Map::new();
    dataset.insert("max_seq_length".into(), 128.into());
    for tp in [1, 2] {
        let path = dir.join(format!("tp{tp}.nemo"));
        let mut c = contents(&cfg, &case, NemoWeights::Full(&full), tp, &vocab);
        c.dataset = dataset.clone();
        nemo::write_nemo(&path, &c).unwrap();
        for target in [1, 2] {
            let want = shards(&cfg, &without_pooler(&full), target);
            for rank in 0..target {
                let m = nemo::read_nemo(&path, target, rank).unwrap();
                assert_same(
                    &format!("tp{tp} -> {target}/{rank}"),
                    &m.state_dict,
                    &want[rank as usize],
                );
                assert_eq!(m.task, NemoTask::TokenClassification);
                assert_eq!(m.head, head);
                assert_eq!(m.tensor_parallel_size, tp);
                assert_eq!(m.checkpoint_version, Some(3.0));
                assert_eq!(m.labels.as_deref(), Some(&labels[..]));
                assert_eq!(m.do_lower_case, Some(true));
                assert_eq!(m.dataset["max_seq_length"], 128);
                let mut want_cfg = cfg.clone();
                want_cfg.padded_vocab_size = cfg.padded_vocab_for(target);
                assert_eq!(m.config, want_cfg);
                let v = std::fs::read(m.vocab_file.as_ref().unwrap()).unwrap();
                assert_eq!(v, std::fs::read(&vocab).unwrap());
            }
        }
    }
}

#[test]
fn pooler_kept_when_asked() {
    let cfg = tiny_config();
    let case = Case {
        head: HeadConfig::question_answering(),
        task: "qa",
        labels: None,
    };
    let dir = TempDir::new("nemo-pooler");
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let full = random_full(&cfg, &case.head, 3);
    let path = dir.join("m.nemo");
    let mut c = contents(&cfg, &case, NemoWeights::Full(&full), 1, &vocab);
    c.include_pooler = true;
    assert!(nemo::write_nemo(&path, &c).unwrap().dropped.is_empty());
    let m = nemo::read_nemo(&path, 1, 0).unwrap();
    assert_same("with pooler", &m.state_dict, &full);
}

#[test]
fn refuses_what_nemo_cannot_hold() {
    let mut cfg = tiny_config();
    let case = Case {
        head: HeadConfig::question_answering(),
        task: "qa",
        labels: None,
    };
    let dir = TempDir::new("nemo-refuse");
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let full = random_full(&cfg, &case.head, 3);
    let err = nemo::write_nemo(
        &dir.join("x.nemo"),
        &contents(&cfg, &case, NemoWeights::Full(&full), 3, &vocab),
    )
    .unwrap_err();
    assert!(err.to_string().contains("tensor-parallel size 3"), "{err}");
    let other_head = Case {
        head: HeadConfig::token_classification(5),
        task: "token",
        labels: Some((0..5).map(|i| format!("L{i}")).collect()),
    };
    let err = nemo::write_nemo(
        &dir.join("x.nemo"),
        &contents(&cfg, &other_head, NemoWeights::Full(&full), 1, &vocab),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("classifier.mlp.layer0.bias has shape [2], expected [64]"),
        "{err}"
    );
    cfg.architecture = megatron_trainer::model::Architecture::BertPostLn;
    let err = nemo::write_nemo(
        &dir.join("x.nemo"),
        &contents(&cfg, &case, NemoWeights::Full(&full), 1, &vocab),
    )
    .unwrap_err();
    assert!(err.to_string().contains("pre-LN"), "{err}");
    assert!(!dir.join("x.nemo").exists());
}
