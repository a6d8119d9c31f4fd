//! Writer of zip `torch.save` files (the PyTorch >= 1.6 container).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::error::{PickleError, Result};
use crate::pickler::Pickler;
use crate::storage::tensor_bytes;
use crate::value::Value;

/// Storage entries start on this boundary, as PyTorch writes them (so
/// readers can memory-map them).
const ALIGNMENT: u16 = 64;
const ARCHIVE: &str = "archive";

/// Writes `value` to `path` so that `torch.load(path, weights_only=True)`
/// reads it back (objects other than dicts, lists, tuples, scalars and
/// tensors need `weights_only=False` or `add_safe_globals`). Tensors are
/// stored contiguously, one storage each; the file is written to a
/// temporary name and renamed, so readers never see half a file.
pub fn save(path: &Path, value: &Value) -> Result<()> {
    let pickled = Pickler::encode(value).map_err(|e| e.in_file(path, None))?;
    let tmp = path.with_extension("tmp-write");
    let io = |e: std::io::Error| PickleError::io(&tmp, e);
    let zerr = |e: zip::result::ZipError| PickleError::io(&tmp, std::io::Error::other(e));
    let file = File::create(&tmp).map_err(io)?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let opts = |size: usize| {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .with_alignment(ALIGNMENT)
            .large_file(size as u64 >= u32::MAX as u64)
    };
    let entry = |zip: &mut ZipWriter<_>, name: &str, bytes: &[u8]| -> Result<()> {
        zip.start_file(format!("{ARCHIVE}/{name}"), opts(bytes.len()))
            .map_err(zerr)?;
        zip.write_all(bytes).map_err(io)
    };
    entry(&mut zip, "data.pkl", &pickled.out)?;
    entry(&mut zip, ".format_version", b"1")?;
    entry(&mut zip, ".storage_alignment", b"64")?;
    entry(&mut zip, "byteorder", b"little")?;
    for (i, t) in pickled.storages.iter().enumerate() {
        entry(&mut zip, &format!("data/{i}"), tensor_bytes(t))?;
    }
    entry(&mut zip, "version", b"3\n")?;
    let mut out = zip.finish().map_err(zerr)?;
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| PickleError::io(path, e))
}
