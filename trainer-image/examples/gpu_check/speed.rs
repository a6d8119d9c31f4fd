//! Steps 3 and 4, our side: the bf16 SQuAD fine-tuning step of
//! `Trainer::fit` (forward under bf16 autocast, QA loss, backward, global-norm
//! clipping at 1.0, fused AdamW with weight decay 0.01, linear schedule) at
//! micro batch `--batch`: the median of `--steps` step times after
//! `--warmup`, and the memory in use afterwards. A run of `--warmup 1
//! --steps 1` is the batch search's probe.

use std::path::PathBuf;
use std::sync::Arc;

use megatron_trainer::comm::SingleProcess;
use megatron_trainer::model::{BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::{Trainer, TrainerConfig};
use serde_json::{Value, json};
use tch::Device;

use super::cuda;
use super::error::{GpuCheckError, Result};
use super::qa_task::{Recorder, SyntheticQa};
use super::shape::Shape;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long)]
    pub device: String,
    #[command(flatten)]
    pub shape: Shape,
    #[arg(long)]
    pub batch: i64,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Fail batches above N as out of memory (the CPU rehearsal's full card).
    #[arg(long, default_value_t = 0)]
    pub simulate_oom_above: i64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A trainer for `model` on synthetic QA data of `samples` features: micro
/// batch = global batch = `batch`, bf16, `steps` steps, checkpoints as
/// `checkpointing` says.
pub fn trainer(
    model: BertTaskModel,
    batch: i64,
    steps: i64,
    samples: usize,
    checkpointing: &crds::CheckpointingSpec,
    device: Device,
) -> Result<Trainer> {
    let training: crds::TrainingSpec = serde_json::from_value(json!({
        "maxSteps": steps, "globalBatchSize": batch, "microBatchSize": batch,
        "precision": "bf16", "seed": 1234,
        "optimizer": {"learningRate": 5e-5, "weightDecay": 0.01},
        "gradientClipNorm": 1.0, "logIntervalSteps": 1
    }))?;
    let cfg = TrainerConfig::from_spec(&training, checkpointing, 1, samples)?;
    Ok(Trainer::new(
        model,
        cfg,
        TpGroup::single(),
        Arc::new(SingleProcess),
        0,
        device,
    )?)
}

/// Seeds every generator the step draws from (weights, dropout).
pub fn seed(device: Device, seed: i64) {
    tch::manual_seed(seed);
    if device.is_cuda() {
        tch::Cuda::manual_seed_all(seed as u64);
    }
}

pub fn run(a: &Args) -> Result<Value> {
    let device = cuda::device(&a.device)?;
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    if a.simulate_oom_above > 0 && a.batch > a.simulate_oom_above {
        return Err(GpuCheckError::SimulatedOom(a.simulate_oom_above));
    }
    if a.warmup == 0 || a.steps == 0 {
        return Err(GpuCheckError::Arg(
            "--warmup and --steps must be at least 1".into(),
        ));
    }
    seed(device, 0);
    let cfg = a.shape.config();
    let model = BertTaskModel::new(
        &cfg,
        &HeadConfig::question_answering(),
        &TpGroup::single(),
        device,
    )?;
    let params: i64 = model
        .vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let total = a.warmup + a.steps + 1;
    let task = SyntheticQa {
        samples: a.batch as usize * total,
        seq: a.shape.seq,
        vocab: a.shape.vocab,
    };
    let mut t = trainer(
        model,
        a.batch,
        total as i64,
        task.samples,
        &crds::CheckpointingSpec::default(),
        device,
    )?;
    let mut rec = Recorder::default();
    t.fit(&task, &mut rec)?;
    cuda::sync(device);
    let ends = &rec.step_ends[a.warmup..];
    let times: Vec<f64> = ends
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let (mem, kind) = cuda::memory_in_use_mib(device)?;
    Ok(json!({
        "batch": a.batch,
        "seq": a.shape.seq,
        "hidden": cfg.hidden_size,
        "layers": cfg.num_layers,
        "ffn": cfg.ffn_hidden_size,
        "params": params,
        "step_s_median": super::median(&times),
        "step_s": times,
        "last_loss": rec.losses.last(),
        "peak_mem_mib": mem,
        "peak_mem_kind": kind,
    }))
}
