//! The megatron-operator library: the MegatronFineTune controller, its child builders, leader
//! election, metrics and HTTP endpoints. The `megatron-operator` binary is a thin CLI over it;
//! tests and benchmarks run the same controller in-process.

pub mod api;
pub mod api_writes;
pub mod children;
pub mod client;
pub mod config;
pub mod context;
pub mod controller;
pub mod error;
pub mod http;
pub mod job;
pub mod kueue;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod reconciler;
pub mod stores;
pub mod telemetry;

pub use config::OperatorConfig;
pub use controller::{Operator, RunError};
pub use metrics::Metrics;
