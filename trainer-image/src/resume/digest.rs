//! Size and sha256 of a local file (the manifest's checks, without a copy).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `(size, lowercase hex sha256)` of the file at `path`.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}
