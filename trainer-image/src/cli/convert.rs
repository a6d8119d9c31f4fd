//! `megatron-trainer convert`: Megatron-LM checkpoint <-> .nemo, and
//! changes of tensor-parallel size (one process, no GPU).

use std::path::PathBuf;

use clap::Args;
use megatron_trainer::checkpoint::convert::{self, CheckpointFormat, ConvertArgs as Convert};
use megatron_trainer::checkpoint::nemo::NemoTask;
use megatron_trainer::job::{JobError, JobResult};
use megatron_trainer::model::BertConfig;

/// `convert` arguments.
#[derive(Args, Clone, Debug)]
pub struct ConvertArgs {
    /// A Megatron-LM checkpoint (root, iteration directory or .pt) or a .nemo.
    pub input: PathBuf,
    /// A .nemo path or a Megatron-LM checkpoint root directory.
    pub output: PathBuf,
    /// Tensor-parallel size of the output (default: the input's).
    #[arg(long, value_name = "N")]
    pub tensor_parallel_size: Option<i64>,
    /// Task head of a .nemo written from a Megatron-LM checkpoint:
    /// question-answering, token-classification or text-classification.
    #[arg(long)]
    pub task: Option<String>,
    /// Label names in id order, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Classes of a text-classification head without label names.
    #[arg(long)]
    pub num_classes: Option<i64>,
    /// The tokenizer vocab.txt (needed for a .nemo from a Megatron-LM checkpoint).
    #[arg(long, value_name = "FILE")]
    pub vocab_file: Option<PathBuf>,
    /// Lower-case text before tokenizing (default: from the name or the input).
    #[arg(long)]
    pub do_lower_case: Option<bool>,
    /// NeMo's pretrained_model_name to record.
    #[arg(long)]
    pub pretrained_model_name: Option<String>,
    /// Architecture of a Megatron-LM checkpoint without args (Megatron JSON or NeMo YAML).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Output format when the path does not tell (megatron or nemo).
    #[arg(long)]
    pub output_format: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `convert`; returns the exit code.
pub fn run(args: &ConvertArgs) -> JobResult<i32> {
    let task = args
        .task
        .as_deref()
        .map(|t| {
            t.parse::<NemoTask>()
                .map_err(|e| JobError::invalid(format!("--task: {e}")))
        })
        .transpose()?;
    let output_format = match args.output_format.as_deref() {
        None => None,
        Some("megatron") => Some(CheckpointFormat::Megatron),
        Some("nemo") => Some(CheckpointFormat::Nemo),
        Some(other) => {
            return Err(JobError::invalid(format!(
                "--output-format {other:?}: use megatron or nemo"
            )));
        }
    };
    let config = match &args.config_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| JobError::invalid(format!("--config-file {}: {e}", path.display())))?;
            Some(
                BertConfig::from_json_or_yaml(&text).map_err(|e| {
                    JobError::invalid(format!("--config-file {}: {e}", path.display()))
                })?,
            )
        }
    };
    let report = convert::convert(&Convert {
        input: args.input.clone(),
        output: args.output.clone(),
        output_format,
        tensor_parallel_size: args.tensor_parallel_size,
        task,
        labels: args.labels.clone(),
        num_classes: args.num_classes,
        vocab_file: args.vocab_file.clone(),
        do_lower_case: args.do_lower_case,
        pretrained_model_name: args.pretrained_model_name.clone(),
        config,
        scratch_dir: None,
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|source| JobError::EncodeJson {
                what: "the convert report",
                source,
            })?
        );
    } else {
        println!(
            "converted {} ({:?}, tensor-parallel {}) to {} ({:?}, tensor-parallel {})",
            args.input.display(),
            report.input_format,
            report.input_tensor_parallel_size,
            report.output.display(),
            report.output_format,
            report.output_tensor_parallel_size
        );
        if !report.dropped.is_empty() {
            println!("not carried over: {}", report.dropped.join(", "));
        }
    }
    Ok(0)
}
