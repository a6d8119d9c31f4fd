//! `train --checkpoint` starts from a real Megatron-LM checkpoint: one
//! written at tensor-parallel size 2 (iteration directory found through
//! `latest_checkpointed_iteration.txt`) is resharded to this run's TP=1,
//! and with learning rate 0 the final .nemo's encoder equals the
//! checkpoint's weights exactly.

mod cli_util;

use cli_util::{Task, run, spec_yaml, temp_dir, text, trainer, write};
use megatron_trainer::checkpoint::megatron::{SaveOptions, save};
use megatron_trainer::checkpoint::nemo::read_nemo;
use megatron_trainer::model::{BertConfig, BertTaskModel, HeadConfig, StateDict};
use megatron_trainer::parallel::TpGroup;

fn tiny_config() -> BertConfig {
    let mut c = BertConfig::megatron_345m(30522);
    c.hidden_size = 32;
    c.num_attention_heads = 4;
    c.num_layers = 2;
    c.ffn_hidden_size = 128;
    c.max_position_embeddings = 64;
    c.hidden_dropout = 0.0;
    c.attention_dropout = 0.0;
    c.padded_vocab_size = c.padded_vocab_for(1);
    c
}

#[test]
fn megatron_checkpoint_is_loaded_and_resharded() {
    let dir = temp_dir("pretrained");
    let config = tiny_config();
    tch::manual_seed(77);
    let model = BertTaskModel::new(
        &config,
        &HeadConfig::sequence_classification(5),
        &TpGroup::single(),
        tch::Device::Cpu,
    )
    .unwrap();
    let encoder: StateDict = model
        .state_dict()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .collect();
    let root = dir.join("megatron");
    save(
        &root,
        &config,
        &encoder,
        &SaveOptions {
            tp: 2,
            iteration: Some(100),
        },
    )
    .unwrap();

    let spec = spec_yaml(Task::TextClassification, 1, 1)
        .replace("learningRate: 0.001", "learningRate: 0.0")
        .replace(
            "validationIntervalSteps: 1",
            "validationIntervalSteps: 1\n  gradientClipNorm: 0.0",
        );
    let spec_file = write(&dir, "spec.yaml", &spec);
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec_file)
        .arg("--checkpoint")
        .arg(&root)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pretrained Megatron-LM checkpoint loaded"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("RANDOMLY INITIALISED"), "{}", text(&out));

    let nemo = read_nemo(&out_dir.join("artifacts/model.nemo"), 1, 0).unwrap();
    let mut compared = 0;
    for (name, saved) in &encoder {
        let Some(got) = nemo.state_dict.get(name) else {
            continue;
        };
        assert_eq!(got.size(), saved.size(), "{name}");
        assert!(got.equal(saved), "{name} differs from the checkpoint");
        compared += 1;
    }
    assert!(
        compared >= encoder.len() - 2,
        "only {compared} of {} tensors compared",
        encoder.len()
    );
}

/// A Hugging Face `MegatronBertModel` saved with `save_pretrained`
/// (safetensors, by tests/python/ckpt_hf.py) is the starting encoder.
#[test]
fn hugging_face_checkpoint_is_loaded() {
    let dir = temp_dir("pretrained-hf");
    let python = std::env::var("MEGATRON_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ckpt_hf.py");
    let out = run(std::process::Command::new(&python)
        .arg(&script)
        .arg("make")
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let hf = dir.join("megatron_bert");
    let reference = tch::Tensor::read_safetensors(hf.join("reference.safetensors")).unwrap();
    // The checkpoint's 100-token vocabulary: special tokens, then words.
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend((vocab.len()..100).map(|i| format!("w{i}")));
    let vocab_file = write(&dir, "vocab.txt", &(vocab.join("\n") + "\n"));

    let spec = spec_yaml(Task::TextClassification, 1, 1)
        .replace("maxSeqLength: 48", "maxSeqLength: 32")
        .replace(
            "config: {hiddenSize: 32, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 64,",
            &format!(
                "checkpoint: {{location: {}}}\n  config: {{hiddenSize: 16, numAttentionHeads: 4, numLayers: 2, maxPositionEmbeddings: 32,",
                hf.display()
            ),
        )
        .replace("learningRate: 0.001", "learningRate: 0.0")
        + &format!("tokenizer: {{vocabFile: {}, doLowerCase: true}}\n", vocab_file.display());
    let spec_file = write(&dir, "spec.yaml", &spec);
    let out_dir = dir.join("out");
    let out = run(trainer()
        .args(["train", "--config"])
        .arg(&spec_file)
        .arg("--output-dir")
        .arg(&out_dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("RANDOMLY INITIALISED"),
        "{}",
        text(&out)
    );

    let nemo = read_nemo(&out_dir.join("artifacts/model.nemo"), 1, 0).unwrap();
    let mut compared = 0;
    for (name, want) in &reference {
        let Some(got) = nemo.state_dict.get(name) else {
            continue;
        };
        // The word embedding is padded to a multiple of 128 rows.
        let got = if got.size()[0] != want.size()[0] {
            got.narrow(0, 0, want.size()[0])
        } else {
            got.shallow_clone()
        };
        assert!(
            got.allclose(want, 0.0, 0.0, false),
            "{name} differs from the checkpoint"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} tensors compared");
}
