//! QKV row orders of Megatron checkpoint versions, per tensor-parallel
//! shard (Megatron-LM `fix_query_key_value_ordering`):
//! version 0 `[3, heads, head_dim]`, 1.0 `[heads, head_dim, 3]`,
//! >= 2.0 `[heads, 3, head_dim]` (the canonical order).

use tch::Tensor;

/// Why a shard's QKV rows could not be reordered.
#[derive(Debug, thiserror::Error)]
pub enum QkvError {
    /// The first dimension is not `3 * heads * head_dim`: the config's heads
    /// or hidden size, or the tensor-parallel size, do not match the weights.
    #[error(
        "query_key_value has shape {shape:?}, expected {} rows (3 x {heads} heads x {head_dim}) \
         per tensor-parallel shard; check the config's attention heads and hidden size",
        3 * heads * head_dim
    )]
    Rows {
        /// The tensor's shape.
        shape: Vec<i64>,
        /// Attention heads per shard.
        heads: i64,
        /// Size of one head.
        head_dim: i64,
    },
    /// libtorch refused the reshape or transpose.
    #[error("reordering query_key_value: {0}")]
    Torch(#[from] tch::TchError),
}

/// Reorders one shard's QKV weight or bias rows from `version`'s order to
/// the canonical `[heads, 3, head_dim]` order.
pub fn to_canonical(
    t: &Tensor,
    version: f64,
    heads: i64,
    head_dim: i64,
) -> Result<Tensor, QkvError> {
    reorder(t, version, heads, head_dim, true)
}

/// Reorders canonical rows into `version`'s order.
pub fn from_canonical(
    t: &Tensor,
    version: f64,
    heads: i64,
    head_dim: i64,
) -> Result<Tensor, QkvError> {
    reorder(t, version, heads, head_dim, false)
}

fn reorder(
    t: &Tensor,
    version: f64,
    heads: i64,
    head_dim: i64,
    forward: bool,
) -> Result<Tensor, QkvError> {
    if version >= 2.0 {
        return Ok(t.shallow_clone());
    }
    let size = t.size();
    if size.first() != Some(&(3 * heads * head_dim)) {
        return Err(QkvError::Rows {
            shape: size,
            heads,
            head_dim,
        });
    }
    let rest = &size[1..];
    let shape = |a: i64, b: i64, c: i64| [&[a, b, c][..], rest].concat();
    let out = if version == 0.0 {
        // [3, np, hn] <-> [np, 3, hn]
        let from = if forward {
            shape(3, heads, head_dim)
        } else {
            shape(heads, 3, head_dim)
        };
        t.f_reshape(from.as_slice())
            .and_then(|v| v.f_transpose(0, 1))
    } else {
        // [np, hn, 3] <-> [np, 3, hn]
        let from = if forward {
            shape(heads, head_dim, 3)
        } else {
            shape(heads, 3, head_dim)
        };
        t.f_reshape(from.as_slice())
            .and_then(|v| v.f_transpose(1, 2))
    };
    out.and_then(|v| v.f_contiguous())
        .and_then(|v| v.f_reshape(size.as_slice()))
        .map_err(QkvError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows labelled 100*qkv + 10*head + dim in canonical order.
    fn labelled(heads: i64, head_dim: i64) -> Tensor {
        let mut rows = Vec::new();
        for h in 0..heads {
            for s in 0..3 {
                for d in 0..head_dim {
                    rows.push((100 * s + 10 * h + d) as f32);
                }
            }
        }
        Tensor::from_slice(&rows)
    }

    #[test]
    fn version_orders_and_round_trip() {
        let canonical = labelled(2, 2);
        // Version 0: all queries first, head-major inside.
        let v0 = from_canonical(&canonical, 0.0, 2, 2).unwrap();
        let want0 = [
            0., 1., 10., 11., 100., 101., 110., 111., 200., 201., 210., 211.,
        ];
        assert!(v0.equal(&Tensor::from_slice(&want0)), "{v0}");
        // Version 1: per head, per dim, q k v interleaved.
        let v1 = from_canonical(&canonical, 1.0, 2, 2).unwrap();
        let want1 = [
            0., 100., 200., 1., 101., 201., 10., 110., 210., 11., 111., 211.,
        ];
        assert!(v1.equal(&Tensor::from_slice(&want1)), "{v1}");
        for (v, t) in [(0.0, &v0), (1.0, &v1)] {
            assert!(to_canonical(t, v, 2, 2).unwrap().equal(&canonical));
        }
        let w = Tensor::randn([12, 5], (tch::Kind::Float, tch::Device::Cpu));
        let back = to_canonical(&from_canonical(&w, 1.0, 2, 2).unwrap(), 1.0, 2, 2).unwrap();
        assert!(back.equal(&w));
        assert!(to_canonical(&w, 0.0, 3, 2).is_err());
    }
}
