//! The content of one rank's training checkpoint file: a `torch.save` dict
//! that Python opens with `torch.load(path, weights_only=True)`.
//!
//! Key names follow PyTorch Lightning where it has them (`state_dict`,
//! `optimizer_states` as `torch.optim` state dicts, `lr_schedulers`,
//! `global_step`, `epoch`, `native_amp_scaling_state`, `hyper_parameters`)
//! and Megatron-LM for the rest (`rng_states` with `torch_rng_state`,
//! `cuda_rng_state`, `rng_tracker_states`; `consumed_samples`):
//!
//! ```text
//! format, format_version             "megatron-trainer.training-checkpoint", 1
//! global_step, epoch                 optimizer steps done, whole epochs done
//! fractional_epoch                   exact epoch (samples consumed / training samples)
//! state_dict                         canonical parameter name -> this rank's tensor
//! optimizer_states                   [{state: {i: {step, exp_avg, exp_avg_sq}},
//!                                      param_groups: [{params: [i..], param_names: [..]}]}]
//! lr_schedulers                      [{last_epoch, _step_count}] (LambdaLR-like)
//! native_amp_scaling_state           {scale, _growth_tracker} (only with fp16 loss scaling)
//! early_stopping                     {best_score, wait_count}
//! rng_states                         {torch_rng_state, cuda_rng_state?,
//!                                     rng_tracker_states: {model-parallel-rng}?} (uint8)
//! rng_states_per_dp_rank             [rng_states of dp rank 0, 1, ...] (only with DP > 1)
//! data_position                      {epoch, index}: the sampler's next sample
//! consumed_samples                   samples consumed by the whole job
//! tp_rank, tp_size                   which shard this file holds
//! hyper_parameters                   the writer's metadata (name, job spec sections, ...)
//! ```

use std::path::Path;

use tch::Tensor;
use torch_pickle::{Dict, Value};

use super::pyvalue::{Mismatch, Node, dict, from_json, opt};
use crate::checkpoint::{CheckpointError, Result};
use crate::data::DataPosition;
use crate::model::StateDict;
use crate::train::{EarlyStopState, LossScaleState, OptimizerState, RngStates, TrainState};

/// Value of the file's `format` key.
pub const FORMAT: &str = "megatron-trainer.training-checkpoint";
/// Current `format_version`; readers reject newer files.
pub const FORMAT_VERSION: i64 = 1;
/// Key of the model-parallel generator inside `rng_states.rng_tracker_states`
/// (Megatron's tracker name).
pub const MODEL_PARALLEL_RNG: &str = "model-parallel-rng";

/// Which shard a file holds, and the writer's free-form metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct FileMeta {
    /// Tensor-parallel rank of the shard.
    pub tp_rank: usize,
    /// Tensor-parallel size of the run that wrote it.
    pub tp_size: usize,
    /// Stored as the `hyper_parameters` dict.
    pub hyper_parameters: serde_json::Value,
}

/// What a file holds, read back.
#[derive(Debug)]
pub struct TrainingFile {
    /// This rank's parameters by canonical name (CPU tensors).
    pub state_dict: StateDict,
    /// The loop state (CPU tensors).
    pub state: TrainState,
    /// `tp_rank`, `tp_size` (hyper_parameters is not read back).
    pub tp_rank: usize,
    /// See [`FileMeta::tp_size`].
    pub tp_size: usize,
    /// Generator states of every data-parallel replica (by dp rank) when the
    /// writer had more than one; empty otherwise.
    pub replica_rng: Vec<RngStates>,
}

/// The object tree of a file for `model` (this rank's parameters) and
/// `state`; `replica_rng` (the generator states of every data-parallel
/// replica of this tensor-parallel rank, by dp rank) is stored when there
/// is more than one replica.
pub fn encode(
    model: &StateDict,
    state: &TrainState,
    meta: &FileMeta,
    replica_rng: &[RngStates],
) -> Value {
    let mut state_dict = Dict::new(true);
    for (k, t) in model {
        state_dict.insert(k.clone(), Value::Tensor(t.detach()));
    }
    let mut top = Dict::new(false);
    let mut put = |k: &str, v: Value| top.insert(k, v);
    put("format", Value::Str(FORMAT.into()));
    put("format_version", Value::Int(FORMAT_VERSION));
    put("global_step", Value::Int(state.step));
    put("epoch", Value::Int(state.epoch.floor() as i64));
    put("fractional_epoch", Value::Float(state.epoch));
    put("state_dict", Value::Dict(state_dict));
    put(
        "optimizer_states",
        Value::List(vec![encode_optimizer(&state.optimizer)]),
    );
    put(
        "lr_schedulers",
        Value::List(vec![dict([
            ("last_epoch", Value::Int(state.step)),
            ("_step_count", Value::Int(state.step + 1)),
        ])]),
    );
    if let Some(ls) = state.loss_scale {
        put(
            "native_amp_scaling_state",
            dict([
                ("scale", Value::Float(ls.scale)),
                ("_growth_tracker", Value::Int(ls.growth_tracker)),
            ]),
        );
    }
    put(
        "early_stopping",
        dict([
            ("best_score", opt(state.early_stopping.best, Value::Float)),
            (
                "wait_count",
                Value::Int(state.early_stopping.bad_validations as i64),
            ),
        ]),
    );
    put("rng_states", encode_rng(&state.rng));
    if replica_rng.len() > 1 {
        put(
            "rng_states_per_dp_rank",
            Value::List(replica_rng.iter().map(encode_rng).collect()),
        );
    }
    put(
        "data_position",
        dict([
            ("epoch", Value::Int(state.data_position.epoch as i64)),
            ("index", Value::Int(state.data_position.index as i64)),
        ]),
    );
    put("consumed_samples", Value::Int(state.consumed_samples));
    put("tp_rank", Value::Int(meta.tp_rank as i64));
    put("tp_size", Value::Int(meta.tp_size as i64));
    put("hyper_parameters", from_json(&meta.hyper_parameters));
    Value::Dict(top)
}

