//! Fine-tuning throughput of our `Trainer` against the Hugging Face `Trainer`
//! (PyTorch eager) on the same Megatron-BERT QA shape, data and thread count,
//! on CPU, fp32:
//!
//! ```text
//! eval "$(scripts/torch-env)"
//! cargo run --release -p megatron-trainer --example bench_train_step -- --threads 2
//! ```
//!
//! A step is everything between two optimizer updates: collating the micro
//! batch from pre-tokenized features, forward (train mode, dropout 0.1),
//! QA loss, backward, gradient clipping (1.0), AdamW (weight decay 0.01),
//! linear schedule. Ours runs `Trainer::fit` and times the intervals between
//! `on_step` calls; the reference (`tests/python/train_bench_hf.py`) runs
//! `transformers.Trainer` with its default optimizer and times the intervals
//! between `on_step_end` callbacks. Both skip `--warmup` steps and report the
//! median step. Also prints the share of our step spent loading data
//! (`TrainTask::train_batch`: collate + tensors).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use megatron_trainer::comm::SingleProcess;
use megatron_trainer::data::{Batch, BatchItem, PaddedBatch, Padding, Target};
use megatron_trainer::model::{
    BertConfig, BertTaskModel, HeadConfig, HeadOutput, question_answering_loss,
};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::optimizer::AdamW;
use megatron_trainer::train::{
    CheckpointRequest, StepStats, TrainError, TrainHooks, TrainResult, TrainTask, Trainer,
    TrainerConfig,
};
use rand::{Rng, SeedableRng};
use tch::{Device, Tensor};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 256)]
    hidden: i64,
    #[arg(long, default_value_t = 4)]
    layers: i64,
    #[arg(long, default_value_t = 4)]
    heads: i64,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Micro batch = global batch (no accumulation, one process).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 2)]
    threads: i32,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
}

/// One pre-tokenized QA feature.
struct Feature {
    ids: Vec<u32>,
    types: Vec<u32>,
    start: usize,
    end: usize,
}

impl BatchItem for Feature {
    fn input_ids(&self) -> &[u32] {
        &self.ids
    }
    fn token_type_ids(&self) -> &[u32] {
        &self.types
    }
    fn target(&self) -> Target<'_> {
        Target::Span {
            start: self.start,
            end: self.end,
        }
    }
}

struct QaTask {
    features: Vec<Feature>,
    seq: usize,
    loading: Cell<Duration>,
}

impl TrainTask for QaTask {
    fn num_train_samples(&self) -> usize {
        self.features.len()
    }

    fn train_batch(&self, indices: &[usize], device: Device) -> TrainResult<Batch> {
        let t0 = Instant::now();
        let items: Vec<&Feature> = indices.iter().map(|&i| &self.features[i]).collect();
        let batch = PaddedBatch::collate(&items, 0, Padding::Fixed(self.seq))
            .map_err(|e| TrainError::InvalidInput(e.to_string()))?
            .to_tensors(device);
        self.loading.set(self.loading.get() + t0.elapsed());
        Ok(batch)
    }

    fn loss(&self, output: &HeadOutput, batch: &Batch) -> TrainResult<Tensor> {
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = output
        else {
            return Err(TrainError::InvalidInput("span head expected".into()));
        };
        Ok(question_answering_loss(
            start_logits,
            end_logits,
            batch.start_positions.as_ref().expect("span targets"),
            batch.end_positions.as_ref().expect("span targets"),
        )?)
    }

    fn has_validation(&self) -> bool {
        false
    }

    fn validate(&self, _model: &BertTaskModel) -> TrainResult<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
}

/// Step end times and the data-loading time up to each.
struct Timer<'a> {
    task: &'a QaTask,
    ends: Vec<(Instant, Duration)>,
}

impl TrainHooks for Timer<'_> {
    fn on_step(&mut self, _stats: &StepStats) -> TrainResult<()> {
        self.ends.push((Instant::now(), self.task.loading.get()));
        Ok(())
    }
    fn on_validation(&mut self, _: i64, _: f64, _: &BTreeMap<String, f64>) -> TrainResult<()> {
        Ok(())
    }
    fn on_checkpoint(&mut self, _request: CheckpointRequest<'_>) -> TrainResult<()> {
        Ok(())
    }
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

fn model(a: &Args) -> Result<BertTaskModel> {
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let mut cfg = BertConfig::megatron_345m(30522);
    cfg.hidden_size = a.hidden;
    cfg.num_layers = a.layers;
    cfg.num_attention_heads = a.heads;
    cfg.ffn_hidden_size = 4 * a.hidden;
    Ok(BertTaskModel::new(
        &cfg,
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        Device::Cpu,
    )?)
}

