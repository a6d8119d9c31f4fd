//! Helpers shared by the trainer's test binaries (one binary per area: each
//! `tests/<area>/main.rs` includes this folder with `#[path]`). Every binary
//! compiles all of it, so parts one area does not use are not dead code.
#![allow(dead_code)]

pub mod checkpoint_util;
pub mod cli_util;
pub mod common;
pub mod data_common;
pub mod model_util;
pub mod nemo_util;
pub mod resume_s3_util;
pub mod resume_util;
pub mod storage_util;
pub mod task_util;
pub mod temp_dir;
pub mod train_util;
