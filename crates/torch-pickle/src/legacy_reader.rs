//! Reader of the legacy (PyTorch < 1.6) `torch.save` stream: pickled magic
//! number, protocol version, sys info, the object, the storage keys, then
//! each storage's raw bytes preceded by its element count.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::storage::RawStorage;
use super::unpickler::unpickle;
use super::value::{StorageRef, Value};
use super::zip_reader::storage_type_kind;
use crate::checkpoint::error::{CheckpointError, Result};

/// `0x1950a86a20f9469cfc6c` as pickled (little-endian).
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Loads the object stored in a legacy-format `torch.save` file.
pub fn load(path: &Path, file: File) -> Result<Value> {
    let fmt = |m: String| CheckpointError::format(path, m);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut no_pid = |pid: Value| Err(format!("unexpected persistent id {pid:?} in the header"));
    let magic = unpickle(&mut reader, &mut no_pid).map_err(|m| fmt(format!("header: {m}")))?;
    if !matches!(&magic, Value::BigInt(b) if b[..] == MAGIC) {
        return Err(fmt(
            "not a torch.save file (legacy magic number missing)".into()
        ));
    }
    let proto = unpickle(&mut reader, &mut no_pid).map_err(|m| fmt(format!("header: {m}")))?;
    if proto.as_i64() != Some(PROTOCOL_VERSION) {
        return Err(fmt(format!(
            "unsupported legacy protocol version {proto:?}"
        )));
    }
    let sys_info = unpickle(&mut reader, &mut no_pid).map_err(|m| fmt(format!("sys info: {m}")))?;
    let big_endian = sys_info.get("little_endian").and_then(Value::as_bool) == Some(false);

    let mut storages: HashMap<String, RawStorage> = HashMap::new();
    let mut persistent = |pid: Value| -> std::result::Result<Value, String> {
        let items = pid
            .as_list()
            .ok_or_else(|| format!("unexpected persistent id {pid:?}"))?;
        match items {
            [tag, ..] if tag.as_str() == Some("module") => Ok(Value::None),
            [tag, ty, key, _location, numel, view @ ..] if tag.as_str() == Some("storage") => {
                let kind = storage_type_kind(ty)?;
                let key = key
                    .as_str()
                    .ok_or_else(|| format!("storage key {key:?} is not a string"))?
                    .to_string();
                let numel = numel
                    .as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("storage size {numel:?} is not a count"))?;
                if !storages.contains_key(&key) {
                    let raw = RawStorage::alloc(kind, numel)
                        .map_err(|e| format!("allocating storage {key}: {e}"))?;
                    storages.insert(key.clone(), raw);
                }
                let typed = &storages[&key].typed;
                match view.first() {
                    Some(Value::Tuple(v)) if v.len() == 3 => {
                        let (off, len) = (v[1].as_i64(), v[2].as_i64());
                        let (Some(off), Some(len)) = (off, len) else {
                            return Err(format!("bad storage view {v:?}"));
                        };
                        if off < 0 || len < 0 || off + len > typed.numel() as i64 {
                            return Err(format!("storage view {v:?} is out of range"));
                        }
                        Ok(Value::Storage(StorageRef {
                            data: typed.shallow_clone(),
                            offset: off,
                            numel: len,
                        }))
                    }
                    _ => Ok(Value::Storage(StorageRef::whole(typed.shallow_clone()))),
                }
            }
            _ => Err(format!("unexpected persistent id {pid:?}")),
        }
    };
    let value = unpickle(&mut reader, &mut persistent).map_err(|m| fmt(format!("object: {m}")))?;
    let keys = unpickle(&mut reader, &mut no_pid).map_err(|m| fmt(format!("storage keys: {m}")))?;
    let keys = keys
        .as_list()
        .ok_or_else(|| fmt(format!("storage key list is {keys:?}")))?;
    let mut filled = 0usize;
    for key in keys {
        let key = key
            .as_str()
            .ok_or_else(|| fmt(format!("storage key {key:?}")))?;
        let raw = storages
            .get(key)
            .ok_or_else(|| fmt(format!("storage {key} is listed but never used")))?;
        let mut count = [0u8; 8];
        reader
            .read_exact(&mut count)
            .map_err(|e| fmt(format!("storage {key}: {e}")))?;
        let count = if big_endian {
            i64::from_be_bytes(count)
        } else {
            i64::from_le_bytes(count)
        };
        if count != raw.typed.numel() as i64 {
            return Err(fmt(format!(
                "storage {key} has {count} elements in the file, the pickle expects {}",
                raw.typed.numel()
            )));
        }
        raw.fill_from(&mut reader, big_endian)
            .map_err(|e| fmt(format!("storage {key}: {e}")))?;
        filled += 1;
    }
    if filled != storages.len() {
        return Err(fmt(format!(
            "{} storages are used but only {filled} are stored",
            storages.len()
        )));
    }
    Ok(value)
}
