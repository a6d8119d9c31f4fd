//! Reader of the zip `torch.save` container (PyTorch >= 1.6):
//! `<top>/data.pkl`, `<top>/data/<key>`, `<top>/byteorder`, `<top>/version`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use tch::Tensor;
use zip::ZipArchive;

use super::storage::{RawStorage, storage_kind};
use super::unpickler::unpickle;
use super::value::{StorageRef, Value};
use crate::checkpoint::error::{CheckpointError, Result};

/// Loads the object stored in a zip-format `torch.save` file.
pub fn load(path: &Path, file: File) -> Result<Value> {
    let fmt = |m: String| CheckpointError::format(path, m);
    let mut archive = ZipArchive::new(BufReader::with_capacity(1 << 16, file))
        .map_err(|e| fmt(format!("not a readable zip archive: {e}")))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.to_string())
        .ok_or_else(|| fmt("zip archive has no data.pkl: not a torch.save file".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let big_endian = match read_entry(&mut archive, &format!("{prefix}byteorder")) {
        Some(Ok(b)) => match b.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(fmt(format!(
                    "unknown byteorder {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        },
        _ => false,
    };
    let pkl = read_entry(&mut archive, &pkl_name)
        .unwrap_or_else(|| Err(format!("{pkl_name} missing")))
        .map_err(fmt)?;

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut persistent = |pid: Value| -> std::result::Result<Value, String> {
        let (kind, key, numel) = parse_pid(&pid)?;
        if let Some(t) = storages.get(&key) {
            return Ok(Value::Storage(StorageRef::whole(t.shallow_clone())));
        }
        let entry_name = format!("{prefix}data/{key}");
        let mut entry = archive
            .by_name(&entry_name)
            .map_err(|e| format!("storage {entry_name}: {e}"))?;
        let raw = RawStorage::alloc(kind, numel)
            .map_err(|e| format!("allocating storage {key} ({numel} x {kind:?}): {e}"))?;
        if entry.size() < raw.nbytes() as u64 {
            return Err(format!(
                "storage {entry_name} holds {} bytes, the pickle expects {}",
                entry.size(),
                raw.nbytes()
            ));
        }
        raw.fill_from(&mut entry, big_endian)
            .map_err(|e| format!("reading storage {entry_name}: {e}"))?;
        storages.insert(key, raw.typed.shallow_clone());
        Ok(Value::Storage(StorageRef::whole(raw.typed)))
    };
    unpickle(&mut Cursor::new(pkl), &mut persistent).map_err(|m| fmt(format!("{pkl_name}: {m}")))
}

fn read_entry<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    name: &str,
) -> Option<std::result::Result<Vec<u8>, String>> {
    let mut entry = archive.by_name(name).ok()?;
    let mut buf = Vec::new();
    Some(
        entry
            .read_to_end(&mut buf)
            .map(|_| buf)
            .map_err(|e| format!("reading {name}: {e}")),
    )
}

/// Parses `('storage', torch.<X>Storage, key, location, numel)`.
fn parse_pid(pid: &Value) -> std::result::Result<(tch::Kind, String, i64), String> {
    let items = pid
        .as_list()
        .ok_or_else(|| format!("unexpected persistent id {pid:?}"))?;
    match items {
        [tag, ty, key, _location, numel, ..] if tag.as_str() == Some("storage") => {
            let kind = storage_type_kind(ty)?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key {other:?} is not a string")),
            };
            let numel = numel
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("storage size {numel:?} is not a count"))?;
            Ok((kind, key, numel))
        }
        _ => Err(format!("unexpected persistent id {pid:?}")),
    }
}

/// The element kind of a storage type global (`torch.HalfStorage`).
pub fn storage_type_kind(ty: &Value) -> std::result::Result<tch::Kind, String> {
    match ty {
        Value::Global { name, .. } => {
            storage_kind(name).ok_or_else(|| format!("unsupported storage type {name}"))
        }
        other => other
            .as_dtype()
            .ok_or_else(|| format!("storage type {other:?} is not a torch storage class")),
    }
}
