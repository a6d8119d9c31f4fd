//! Building and reading the Python object tree of a training checkpoint:
//! JSON to pickle values, and typed lookups whose errors name the key path.

use tch::Tensor;
use torch_pickle::{Dict, Value};

/// A plain (non-ordered) dict from string keys.
pub fn dict<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut d = Dict::new(false);
    for (k, v) in entries {
        d.insert(k, v);
    }
    Value::Dict(d)
}

/// `Some(x)` as `f(x)`, `None` as Python `None`.
pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map_or(Value::None, f)
}

/// A JSON value as the equivalent Python object (objects become dicts).
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::None,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            let mut d = Dict::new(false);
            for (k, v) in map {
                d.insert(k.clone(), from_json(v));
            }
            Value::Dict(d)
        }
    }
}

/// A cursor into the tree that remembers its key path for error messages.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    /// Dotted path from the root, e.g. `optimizer_states.0.state`.
    pub path: &'a str,
    /// The value at that path.
    pub value: &'a Value,
}

/// What a lookup failed on: the key path and what was expected there.
pub type Mismatch = (String, String);

impl<'a> Node<'a> {
    /// The root of a loaded file.
    pub fn root(value: &'a Value) -> Self {
        Node { path: "", value }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn mismatch(&self, path: String, expected: &str, got: Option<&Value>) -> Mismatch {
        let got = got.map_or("nothing".to_string(), Value::type_name);
        (path, format!("expected {expected}, found {got}"))
    }

    /// The entry `key` (an error when missing).
    pub fn get(&self, key: &str) -> Result<(String, &'a Value), Mismatch> {
        match self.value.get(key) {
            Some(v) => Ok((self.child_path(key), v)),
            None => Err(self.mismatch(self.child_path(key), "an entry", None)),
        }
    }

    /// The entry `key`, or `None` when missing or Python `None`.
    pub fn get_opt(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_none())
    }

    /// Integer entry.
    pub fn int(&self, key: &str) -> Result<i64, Mismatch> {
        let (p, v) = self.get(key)?;
        v.as_i64()
            .ok_or_else(|| self.mismatch(p, "an int", Some(v)))
    }

    /// Float entry (ints accepted).
    pub fn float(&self, key: &str) -> Result<f64, Mismatch> {
        let (p, v) = self.get(key)?;
        v.as_f64()
            .ok_or_else(|| self.mismatch(p, "a float", Some(v)))
    }

    /// Optional float entry (missing or `None` = `None`).
    pub fn float_opt(&self, key: &str) -> Result<Option<f64>, Mismatch> {
        match self.get_opt(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.mismatch(self.child_path(key), "a float or None", Some(v))),
        }
    }

    /// Tensor entry.
    pub fn tensor(&self, key: &str) -> Result<&'a Tensor, Mismatch> {
        let (p, v) = self.get(key)?;
        v.as_tensor()
            .ok_or_else(|| self.mismatch(p, "a tensor", Some(v)))
    }

    /// Optional tensor entry.
    pub fn tensor_opt(&self, key: &str) -> Result<Option<&'a Tensor>, Mismatch> {
        match self.get_opt(key) {
            None => Ok(None),
            Some(v) => v
                .as_tensor()
                .map(Some)
                .ok_or_else(|| self.mismatch(self.child_path(key), "a tensor or None", Some(v))),
        }
    }

    /// Dict entry, as a node (the caller keeps the returned path alive).
    pub fn dict(&self, key: &str) -> Result<(String, &'a Value), Mismatch> {
        let (p, v) = self.get(key)?;
        if v.as_dict().is_some() {
            Ok((p, v))
        } else {
            Err(self.mismatch(p, "a dict", Some(v)))
        }
    }

    /// List or tuple entry.
    pub fn list(&self, key: &str) -> Result<(String, &'a [Value]), Mismatch> {
        let (p, v) = self.get(key)?;
        match v.as_list() {
            Some(items) => Ok((p, items)),
            None => Err(self.mismatch(p, "a list", Some(v))),
        }
    }
}
