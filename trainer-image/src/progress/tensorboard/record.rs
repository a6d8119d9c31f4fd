//! TFRecord framing: each record is its length (u64, little endian), the
//! masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the
//! data.

use std::io::{self, Write};

/// TensorFlow's CRC mask: rotate right by 15 bits and add a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes `data` as one TFRecord.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc(data).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_length_data_and_masked_crcs() {
        let mut out = Vec::new();
        write_record(&mut out, b"123456789").unwrap();
        assert_eq!(out.len(), 8 + 4 + 9 + 4);
        assert_eq!(&out[..8], &9u64.to_le_bytes());
        assert_eq!(&out[12..21], b"123456789");
        // The CRC-32C check value of "123456789" is 0xe3069283; rotated right by
        // 15 bits plus 0xa282ead8 (mod 2^32) that is 0xc78ab0e5.
        assert_eq!(&out[21..], &0xc78a_b0e5u32.to_le_bytes());
    }
}
