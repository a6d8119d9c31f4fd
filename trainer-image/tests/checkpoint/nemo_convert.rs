//! `checkpoint::convert`: Megatron-LM checkpoint -> .nemo -> Megatron-LM
//! checkpoint keeps every encoder and pooler tensor bit for bit across
//! tensor-parallel sizes; .nemo -> .nemo reshards; Python reads the
//! converted .nemo; bad requests name the missing option.

use crate::support::checkpoint_util;
use crate::support::nemo_util;
use crate::support::temp_dir::TempDir;

use checkpoint_util::run_python;
use megatron_trainer::checkpoint::convert::{CheckpointFormat, ConvertArgs, convert};
use megatron_trainer::checkpoint::megatron::{self, LoadOptions, SaveOptions};
use megatron_trainer::checkpoint::nemo::{self, NemoTask};
use megatron_trainer::model::{HeadConfig, StateDict};
use nemo_util::*;
use tch::{Kind, Tensor};

/// A pretrained-style full model: encoder, pooler and pretraining heads.
fn pretrained_full(seed: i64) -> StateDict {
    let cfg = tiny_config();
    let mut full = random_full(&cfg, &HeadConfig::question_answering(), seed);
    full.retain(|k, _| !k.starts_with("classifier."));
    let h = cfg.hidden_size;
    let opts = (Kind::Float, tch::Device::Cpu);
    full.insert(
        "lm_head.bias".into(),
        Tensor::randn([cfg.padded_vocab_size], opts),
    );
    full.insert("lm_head.dense.weight".into(), Tensor::randn([h, h], opts));
    full.insert("binary_head.weight".into(), Tensor::randn([2, h], opts));
    full
}

fn load_megatron(path: &std::path::Path) -> StateDict {
    let opts = LoadOptions {
        vocab_size: Some(100),
        include_pretraining_heads: true,
        ..Default::default()
    };
    megatron::load_with(path, 1, 0, &opts).unwrap().1
}

