//! Reader of the zip `torch.save` container (PyTorch >= 1.6):
//! `<top>/data.pkl`, `<top>/data/<key>`, `<top>/byteorder`, `<top>/version`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use tch::Tensor;
use zip::ZipArchive;
use zip::result::ZipError;

use crate::error::{PickleError, Result};
use crate::storage::{RawStorage, storage_kind};
use crate::unpickler::unpickle;
use crate::value::{StorageRef, Value};

/// Loads the object stored in a zip-format `torch.save` file.
pub fn load(path: &Path, file: File) -> Result<Value> {
    let in_file = |e: PickleError| e.in_file(path, None);
    let mut archive = ZipArchive::new(BufReader::with_capacity(1 << 16, file))
        .map_err(|e| in_file(PickleError::Zip(e)))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.to_string())
        .ok_or_else(|| in_file(PickleError::NotATorchFile("zip archive has no data.pkl")))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let big_endian = match read_entry(&mut archive, &format!("{prefix}byteorder")) {
        Ok(b) => match b.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => {
                let order = String::from_utf8_lossy(other).into_owned();
                return Err(in_file(PickleError::UnknownByteOrder(order)));
            }
        },
        Err(_) => false,
    };
    let pkl = read_entry(&mut archive, &pkl_name).map_err(|source| {
        in_file(PickleError::Entry {
            name: pkl_name.clone(),
            source,
        })
    })?;

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut persistent = |pid: Value| -> Result<Value> {
        let (kind, key, numel) = parse_pid(&pid)?;
        if let Some(t) = storages.get(&key) {
            return Ok(Value::Storage(StorageRef::whole(t.shallow_clone())));
        }
        let entry_name = format!("{prefix}data/{key}");
        let mut entry =
            archive
                .by_name(&entry_name)
                .map_err(|source| PickleError::MissingStorage {
                    name: entry_name.clone(),
                    source,
                })?;
        let raw = RawStorage::alloc(kind, numel).map_err(|e| {
            PickleError::tensor(format!("allocating storage {key} ({numel} x {kind:?})"), e)
        })?;
        if entry.size() < raw.nbytes() as u64 {
            return Err(PickleError::StorageTooSmall {
                name: entry_name,
                bytes: entry.size(),
                expected: raw.nbytes() as u64,
            });
        }
        raw.fill_from(&mut entry, big_endian)
            .map_err(|source| PickleError::StorageRead {
                name: entry_name.clone(),
                source,
            })?;
        storages.insert(key, raw.typed.shallow_clone());
        Ok(Value::Storage(StorageRef::whole(raw.typed)))
    };
    unpickle(&mut Cursor::new(pkl), &mut persistent).map_err(|e| e.in_file(path, Some(&pkl_name)))
}

/// The bytes of entry `name`.
fn read_entry<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    name: &str,
) -> std::result::Result<Vec<u8>, ZipError> {
    let mut entry = archive.by_name(name)?;
    let mut buf = Vec::new();
    entry.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Parses `('storage', torch.<X>Storage, key, location, numel)`.
fn parse_pid(pid: &Value) -> Result<(tch::Kind, String, i64)> {
    let items = pid
        .as_list()
        .ok_or_else(|| PickleError::UnexpectedPersistentId(format!("{pid:?}")))?;
    match items {
        [tag, ty, key, _location, numel, ..] if tag.as_str() == Some("storage") => {
            let kind = storage_type_kind(ty)?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(PickleError::BadStorageKey(format!("{other:?}"))),
            };
            Ok((kind, key, storage_numel(numel)?))
        }
        _ => Err(PickleError::UnexpectedPersistentId(format!("{pid:?}"))),
    }
}

/// A storage's element count (a non-negative integer).
pub fn storage_numel(numel: &Value) -> Result<i64> {
    numel
        .as_i64()
        .filter(|n| *n >= 0)
        .ok_or_else(|| PickleError::BadStorageSize(format!("{numel:?}")))
}

/// The element kind of a storage type global (`torch.HalfStorage`).
pub fn storage_type_kind(ty: &Value) -> Result<tch::Kind> {
    match ty {
        Value::Global { name, .. } => {
            storage_kind(name).ok_or_else(|| PickleError::UnsupportedStorage(name.clone()))
        }
        other => other
            .as_dtype()
            .ok_or_else(|| PickleError::UnsupportedStorage(format!("{other:?}"))),
    }
}
