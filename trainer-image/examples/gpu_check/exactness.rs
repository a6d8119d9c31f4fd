//! Step 1: our model against Hugging Face's reference run on the same card
//! (`scripts/gpu-check.d/hf_exact.py` wrote it): forward and one backward of
//! the QA loss in fp32 (TF32 off) and under bf16 autocast, then TP=2 (two
//! ranks on this one device, see [`super::host_staged`]) against TP=1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crds::Precision;
use megatron_trainer::model::{
    BertConfig, BertTaskModel, HeadConfig, HeadOutput, StateDict, clear_grads,
    question_answering_loss,
};
use megatron_trainer::parallel::TpGroup;
use megatron_trainer::train::precision::with_autocast;
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::compare::{grads_rel_l2, max_abs_diff, rel_l2, worst_grad_rel_diff};
use super::error::{GpuCheckError, Result, io};
use super::{child, cuda};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub device: String,
    /// hf_exact.py's output directory.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Limit for the two tensor-parallel ranks.
    #[arg(long, default_value_t = 120)]
    pub tp_timeout_s: u64,
}

/// The reference run's files.
pub struct Reference {
    pub config: BertConfig,
    pub weights: StateDict,
    pub io: StateDict,
    pub grads_fp32: StateDict,
    pub grads_bf16: StateDict,
}

fn read(dir: &Path, file: &str) -> Result<StateDict> {
    let path = dir.join(file);
    Ok(Tensor::read_safetensors(&path)
        .map_err(|e| GpuCheckError::Arg(format!("reading {}: {e}", path.display())))?
        .into_iter()
        .collect())
}

impl Reference {
    pub fn load(dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(io(format!("reading {}/config.json", dir.display())))?;
        Ok(Self {
            config: serde_json::from_str(&text)?,
            weights: read(dir, "weights.safetensors")?,
            io: read(dir, "io.safetensors")?,
            grads_fp32: read(dir, "grads_fp32.safetensors")?,
            grads_bf16: read(dir, "grads_bf16.safetensors")?,
        })
    }
}

/// One forward + backward: logits (fp32, CPU), loss, gradients (device).
pub struct Pass {
    pub start: Tensor,
    pub end: Tensor,
    pub loss: f64,
    pub grads: StateDict,
}

/// Builds this rank's model for `tp` on `device` with the reference weights
/// (sharded when `tp` has two ranks).
pub fn model(r: &Reference, tp: &TpGroup, device: Device) -> Result<BertTaskModel> {
    tch::manual_seed(0);
    let mut m = BertTaskModel::new(&r.config, &HeadConfig::question_answering(), tp, device)?;
    let weights = megatron_trainer::model::shard_state_dict(&r.weights, tp.size(), tp.rank())?;
    // The QA model has no pooler: it keeps its initialization (and gets no gradient).
    let unused = m.load_pretrained(&weights)?;
    if !unused.is_empty() {
        return Err(GpuCheckError::Arg(format!(
            "reference weights the model lacks: {unused:?}"
        )));
    }
    Ok(m)
}

pub fn qa_pass(
    model: &BertTaskModel,
    io: &StateDict,
    device: Device,
    precision: Precision,
) -> Result<Pass> {
    clear_grads(&model.vs.trainable_variables());
    let on = |k: &str| -> Result<Tensor> { Ok(io[k].f_to_device(device)?) };
    let (ids, types, mask) = (
        on("input_ids")?,
        on("token_type_ids")?,
        on("attention_mask")?,
    );
    let (sp, ep) = (on("start_positions")?, on("end_positions")?);
    let (start, end, loss) = with_autocast(precision, device, || -> Result<_> {
        let HeadOutput::Span {
            start_logits,
            end_logits,
        } = model.forward(&ids, Some(&types), Some(&mask), false)?
        else {
            return Err(GpuCheckError::Arg(
                "the QA head returned no span logits".into(),
            ));
        };
        let loss = question_answering_loss(&start_logits, &end_logits, &sp, &ep)?;
        Ok((start_logits, end_logits, loss))
    })?;
    loss.f_backward()?;
    let cpu =
        |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?) };
    Ok(Pass {
        start: cpu(&start)?,
        end: cpu(&end)?,
        loss: loss.f_to_kind(Kind::Double)?.double_value(&[]),
        grads: model.gradients(),
    })
}

fn cpu_grads(g: &StateDict) -> Result<StateDict> {
    g.iter()
        .map(|(k, v)| Ok((k.clone(), v.f_to_device(Device::Cpu)?)))
        .collect()
}

