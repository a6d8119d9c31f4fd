//! The protobuf messages of a TensorBoard event file, as far as scalars need
//! them: `tensorflow.Event` (event.proto) and `tensorflow.Summary`
//! (summary.proto), with TensorFlow's field numbers.

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step of the event.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`: the payload of an event.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The file format version, `brain.Event:2`; the first record of a file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Summary values (scalars).
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: values logged at one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` holding a scalar (`simple_value`, the form
/// PyTorch's `SummaryWriter.add_scalar` writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// The series name, e.g. `train/loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar (field 2 of the `value` oneof; presence is explicit).
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}
