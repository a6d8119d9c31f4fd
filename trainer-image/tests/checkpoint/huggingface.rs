//! Hugging Face `MegatronBertModel` (pre-LN) and `BertForPreTraining`
//! (post-LN) checkpoints written by transformers import into canonical names.

use crate::support::checkpoint_util;
use crate::support::temp_dir::TempDir;

use checkpoint_util::{assert_tensor_eq, read_safetensors, run_python};
use megatron_trainer::checkpoint::huggingface;
use megatron_trainer::model::{Architecture, tp_split_dim};

fn check(dir: &std::path::Path, arch: Architecture) {
    let reference = read_safetensors(&dir.join("reference.safetensors"));
    for tp in [1i64, 2] {
        for rank in 0..tp {
            let (cfg, sd, info) = huggingface::load(dir, tp, rank).unwrap();
            assert_eq!(cfg.architecture, arch);
            assert_eq!(
                (cfg.vocab_size, cfg.hidden_size, cfg.num_layers),
                (100, 16, 2)
            );
            // Vocabulary padded to a multiple of 128 x tp with zero rows.
            assert_eq!(cfg.padded_vocab_size, 128 * tp);
            assert!(
                info.ignored_keys
                    .iter()
                    .all(|k| !k.contains("encoder.layer.")),
                "{:?}",
                info.ignored_keys
            );
            assert_eq!(
                sd.keys().collect::<Vec<_>>(),
                reference.keys().collect::<Vec<_>>()
            );
            for (name, want) in &reference {
                let mut want = want.shallow_clone();
                if name == "embeddings.word_embeddings.weight" {
                    let pad = tch::Tensor::zeros(
                        [cfg.padded_vocab_size - 100, 16],
                        (want.kind(), want.device()),
                    );
                    want = tch::Tensor::cat(&[want, pad], 0);
                }
                if let Some(d) = tp_split_dim(name) {
                    let n = want.size()[d as usize];
                    want = want.narrow(d, rank * n / tp, n / tp);
                }
                assert_tensor_eq(&format!("{name} tp {tp} rank {rank}"), &sd[name], &want);
            }
        }
    }
}

#[test]
fn imports_megatron_bert_and_bert() {
    let dir = TempDir::new("hf");
    run_python("ckpt_hf.py", &["make", dir.path().to_str().unwrap()]);
    check(&dir.join("megatron_bert"), Architecture::MegatronPreLn);
    check(&dir.join("bert"), Architecture::BertPostLn);
}
