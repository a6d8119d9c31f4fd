//! `torch.save` files in Rust: a reader of the zip (PyTorch >= 1.6) and
//! legacy containers and a writer of the zip container.
//!
//! The reader is a pickle VM (named [`OpCode`]s, one method per group of
//! them) that tolerates unknown classes (they become [`Value::Object`]) and
//! reads each storage once, straight from the file into tensor memory;
//! tensors sharing a storage stay views of it. Errors are [`PickleError`]s
//! naming the file and what is wrong with it.

mod error;
mod legacy_reader;
mod opcode;
mod pickler;
mod rebuild;
mod storage;
mod unpickler;
mod value;
mod zip_reader;
mod zip_writer;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use error::{PickleError, Result};
pub use opcode::OpCode;
pub use value::{Dict, Object, StorageRef, Value, dtype_from_name, dtype_name, key_text};
pub use zip_writer::save;

/// Which `torch.save` container a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// PyTorch >= 1.6 zip archive.
    Zip,
    /// Pre-1.6 pickle stream (`_use_new_zipfile_serialization=False`).
    Legacy,
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::Zip => "zip",
            Container::Legacy => "legacy",
        })
    }
}

/// Detects the container of `path` from its first bytes.
pub fn detect(path: &Path) -> Result<Container> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(|e| PickleError::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| PickleError::io(path, e))?;
    match &head[..n] {
        [b'P', b'K', 3, 4] => Ok(Container::Zip),
        // PROTO 2..=5, then LONG1 (the legacy magic number).
        [0x80, 2..=5, 0x8a, ..] => Ok(Container::Legacy),
        _ => Err(
            PickleError::NotATorchFile("neither a zip archive nor a legacy pickle stream")
                .in_file(path, None),
        ),
    }
}

/// Loads the object stored in a `torch.save` file of either container.
pub fn load(path: &Path) -> Result<(Value, Container)> {
    let container = detect(path)?;
    let file = File::open(path).map_err(|e| PickleError::io(path, e))?;
    let value = match container {
        Container::Zip => zip_reader::load(path, file)?,
        Container::Legacy => legacy_reader::load(path, file)?,
    };
    Ok((value, container))
}
