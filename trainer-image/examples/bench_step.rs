//! Forward + backward step time of our Megatron-BERT QA model against Hugging
//! Face `MegatronBertForQuestionAnswering` in PyTorch eager, same shapes and
//! thread count, run back to back in one invocation:
//!
//! ```text
//! eval "$(scripts/torch-env)"
//! cargo run --release -p megatron-trainer --example bench_step -- --threads 2
//! ```
//!
//! Both sides: train mode (dropout 0.1), fp32 CPU, 2 warm-up steps, then the
//! median over `--rounds` alternating runs of `--steps` steps each of forward, QA loss, backward, dropping
//! the gradients (`set_to_none` on both sides).
//! Prints `ratio = ours / pytorch` (below 1.0: we are faster).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use megatron_trainer::model::{
    BertConfig, BertTaskModel, HeadConfig, HeadOutput, clear_grads, question_answering_loss,
};
use megatron_trainer::parallel::TpGroup;
use tch::{Device, Kind, Tensor};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 1024)]
    hidden: i64,
    #[arg(long, default_value_t = 4)]
    layers: i64,
    #[arg(long, default_value_t = 16)]
    heads: i64,
    #[arg(long, default_value_t = 128)]
    seq: i64,
    #[arg(long, default_value_t = 4)]
    batch: i64,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Alternating PyTorch/ours rounds (spreads background load over both).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ours(a: &Args) -> Result<Vec<f64>> {
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let mut cfg = BertConfig::megatron_345m(30522);
    cfg.hidden_size = a.hidden;
    cfg.num_layers = a.layers;
    cfg.num_attention_heads = a.heads;
    cfg.ffn_hidden_size = 4 * a.hidden;
    let model = BertTaskModel::new(
        &cfg,
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )?;
    let ids = Tensor::randint(
        cfg.padded_vocab_size,
        [a.batch, a.seq],
        (Kind::Int64, Device::Cpu),
    );
    let mask = Tensor::ones([a.batch, a.seq], (Kind::Int64, Device::Cpu));
    for b in 1..a.batch {
        let _ = mask.get(b).narrow(0, a.seq - 16 * b, 16 * b).fill_(0);
    }
    let types = ids.zeros_like();
    let start = Tensor::randint(a.seq / 2, [a.batch], (Kind::Int64, Device::Cpu));
    let end = &start + 3;
    let params = model.vs.trainable_variables();
    let mut times = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t0 = Instant::now();
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = model.forward(&ids, Some(&types), Some(&mask), true)?
        else {
            bail!("QA head returned non-span output");
        };
        let loss = question_answering_loss(&start_logits, &end_logits, &start, &end)?;
        loss.f_backward()?;
        clear_grads(&params);
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

fn pytorch(a: &Args) -> Result<Vec<f64>> {
    let python = std::env::var("MEGATRON_PYTHON")
        .context("MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` first")?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/model_bench_step.py"
    );
    let out = Command::new(python)
        .arg(script)
        .args([
            "--hidden",
            &a.hidden.to_string(),
            "--layers",
            &a.layers.to_string(),
        ])
        .args(["--heads", &a.heads.to_string(), "--seq", &a.seq.to_string()])
        .args([
            "--batch",
            &a.batch.to_string(),
            "--threads",
            &a.threads.to_string(),
        ])
        .args([
            "--warmup",
            &a.warmup.to_string(),
            "--steps",
            &a.steps.to_string(),
        ])
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing the Python benchmark output")?;
    Ok(v["times_s"]
        .as_array()
        .context("times_s missing")?
        .iter()
        .filter_map(|t| t.as_f64())
        .collect())
}

fn main() -> Result<()> {
    let a = Args::parse();
    println!(
        "config: hidden {} layers {} heads {} seq {} batch {} threads {} (fp32 CPU, train mode)",
        a.hidden, a.layers, a.heads, a.seq, a.batch, a.threads
    );
    let (mut py, mut rs) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        py.extend(pytorch(&a)?);
        rs.extend(ours(&a)?);
    }
    let (py_m, rs_m) = (median(py.clone()), median(rs.clone()));
    println!(
        "pytorch eager (HF MegatronBertForQuestionAnswering): median {py_m:.4} s/step  {py:.4?}"
    );
    println!(
        "ours (megatron_trainer BertTaskModel, QA head):      median {rs_m:.4} s/step  {rs:.4?}"
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "ratio = ours / pytorch = {:.3} (medians), {:.3} (fastest steps)",
        rs_m / py_m,
        min(&rs) / min(&py)
    );
    Ok(())
}
