//! Benchmarks (ignored by default; run with `--ignored --nocapture`, in release): published-model resolution and checkpoint save/resume, each printed as ratios against a reference run.

#[path = "../support/mod.rs"]
mod support;

mod published;
mod resume;
