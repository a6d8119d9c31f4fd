//! The training loop: clipping, loss scaling, optimizer, precision, resume and trajectories against PyTorch.

#[path = "../support/mod.rs"]
mod support;

mod clip;
mod loss_scale;
mod optimizer;
mod precision;
mod resume;
mod stop;
mod trajectory;
