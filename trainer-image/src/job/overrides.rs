//! Command-line overrides of the spec, for local runs (`--train-data`,
//! `--nemo`, `--max-steps`, ...). Relative paths are made absolute, since
//! spec locations are `s3://` or absolute paths.

use std::path::PathBuf;

use clap::Args;
use crds::{MegatronCheckpoint, MegatronFineTuneSpec, Uri};

use super::error::{JobError, JobResult};

/// Spec fields settable from the command line.
#[derive(Args, Clone, Debug, Default)]
pub struct SpecOverrides {
    /// Training split (spec.data.train): a path or s3://bucket/key.
    #[arg(long, value_name = "URI")]
    pub train_data: Option<String>,
    /// Validation split (spec.data.validation).
    #[arg(long, value_name = "URI")]
    pub validation_data: Option<String>,
    /// Test split (spec.data.test).
    #[arg(long, value_name = "URI")]
    pub test_data: Option<String>,
    /// TokenClassification labels of the training split (spec.data.trainLabels).
    #[arg(long, value_name = "URI")]
    pub train_labels: Option<String>,
    /// TokenClassification labels of the validation split (spec.data.validationLabels).
    #[arg(long, value_name = "URI")]
    pub validation_labels: Option<String>,
    /// TokenClassification labels of the test split (spec.data.testLabels).
    #[arg(long, value_name = "URI")]
    pub test_labels: Option<String>,
    /// Pretrained Megatron-LM or Hugging Face checkpoint (spec.model.checkpoint.location).
    #[arg(long, value_name = "URI")]
    pub checkpoint: Option<String>,
    /// A .nemo to start from or evaluate (spec.model.nemo; replaces the other model sources).
    #[arg(long, value_name = "URI")]
    pub nemo: Option<String>,
    /// Optimizer steps (spec.training.maxSteps; clears maxEpochs).
    #[arg(long)]
    pub max_steps: Option<i64>,
    /// Passes over the training data (spec.training.maxEpochs; clears maxSteps).
    #[arg(long)]
    pub max_epochs: Option<i64>,
    /// Seed (spec.training.seed).
    #[arg(long)]
    pub seed: Option<i64>,
}

fn uri(flag: &str, value: &str) -> JobResult<Uri> {
    if value.starts_with("s3://") {
        return Ok(Uri(value.to_owned()));
    }
    let path = PathBuf::from(value);
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| JobError::io("reading the current directory", e))?
            .join(path)
    };
    let text = path
        .to_str()
        .ok_or_else(|| JobError::invalid(format!("--{flag}: {} is not UTF-8", path.display())))?;
    Ok(Uri(text.to_owned()))
}

impl SpecOverrides {
    /// Applies the flags to `spec`.
    pub fn apply(&self, spec: &mut MegatronFineTuneSpec) -> JobResult<()> {
        let d = &mut spec.data;
        for (flag, value, slot) in [
            ("train-data", &self.train_data, &mut d.train),
            ("validation-data", &self.validation_data, &mut d.validation),
            ("test-data", &self.test_data, &mut d.test),
            ("train-labels", &self.train_labels, &mut d.train_labels),
            (
                "validation-labels",
                &self.validation_labels,
                &mut d.validation_labels,
            ),
            ("test-labels", &self.test_labels, &mut d.test_labels),
        ] {
            if let Some(v) = value {
                *slot = Some(uri(flag, v)?);
            }
        }
        if let Some(v) = &self.checkpoint {
            spec.model.checkpoint = Some(MegatronCheckpoint {
                location: uri("checkpoint", v)?,
                iteration: None,
            });
        }
        if let Some(v) = &self.nemo {
            let m = &mut spec.model;
            m.nemo = Some(uri("nemo", v)?);
            m.pretrained = None;
            m.checkpoint = None;
            m.config = None;
            m.config_file = None;
            spec.tokenizer = None;
        }
        let t = &mut spec.training;
        if let Some(s) = self.max_steps {
            t.max_steps = Some(s);
            t.max_epochs = None;
        }
        if let Some(e) = self.max_epochs {
            t.max_epochs = Some(e);
            t.max_steps = None;
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        Ok(())
    }
}
