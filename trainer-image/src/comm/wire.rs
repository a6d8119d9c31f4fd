//! Little-endian framing helpers shared by the store and ring protocols.

use std::io::{self, Read, Write};

pub(crate) fn write_u8(w: &mut impl Write, v: u8) -> io::Result<()> {
    w.write_all(&[v])
}

pub(crate) fn write_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

pub(crate) fn write_bytes(w: &mut impl Write, v: &[u8]) -> io::Result<()> {
    write_u64(w, v.len() as u64)?;
    w.write_all(v)
}

pub(crate) fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a length-prefixed byte string of at most `max` bytes.
pub(crate) fn read_bytes(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let len = read_u64(r)? as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max} bytes"),
        ));
    }
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

pub(crate) fn read_string(r: &mut impl Read, max: usize) -> io::Result<String> {
    String::from_utf8(read_bytes(r, max)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
