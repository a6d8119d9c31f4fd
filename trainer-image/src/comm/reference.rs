//! Single-process reference for the ring all-reduce's summation order.

use tch::Tensor;

use super::ring::chunk_range;

/// Sums `inputs` (one tensor per rank, same shape and dtype) in exactly the
/// order the TCP ring uses, so `all_reduce_sum` over ranks holding
/// `inputs[r]` gives bit-identical results: element chunk `c` (of
/// `inputs.len()` chunks) is `((x[c] + x[c+1]) + ...) + x[c-1]`.
pub fn ring_sum_reference(inputs: &[Tensor]) -> Tensor {
    assert!(
        !inputs.is_empty(),
        "ring_sum_reference needs at least one tensor"
    );
    let n = inputs.len();
    let flat: Vec<Tensor> = inputs.iter().map(|t| t.reshape([-1])).collect();
    let numel = flat[0].numel();
    let chunks: Vec<Tensor> = (0..n)
        .map(|c| {
            let r = chunk_range(numel, n, c);
            let part = |t: &Tensor| t.narrow(0, r.start as i64, (r.end - r.start) as i64);
            let mut acc = part(&flat[c]).copy();
            for k in 1..n {
                acc = &acc + part(&flat[(c + k) % n]);
            }
            acc
        })
        .collect();
    Tensor::cat(&chunks, 0).reshape(inputs[0].size())
}
