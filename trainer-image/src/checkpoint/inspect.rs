//! `megatron-trainer inspect`: what a checkpoint path holds (format,
//! iteration, version, config, tensor-parallel size, tensors), or what a
//! `.nemo` archive holds (task and head, architecture, vocabulary, labels,
//! weights).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use torch_pickle::{Container, Value, dtype_name};

use super::error::{CheckpointError, Result};
use super::huggingface;
use super::megatron::{self, args, layout};
use super::nemo::{self, NemoTask, keys};
use crate::model::{BertConfig, HeadConfig, StateDict, tp_split_dim};

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
    /// What a .nemo archive holds besides (format `nemo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nemo: Option<NemoReport>,
}

/// The .nemo part of a [`Report`].
#[derive(Clone, Debug, Serialize)]
pub struct NemoReport {
    /// `gzip` or `none` (a plain tar).
    pub compression: String,
    pub task: NemoTask,
    /// The NeMo class it restores as.
    pub target: String,
    /// The task head (classes from the weights when the config omits them).
    pub head: HeadConfig,
    pub pretrained_model_name: Option<String>,
    /// The NeMo release that saved it, when recorded.
    pub nemo_version: Option<String>,
    pub vocabulary: Option<VocabularyReport>,
    /// Whether text is lower-cased before tokenizing (None: not recorded).
    pub do_lower_case: Option<bool>,
    /// Label names in id order.
    pub labels: Option<Vec<String>>,
    /// `model_config.yaml`'s `dataset` section (max_seq_length, ...).
    pub dataset: serde_json::Map<String, serde_json::Value>,
    pub weights: NemoWeightsReport,
    /// Every file member, in archive order.
    pub members: Vec<String>,
}

/// The tokenizer vocabulary of a .nemo.
#[derive(Clone, Debug, Serialize)]
pub struct VocabularyReport {
    /// The archive member.
    pub file: String,
    /// Tokens.
    pub size: i64,
}

/// The weights of a .nemo, counted for the merged (tensor-parallel size 1) model.
#[derive(Clone, Debug, Serialize)]
pub struct NemoWeightsReport {
    /// The weights members, one per tensor-parallel rank.
    pub members: Vec<String>,
    /// Parameter tensors of the model (every rank holds the same names).
    pub tensors: usize,
    /// Parameters of the merged model (the padded vocabulary included).
    pub parameters: i64,
    /// Their dtypes.
    pub dtypes: Vec<String>,
    /// Their size in bytes.
    pub bytes: i64,
    /// Whether the task head's weights are there (not for an encoder
    /// converted from a pretrained checkpoint).
    pub has_head_weights: bool,
    /// Stored keys that are not model parameters (rank 0).
    pub other_keys: Vec<String>,
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
    if nemo::is_nemo_archive(path) {
        return inspect_nemo(path);
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
            Err(e) => (None, Some(e.to_string())),
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
        nemo: None,
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
        nemo: None,
    })
}

/// A .nemo: its config and artifacts as the reader parses them, and rank 0's
/// weights member (each rank holds the same parameter names; split ones
/// count once per rank for the merged model).
fn inspect_nemo(path: &Path) -> Result<Report> {
    let archive = nemo::open_nemo(path, &nemo::ReadOptions::default())?;
    let tp = archive.weights_members.len() as i64;
    let mut tensors = Vec::new();
    let mut params = StateDict::new();
    let mut other_keys = Vec::new();
    megatron::model_entry(&archive.rank0).visit_tensors("", &mut |name, t| {
        tensors.push(TensorEntry {
            name: name.to_string(),
            dtype: dtype_name(t.kind()).to_string(),
            shape: t.size(),
        });
        match keys::canonical(name) {
            Some(canonical) => {
                params.insert(canonical, t.shallow_clone());
            }
            None => other_keys.push(name.to_string()),
        }
    });
    let merged_numel = |name: &str, t: &tch::Tensor| {
        t.numel() as i64 * if tp_split_dim(name).is_some() { tp } else { 1 }
    };
    let parameters = params.iter().map(|(k, t)| merged_numel(k, t)).sum();
    let bytes = params
        .iter()
        .map(|(k, t)| merged_numel(k, t) * t.kind().elt_size_in_bytes() as i64)
        .sum();
    let dtypes: std::collections::BTreeSet<String> = params
        .values()
        .map(|t| dtype_name(t.kind()).to_string())
        .collect();
    let mut config = archive.config;
    if let Some(rows) = params
        .get("embeddings.word_embeddings.weight")
        .and_then(|t| t.size().first().copied())
    {
        config.padded_vocab_size = rows * tp;
    }
    let from_weights = nemo::shapes::head_from_weights(&params);
    let mut head = archive.head;
    if let Some((_, classes)) = from_weights
        && archive.task == NemoTask::TextClassification
        && head.num_classes == 0
    {
        head.num_classes = classes;
    }
    Ok(Report {
        path: path.to_path_buf(),
        format: "nemo".into(),
        container: None,
        iteration: None,
        release: false,
        checkpoint_version: archive.checkpoint_version,
        tensor_parallel_size: Some(tp),
        files: Vec::new(),
        config: Some(config),
        config_error: None,
        tensors,
        nemo: Some(NemoReport {
            compression: if archive.gzip { "gzip" } else { "none" }.into(),
            task: archive.task,
            target: archive.task.target().into(),
            head,
            pretrained_model_name: archive.pretrained_model_name,
            nemo_version: archive.nemo_version,
            vocabulary: archive
                .vocab
                .map(|(file, size)| VocabularyReport { file, size }),
            do_lower_case: archive.do_lower_case,
            labels: archive.labels,
            dataset: archive.dataset,
            weights: NemoWeightsReport {
                members: archive.weights_members,
                tensors: params.len(),
                parameters,
                dtypes: dtypes.into_iter().collect(),
                bytes,
                has_head_weights: from_weights.is_some(),
                other_keys,
            },
            members: archive.members,
        }),
    })
}

