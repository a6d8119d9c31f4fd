//! `megatron-trainer inspect`: what a checkpoint path holds (format,
//! iteration, version, config, tensor-parallel size, tensors).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{CheckpointError, Result};
use super::huggingface;
use super::megatron::{self, args, layout};
use super::torch_pickle::{self, Container, Value, dtype_name};
use crate::model::BertConfig;

/// One tensor of the inspected file.
#[derive(Clone, Debug, Serialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
}

/// Everything `inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    /// `megatron`, `torch_file` or `huggingface_safetensors`.
    pub format: String,
    /// `zip` or `legacy` for torch.save files.
    pub container: Option<Container>,
    pub iteration: Option<i64>,
    pub release: bool,
    pub checkpoint_version: Option<f64>,
    pub tensor_parallel_size: Option<i64>,
    /// The files behind the path (one per tensor-parallel rank).
    pub files: Vec<PathBuf>,
    /// The model config, when the checkpoint records one.
    pub config: Option<BertConfig>,
    /// Why there is no config, when there is none.
    pub config_error: Option<String>,
    /// The tensors of the first file (rank 0), dotted paths.
    pub tensors: Vec<TensorEntry>,
}

/// Inspects `path`: a Megatron-LM checkpoint (root, iteration directory or
/// rank file), any torch.save file, or a Hugging Face safetensors checkpoint.
pub fn inspect(path: &Path) -> Result<Report> {
    if !path.exists() {
        return Err(CheckpointError::invalid(path, "does not exist"));
    }
    if huggingface::is_hf_checkpoint(path) {
        return inspect_hf(path);
    }
    let resolved = layout::resolve(path)?;
    let file = &resolved.rank_files[0];
    let (top, container) = torch_pickle::load(file)?;
    let mut tensors = Vec::new();
    top.visit_tensors("", &mut |name, t| {
        tensors.push(TensorEntry {
            name: name.to_string(),
            dtype: dtype_name(t.kind()).to_string(),
            shape: t.size(),
        })
    });
    let model = megatron::model_entry(&top);
    let mut is_megatron = false;
    model.visit_tensors("", &mut |name, _| {
        is_megatron |= megatron::names::canonical(name, false).is_some();
    });
    let args_value = top.get("args").filter(|a| !a.is_none());
    let (config, config_error) = match args_value {
        Some(a) => match args::config_from_args(a, None) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, Some("no `args` in the checkpoint".to_string())),
    };
    let k = resolved.rank_files.len() as i64;
    Ok(Report {
        path: path.to_path_buf(),
        format: if is_megatron {
            "megatron"
        } else {
            "torch_file"
        }
        .into(),
        container: Some(container),
        iteration: top
            .get("iteration")
            .and_then(Value::as_i64)
            .or(resolved.iteration),
        release: resolved.release,
        checkpoint_version: is_megatron.then(|| {
            top.get("checkpoint_version")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        }),
        tensor_parallel_size: is_megatron
            .then(|| args_value.and_then(args::tensor_parallel_size).unwrap_or(k)),
        files: resolved.rank_files,
        config: is_megatron.then_some(config).flatten(),
        config_error: if is_megatron { config_error } else { None },
        tensors,
    })
}

fn inspect_hf(path: &Path) -> Result<Report> {
    let (config, _, info) = huggingface::load(path, 1, 0)?;
    let mut tensors = Vec::new();
    for f in &info.files {
        let ts = tch::Tensor::read_safetensors(f)
            .map_err(|e| CheckpointError::format(f, e.to_string()))?;
        for (name, t) in ts {
            tensors.push(TensorEntry {
                name,
                dtype: dtype_name(t.kind()).to_string(),
                shape: t.size(),
            });
        }
    }
    Ok(Report {
        path: path.to_path_buf(),
        format: "huggingface_safetensors".into(),
        container: None,
        iteration: None,
        release: false,
        checkpoint_version: None,
        tensor_parallel_size: Some(1),
        files: info.files,
        config: Some(config),
        config_error: None,
        tensors,
    })
}

impl Report {
    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "path:                 {}", self.path.display());
        let fmt = match self.container {
            Some(c) => format!("{} ({c} torch.save container)", self.format),
            None => self.format.clone(),
        };
        let _ = writeln!(s, "format:               {fmt}");
        if let Some(it) = self.iteration {
            let _ = writeln!(
                s,
                "iteration:            {it}{}",
                if self.release { " (release)" } else { "" }
            );
        } else if self.release {
            let _ = writeln!(s, "iteration:            release");
        }
        if let Some(v) = self.checkpoint_version {
            let _ = writeln!(s, "checkpoint_version:   {v:?}");
        }
        if let Some(tp) = self.tensor_parallel_size {
            let _ = writeln!(s, "tensor parallel size: {tp}");
        }
        for f in &self.files {
            let _ = writeln!(s, "file:                 {}", f.display());
        }
        if let Some(c) = &self.config {
            let _ = writeln!(
                s,
                "config:               layers {}, hidden {}, heads {}, ffn {}, max positions {}, \
                 padded vocab {} (divisible by {}), layernorm eps {:e}, {:?}, {:?}",
                c.num_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.ffn_hidden_size,
                c.max_position_embeddings,
                c.padded_vocab_size,
                c.make_vocab_size_divisible_by,
                c.layernorm_epsilon,
                c.architecture,
                c.activation
            );
        } else if let Some(e) = &self.config_error {
            let _ = writeln!(s, "config:               unknown ({e})");
        }
        let bytes: i64 = self
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<i64>() * dtype_bytes(&t.dtype))
            .sum();
        let _ = writeln!(
            s,
            "tensors ({}, {:.1} MiB):",
            self.tensors.len(),
            bytes as f64 / (1 << 20) as f64
        );
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.tensors {
            let _ = writeln!(s, "  {:width$}  {:9} {:?}", t.name, t.dtype, t.shape);
        }
        s
    }
}

fn dtype_bytes(name: &str) -> i64 {
    torch_pickle::dtype_from_name(name).map_or(0, |k| k.elt_size_in_bytes() as i64)
}
