//! Pickle protocol 2 encoder for `torch.save`-compatible `data.pkl`.
//!
//! Tensors are written as `torch._utils._rebuild_tensor_v2` over one
//! contiguous storage each (persistent id `('storage', torch.XStorage, key,
//! 'cpu', numel)`), the layout `torch.load(weights_only=True)` accepts.

use tch::Tensor;

use crate::error::{PickleError, Result};
use crate::opcode::OpCode as Op;
use crate::storage::{contiguous_cpu, storage_class};
use crate::value::{Dict, Value};

/// Encodes a value tree; tensors are collected in [`Pickler::storages`],
/// key `i` being `storages[i]`.
#[derive(Default)]
pub struct Pickler {
    pub out: Vec<u8>,
    pub storages: Vec<Tensor>,
}

impl Pickler {
    /// Encodes `value` as a complete protocol 2 pickle.
    pub fn encode(value: &Value) -> Result<Self> {
        let mut p = Pickler::default();
        p.op(Op::Proto);
        p.out.push(2);
        p.value(value)?;
        p.op(Op::Stop);
        Ok(p)
    }

    fn op(&mut self, op: Op) {
        self.out.push(op.into());
    }

    fn value(&mut self, v: &Value) -> Result<()> {
        match v {
            Value::None => self.op(Op::None),
            Value::Bool(b) => self.op(if *b { Op::NewTrue } else { Op::NewFalse }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => {
                let n = u8::try_from(b.len()).map_err(|_| {
                    PickleError::CannotWrite(format!("an integer of {} bytes", b.len()))
                })?;
                self.op(Op::Long1);
                self.out.push(n);
                self.out.extend_from_slice(b);
            }
            Value::Float(f) => {
                self.op(Op::BinFloat);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => {
                self.op(Op::BinBytes);
                self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.out.extend_from_slice(b);
            }
            Value::List(items) => {
                self.op(Op::EmptyList);
                for chunk in items.chunks(1000) {
                    self.op(Op::Mark);
                    for x in chunk {
                        self.value(x)?;
                    }
                    self.op(Op::Appends);
                }
            }
            Value::Tuple(items) => self.tuple(items.iter(), |p, x| p.value(x))?,
            Value::Dict(d) => self.dict(d)?,
            Value::Tensor(t) => self.tensor(t)?,
            Value::Storage(_) => return Err(PickleError::CannotWrite("bare storages".into())),
            Value::Global { module, name } => self.global(module, name),
            Value::Object(o) => {
                let Value::Global { module, name } = &o.class else {
                    return Err(PickleError::CannotWrite(format!(
                        "an object of class {:?}",
                        o.class
                    )));
                };
                if !o.items.is_empty() {
                    return Err(PickleError::CannotWrite(format!(
                        "items of a {module}.{name}"
                    )));
                }
                self.global(module, name);
                self.tuple(o.args.iter(), |p, x| p.value(x))?;
                self.op(Op::NewObj);
                if let Some(state) = &o.state {
                    self.value(state)?;
                    self.op(Op::Build);
                }
            }
        }
        Ok(())
    }

    fn int(&mut self, i: i64) {
        if (0..=0xff).contains(&i) {
            self.op(Op::BinInt1);
            self.out.push(i as u8);
        } else if (0..=0xffff).contains(&i) {
            self.op(Op::BinInt2);
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(small) = i32::try_from(i) {
            self.op(Op::BinInt);
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.op(Op::Long1);
            self.out.push(8);
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn str(&mut self, s: &str) {
        self.op(Op::BinUnicode);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(Op::Global);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn tuple<T>(
        &mut self,
        items: impl ExactSizeIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T) -> Result<()>,
    ) -> Result<()> {
        let n = items.len();
        if n == 0 {
            self.op(Op::EmptyTuple);
            return Ok(());
        }
        if n > 3 {
            self.op(Op::Mark);
        }
        for x in items {
            each(self, x)?;
        }
        self.op(match n {
            1 => Op::Tuple1,
            2 => Op::Tuple2,
            3 => Op::Tuple3,
            _ => Op::Tuple,
        });
        Ok(())
    }

    /// `collections.OrderedDict()`: an empty tuple of arguments, reduced.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(Op::EmptyTuple);
        self.op(Op::Reduce);
    }

    fn dict(&mut self, d: &Dict) -> Result<()> {
        if d.ordered {
            self.ordered_dict();
        } else {
            self.op(Op::EmptyDict);
        }
        for chunk in d.entries.chunks(1000) {
            self.op(Op::Mark);
            for (k, v) in chunk {
                self.value(k)?;
                self.value(v)?;
            }
            self.op(Op::SetItems);
        }
        Ok(())
    }

    fn tensor(&mut self, t: &Tensor) -> Result<()> {
        let kind = t.kind();
        let class = storage_class(kind)
            .ok_or_else(|| PickleError::CannotWrite(format!("{kind:?} tensors")))?;
        let t = contiguous_cpu(t);
        let size = t.size();
        let mut stride = vec![1i64; size.len()];
        for i in (0..size.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * size[i + 1].max(1);
        }
        let key = self.storages.len().to_string();
        let numel = t.numel() as i64;
        self.storages.push(t);

        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(Op::Mark);
        // Persistent id of the storage.
        self.op(Op::Mark);
        self.str("storage");
        self.global("torch", class);
        self.str(&key);
        self.str("cpu");
        self.int(numel);
        self.op(Op::Tuple);
        self.op(Op::BinPersId);
        self.int(0);
        self.tuple(size.iter(), |p, &x| {
            p.int(x);
            Ok(())
        })?;
        self.tuple(stride.iter(), |p, &x| {
            p.int(x);
            Ok(())
        })?;
        // requires_grad, backward hooks.
        self.op(Op::NewFalse);
        self.ordered_dict();
        self.op(Op::Tuple);
        self.op(Op::Reduce);
        Ok(())
    }
}
