//! TensorBoard event files (`events.out.tfevents.*`): TFRecord-framed
//! `tensorflow.Event` protobufs holding scalar summaries, readable by
//! TensorBoard and its `EventAccumulator`.

mod proto;
mod record;
mod writer;

pub use writer::{EventWriter, FILE_VERSION};