fn encode_optimizer(opt: &OptimizerState) -> Value {
    let names: Vec<&String> = opt.exp_avg.keys().collect();
    let mut per_param = Dict::new(false);
    for (i, name) in names.iter().enumerate() {
        let mut s = Dict::new(false);
        let steps = opt.steps.get(*name).copied().unwrap_or(0);
        // torch.optim.AdamW keeps `step` as a float32 scalar tensor.
        s.insert("step", Value::Tensor(Tensor::from(steps as f32)));
        s.insert("exp_avg", Value::Tensor(opt.exp_avg[*name].detach()));
        if let Some(sq) = opt.exp_avg_sq.get(*name) {
            s.insert("exp_avg_sq", Value::Tensor(sq.detach()));
        }
        per_param
            .entries
            .push((Value::Int(i as i64), Value::Dict(s)));
    }
    let indices = (0..names.len() as i64).map(Value::Int).collect();
    let param_names = names.iter().map(|n| Value::Str((*n).clone())).collect();
    dict([
        ("state", Value::Dict(per_param)),
        (
            "param_groups",
            Value::List(vec![dict([
                ("params", Value::List(indices)),
                ("param_names", Value::List(param_names)),
            ])]),
        ),
    ])
}

fn encode_rng(rng: &RngStates) -> Value {
    let mut d = Dict::new(false);
    if let Some(t) = &rng.cpu {
        d.insert("torch_rng_state", Value::Tensor(t.shallow_clone()));
    }
    if let Some(t) = &rng.cuda {
        d.insert("cuda_rng_state", Value::Tensor(t.shallow_clone()));
    }
    if let Some(t) = &rng.model_parallel {
        d.insert(
            "rng_tracker_states",
            dict([(MODEL_PARALLEL_RNG, Value::Tensor(t.shallow_clone()))]),
        );
    }
    Value::Dict(d)
}

/// Writes `value` to `path` (atomically: temporary name, then rename).
pub fn write(path: &Path, value: &Value) -> Result<()> {
    Ok(torch_pickle::save(path, value)?)
}

/// Reads a file written by [`encode`] + [`write`].
pub fn read(path: &Path) -> Result<TrainingFile> {
    let (value, _) = torch_pickle::load(path)?;
    decode(&value).map_err(|(key, what)| {
        CheckpointError::invalid(
            path,
            format!(
                "not a usable training checkpoint: key '{key}': {what} (write it with this \
                 trainer, or point spec.checkpointing.resume.from at a checkpoint it wrote)"
            ),
        )
    })
}

