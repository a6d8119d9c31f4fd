//! PyTorch's tensor rebuild functions (`torch._utils._rebuild_*`).

use tch::Tensor;

use crate::error::{PickleError, Result};
use crate::value::{StorageRef, Value};

/// Evaluates `module.name(*args)` when it is a tensor rebuild function;
/// `Ok(None)` for any other callable. `args` is only computed when needed.
pub fn call(
    module: &str,
    name: &str,
    args: impl FnOnce() -> Result<Vec<Value>>,
) -> Result<Option<Value>> {
    if module != "torch._utils" {
        return Ok(None);
    }
    let bad = |problem: String| PickleError::BadRebuild {
        func: name.to_string(),
        problem,
    };
    match name {
        "_rebuild_tensor_v2" | "_rebuild_tensor" => {
            let args = args()?;
            if args.len() < 4 {
                return Err(bad(format!(
                    "expects at least 4 arguments, got {}",
                    args.len()
                )));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(bad(format!(
                    "first argument is {:?}, not a storage",
                    args[0]
                )));
            };
            let offset = args[1]
                .as_i64()
                .ok_or_else(|| bad(format!("storage offset {:?} is not an int", args[1])))?;
            let int_list = |v: &Value, what: &str| {
                v.as_list()
                    .and_then(|items| items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| bad(format!("{what} {v:?} is not a tuple of ints")))
            };
            let size = int_list(&args[2], "size")?;
            let stride = int_list(&args[3], "stride")?;
            Ok(Some(Value::Tensor(view(storage, offset, &size, &stride)?)))
        }
        "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
            let mut args = args()?;
            match args.first() {
                Some(Value::Tensor(_)) => Ok(Some(args.swap_remove(0))),
                other => Err(bad(format!("expects a tensor, got {other:?}"))),
            }
        }
        _ => Ok(None),
    }
}

/// A strided view of `storage` (a 1-D tensor, possibly itself a slice of
/// a larger storage), checked to stay inside it.
fn view(storage: &StorageRef, offset: i64, size: &[i64], stride: &[i64]) -> Result<Tensor> {
    let bad = |problem: String| PickleError::BadTensorView {
        view: format!("(offset {offset}, size {size:?}, stride {stride:?})"),
        problem,
    };
    if size.len() != stride.len() {
        return Err(bad("has a size and a stride of different ranks".into()));
    }
    if offset < 0 || size.iter().any(|&s| s < 0) || stride.iter().any(|&s| s < 0) {
        return Err(bad("has a negative offset, size or stride".into()));
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
            return Err(bad(format!(
                "reaches element {last} of a storage with {} elements",
                storage.numel
            )));
        }
    }
    storage
        .data
        .f_as_strided(size, stride, storage.offset + offset)
        .map_err(|e| PickleError::tensor("as_strided", e))
}
