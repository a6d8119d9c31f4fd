//! Job wiring shared by the subcommands: the configuration (manifest or
//! bare spec) and its overrides, the rank identity, inputs resolved to local
//! files (S3 downloads), output locations, the tokenizer and the starting
//! model, the local launcher that spawns one process per rank, and the end
//! of a rank's life under the operator.

pub mod config;
pub mod error;
pub mod hooks;
pub mod inputs;
pub mod launch;
pub mod log_output;
pub mod model_source;
pub mod outputs;
pub mod overrides;
pub mod published_weights;
pub mod rank;
pub mod s3;
pub mod stop_signal;
pub mod termination;

pub use config::{JobConfig, config_path, load_config, parse_config};
pub use crds::Allow;
pub use error::{JobError, JobResult, STORAGE_FIX, SpecError};
pub use hooks::{Publish, RunHooks};
pub use inputs::Inputs;
pub use log_output::RunLogFile;
pub use model_source::{StartingPoint, Weights, starting_point, warn_random_init};
pub use outputs::Outputs;
pub use overrides::SpecOverrides;
pub use published_weights::FetchContext;
pub use rank::{LaunchLayout, RankIdentity, Role, role};
