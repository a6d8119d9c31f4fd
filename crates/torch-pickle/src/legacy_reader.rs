//! Reader of the legacy (PyTorch < 1.6) `torch.save` stream: pickled magic
//! number, protocol version, sys info, the object, the storage keys, then
//! each storage's raw bytes preceded by its element count.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{PickleError, Result};
use crate::storage::RawStorage;
use crate::unpickler::unpickle;
use crate::value::{StorageRef, Value};
use crate::zip_reader::{storage_numel, storage_type_kind};

/// `0x1950a86a20f9469cfc6c` as pickled (little-endian).
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Loads the object stored in a legacy-format `torch.save` file.
pub fn load(path: &Path, file: File) -> Result<Value> {
    let in_file = |e: PickleError| e.in_file(path, None);
    let in_part = |part: &'static str| move |e: PickleError| e.in_file(path, Some(part));
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut no_pid = |pid: Value| Err(PickleError::UnexpectedPersistentId(format!("{pid:?}")));
    let magic = unpickle(&mut reader, &mut no_pid).map_err(in_part("header"))?;
    if !matches!(&magic, Value::BigInt(b) if b[..] == MAGIC) {
        return Err(in_file(PickleError::NotATorchFile(
            "legacy magic number missing",
        )));
    }
    let proto = unpickle(&mut reader, &mut no_pid).map_err(in_part("header"))?;
    if proto.as_i64() != Some(PROTOCOL_VERSION) {
        return Err(in_file(PickleError::UnsupportedLegacyVersion(format!(
            "{proto:?}"
        ))));
    }
    let sys_info = unpickle(&mut reader, &mut no_pid).map_err(in_part("sys info"))?;
    let big_endian = sys_info.get("little_endian").and_then(Value::as_bool) == Some(false);

    let mut storages: HashMap<String, RawStorage> = HashMap::new();
    let mut persistent = |pid: Value| -> Result<Value> {
        let unexpected = || PickleError::UnexpectedPersistentId(format!("{pid:?}"));
        let items = pid.as_list().ok_or_else(unexpected)?;
        match items {
            [tag, ..] if tag.as_str() == Some("module") => Ok(Value::None),
            [tag, ty, key, _location, numel, view @ ..] if tag.as_str() == Some("storage") => {
                let kind = storage_type_kind(ty)?;
                let key = key
                    .as_str()
                    .ok_or_else(|| PickleError::BadStorageKey(format!("{key:?}")))?
                    .to_string();
                let numel = storage_numel(numel)?;
                if !storages.contains_key(&key) {
                    let raw = RawStorage::alloc(kind, numel)
                        .map_err(|e| PickleError::tensor(format!("allocating storage {key}"), e))?;
                    storages.insert(key.clone(), raw);
                }
                let typed = &storages[&key].typed;
                match view.first() {
                    Some(Value::Tuple(v)) if v.len() == 3 => {
                        let bad = |problem| PickleError::BadStorageView {
                            view: format!("{v:?}"),
                            problem,
                        };
                        let (Some(off), Some(len)) = (v[1].as_i64(), v[2].as_i64()) else {
                            return Err(bad("malformed"));
                        };
                        if off < 0 || len < 0 || off + len > typed.numel() as i64 {
                            return Err(bad("out of range"));
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
            _ => Err(unexpected()),
        }
    };
    let value = unpickle(&mut reader, &mut persistent).map_err(in_part("object"))?;
    let keys = unpickle(&mut reader, &mut no_pid).map_err(in_part("storage keys"))?;
    let keys = keys
        .as_list()
        .ok_or_else(|| in_file(PickleError::BadStorageKeys(format!("{keys:?}"))))?;
    let mut filled = 0usize;
    for key in keys {
        let key = key
            .as_str()
            .ok_or_else(|| in_file(PickleError::BadStorageKey(format!("{key:?}"))))?;
        let raw = storages
            .get(key)
            .ok_or_else(|| in_file(PickleError::UnusedStorage(key.to_string())))?;
        let read_error = |source| {
            in_file(PickleError::StorageRead {
                name: key.to_string(),
                source,
            })
        };
        let mut count = [0u8; 8];
        reader.read_exact(&mut count).map_err(read_error)?;
        let count = if big_endian {
            i64::from_be_bytes(count)
        } else {
            i64::from_le_bytes(count)
        };
        if count != raw.typed.numel() as i64 {
            return Err(in_file(PickleError::StorageCountMismatch {
                key: key.to_string(),
                count,
                expected: raw.typed.numel() as i64,
            }));
        }
        raw.fill_from(&mut reader, big_endian).map_err(read_error)?;
        filled += 1;
    }
    if filled != storages.len() {
        return Err(in_file(PickleError::MissingStorages {
            used: storages.len(),
            stored: filled,
        }));
    }
    Ok(value)
}