/// The content of a loaded file.
pub fn decode(value: &Value) -> std::result::Result<TrainingFile, Mismatch> {
    let root = Node::root(value);
    let format = root
        .get("format")?
        .1
        .as_str()
        .unwrap_or_default()
        .to_string();
    if format != FORMAT {
        return Err((
            "format".into(),
            format!("expected '{FORMAT}', found '{format}'"),
        ));
    }
    let version = root.int("format_version")?;
    if version > FORMAT_VERSION {
        return Err((
            "format_version".into(),
            format!(
                "{version} is newer than this trainer reads ({FORMAT_VERSION}); upgrade the trainer image"
            ),
        ));
    }
    let state_dict = tensors(&root, "state_dict")?;
    let (opt_path, opts) = root.list("optimizer_states")?;
    let optimizer = match opts.first() {
        Some(v) => decode_optimizer(Node {
            path: &format!("{opt_path}.0"),
            value: v,
        })?,
        None => OptimizerState::default(),
    };
    let loss_scale = match root.get_opt("native_amp_scaling_state") {
        Some(v) => {
            let n = Node {
                path: "native_amp_scaling_state",
                value: v,
            };
            Some(LossScaleState {
                scale: n.float("scale")?,
                growth_tracker: n.int("_growth_tracker")?,
            })
        }
        None => None,
    };
    let (es_path, es) = root.dict("early_stopping")?;
    let es = Node {
        path: &es_path,
        value: es,
    };
    let early_stopping = EarlyStopState {
        best: es.float_opt("best_score")?,
        bad_validations: es.int("wait_count")? as i32,
    };
    let (rng_path, rng) = root.dict("rng_states")?;
    let rng = decode_rng(Node {
        path: &rng_path,
        value: rng,
    })?;
    let mut replica_rng = Vec::new();
    if root.get_opt("rng_states_per_dp_rank").is_some() {
        let (path, items) = root.list("rng_states_per_dp_rank")?;
        for (i, v) in items.iter().enumerate() {
            replica_rng.push(decode_rng(Node {
                path: &format!("{path}.{i}"),
                value: v,
            })?);
        }
    }
    let (dp_path, dp) = root.dict("data_position")?;
    let dp = Node {
        path: &dp_path,
        value: dp,
    };
    let non_negative = |key: &str, v: i64| {
        if v < 0 {
            Err((key.to_string(), format!("must not be negative, found {v}")))
        } else {
            Ok(v)
        }
    };
    let data_position = DataPosition {
        epoch: non_negative("data_position.epoch", dp.int("epoch")?)? as u64,
        index: non_negative("data_position.index", dp.int("index")?)? as usize,
    };
    let state = TrainState {
        step: root.int("global_step")?,
        epoch: root.float("fractional_epoch")?,
        data_position,
        consumed_samples: root.int("consumed_samples")?,
        optimizer,
        loss_scale,
        early_stopping,
        rng,
    };
    Ok(TrainingFile {
        replica_rng,
        state_dict,
        state,
        tp_rank: non_negative("tp_rank", root.int("tp_rank")?)? as usize,
        tp_size: non_negative("tp_size", root.int("tp_size")?)? as usize,
    })
}

fn decode_rng(rng: Node<'_>) -> std::result::Result<RngStates, Mismatch> {
    let model_parallel = match rng.get_opt("rng_tracker_states") {
        Some(v) => Node {
            path: &format!("{}.rng_tracker_states", rng.path),
            value: v,
        }
        .tensor_opt(MODEL_PARALLEL_RNG)?
        .map(Tensor::shallow_clone),
        None => None,
    };
    Ok(RngStates {
        cpu: rng
            .tensor_opt("torch_rng_state")?
            .map(Tensor::shallow_clone),
        cuda: rng.tensor_opt("cuda_rng_state")?.map(Tensor::shallow_clone),
        model_parallel,
    })
}

fn tensors(node: &Node<'_>, key: &str) -> std::result::Result<StateDict, Mismatch> {
    let (path, v) = node.dict(key)?;
    let mut out = StateDict::new();
    for (k, v) in &v.as_dict().expect("checked by dict()").entries {
        let name = k
            .as_str()
            .ok_or_else(|| (path.clone(), format!("non-string key {}", k.type_name())))?;
        let t = v.as_tensor().ok_or_else(|| {
            (
                format!("{path}.{name}"),
                format!("expected a tensor, found {}", v.type_name()),
            )
        })?;
        out.insert(name.to_string(), t.shallow_clone());
    }
    Ok(out)
}

fn decode_optimizer(node: Node<'_>) -> std::result::Result<OptimizerState, Mismatch> {
    let (groups_path, groups) = node.list("param_groups")?;
    let (state_path, state) = node.dict("state")?;
    let state = &state.as_dict().expect("checked by dict()").entries;
    let mut out = OptimizerState::default();
    for (g, group) in groups.iter().enumerate() {
        let gpath = format!("{groups_path}.{g}");
        let gnode = Node {
            path: &gpath,
            value: group,
        };
        let (pp, params) = gnode.list("params")?;
        let (np, names) = gnode.list("param_names")?;
        if params.len() != names.len() {
            return Err((
                np,
                format!("has {} names for {} params", names.len(), params.len()),
            ));
        }
        for (idx, name) in params.iter().zip(names) {
            let idx = idx
                .as_i64()
                .ok_or_else(|| (pp.clone(), format!("non-integer entry {}", idx.type_name())))?;
            let name = name
                .as_str()
                .ok_or_else(|| (np.clone(), format!("non-string entry {}", name.type_name())))?;
            let Some((_, s)) = state.iter().find(|(k, _)| k.as_i64() == Some(idx)) else {
                // torch leaves out parameters that never got a gradient.
                continue;
            };
            let spath = format!("{state_path}.{idx}");
            let s = Node {
                path: &spath,
                value: s,
            };
            let steps = match s.get("step")?.1 {
                Value::Tensor(t) => t
                    .f_double_value(&[])
                    .map_err(|e| (format!("{spath}.step"), format!("not a scalar tensor: {e}")))?,
                v => v.as_f64().ok_or_else(|| {
                    (
                        format!("{spath}.step"),
                        format!("expected a number, found {}", v.type_name()),
                    )
                })?,
            };
            out.steps.insert(name.to_string(), steps.round() as i64);
            out.exp_avg
                .insert(name.to_string(), s.tensor("exp_avg")?.shallow_clone());
            out.exp_avg_sq
                .insert(name.to_string(), s.tensor("exp_avg_sq")?.shallow_clone());
        }
    }
    Ok(out)
}
