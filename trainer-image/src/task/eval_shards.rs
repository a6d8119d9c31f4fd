//! Evaluation sharded over data-parallel replicas: replica `r` of `n` runs
//! batches `r, r + n, …` through the model, then the replicas exchange head
//! outputs and loss terms with two sum-all-reduces to which every other
//! replica contributes zeros. Adding zeros is exact, so every rank ends with
//! every batch's output, bit for bit what it would have computed itself,
//! and the loss is summed in batch order as before: the evaluation equals
//! the unsharded one and takes 1/n of the forward time.

use tch::{Device, Kind, Tensor};

use crate::comm::ProcessGroup;
use crate::model::HeadOutput;
use crate::train::{TrainError, TrainResult};

/// Whether this replica runs batch `batch`.
pub(crate) fn owns(batch: usize, dp: &dyn ProcessGroup) -> bool {
    batch % dp.size() == dp.rank()
}

/// Output kinds in the exchanged header.
const SPAN: i64 = 1;
const TOKEN: i64 = 2;
const SEQUENCE: i64 = 3;

/// Every batch's head output (CPU, float) and `(loss × terms, terms)`, from
/// this replica's `own` batches and `losses` (zeros for batches it did not
/// run) and the other replicas'. Every replica of `dp` must call it with
/// the same `batches`; `device` is the group's device.
pub(crate) fn exchange(
    dp: &dyn ProcessGroup,
    device: Device,
    batches: usize,
    own: Vec<(usize, HeadOutput)>,
    losses: &mut [(f64, f64)],
) -> TrainResult<Vec<HeadOutput>> {
    // Header per batch: how many replicas ran it (must be 1), the output
    // kind and up to three dimensions.
    const H: usize = 5;
    let mut header = vec![0i64; batches * H];
    for (b, out) in &own {
        let (kind, dims) = match out {
            HeadOutput::Span { start_logits, .. } => (SPAN, start_logits.size()),
            HeadOutput::TokenLogits(t) => (TOKEN, t.size()),
            HeadOutput::SequenceLogits(t) => (SEQUENCE, t.size()),
        };
        header[b * H] = 1;
        header[b * H + 1] = kind;
        for (k, d) in dims.iter().take(3).enumerate() {
            header[b * H + 2 + k] = *d;
        }
    }
    let header = all_reduce(dp, device, Tensor::from_slice(&header))?;
    let header = Vec::<i64>::try_from(&header)?;
    let rows: Vec<&[i64]> = header.chunks(H).collect();
    if let Some((b, h)) = rows.iter().enumerate().find(|(_, h)| h[0] != 1) {
        return Err(TrainError::RanksDisagree(format!(
            "evaluation batch {b} was run by {} data-parallel replicas instead of one (do all \
             replicas evaluate the same features?)",
            h[0]
        )));
    }
    let sizes: Vec<i64> = rows
        .iter()
        .map(|h| match h[1] {
            SPAN => 2 * h[2] * h[3],
            TOKEN => h[2] * h[3] * h[4],
            _ => h[2] * h[3],
        })
        .collect();
    let offsets: Vec<i64> = sizes
        .iter()
        .scan(0i64, |acc, n| {
            let at = *acc;
            *acc += n;
            Some(at)
        })
        .collect();
    let total: i64 = sizes.iter().sum();

    let data = Tensor::zeros([total], (Kind::Float, Device::Cpu));
    for (b, out) in &own {
        let flat = match out {
            HeadOutput::Span {
                start_logits,
                end_logits,
            } => Tensor::cat(&[start_logits.flatten(0, -1), end_logits.flatten(0, -1)], 0),
            HeadOutput::TokenLogits(t) | HeadOutput::SequenceLogits(t) => t.flatten(0, -1),
        };
        data.f_narrow(0, offsets[*b], sizes[*b])?
            .f_copy_(&flat.f_to_kind(Kind::Float)?)?;
    }
    let data = all_reduce(dp, device, data)?;
    let flat_losses: Vec<f64> = losses.iter().flat_map(|(l, n)| [*l, *n]).collect();
    let summed = all_reduce(dp, device, Tensor::from_slice(&flat_losses))?;
    let summed = Vec::<f64>::try_from(&summed)?;
    for (b, pair) in losses.iter_mut().enumerate() {
        *pair = (summed[2 * b], summed[2 * b + 1]);
    }

    (0..batches)
        .map(|b| {
            let h = &rows[b][1..];
            let slice = data.f_narrow(0, offsets[b], sizes[b])?;
            Ok(match h[0] {
                SPAN => {
                    let half = h[1] * h[2];
                    HeadOutput::Span {
                        start_logits: slice.f_narrow(0, 0, half)?.f_view([h[1], h[2]])?,
                        end_logits: slice.f_narrow(0, half, half)?.f_view([h[1], h[2]])?,
                    }
                }
                TOKEN => HeadOutput::TokenLogits(slice.f_view([h[1], h[2], h[3]])?),
                _ => HeadOutput::SequenceLogits(slice.f_view([h[1], h[2]])?),
            })
        })
        .collect()
}

/// Sum-all-reduces a CPU tensor over `dp` on `device`; returns it on the CPU.
fn all_reduce(dp: &dyn ProcessGroup, device: Device, t: Tensor) -> TrainResult<Tensor> {
    let mut t = t.to_device(device);
    dp.all_reduce_sum(&mut t)?;
    Ok(t.to_device(Device::Cpu))
}
