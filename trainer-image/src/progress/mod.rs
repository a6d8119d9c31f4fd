//! Progress and observability of a run: [`Reporter`] turns the training
//! loop's figures into structured logs, Prometheus metrics on `/metrics`,
//! TensorBoard event files and the MegatronFineTune status the operator reads
//! (progress with lastStepTime for hang detection, metrics, checkpoints,
//! artifacts and the attempt's result; see docs/operator.md, "The trainer
//! contract").

mod background;
mod client;
mod config;
mod http;
pub mod log_tee;
mod logging;
pub mod metrics;
pub mod model_status;
mod reporter;
pub mod status;
pub mod tensorboard;
pub mod trainer_status;

pub use background::BackgroundError;
pub use client::KubeClientError;
pub use config::{JobRef, ReporterConfig};
pub use metrics::TrainerMetrics;
pub use model_status::{MODEL_FIELD_MANAGER, ModelStatusWriter};
pub use reporter::{Reporter, ReportingError};
pub use status::{FIELD_MANAGER, StatusWaitError};
pub use tensorboard::EventWriter;
pub use trainer_status::TrainerStatus;
