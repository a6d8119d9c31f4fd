//! Pickle protocol 2 encoder for `torch.save`-compatible `data.pkl`.
//!
//! Tensors are written as `torch._utils._rebuild_tensor_v2` over one
//! contiguous storage each (persistent id `('storage', torch.XStorage, key,
//! 'cpu', numel)`), the layout `torch.load(weights_only=True)` accepts.

use tch::Tensor;

use super::storage::{contiguous_cpu, storage_class};
use super::value::{Dict, Value};

/// Encodes a value tree; tensors are collected in [`Pickler::storages`],
/// key `i` being `storages[i]`.
#[derive(Default)]
pub struct Pickler {
    pub out: Vec<u8>,
    pub storages: Vec<Tensor>,
}

impl Pickler {
    /// Encodes `value` as a complete protocol 2 pickle.
    pub fn encode(value: &Value) -> Result<Self, String> {
        let mut p = Pickler::default();
        p.out.extend_from_slice(&[0x80, 2]);
        p.value(value)?;
        p.out.push(b'.');
        Ok(p)
    }

    fn value(&mut self, v: &Value) -> Result<(), String> {
        match v {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => {
                let n = u8::try_from(b.len()).map_err(|_| "integer too wide to write")?;
                self.out.extend_from_slice(&[0x8a, n]);
                self.out.extend_from_slice(b);
            }
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => {
                self.out.push(b'B');
                self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.out.extend_from_slice(b);
            }
            Value::List(items) => {
                self.out.push(b']');
                for chunk in items.chunks(1000) {
                    self.out.push(b'(');
                    for x in chunk {
                        self.value(x)?;
                    }
                    self.out.push(b'e');
                }
            }
            Value::Tuple(items) => self.tuple(items.iter(), |p, x| p.value(x))?,
            Value::Dict(d) => self.dict(d)?,
            Value::Tensor(t) => self.tensor(t)?,
            Value::Storage(_) => return Err("writing bare storages is not supported".into()),
            Value::Global { module, name } => self.global(module, name),
            Value::Object(o) => {
                let Value::Global { module, name } = &o.class else {
                    return Err(format!("cannot write an object of class {:?}", o.class));
                };
                if !o.items.is_empty() {
                    return Err(format!("cannot write items of a {module}.{name}"));
                }
                self.global(module, name);
                self.tuple(o.args.iter(), |p, x| p.value(x))?;
                self.out.push(0x81);
                if let Some(state) = &o.state {
                    self.value(state)?;
                    self.out.push(b'b');
                }
            }
        }
        Ok(())
    }

    fn int(&mut self, i: i64) {
        if (0..=0xff).contains(&i) {
            self.out.extend_from_slice(&[b'K', i as u8]);
        } else if (0..=0xffff).contains(&i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if let Ok(small) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn tuple<T>(
        &mut self,
        items: impl ExactSizeIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T) -> Result<(), String>,
    ) -> Result<(), String> {
        let n = items.len();
        if n == 0 {
            self.out.push(b')');
            return Ok(());
        }
        if n > 3 {
            self.out.push(b'(');
        }
        for x in items {
            each(self, x)?;
        }
        self.out.push(match n {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        Ok(())
    }

    fn dict(&mut self, d: &Dict) -> Result<(), String> {
        if d.ordered {
            self.global("collections", "OrderedDict");
            self.out.extend_from_slice(b")R");
        } else {
            self.out.push(b'}');
        }
        for chunk in d.entries.chunks(1000) {
            self.out.push(b'(');
            for (k, v) in chunk {
                self.value(k)?;
                self.value(v)?;
            }
            self.out.push(b'u');
        }
        Ok(())
    }

    fn tensor(&mut self, t: &Tensor) -> Result<(), String> {
        let kind = t.kind();
        let class = storage_class(kind).ok_or_else(|| format!("cannot write {kind:?} tensors"))?;
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
        self.out.push(b'(');
        // Persistent id of the storage.
        self.out.push(b'(');
        self.str("storage");
        self.global("torch", class);
        self.str(&key);
        self.str("cpu");
        self.int(numel);
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        self.tuple(size.iter(), |p, &x| {
            p.int(x);
            Ok(())
        })?;
        self.tuple(stride.iter(), |p, &x| {
            p.int(x);
            Ok(())
        })?;
        self.out.push(0x89);
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
        self.out.extend_from_slice(b"tR");
        Ok(())
    }
}
