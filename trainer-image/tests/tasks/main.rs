//! The four tasks: evaluation, learning, and metrics against their references.

#[path = "../support/mod.rs"]
mod support;

mod classification_metrics;
mod evaluate;
mod learning;
mod squad_metrics;
