//! Progress reporting: logs, /metrics, status writes and TensorBoard events.

#[path = "../support/mod.rs"]
mod support;

mod logs;
mod metrics;
mod status;
mod tensorboard;
