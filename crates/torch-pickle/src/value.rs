//! The unpickled object tree of a `torch.save` file.

use tch::{Kind, Tensor};

/// One unpickled Python object.
///
/// Known classes become native variants (`collections.OrderedDict` is a
/// [`Value::Dict`] with `ordered`, tensors are [`Value::Tensor`]); unknown
/// classes become [`Value::Object`] holding their class and arguments, so a
/// checkpoint with foreign objects (numpy RNG states, argparse.Namespace)
/// still loads.
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for `i64`: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Dict),
    /// A tensor (a view of a shared storage when the file shares storages).
    Tensor(Tensor),
    /// A storage (or a slice of one) that no tensor was rebuilt from.
    Storage(StorageRef),
    /// A reference to a module-level Python object, e.g. `torch.float16`.
    Global {
        module: String,
        name: String,
    },
    /// An instance of a class this reader does not model.
    Object(Box<Object>),
}

/// A storage: a 1-D tensor over the whole storage and the slice
/// `offset..offset + numel` of it that this reference covers.
pub struct StorageRef {
    pub data: Tensor,
    pub offset: i64,
    pub numel: i64,
}

impl StorageRef {
    /// A reference to the whole of `data`.
    pub fn whole(data: Tensor) -> Self {
        let numel = data.numel() as i64;
        Self {
            data,
            offset: 0,
            numel,
        }
    }
}

impl Clone for StorageRef {
    fn clone(&self) -> Self {
        Self {
            data: self.data.shallow_clone(),
            offset: self.offset,
            numel: self.numel,
        }
    }
}

/// A Python dict (or `collections.OrderedDict`), in insertion order.
#[derive(Clone, Debug, Default)]
pub struct Dict {
    /// True for `collections.OrderedDict`.
    pub ordered: bool,
    pub entries: Vec<(Value, Value)>,
}

/// An opaque Python object: how it was built, and the state set on it.
#[derive(Clone, Debug)]
pub struct Object {
    /// The class or callable, usually a [`Value::Global`].
    pub class: Value,
    /// Constructor (NEWOBJ) or callable (REDUCE) arguments.
    pub args: Vec<Value>,
    /// The state given to `__setstate__`/BUILD, e.g. a Namespace's attributes.
    pub state: Option<Value>,
    /// Items appended or set after construction (rare).
    pub items: Vec<Value>,
}

impl Dict {
    /// An empty dict.
    pub fn new(ordered: bool) -> Self {
        Self {
            ordered,
            entries: Vec::new(),
        }
    }

    /// Inserts or replaces `key` (string keys).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(slot) = self
            .entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key.as_str()))
        {
            slot.1 = value;
        } else {
            self.entries.push((Value::Str(key), value));
        }
    }

    /// The value under string key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

impl Value {
    /// A global reference `module.name`.
    pub fn global(module: &str, name: &str) -> Self {
        Self::Global {
            module: module.to_string(),
            name: name.to_string(),
        }
    }

    /// The entry `key` of a dict, or the attribute `key` of an object with a
    /// dict state (argparse.Namespace); `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key),
            Value::Object(o) => o.state.as_ref().and_then(|s| s.get(key)),
            _ => None,
        }
    }

    /// The dict behind this value, if it is one.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The tensor behind this value.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The string behind this value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer (or a float with an integral value, or a bool).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }

    /// A number as `f64` (ints included).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// The dotted class name of an object (`argparse.Namespace`) or global.
    pub fn class_name(&self) -> Option<String> {
        match self {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            Value::Object(o) => o.class.class_name(),
            _ => None,
        }
    }

    /// A torch dtype global (`torch.float16`) as a tch kind.
    pub fn as_dtype(&self) -> Option<Kind> {
        match self {
            Value::Global { module, name } if module == "torch" => dtype_from_name(name),
            _ => None,
        }
    }

    /// A short human description of the type (`dict`, `Tensor`, ...).
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Dict(d) if d.ordered => "OrderedDict".into(),
            Value::Dict(_) => "dict".into(),
            Value::Tensor(_) => "Tensor".into(),
            Value::Storage(_) => "Storage".into(),
            Value::Global { module, name } => format!("{module}.{name}"),
            Value::Object(o) => o.class.class_name().unwrap_or_else(|| "object".into()),
        }
    }

    /// Walks the tree depth-first calling `f(path, tensor)` for every tensor;
    /// dict keys and list indices are joined with dots.
    pub fn visit_tensors<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a Tensor)) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match self {
            Value::Tensor(t) => f(prefix, t),
            Value::Dict(d) => {
                for (k, v) in &d.entries {
                    v.visit_tensors(&join(&key_text(k)), f);
                }
            }
            Value::List(items) | Value::Tuple(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.visit_tensors(&join(&i.to_string()), f);
                }
            }
            Value::Object(o) => {
                if let Some(state) = &o.state {
                    state.visit_tensors(prefix, f);
                }
            }
            _ => {}
        }
    }
}

/// A dict key as text (strings as-is, other scalars in Python's repr style).
pub fn key_text(key: &Value) -> String {
    match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::None => "None".into(),
        other => format!("<{}>", other.type_name()),
    }
}

/// The tch kind of a torch dtype attribute name (`float16`, `half`, ...).
pub fn dtype_from_name(name: &str) -> Option<Kind> {
    Some(match name {
        "float32" | "float" => Kind::Float,
        "float16" | "half" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        "float64" | "double" => Kind::Double,
        "int64" | "long" => Kind::Int64,
        "int32" | "int" => Kind::Int,
        "int16" | "short" => Kind::Int16,
        "int8" => Kind::Int8,
        "uint8" => Kind::Uint8,
        "bool" => Kind::Bool,
        "complex64" | "cfloat" => Kind::ComplexFloat,
        "complex128" | "cdouble" => Kind::ComplexDouble,
        _ => return None,
    })
}

/// The torch dtype attribute name of a tch kind (`torch.<name>`).
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Double => "float64",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Int16 => "int16",
        Kind::Int8 => "int8",
        Kind::Uint8 => "uint8",
        Kind::Bool => "bool",
        Kind::ComplexFloat => "complex64",
        Kind::ComplexDouble => "complex128",
        _ => "unknown",
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::BigInt(b) => Value::BigInt(b.clone()),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::List(v) => Value::List(v.clone()),
            Value::Tuple(v) => Value::Tuple(v.clone()),
            Value::Dict(d) => Value::Dict(d.clone()),
            // Tensors are shared, like Python references.
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::Storage(s) => Value::Storage(s.clone()),
            Value::Global { module, name } => Value::Global {
                module: module.clone(),
                name: name.clone(),
            },
            Value::Object(o) => Value::Object(o.clone()),
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "BigInt({b:?})"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "bytes[{}]", b.len()),
            Value::List(v) => f.debug_list().entries(v).finish(),
            Value::Tuple(v) => {
                let mut t = f.debug_tuple("");
                for x in v {
                    t.field(x);
                }
                t.finish()
            }
            Value::Dict(d) => f
                .debug_map()
                .entries(d.entries.iter().map(|(k, v)| (k, v)))
                .finish(),
            Value::Tensor(t) => write!(f, "Tensor({:?}, {:?})", t.kind(), t.size()),
            Value::Storage(s) => write!(f, "Storage({:?}, {})", s.data.kind(), s.numel),
            Value::Global { module, name } => write!(f, "{module}.{name}"),
            Value::Object(o) => write!(
                f,
                "{}(args={:?}, state={:?})",
                o.class.class_name().unwrap_or_default(),
                o.args,
                o.state
            ),
        }
    }
}
