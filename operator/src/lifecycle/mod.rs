//! Lifecycle of a job: the gang's observed health, the operator's status model, and the
//! decision of what happens next.

pub mod decide;
pub mod gang;
pub mod grace;
pub mod model;
