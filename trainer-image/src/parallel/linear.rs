//! Megatron's `ColumnParallelLinear` and `RowParallelLinear`.

use tch::{Tensor, nn};

use super::error::{ParallelError, Result};
use super::regions::{TpGroup, copy_to_tensor_parallel_region, reduce_from_tensor_parallel_region};

fn split(what: &str, value: i64, tp: i64) -> Result<i64> {
    if value % tp != 0 {
        return Err(ParallelError::NotDivisible {
            what: what.into(),
            value,
            tp,
        });
    }
    Ok(value / tp)
}

/// Creates a `[rows, cols]` weight (normal, std `init_std`) and, when `bias` is
/// set, a zero bias of `bias_len` under `vs`.
fn weight_and_bias(
    vs: &nn::Path,
    rows: i64,
    cols: i64,
    bias_len: Option<i64>,
    init_std: f64,
) -> Result<(Tensor, Option<Tensor>)> {
    let weight = vs.f_var(
        "weight",
        &[rows, cols],
        nn::Init::Randn {
            mean: 0.0,
            stdev: init_std,
        },
    )?;
    let bias = bias_len.map(|n| vs.f_zeros("bias", &[n])).transpose()?;
    Ok((weight, bias))
}

/// `y = x A^T + b` with `A` split along its output (row) dimension: rank `r`
/// holds rows `r*out/tp .. (r+1)*out/tp` of `weight` and `bias`, and produces
/// that slice of the output (Megatron's `gather_output=False`). The input
/// passes through [`copy_to_tensor_parallel_region`], so its gradient is
/// summed over the group in backward.
#[derive(Debug)]
pub struct ColumnParallelLinear {
    /// `[out/tp, in]`.
    pub weight: Tensor,
    /// `[out/tp]`.
    pub bias: Option<Tensor>,
    group: TpGroup,
}

impl ColumnParallelLinear {
    /// Creates `weight` (normal, std `init_std`) and optional zero `bias` under `vs`.
    pub fn new(
        vs: &nn::Path,
        in_features: i64,
        out_features: i64,
        bias: bool,
        init_std: f64,
        group: &TpGroup,
    ) -> Result<Self> {
        let local = split(
            "column-parallel output features",
            out_features,
            group.size(),
        )?;
        let (weight, bias) =
            weight_and_bias(vs, local, in_features, bias.then_some(local), init_std)?;
        Ok(Self {
            weight,
            bias,
            group: group.clone(),
        })
    }

    /// `x`: `[..., in]` (identical on every rank) -> `[..., out/tp]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = copy_to_tensor_parallel_region(x, &self.group)?;
        Ok(x.f_linear(&self.weight, self.bias.as_ref())?)
    }
}

/// `y = x A^T + b` with `A` split along its input (column) dimension: rank `r`
/// holds columns `r*in/tp .. (r+1)*in/tp` of `weight` and takes that slice of
/// the input (Megatron's `input_is_parallel=True`); the partial products go
/// through [`reduce_from_tensor_parallel_region`] (all-reduce forward,
/// identity backward) and the replicated `bias` is added after the reduce.
#[derive(Debug)]
pub struct RowParallelLinear {
    /// `[out, in/tp]`.
    pub weight: Tensor,
    /// `[out]`, replicated.
    pub bias: Option<Tensor>,
    group: TpGroup,
}

impl RowParallelLinear {
    /// Creates `weight` (normal, std `init_std`) and optional zero `bias` under `vs`.
    pub fn new(
        vs: &nn::Path,
        in_features: i64,
        out_features: i64,
        bias: bool,
        init_std: f64,
        group: &TpGroup,
    ) -> Result<Self> {
        let local = split("row-parallel input features", in_features, group.size())?;
        let (weight, bias) = weight_and_bias(
            vs,
            out_features,
            local,
            bias.then_some(out_features),
            init_std,
        )?;
        Ok(Self {
            weight,
            bias,
            group: group.clone(),
        })
    }

    /// `x`: `[..., in/tp]` (this rank's slice) -> `[..., out]` (identical on every rank).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.group.size() == 1 {
            return Ok(x.f_linear(&self.weight, self.bias.as_ref())?);
        }
        let partial = x.f_linear::<&Tensor>(&self.weight, None)?;
        let y = reduce_from_tensor_parallel_region(&partial, &self.group)?;
        Ok(match &self.bias {
            Some(b) => y.f_add(b)?,
            None => y,
        })
    }
}