/// Median time of our `AdamW::step` alone over the model's parameters.
fn ours_adamw(a: &Args) -> Result<f64> {
    let model = model(a)?;
    let mut params: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    params.sort_by(|x, y| x.0.cmp(&y.0));
    for (_, p) in &params {
        (p * p.randn_like()).sum(tch::Kind::Float).backward();
    }
    let mut opt = AdamW::new(params, &crds::OptimizerSpec::default());
    let mut times = Vec::new();
    for i in 0..a.warmup + a.steps {
        let t0 = Instant::now();
        opt.step(5e-5)?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

/// Our median step time and median data-loading time per step.
fn ours(a: &Args) -> Result<(f64, f64)> {
    let model = model(a)?;
    let total = a.warmup + a.steps + 1;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let features = (0..a.batch * total)
        .map(|_| {
            let len = rng.gen_range(a.seq / 2..=a.seq);
            let start = rng.gen_range(1..a.seq / 2);
            Feature {
                ids: (0..len).map(|_| rng.gen_range(1..30522)).collect(),
                types: (0..len).map(|j| u32::from(j >= len / 2)).collect(),
                start,
                end: start + 3,
            }
        })
        .collect();
    let task = QaTask {
        features,
        seq: a.seq,
        loading: Cell::new(Duration::ZERO),
    };
    let training: crds::TrainingSpec = serde_json::from_value(serde_json::json!({
        "maxSteps": total, "globalBatchSize": a.batch, "microBatchSize": a.batch,
        "optimizer": {"learningRate": 5e-5, "weightDecay": 0.01},
        "gradientClipNorm": 1.0, "logIntervalSteps": 1
    }))?;
    let config = TrainerConfig::from_spec(
        &training,
        &crds::CheckpointingSpec::default(),
        1,
        task.features.len(),
    )?;
    let mut trainer = Trainer::new(
        model,
        config,
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        Device::Cpu,
    )?;
    let mut timer = Timer {
        task: &task,
        ends: Vec::new(),
    };
    trainer.fit(&task, &mut timer)?;
    let ends = &timer.ends[a.warmup..];
    let steps: Vec<f64> = ends
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64())
        .collect();
    let loading: Vec<f64> = ends
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs_f64())
        .collect();
    Ok((median(steps), median(loading)))
}

/// Runs the reference script (with `extra` arguments); returns its JSON line.
fn reference(a: &Args, extra: &[&str]) -> Result<serde_json::Value> {
    let python = std::env::var("MEGATRON_PYTHON")
        .context("MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` first")?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/train_bench_hf.py"
    );
    let out_dir = std::env::temp_dir().join(format!("bench-train-hf-{}", std::process::id()));
    let out = Command::new(python)
        .arg(script)
        .args(["--hidden", &a.hidden.to_string()])
        .args(["--layers", &a.layers.to_string()])
        .args(["--heads", &a.heads.to_string()])
        .args(["--seq", &a.seq.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args(["--vocab", "30592"])
        .args(["--threads", &a.threads.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .arg("--out-dir")
        .arg(&out_dir)
        .args(extra)
        .output()
        .context("running the Hugging Face benchmark")?;
    let _ = std::fs::remove_dir_all(&out_dir);
    if !out.status.success() {
        bail!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the Hugging Face benchmark")?;
    Ok(serde_json::from_str(line)?)
}

fn hugging_face(a: &Args) -> Result<(f64, String)> {
    let v = reference(a, &[])?;
    let times: Vec<f64> = v["step_times_s"]
        .as_array()
        .context("step_times_s")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    Ok((
        median(times),
        v["optim"].as_str().unwrap_or("?").to_string(),
    ))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let (step, loading) = ours(&a)?;
    let (hf_step, optim) = hugging_face(&a)?;
    let adamw = ours_adamw(&a)?;
    let torch_adamw = reference(&a, &["--adamw"])?;
    let single = torch_adamw["adamw_single_s"]
        .as_f64()
        .context("adamw_single_s")?;
    let fused = torch_adamw["adamw_fused_s"]
        .as_f64()
        .context("adamw_fused_s")?;
    let b = a.batch as f64;
    println!(
        "shape: hidden {}, layers {}, heads {}, seq {}, micro batch {}, threads {}, fp32 CPU; \
         median of {} steps after {} warm-up",
        a.hidden, a.layers, a.heads, a.seq, a.batch, a.threads, a.steps, a.warmup
    );
    println!("{:<40} {:>10} {:>10}", "", "samples/s", "step ms");
    println!(
        "{:<40} {:>10.2} {:>10.1}",
        "ours (Trainer::fit)",
        b / step,
        step * 1e3
    );
    println!(
        "{:<40} {:>10.2} {:>10.1}",
        format!("HF Trainer, eager ({optim})"),
        b / hf_step,
        hf_step * 1e3
    );
    println!(
        "throughput ratio ours / HF = {:.3}x (goal >= 1.0x)",
        hf_step / step
    );
    println!(
        "data loading: {:.3} ms per step = {:.2}% of our step (goal < 5%)",
        loading * 1e3,
        100.0 * loading / step
    );
    println!(
        "AdamW step alone: ours (fused) {:.1} ms ({:.1}% of our step), torch fused {:.1} ms, \
         torch foreach=False {:.1} ms",
        adamw * 1e3,
        100.0 * adamw / step,
        fused * 1e3,
        single * 1e3
    );
    Ok(())
}
