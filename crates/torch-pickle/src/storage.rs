//! Storages: torch storage classes, and raw storage bytes read straight
//! into tensor memory (one copy from the file, no intermediate buffer).

use std::io::Read;

use tch::{Device, Kind, Tensor};

/// The element kind of a torch storage class (`FloatStorage`,
/// `torch.cuda.HalfStorage`, `UntypedStorage` = bytes).
pub fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" | "UntypedStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        _ => return None,
    })
}

/// The torch storage class name of a kind (`torch.<name>` in files).
pub fn storage_class(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "FloatStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Double => "DoubleStorage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Int16 => "ShortStorage",
        Kind::Int8 => "CharStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        Kind::ComplexFloat => "ComplexFloatStorage",
        Kind::ComplexDouble => "ComplexDoubleStorage",
        _ => return None,
    })
}

/// An allocated, not yet filled storage: `bytes` is a contiguous CPU byte
/// tensor, `typed` a 1-D view of the same memory with the storage's kind.
pub struct RawStorage {
    pub bytes: Tensor,
    pub typed: Tensor,
}

impl RawStorage {
    /// Allocates `numel` elements of `kind` (uninitialised).
    pub fn alloc(kind: Kind, numel: i64) -> Result<Self, tch::TchError> {
        let nbytes = numel * kind.elt_size_in_bytes() as i64;
        let bytes = Tensor::f_empty([nbytes], (Kind::Uint8, Device::Cpu))?;
        let typed = if kind == Kind::Uint8 {
            bytes.shallow_clone()
        } else {
            bytes.f_view_dtype(kind)?
        };
        Ok(Self { bytes, typed })
    }

    /// Number of bytes.
    pub fn nbytes(&self) -> usize {
        self.bytes.numel()
    }

    /// Fills the storage with exactly `nbytes()` bytes from `reader`,
    /// swapping bytes when the file is big-endian.
    pub fn fill_from(&self, reader: &mut dyn Read, big_endian: bool) -> std::io::Result<()> {
        let n = self.nbytes();
        if n == 0 {
            return Ok(());
        }
        // SAFETY: `bytes` is a contiguous CPU uint8 tensor of `n` elements that
        // this struct keeps alive; nothing else reads it while it is filled.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.bytes.data_ptr() as *mut u8, n) };
        reader.read_exact(buf)?;
        let width = self.typed.kind().elt_size_in_bytes();
        if big_endian && width > 1 {
            for chunk in buf.chunks_exact_mut(width) {
                chunk.reverse();
            }
        }
        Ok(())
    }
}

/// The raw little-endian bytes of a contiguous CPU tensor.
///
/// # Panics
/// Never for the tensors produced by [`contiguous_cpu`].
pub fn tensor_bytes(t: &Tensor) -> &[u8] {
    let n = t.numel() * t.kind().elt_size_in_bytes();
    if n == 0 {
        return &[];
    }
    assert!(t.is_contiguous() && t.device() == Device::Cpu);
    // SAFETY: contiguous CPU tensor of `n` bytes, borrowed for the slice's life.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, n) }
}

/// `t` as a contiguous CPU tensor (shared when it already is one).
pub fn contiguous_cpu(t: &Tensor) -> Tensor {
    let t = if t.device() == Device::Cpu {
        t.shallow_clone()
    } else {
        t.to_device(Device::Cpu)
    };
    if t.is_contiguous() { t } else { t.contiguous() }
}
