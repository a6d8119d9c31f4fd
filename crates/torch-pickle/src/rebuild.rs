//! PyTorch's tensor rebuild functions (`torch._utils._rebuild_*`).

use tch::Tensor;

use super::value::{StorageRef, Value};

/// Evaluates `module.name(*args)` when it is a tensor rebuild function;
/// `Ok(None)` for any other callable. `args` is only computed when needed.
pub fn call(
    module: &str,
    name: &str,
    args: impl FnOnce() -> Result<Vec<Value>, String>,
) -> Result<Option<Value>, String> {
    if module != "torch._utils" {
        return Ok(None);
    }
    match name {
        "_rebuild_tensor_v2" | "_rebuild_tensor" => {
            let args = args()?;
            if args.len() < 4 {
                return Err(format!(
                    "{name} expects at least 4 arguments, got {}",
                    args.len()
                ));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!(
                    "{name}: first argument is {:?}, not a storage",
                    args[0]
                ));
            };
            let offset = args[1]
                .as_i64()
                .ok_or_else(|| format!("{name}: storage offset {:?} is not an int", args[1]))?;
            let size = int_list(&args[2], name, "size")?;
            let stride = int_list(&args[3], name, "stride")?;
            Ok(Some(Value::Tensor(view(storage, offset, &size, &stride)?)))
        }
        "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
            let mut args = args()?;
            match args.first() {
                Some(Value::Tensor(_)) => Ok(Some(args.swap_remove(0))),
                other => Err(format!("{name}: expects a tensor, got {other:?}")),
            }
        }
        _ => Ok(None),
    }
}

fn int_list(v: &Value, func: &str, what: &str) -> Result<Vec<i64>, String> {
    v.as_list()
        .and_then(|items| items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| format!("{func}: {what} {v:?} is not a tuple of ints"))
}

/// A strided view of `storage` (a 1-D tensor, possibly itself a slice of
/// a larger storage), checked to stay inside it.
fn view(storage: &StorageRef, offset: i64, size: &[i64], stride: &[i64]) -> Result<Tensor, String> {
    if size.len() != stride.len() {
        return Err(format!(
            "tensor size {size:?} and stride {stride:?} differ in rank"
        ));
    }
    if offset < 0 || size.iter().any(|&s| s < 0) || stride.iter().any(|&s| s < 0) {
        return Err(format!(
            "negative offset, size or stride (offset {offset}, size {size:?}, stride {stride:?})"
        ));
    }
    let numel: i64 = size.iter().product();
    if numel > 0 {
        let last = offset
            + size
                .iter()
                .zip(stride)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<i64>();
        if last >= storage.numel {
            return Err(format!(
                "tensor (offset {offset}, size {size:?}, stride {stride:?}) reaches element {last} \
                 of a storage with {} elements",
                storage.numel
            ));
        }
    }
    storage
        .data
        .f_as_strided(size, stride, storage.offset + offset)
        .map_err(|e| format!("as_strided failed: {e}"))
}
