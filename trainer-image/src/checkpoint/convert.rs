//! Checkpoint conversion in one process (no process group): a Megatron-LM
//! checkpoint or a .nemo into the other, or into another tensor-parallel
//! size (what Megatron-LM's checkpoint_util and NeMo's
//! megatron_change_num_partitions do). The whole model is gathered at TP=1
//! in memory, then cut for the target size while it is written.

use std::path::{Path, PathBuf};

use crate::checkpoint::error::{CheckpointError, Result};
use crate::checkpoint::megatron::{self, LoadOptions, SaveOptions};
use crate::checkpoint::nemo::{
    self, DEFAULT_COMPRESSION, NemoContents, NemoTask, NemoWeights, ReadOptions,
};
use crate::model::{BertConfig, HeadConfig, StateDict};

/// A checkpoint format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointFormat {
    /// A Megatron-LM checkpoint directory (or `.pt` file as input).
    Megatron,
    /// A `.nemo` archive.
    Nemo,
}

impl CheckpointFormat {
    /// `.nemo` paths are archives, anything else a Megatron-LM checkpoint.
    pub fn of_path(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "nemo") {
            Self::Nemo
        } else {
            Self::Megatron
        }
    }
}

/// What to convert.
#[derive(Clone, Debug, Default)]
pub struct ConvertArgs {
    /// A Megatron-LM checkpoint (root, iteration directory or `.pt`) or a `.nemo`.
    pub input: PathBuf,
    /// A `.nemo` path or a Megatron-LM checkpoint root directory.
    pub output: PathBuf,
    /// Output format (default: from the output's extension).
    pub output_format: Option<CheckpointFormat>,
    /// Tensor-parallel size of the output (default: the input's).
    pub tensor_parallel_size: Option<i64>,
    /// The task head for a .nemo written from a Megatron-LM checkpoint
    /// (required then; a .nemo input keeps its own).
    pub task: Option<NemoTask>,
    /// Label names in id order (token classification; text classification
    /// class names).
    pub labels: Option<Vec<String>>,
    /// Classes of a text classification head without label names.
    pub num_classes: Option<i64>,
    /// The tokenizer vocabulary (required for a .nemo from a Megatron-LM
    /// checkpoint; its size decides the vocabulary padding).
    pub vocab_file: Option<PathBuf>,
    pub do_lower_case: Option<bool>,
    /// NeMo's pretrained_model_name (default: the input's, else
    /// `megatron-bert-uncased` / `megatron-bert-cased`).
    pub pretrained_model_name: Option<String>,
    /// The architecture of a Megatron-LM checkpoint without `args`.
    pub config: Option<BertConfig>,
    /// Where to extract a .nemo input (default: the system temporary directory).
    pub scratch_dir: Option<PathBuf>,
}

/// What a conversion did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertReport {
    pub input_format: CheckpointFormat,
    pub output_format: CheckpointFormat,
    pub input_tensor_parallel_size: i64,
    pub output_tensor_parallel_size: i64,
    pub output: PathBuf,
    /// Parameters the output format has no place for (pretraining heads in a
    /// .nemo, the task head in a Megatron-LM checkpoint).
    pub dropped: Vec<String>,
}

/// The full model read from the input.
struct Source {
    config: BertConfig,
    full: StateDict,
    tp: i64,
    nemo: Option<nemo::NemoModel>,
}

/// Converts `args.input` into `args.output`.
pub fn convert(args: &ConvertArgs) -> Result<ConvertReport> {
    let input_format = detect_input(&args.input)?;
    let output_format = args
        .output_format
        .unwrap_or_else(|| CheckpointFormat::of_path(&args.output));
    let src = read_source(args, input_format)?;
    let tp = args.tensor_parallel_size.unwrap_or(src.tp);
    let mut dropped = Vec::new();
    match output_format {
        CheckpointFormat::Megatron => {
            let mut full = src.full;
            full.retain(|name, _| {
                let keep = !name.starts_with("classifier.");
                if !keep {
                    dropped.push(name.clone());
                }
                keep
            });
            megatron::save(
                &args.output,
                &src.config,
                &full,
                &SaveOptions {
                    tp,
                    iteration: None,
                },
            )?;
        }
        CheckpointFormat::Nemo => {
            let written = write_nemo_output(args, &src, tp)?;
            dropped = written.dropped;
        }
    }
    Ok(ConvertReport {
        input_format,
        output_format,
        input_tensor_parallel_size: src.tp,
        output_tensor_parallel_size: tp,
        output: args.output.clone(),
        dropped,
    })
}

fn detect_input(path: &Path) -> Result<CheckpointFormat> {
    let meta = std::fs::metadata(path).map_err(|e| CheckpointError::io(path, e))?;
    if meta.is_dir() {
        return Ok(CheckpointFormat::Megatron);
    }
    if CheckpointFormat::of_path(path) == CheckpointFormat::Nemo {
        return Ok(CheckpointFormat::Nemo);
    }
    // A .pt file is a torch.save file; anything else must be an archive.
    Ok(match torch_pickle::detect(path) {
        Ok(_) => CheckpointFormat::Megatron,
        Err(_) => CheckpointFormat::Nemo,
    })
}