pub fn run(a: &Args) -> Result<Value> {
    let device = cuda::device(&a.device)?;
    cuda::disable_tf32();
    let r = Reference::load(&a.reference)?;
    let m = model(&r, &TpGroup::single(), device)?;
    let mask = &r.io["attention_mask"];
    let scalar = |k: &str| r.io[k].double_value(&[0]);

    let fp32 = qa_pass(&m, &r.io, device, Precision::Fp32)?;
    let fp32_grads = cpu_grads(&fp32.grads)?;
    let fp32_logits = max_abs_diff(&fp32.start, &r.io["start_logits_fp32"], Some(mask))?.max(
        max_abs_diff(&fp32.end, &r.io["end_logits_fp32"], Some(mask))?,
    );
    let fp32_loss = (fp32.loss - scalar("loss_fp32")).abs();
    let (fp32_grad, fp32_grad_name) = worst_grad_rel_diff(&fp32_grads, &r.grads_fp32)?;

    let bf16 = qa_pass(&m, &r.io, device, Precision::Bf16)?;
    let bf16_grads = cpu_grads(&bf16.grads)?;
    let bf16_logits = rel_l2(&bf16.start, &r.io["start_logits_bf16"], Some(mask))?.max(rel_l2(
        &bf16.end,
        &r.io["end_logits_bf16"],
        Some(mask),
    )?);
    let bf16_loss = (bf16.loss - scalar("loss_bf16")).abs() / scalar("loss_bf16").abs();
    let bf16_grads_err = grads_rel_l2(&bf16_grads, &r.grads_bf16)?;
    // The noise floor: how far HF's own bf16 run is from its fp32 run (two
    // correct bf16 runs cannot be expected to agree much better than this).
    let hf_bf16_vs_fp32 = rel_l2(
        &r.io["start_logits_bf16"],
        &r.io["start_logits_fp32"],
        Some(mask),
    )?
    .max(rel_l2(
        &r.io["end_logits_bf16"],
        &r.io["end_logits_fp32"],
        Some(mask),
    )?);
    let hf_grads_bf16_vs_fp32 = grads_rel_l2(&r.grads_bf16, &r.grads_fp32)?;
    // Our bf16 run against the fp32 truth, for comparison with HF's.
    let ours_bf16_vs_fp32 = rel_l2(&bf16.start, &r.io["start_logits_fp32"], Some(mask))?
        .max(rel_l2(&bf16.end, &r.io["end_logits_fp32"], Some(mask))?);
    let ours_grads_bf16_vs_fp32 = grads_rel_l2(&bf16_grads, &r.grads_fp32)?;
    drop(m);

    let tp2 = tensor_parallel(a, &fp32, &fp32_grads)?;
    Ok(json!({
        "tf32_cublas": cuda::tf32_cublas(),
        "shape": {
            "hidden": r.config.hidden_size, "layers": r.config.num_layers,
            "heads": r.config.num_attention_heads,
            "batch": r.io["input_ids"].size()[0], "seq": r.io["input_ids"].size()[1],
        },
        "fp32_logits_max_abs_diff": fp32_logits,
        "fp32_loss_abs_diff": fp32_loss,
        "fp32_grad_max_rel_diff": fp32_grad,
        "fp32_grad_worst_param": fp32_grad_name,
        "bf16_logits_rel_err": bf16_logits,
        "bf16_loss_rel_err": bf16_loss,
        "bf16_grads_rel_err": bf16_grads_err,
        "hf_bf16_vs_fp32_logits_rel_err": hf_bf16_vs_fp32,
        "hf_bf16_vs_fp32_grads_rel_err": hf_grads_bf16_vs_fp32,
        "ours_bf16_vs_fp32_logits_rel_err": ours_bf16_vs_fp32,
        "ours_bf16_vs_fp32_grads_rel_err": ours_grads_bf16_vs_fp32,
        "tp2": tp2,
    }))
}

/// Runs the two ranks and compares rank 0's logits and gathered gradients with TP=1's.
fn tensor_parallel(a: &Args, tp1: &Pass, tp1_grads: &StateDict) -> Result<Value> {
    let port = child::free_port()?;
    let out = |r: usize| a.reference.join(format!("tp2-rank{r}.safetensors"));
    let children = (0..2)
        .map(|r| {
            let args: Vec<String> = [
                "tp-rank",
                "--device",
                &a.device,
                "--ref",
                &a.reference.to_string_lossy(),
                "--rank",
                &r.to_string(),
                "--master-port",
                &port.to_string(),
                "--out",
                &out(r).to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            child::spawn(&args, &[])
        })
        .collect::<Result<Vec<_>>>()?;
    let done = child::wait_all(children, Duration::from_secs(a.tp_timeout_s))?;
    for (r, f) in done.iter().enumerate() {
        eprint!("{}", f.stderr);
        if !f.success {
            return Err(child::failed(&format!("tensor-parallel rank {r}"), f));
        }
    }
    let got = read(&a.reference, "tp2-rank0.safetensors")?;
    let grads: StateDict = got
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("grad.")?.to_string(), v.shallow_clone())))
        .collect();
    let logits = max_abs_diff(&got["start"], &tp1.start, None)?.max(max_abs_diff(
        &got["end"],
        &tp1.end,
        None,
    )?);
    let (grad, name) = worst_grad_rel_diff(&grads, tp1_grads)?;
    Ok(json!({
        "ranks": 2,
        "collectives": "TCP ring on host copies of the CUDA tensors",
        "logits_max_abs_diff_vs_tp1": logits,
        "loss_abs_diff_vs_tp1": (got["loss"].double_value(&[0]) - tp1.loss).abs(),
        "grad_max_rel_diff_vs_tp1": grad,
        "grad_worst_param": name,
    }))
}
