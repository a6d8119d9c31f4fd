//! Benchmark: writing and reading a Megatron-BERT-345M-shaped fp32 QA .nemo
//! (~1.3 GB of weights) with `checkpoint::nemo` vs NeMo 1.x's Python way
//! (torch.save into a folder + `tarfile` "w:gz" at Python's default level 9;
//! `tarfile` "r:gz" extractall + torch.load), seconds and ratios side by side.
//! Python is also timed at gzip level 2 (our default) and reading our
//! archive, so the like-for-like ratios are shown too.
//!
//! ```text
//! eval "$(scripts/torch-env)"
//! cargo run --release -p megatron-trainer --example bench_nemo [-- --layers 24 --tp 1 --dir /tmp]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use megatron_trainer::checkpoint::nemo::{self, DEFAULT_COMPRESSION, NemoContents, NemoWeights};
use megatron_trainer::model::{BertConfig, HeadConfig, StateDict};
use tch::{Kind, Tensor};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn python_json(python: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/nemo_bench.py");
    let out = Command::new(python).arg(&script).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "nemo_bench.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let last = text.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)?)
}

fn drop_cache_of(path: &Path) {
    // Read once so both sides start from a warm page cache.
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut buf = vec![0u8; 1 << 20];
        while std::io::Read::read(&mut f, &mut buf).unwrap_or(0) > 0 {}
    }
}

fn main() -> anyhow::Result<()> {
    let layers: i64 = arg("--layers", "24").parse()?;
    let tp: i64 = arg("--tp", "1").parse()?;
    let dir = PathBuf::from(arg("--dir", &std::env::temp_dir().to_string_lossy()));
    let python = std::env::var("MEGATRON_PYTHON")
        .map_err(|_| anyhow::anyhow!("run `eval \"$(scripts/torch-env)\"` first"))?;
    tch::set_num_threads(1);

    let mut cfg = BertConfig::megatron_345m(30522);
    cfg.num_layers = layers;
    let head = HeadConfig::question_answering();
    let mut full = StateDict::new();
    let opts = (Kind::Float, tch::Device::Cpu);
    let mut add = |k: String, shape: &[i64]| {
        full.insert(k, Tensor::randn(shape, opts) * 0.02);
    };
    let (h, f) = (cfg.hidden_size, cfg.ffn_hidden_size);
    add(
        "embeddings.word_embeddings.weight".into(),
        &[cfg.padded_vocab_for(tp), h],
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[cfg.max_position_embeddings, h],
    );
    add("embeddings.token_type_embeddings.weight".into(), &[2, h]);
    for i in 0..layers {
        let p = format!("encoder.layers.{i}.");
        for (n, s) in [
            ("input_layernorm.weight", vec![h]),
            ("input_layernorm.bias", vec![h]),
            ("self_attention.query_key_value.weight", vec![3 * h, h]),
            ("self_attention.query_key_value.bias", vec![3 * h]),
            ("self_attention.dense.weight", vec![h, h]),
            ("self_attention.dense.bias", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("post_attention_layernorm.bias", vec![h]),
            ("mlp.dense_h_to_4h.weight", vec![f, h]),
            ("mlp.dense_h_to_4h.bias", vec![f]),
            ("mlp.dense_4h_to_h.weight", vec![h, f]),
            ("mlp.dense_4h_to_h.bias", vec![h]),
        ] {
            add(format!("{p}{n}"), &s);
        }
    }
    add("encoder.final_layernorm.weight".into(), &[h]);
    add("encoder.final_layernorm.bias".into(), &[h]);
    add("classifier.mlp.layer0.weight".into(), &[2, h]);
    add("classifier.mlp.layer0.bias".into(), &[2]);
    let params: i64 = full.values().map(|t| t.numel() as i64).sum();
    let vocab = dir.join("bench_nemo_vocab.txt");
    std::fs::write(
        &vocab,
        (0..cfg.vocab_size)
            .map(|i| format!("t{i}\n"))
            .collect::<String>(),
    )?;

    let ours = dir.join("bench_ours.nemo");
    let t0 = Instant::now();
    let written = nemo::write_nemo(
        &ours,
        &NemoContents {
            config: &cfg,
            head: &head,
            weights: NemoWeights::Full(&full),
            tp_size: tp,
            pretrained_model_name: "megatron-bert-345m-uncased",
            vocab_file: &vocab,
            do_lower_case: true,
            label_names: None,
            dataset: serde_json::Map::new(),
            include_pooler: false,
            compression_level: DEFAULT_COMPRESSION,
        },
    )?;
    let our_write = t0.elapsed().as_secs_f64();
    drop(full);
    drop_cache_of(&ours);
    let t0 = Instant::now();
    let m = nemo::read_nemo(&ours, tp, 0)?;
    let our_read = t0.elapsed().as_secs_f64();
    drop(m);

    let py9 = dir.join("bench_python_l9.nemo");
    let py2 = dir.join("bench_python_l2.nemo");
    let (l, t) = (layers.to_string(), tp.to_string());
    let w9 = python_json(
        &python,
        &[
            "write",
            "--out",
            py9.to_str().unwrap(),
            "--layers",
            &l,
            "--tp",
            &t,
        ],
    )?;
    let w2 = python_json(
        &python,
        &[
            "write",
            "--out",
            py2.to_str().unwrap(),
            "--layers",
            &l,
            "--tp",
            &t,
            "--level",
            "2",
        ],
    )?;
    drop_cache_of(&py9);
    let r9 = python_json(&python, &["read", "--nemo", py9.to_str().unwrap()])?;
    drop_cache_of(&ours);
    let r_ours = python_json(&python, &["read", "--nemo", ours.to_str().unwrap()])?;
    drop_cache_of(&py9);
    let t0 = Instant::now();
    let m = nemo::read_nemo(&py9, tp, 0)?;
    let our_read_py9 = t0.elapsed().as_secs_f64();
    drop(m);

    let s = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let gb = |b: f64| b / 1e9;
    println!(
        "345M-shaped QA .nemo: {layers} layers, TP={tp}, {params} parameters (fp32), 1 thread each side"
    );
    println!(
        "archive sizes: ours (gzip 2) {:.3} GB, python gzip 9 {:.3} GB, python gzip 2 {:.3} GB",
        gb(written.bytes as f64),
        gb(s(&w9, "bytes")),
        gb(s(&w2, "bytes"))
    );
    println!(
        "{:<44} {:>9} {:>9} {:>7}",
        "", "ours s", "python s", "ratio"
    );
    let row = |what: &str, a: f64, b: f64| {
        println!("{what:<44} {a:>9.2} {b:>9.2} {:>6.2}x", a / b);
    };
    row(
        "write (ours gzip 2 vs NeMo tarfile gzip 9)",
        our_write,
        s(&w9, "write_s"),
    );
    row("write (both gzip 2)", our_write, s(&w2, "write_s"));
    row("read NeMo's gzip-9 archive", our_read_py9, s(&r9, "read_s"));
    row("read our archive", our_read, s(&r_ours, "read_s"));
    for p in [&ours, &py9, &py2, &vocab] {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