fn read_source(args: &ConvertArgs, format: CheckpointFormat) -> Result<Source> {
    match format {
        CheckpointFormat::Nemo => {
            let opts = ReadOptions {
                scratch_dir: args.scratch_dir.clone(),
            };
            let m = nemo::read_nemo_with(&args.input, 1, 0, &opts)?;
            if let Some(t) = args.task
                && t != m.task
            {
                return Err(CheckpointError::invalid(
                    &args.input,
                    format!(
                        "the archive is a {:?} model; the task cannot be changed by conversion",
                        m.task
                    ),
                ));
            }
            Ok(Source {
                config: m.config.clone(),
                full: m.state_dict.shallow_copy(),
                tp: m.tensor_parallel_size,
                nemo: Some(m),
            })
        }
        CheckpointFormat::Megatron => {
            let vocab_size = match &args.vocab_file {
                Some(v) => Some(count_vocab(v)?),
                None => None,
            };
            let opts = LoadOptions {
                vocab_size,
                config: args.config.clone(),
                include_pretraining_heads: true,
            };
            let (config, full, info) = megatron::load_with(&args.input, 1, 0, &opts)?;
            Ok(Source {
                config,
                full,
                tp: info.tensor_parallel_size,
                nemo: None,
            })
        }
    }
}

fn write_nemo_output(args: &ConvertArgs, src: &Source, tp: i64) -> Result<nemo::NemoWritten> {
    let invalid = |m: &str| CheckpointError::invalid(&args.input, m.to_string());
    let from = src.nemo.as_ref();
    let vocab_file = args
        .vocab_file
        .clone()
        .or_else(|| from.and_then(|m| m.vocab_file.clone()))
        .ok_or_else(|| {
            invalid(
                "a .nemo needs the tokenizer vocabulary: give the vocab file (--vocab-file) of \
                 this checkpoint",
            )
        })?;
    let labels = args
        .labels
        .clone()
        .or_else(|| from.and_then(|m| m.labels.clone()));
    let head = match from {
        Some(m) => m.head.clone(),
        None => head_for(args, labels.as_deref())?,
    };
    let do_lower_case = args
        .do_lower_case
        .or_else(|| from.and_then(|m| m.do_lower_case))
        .unwrap_or(true);
    let name = args
        .pretrained_model_name
        .clone()
        .or_else(|| from.and_then(|m| m.pretrained_model_name.clone()))
        .unwrap_or_else(|| {
            if do_lower_case {
                "megatron-bert-uncased".into()
            } else {
                "megatron-bert-cased".into()
            }
        });
    let dataset = from.map(|m| m.dataset.clone()).unwrap_or_default();
    let contents = NemoContents {
        config: &src.config,
        head: &head,
        weights: NemoWeights::Full(&src.full),
        tp_size: tp,
        pretrained_model_name: &name,
        vocab_file: &vocab_file,
        do_lower_case,
        label_names: labels.as_deref(),
        dataset,
        include_pooler: src.full.contains_key("pooler.dense.weight"),
        compression_level: DEFAULT_COMPRESSION,
    };
    nemo::write_nemo(&args.output, &contents)
}

/// The NeMo default head for the requested task.
fn head_for(args: &ConvertArgs, labels: Option<&[String]>) -> Result<HeadConfig> {
    let invalid = |m: String| CheckpointError::invalid(&args.input, m);
    let task = args.task.ok_or_else(|| {
        invalid(
            "a Megatron-LM checkpoint has no task head: choose the task of the .nemo (--task \
             question-answering, token-classification or text-classification)"
                .into(),
        )
    })?;
    Ok(match task {
        NemoTask::QuestionAnswering => HeadConfig::question_answering(),
        NemoTask::TokenClassification => {
            let n = labels.map(|l| l.len() as i64).ok_or_else(|| {
                invalid(
                    "token classification needs the label names (--labels), pad label first".into(),
                )
            })?;
            HeadConfig::token_classification(n)
        }
        NemoTask::TextClassification => {
            let n = args
                .num_classes
                .or(labels.map(|l| l.len() as i64))
                .ok_or_else(|| {
                    invalid(
                        "text classification needs --num-classes or the class names (--labels)"
                            .into(),
                    )
                })?;
            HeadConfig::sequence_classification(n)
        }
    })
}

fn count_vocab(path: &Path) -> Result<i64> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as i64)
}

/// `shallow_copy` for a state dict (tensors share storage).
trait ShallowCopy {
    fn shallow_copy(&self) -> Self;
}

impl ShallowCopy for StateDict {
    fn shallow_copy(&self) -> Self {
        self.iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    }
}
