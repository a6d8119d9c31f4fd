//! The fine-tuning loop: AdamW, learning-rate schedules, gradient clipping
//! across tensor-parallel shards, loss scaling, and the hooks through which
//! progress reporting and checkpointing observe a run.

pub mod clip;
pub mod config;
pub mod early_stop;
pub mod error;
pub mod fit;
pub mod hooks;
pub mod loss_scale;
pub mod optimizer;
pub mod precision;
pub mod schedule;
pub mod state;
pub mod throughput;

pub use config::TrainerConfig;
pub use error::{TrainError, TrainResult};
pub use fit::{FitOutcome, Trainer};
pub use hooks::{CheckpointRequest, SaveReason, StepStats, TrainHooks, TrainTask};
pub use state::{EarlyStopState, LossScaleState, OptimizerState, RngStates, TrainState};
