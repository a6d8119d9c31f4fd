//! A rank's work as a library, so the binary stays a thin command line: the
//! session every rank sets up (rendezvous, device, seed, starting model, data)
//! and the fine-tuning run.

pub mod fine_tune;
pub mod session;

pub use fine_tune::{RunOptions, fine_tune, predictions_name};
pub use session::{Loaded, Session, connect, load};