#[test]
fn megatron_to_nemo_and_back_keeps_every_tensor() {
    let cfg = tiny_config();
    let dir = TempDir::new("convert");
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let full = pretrained_full(11);
    let src = dir.join("megatron_tp2");
    megatron::save(
        &src,
        &cfg,
        &full,
        &SaveOptions {
            tp: 2,
            iteration: Some(100),
        },
    )
    .unwrap();
    let original = load_megatron(&src);

    // Megatron TP=2 -> .nemo TP=1 (QA task, no trained head yet).
    let nemo_path = dir.join("model.nemo");
    let report = convert(&ConvertArgs {
        input: src.clone(),
        output: nemo_path.clone(),
        tensor_parallel_size: Some(1),
        task: Some(NemoTask::QuestionAnswering),
        vocab_file: Some(vocab.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(report.input_format, CheckpointFormat::Megatron);
    assert_eq!(report.output_format, CheckpointFormat::Nemo);
    assert_eq!(
        (
            report.input_tensor_parallel_size,
            report.output_tensor_parallel_size
        ),
        (2, 1)
    );
    assert_eq!(
        report.dropped,
        ["binary_head.weight", "lm_head.bias", "lm_head.dense.weight"]
    );
    let m = nemo::read_nemo(&nemo_path, 1, 0).unwrap();
    assert!(!m.has_head_weights);
    assert_eq!(
        m.pretrained_model_name.as_deref(),
        Some("megatron-bert-uncased")
    );

    // .nemo TP=1 -> .nemo TP=2 -> Megatron TP=2.
    let nemo2 = dir.join("model_tp2.nemo");
    convert(&ConvertArgs {
        input: nemo_path.clone(),
        output: nemo2.clone(),
        tensor_parallel_size: Some(2),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        nemo::read_nemo(&nemo2, 1, 0).unwrap().tensor_parallel_size,
        2
    );
    let back = dir.join("megatron_back");
    let report = convert(&ConvertArgs {
        input: nemo2,
        output: back.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(report.output_format, CheckpointFormat::Megatron);
    assert_eq!(report.output_tensor_parallel_size, 2);
    let (_, _, info) = megatron::load(&back, 2, 1).unwrap();
    assert_eq!(info.tensor_parallel_size, 2);
    let round = load_megatron(&back);
    let encoder_only: StateDict = original
        .iter()
        .filter(|(k, _)| !k.starts_with("lm_head.") && !k.starts_with("binary_head."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    assert!(encoder_only.contains_key("pooler.dense.weight"));
    assert_same("megatron -> nemo -> megatron", &round, &encoder_only);
}

#[test]
fn converted_nemo_reads_in_python() {
    let cfg = tiny_config();
    let dir = TempDir::new("convert-py");
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    write_config_json(&dir.join("config.json"), &cfg);
    // A fine-tuned-style model with a token classification head.
    let head = HeadConfig::token_classification(3);
    let mut full = random_full(&cfg, &head, 5);
    let src = dir.join("src.nemo");
    let labels: Vec<String> = ["O", "B-Chem", "I-Chem"].map(String::from).into();
    nemo::write_nemo(
        &src,
        &nemo::NemoContents {
            config: &cfg,
            head: &head,
            weights: nemo::NemoWeights::Full(&full),
            tp_size: 1,
            pretrained_model_name: "biomegatron-bert-345m-uncased",
            vocab_file: &vocab,
            do_lower_case: true,
            label_names: Some(&labels),
            dataset: serde_json::Map::new(),
            include_pooler: false,
            compression_level: 6,
        },
    )
    .unwrap();
    let out = dir.join("tp2.nemo");
    convert(&ConvertArgs {
        input: src,
        output: out.clone(),
        tensor_parallel_size: Some(2),
        ..Default::default()
    })
    .unwrap();
    full.retain(|k, _| !k.starts_with("pooler."));
    save_safetensors(&dir.join("full.safetensors"), &full);
    let text = run_python(
        "nemo_reference.py",
        &[
            "check",
            "--nemo",
            out.to_str().unwrap(),
            "--full",
            dir.join("full.safetensors").to_str().unwrap(),
            "--config",
            dir.join("config.json").to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
            "--tp",
            "2",
            "--task",
            "token",
            "--labels",
            &labels.join(","),
        ],
    );
    assert!(text.starts_with("ok:"), "{text}");
    let m = nemo::read_nemo(&out, 2, 1).unwrap();
    assert_eq!(m.labels.as_deref(), Some(&labels[..]));
    assert_eq!(
        m.pretrained_model_name.as_deref(),
        Some("biomegatron-bert-345m-uncased")
    );
}

#[test]
fn missing_options_are_named() {
    let cfg = tiny_config();
    let dir = TempDir::new("convert-bad");
    let src = dir.join("megatron");
    megatron::save(
        &src,
        &cfg,
        &pretrained_full(1),
        &SaveOptions {
            tp: 1,
            iteration: None,
        },
    )
    .unwrap();
    let vocab = dir.join("vocab.txt");
    write_vocab(&vocab, cfg.vocab_size);
    let base = ConvertArgs {
        input: src.clone(),
        output: dir.join("out.nemo"),
        ..Default::default()
    };
    let err = convert(&ConvertArgs {
        task: Some(NemoTask::QuestionAnswering),
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--vocab-file"), "{err}");
    let err = convert(&ConvertArgs {
        vocab_file: Some(vocab.clone()),
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--task"), "{err}");
    let err = convert(&ConvertArgs {
        vocab_file: Some(vocab),
        task: Some(NemoTask::TokenClassification),
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--labels"), "{err}");
    let err = convert(&ConvertArgs {
        input: dir.join("nope.nemo"),
        ..base
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.nemo"), "{err}");
    assert!(!dir.join("out.nemo").exists());
}
