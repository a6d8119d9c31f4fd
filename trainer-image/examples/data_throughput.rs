//! Data-loading throughput: SQuAD-like features per second (read JSON,
//! tokenize, window, collate into padded batches), ours against Hugging Face
//! `BertTokenizerFast` run_qa-style preprocessing on the same data when
//! `MEGATRON_PYTHON` is set.
//!
//!   cargo run --release -p megatron-trainer --example data_throughput -- [questions] [threads]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use megatron_trainer::data::squad::{SquadConfig, SquadFeaturizer, parse_squad_json};
use megatron_trainer::data::{PaddedBatch, Padding};
use megatron_trainer::tokenizer::BertTokenizer;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let questions: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("data-throughput-{}", std::process::id()));
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MEGATRON_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = std::process::Command::new(&python)
        .arg(manifest.join("tests/python/data_make_datasets.py"))
        .args([
            "--out",
            dir.to_str().context("temp dir")?,
            "--train",
            &questions.to_string(),
            "--dev",
            "10",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "data_make_datasets.py failed");
    let file = dir.join("squad/train.json");
    let text = std::fs::read_to_string(&file)?;
    let tok = BertTokenizer::from_name("megatron-bert-uncased")?;
    let cfg = SquadConfig::default();
    let featurizer = SquadFeaturizer::new(&tok, cfg)?;

    let t0 = Instant::now();
    let examples = parse_squad_json(&text, &file)?;
    let features = featurizer.featurize_all(&examples, threads)?;
    let t_feat = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut rows = 0;
    for chunk in features.chunks(32) {
        let refs: Vec<_> = chunk.iter().collect();
        let b = PaddedBatch::collate(&refs, tok.pad_id(), Padding::Fixed(cfg.max_seq_length))?;
        rows += b.batch_size;
    }
    let t_batch = t1.elapsed().as_secs_f64();
    let ours = features.len() as f64 / (t_feat + t_batch);
    println!(
        "ours: {} examples -> {} features; featurize {:.3}s, collate {:.3}s; {:.0} features/s ({} threads)",
        examples.len(),
        features.len(),
        t_feat,
        t_batch,
        ours,
        threads
    );
    assert_eq!(rows, features.len());

    let script = r#"
import json, sys, time
from transformers import BertTokenizerFast
tok = BertTokenizerFast(vocab_file=sys.argv[1], do_lower_case=True)
t0 = time.perf_counter()
data = json.load(open(sys.argv[2]))["data"]
qs, cs = [], []
for a in data:
    for p in a["paragraphs"]:
        for qa in p["qas"]:
            qs.append(qa["question"].lstrip()); cs.append(p["context"])
enc = tok(qs, cs, truncation="only_second", max_length=384, stride=128,
          return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
n = len(enc["input_ids"])
dt = time.perf_counter() - t0
print(f"hf run_qa-style (batched, padding=max_length): {n} features in {dt:.3f}s; {n/dt:.0f} features/s")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(manifest.join("assets/vocab/bert-base-uncased-vocab.txt"))
        .arg(&file)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprintln!(
            "reference run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
