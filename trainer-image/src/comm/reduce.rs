//! Element-wise sums on raw tensor bytes, per dtype. Each addition rounds to
//! the tensor's dtype (f16/bf16 add in f32 and round to nearest even, like
//! PyTorch's CPU kernels), so a sum's result depends only on its order.

use tch::Kind;

/// The dtypes the TCP ring can sum, with their element size in bytes.
pub(crate) fn element_size(kind: Kind) -> Option<usize> {
    Some(match kind {
        Kind::Float | Kind::Int => 4,
        Kind::Double | Kind::Int64 => 8,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        Kind::Int8 | Kind::Uint8 | Kind::Bool => 1,
        _ => return None,
    })
}

/// Whether `kind` supports summation (booleans can be gathered and broadcast only).
pub(crate) fn summable(kind: Kind) -> bool {
    kind != Kind::Bool && element_size(kind).is_some()
}

/// Views bytes as `T`s. Panics only on a programming error (misaligned or ragged buffer).
fn cast_mut<T>(b: &mut [u8]) -> &mut [T] {
    // SAFETY: every T here is a plain number type valid for any bit pattern.
    let (head, body, tail) = unsafe { b.align_to_mut::<T>() };
    assert!(
        head.is_empty() && tail.is_empty(),
        "misaligned reduce buffer"
    );
    body
}

fn cast<T>(b: &[u8]) -> &[T] {
    // SAFETY: as in `cast_mut`.
    let (head, body, tail) = unsafe { b.align_to::<T>() };
    assert!(
        head.is_empty() && tail.is_empty(),
        "misaligned reduce buffer"
    );
    body
}

fn add_with<T: Copy>(dst: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T) {
    for (d, s) in cast_mut::<T>(dst).iter_mut().zip(cast::<T>(src)) {
        *d = f(*d, *s);
    }
}

/// `dst[i] = dst[i] + src[i]` for the elements of `kind`. Both slices hold
/// whole, aligned elements of the same count.
pub(crate) fn add_into(kind: Kind, dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    match kind {
        Kind::Float => add_with::<f32>(dst, src, |a, b| a + b),
        Kind::Double => add_with::<f64>(dst, src, |a, b| a + b),
        Kind::Half => add_with::<half::f16>(dst, src, |a, b| {
            half::f16::from_f32(a.to_f32() + b.to_f32())
        }),
        Kind::BFloat16 => add_with::<half::bf16>(dst, src, |a, b| {
            half::bf16::from_f32(a.to_f32() + b.to_f32())
        }),
        Kind::Int64 => add_with::<i64>(dst, src, i64::wrapping_add),
        Kind::Int => add_with::<i32>(dst, src, i32::wrapping_add),
        Kind::Int16 => add_with::<i16>(dst, src, i16::wrapping_add),
        Kind::Int8 => add_with::<i8>(dst, src, i8::wrapping_add),
        Kind::Uint8 => add_with::<u8>(dst, src, u8::wrapping_add),
        other => unreachable!("add_into called with unsupported dtype {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_sum_matches_torch_rounding() {
        let a = tch::Tensor::from_slice(&[1.0f32, 3.0e-3, -7.5, 1e30]).to_kind(Kind::BFloat16);
        let b = tch::Tensor::from_slice(&[1.0e-3f32, 1.0, 0.126, 1e30]).to_kind(Kind::BFloat16);
        let expected = (&a + &b).to_kind(Kind::Float);
        let mut da = vec![0u8; 8];
        let mut db = vec![0u8; 8];
        a.copy_data_u8(&mut da, 4);
        b.copy_data_u8(&mut db, 4);
        // Align: copy into u16 buffers viewed as bytes.
        let mut ua: Vec<u16> = da
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let ub: Vec<u16> = db
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let ua_bytes = cast_mut_u16(&mut ua);
        let ub_bytes: Vec<u8> = ub.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut ub_al: Vec<u16> = vec![0; 4];
        cast_mut_u16(&mut ub_al).copy_from_slice(&ub_bytes);
        add_into(Kind::BFloat16, ua_bytes, cast_mut_u16(&mut ub_al));
        let got: Vec<f32> = ua
            .iter()
            .map(|v| half::bf16::from_bits(*v).to_f32())
            .collect();
        assert_eq!(got, Vec::<f32>::try_from(&expected).unwrap());
    }

    fn cast_mut_u16(v: &mut [u16]) -> &mut [u8] {
        // SAFETY: u16 -> u8 view of the same memory.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 2) }
    }
}
