//! Arguments shared by `train`, `evaluate` and `predict`.

use std::path::PathBuf;

use clap::Args;
use crds::Initialization;
use megatron_trainer::job::{Allow, JobConfig, JobResult, SpecOverrides, config_path, load_config};

/// The job configuration and where its files go.
#[derive(Args, Clone, Debug, Default)]
pub struct JobArgs {
    /// A MegatronFineTune manifest or its spec, YAML or JSON (the operator
    /// mounts /etc/megatron/spec.yaml).
    #[arg(long, env = "MEGATRON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: SpecOverrides,
    /// Write checkpoints, artifacts and TensorBoard files under this local
    /// directory instead of the job's S3 root (the default under the operator).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Where s3:// inputs are downloaded (default: <output-dir>/cache, else
    /// /tmp/megatron-cache).
    #[arg(long, env = "MEGATRON_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Sets spec.model.initialization: Random: the encoder starts from random
    /// weights (tests, benchmarks).
    #[arg(long)]
    pub random_init: bool,
}

impl JobArgs {
    /// Loads the config, applies the overrides and `prepare`, and validates
    /// the result (`external_weights`: the model's weights come from elsewhere).
    pub fn load(
        &self,
        external_weights: bool,
        prepare: impl FnOnce(&mut JobConfig),
    ) -> JobResult<JobConfig> {
        let mut config = load_config(&config_path(self.config.clone())?)?;
        self.overrides.apply(&mut config.spec)?;
        if self.random_init {
            config.spec.model.initialization = Some(Initialization::Random);
        }
        prepare(&mut config);
        config.validate(Allow { external_weights })?;
        Ok(config)
    }

    /// The download cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        match (&self.cache_dir, &self.output_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(out)) => out.join("cache"),
            (None, None) => std::env::temp_dir().join("megatron-cache"),
        }
    }
}