impl Report {
    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "path:                 {}", self.path.display());
        let fmt = match (self.container, &self.nemo) {
            (Some(c), _) => format!("{} ({c} torch.save container)", self.format),
            (None, Some(n)) if n.compression == "gzip" => {
                format!("{} (gzip tar archive)", self.format)
            }
            (None, Some(_)) => format!("{} (tar archive)", self.format),
            (None, None) => self.format.clone(),
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
        match (self.checkpoint_version, &self.nemo) {
            (Some(v), _) => {
                let _ = writeln!(s, "checkpoint_version:   {v:?}");
            }
            (None, Some(_)) => {
                let _ = writeln!(
                    s,
                    "checkpoint_version:   not recorded (read as {:?})",
                    nemo::NEMO_CHECKPOINT_VERSION
                );
            }
            (None, None) => {}
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
        if let Some(n) = &self.nemo {
            n.write_text(&mut s);
        }
        let bytes: i64 = self
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<i64>() * dtype_bytes(&t.dtype))
            .sum();
        let whose = match self.nemo.as_ref().and_then(|n| n.weights.members.first()) {
            Some(member) => format!("{member}: "),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "tensors ({whose}{}, {:.1} MiB):",
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

impl NemoReport {
    fn write_text(&self, s: &mut String) {
        let h = &self.head;
        let class = self.target.rsplit('.').next().unwrap_or_default();
        let _ = writeln!(
            s,
            "task:                 {} (NeMo {class}); head: {} layer(s), {} classes, {:?}, dropout {}",
            self.task, h.num_layers, h.num_classes, h.activation, h.dropout
        );
        if let Some(name) = &self.pretrained_model_name {
            let _ = writeln!(s, "pretrained model:     {name}");
        }
        if let Some(v) = &self.nemo_version {
            let _ = writeln!(s, "NeMo version:         {v}");
        }
        let case = match self.do_lower_case {
            Some(true) => "lower case",
            Some(false) => "cased",
            None => "case not recorded",
        };
        match &self.vocabulary {
            Some(v) => {
                let _ = writeln!(
                    s,
                    "vocabulary:           {}, {} tokens, {case}",
                    v.file, v.size
                );
            }
            None => {
                let _ = writeln!(s, "vocabulary:           none in the archive, {case}");
            }
        }
        if let Some(labels) = &self.labels {
            let key = format!("labels ({}):", labels.len());
            let _ = writeln!(s, "{key:22}{}", labels.join(", "));
        }
        if !self.dataset.is_empty() {
            let items: Vec<String> = self
                .dataset
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "dataset:              {}", items.join(", "));
        }
        let w = &self.weights;
        let _ = writeln!(
            s,
            "weights:              {} member(s) ({}): {} tensors, {} parameters, {}, {:.1} MiB \
             (merged model){}",
            w.members.len(),
            w.members.join(", "),
            w.tensors,
            w.parameters,
            w.dtypes.join("/"),
            w.bytes as f64 / (1 << 20) as f64,
            if w.has_head_weights {
                ""
            } else {
                "; no task head weights"
            }
        );
        if !w.other_keys.is_empty() {
            let _ = writeln!(s, "other keys:           {}", w.other_keys.join(", "));
        }
    }
}

fn dtype_bytes(name: &str) -> i64 {
    torch_pickle::dtype_from_name(name).map_or(0, |k| k.elt_size_in_bytes() as i64)
}
