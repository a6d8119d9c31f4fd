//! A pickle virtual machine for `torch.save` files (protocols 0-5, the
//! opcodes PyTorch, argparse, numpy and collections produce).
//!
//! Mutable containers are shared while unpickling (a memoized dict that is
//! filled later is the same dict everywhere), then turned into a plain
//! [`Value`] tree at STOP.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::rc::Rc;

use super::rebuild;
use super::value::{Dict, Object, Value};

/// Resolves a persistent id (BINPERSID) into a value, usually a storage.
pub type PersistentLoad<'a> = dyn FnMut(Value) -> Result<Value, String> + 'a;

#[derive(Clone)]
enum Obj {
    Val(Value),
    List(Rc<RefCell<Vec<Obj>>>),
    Tuple(Rc<Vec<Obj>>),
    Dict(Rc<RefCell<DictBuf>>),
    Object(Rc<RefCell<ObjBuf>>),
}

struct DictBuf {
    ordered: bool,
    entries: Vec<(Obj, Obj)>,
}

struct ObjBuf {
    class: Obj,
    args: Vec<Obj>,
    state: Option<Obj>,
    items: Vec<Obj>,
}

const MAX_DEPTH: usize = 512;

/// Reads one pickle from `reader` (up to and including STOP).
pub fn unpickle(
    reader: &mut dyn BufRead,
    persistent: &mut PersistentLoad,
) -> Result<Value, String> {
    let mut vm = Vm {
        reader,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        persistent,
    };
    let top = vm.run()?;
    to_value(&top, 0)
}

struct Vm<'r, 'p> {
    reader: &'r mut dyn BufRead,
    stack: Vec<Obj>,
    marks: Vec<usize>,
    memo: HashMap<u64, Obj>,
    persistent: &'p mut PersistentLoad<'p>,
}

impl Vm<'_, '_> {
    fn run(&mut self) -> Result<Obj, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.bytes(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.push_val(Value::None),
                0x88 => self.push_val(Value::Bool(true)),
                0x89 => self.push_val(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push_val(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_val(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push_val(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.bytes(n)?;
                    self.push_val(long_from_bytes(b));
                }
                0x8b => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let b = self.bytes(n)?;
                    self.push_val(long_from_bytes(b));
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().map_err(|_| format!("bad INT {s:?}"))?),
                    };
                    self.push_val(v);
                }
                b'L' => {
                    let line = self.line()?;
                    let s = line.trim_end_matches('L');
                    let v = s.parse().map_err(|_| format!("unsupported LONG {s:?}"))?;
                    self.push_val(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push_val(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line.parse().map_err(|_| format!("bad FLOAT {line:?}"))?;
                    self.push_val(Value::Float(v));
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let s = self.utf8(n)?;
                    self.push_val(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.push_val(Value::Str(s));
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.array()?) as usize;
                    let s = self.utf8(n)?;
                    self.push_val(Value::Str(s));
                }
                b'V' => {
                    let s = self.line()?;
                    self.push_val(Value::Str(s));
                }
                b'S' => {
                    let line = self.line()?;
                    let s = line.trim_matches(|c| c == '\'' || c == '"').to_string();
                    self.push_val(Value::Str(s));
                }
                b'T' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let b = self.bytes(n)?;
                    self.push_val(Value::Str(latin1(&b)));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.bytes(n)?;
                    self.push_val(Value::Str(latin1(&b)));
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let b = self.bytes(n)?;
                    self.push_val(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.bytes(n)?;
                    self.push_val(Value::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.array()?) as usize;
                    let b = self.bytes(n)?;
                    self.push_val(Value::Bytes(b));
                }
                0x97 => return Err("out-of-band pickle buffers are not supported".into()),
                0x98 => {}
                b')' => self.stack.push(Obj::Tuple(Rc::new(Vec::new()))),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow in TUPLEn".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Obj::Tuple(Rc::new(items)));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Obj::Tuple(Rc::new(items)));
                }
                b']' => self.stack.push(new_list(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(new_list(items));
                }
                b'}' => self.stack.push(new_dict(false, Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = new_dict(false, Vec::new());
                    add_pairs(&d, items)?;
                    self.stack.push(d);
                }
                0x8f => self
                    .stack
                    .push(new_object(Value::global("builtins", "set"), vec![])),
                0x91 => {
                    let items = self.pop_mark()?;
                    let o = new_object(Value::global("builtins", "frozenset"), vec![]);
                    add_items(&o, items)?;
                    self.stack.push(o);
                }
                b'a' => {
                    let v = self.pop()?;
                    add_items(self.top()?, vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    add_items(self.top()?, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    add_pairs(self.top()?, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    add_pairs(self.top()?, items)?;
                }
                b'q' => {
                    let i = self.u8()?.into();
                    self.put(i)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?).into();
                    self.put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.put(i)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let i = line.parse().map_err(|_| format!("bad PUT {line:?}"))?;
                    self.put(i)?;
                }
                b'h' => {
                    let i = self.u8()?.into();
                    self.get(i)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?).into();
                    self.get(i)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let i = line.parse().map_err(|_| format!("bad GET {line:?}"))?;
                    self.get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_val(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop_str()?;
                    let module = self.pop_str()?;
                    self.push_val(Value::Global { module, name });
                }
                0x82..=0x84 => {
                    return Err("pickle extension registry codes are not supported".into());
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let out = reduce(callable, args)?;
                    self.stack.push(out);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(newobj(cls, tuple_items(&args), None)?);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack
                        .push(newobj(cls, tuple_items(&args), Some(kwargs))?);
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let args = self.pop_mark()?;
                    let cls = Obj::Val(Value::Global { module, name });
                    self.stack.push(newobj(cls, args, None)?);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err("OBJ without a class".into());
                    }
                    let cls = items.remove(0);
                    self.stack.push(newobj(cls, items, None)?);
                }
                b'b' => {
                    let state = self.pop()?;
                    build(self.top()?, state);
                }
                b'Q' => {
                    let pid = to_value(&self.pop()?, 0)?;
                    let v = (self.persistent)(pid)?;
                    self.push_val(v);
                }
                b'P' => {
                    let pid = Value::Str(self.line()?);
                    let v = (self.persistent)(pid)?;
                    self.push_val(v);
                }
                other => {
                    return Err(format!("unknown pickle opcode 0x{other:02x}"));
                }
            }
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.reader
            .read_exact(&mut b)
            .map_err(|e| format!("truncated pickle: {e}"))?;
        Ok(b[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.reader
            .read_exact(&mut b)
            .map_err(|e| format!("truncated pickle: {e}"))?;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let got = (&mut *self.reader)
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(|e| format!("truncated pickle: {e}"))?;
        if got != n {
            return Err(format!("truncated pickle: wanted {n} bytes, got {got}"));
        }
        Ok(out)
    }

    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.bytes(n)?).map_err(|_| "invalid UTF-8 in pickle string".to_string())
    }

    fn line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("truncated pickle: {e}"))?;
        if buf.pop() != Some(b'\n') {
            return Err("truncated pickle: unterminated line".into());
        }
        String::from_utf8(buf).map_err(|_| "invalid UTF-8 in pickle line".to_string())
    }

    fn push_val(&mut self, v: Value) {
        self.stack.push(Obj::Val(v));
    }

    fn pop(&mut self) -> Result<Obj, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pickle pops across a MARK".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn top(&self) -> Result<&Obj, String> {
        self.stack
            .last()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>, String> {
        let m = self.marks.pop().ok_or("pickle MARK missing")?;
        if m > self.stack.len() {
            return Err("pickle MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn pop_str(&mut self) -> Result<String, String> {
        match self.pop()? {
            Obj::Val(Value::Str(s)) => Ok(s),
            _ => Err("STACK_GLOBAL expects strings".into()),
        }
    }

    fn put(&mut self, i: u64) -> Result<(), String> {
        let top = self.top()?.clone();
        self.memo.insert(i, top);
        Ok(())
    }

    fn get(&mut self, i: u64) -> Result<(), String> {
        let v = self
            .memo
            .get(&i)
            .ok_or_else(|| format!("pickle memo key {i} missing"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }
}

fn new_list(items: Vec<Obj>) -> Obj {
    Obj::List(Rc::new(RefCell::new(items)))
}

fn new_dict(ordered: bool, entries: Vec<(Obj, Obj)>) -> Obj {
    Obj::Dict(Rc::new(RefCell::new(DictBuf { ordered, entries })))
}

fn new_object(class: Value, args: Vec<Obj>) -> Obj {
    Obj::Object(Rc::new(RefCell::new(ObjBuf {
        class: Obj::Val(class),
        args,
        state: None,
        items: Vec::new(),
    })))
}

fn long_from_bytes(b: Vec<u8>) -> Value {
    if b.len() <= 8 {
        let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
        let mut full = [if negative { 0xff } else { 0 }; 8];
        full[..b.len()].copy_from_slice(&b);
        Value::Int(i64::from_le_bytes(full))
    } else {
        Value::BigInt(b)
    }
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn tuple_items(args: &Obj) -> Vec<Obj> {
    match args {
        Obj::Tuple(items) => items.as_ref().clone(),
        Obj::List(items) => items.borrow().clone(),
        other => vec![other.clone()],
    }
}

fn add_items(target: &Obj, items: Vec<Obj>) -> Result<(), String> {
    match target {
        Obj::List(l) => l.borrow_mut().extend(items),
        Obj::Object(o) => o.borrow_mut().items.extend(items),
        _ => return Err("APPEND to something that is not a list".into()),
    }
    Ok(())
}

fn add_pairs(target: &Obj, items: Vec<Obj>) -> Result<(), String> {
    if !items.len().is_multiple_of(2) {
        return Err("SETITEMS with an odd number of items".into());
    }
    let mut it = items.into_iter();
    match target {
        Obj::Dict(d) => {
            let mut d = d.borrow_mut();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.entries.push((k, v));
            }
        }
        Obj::Object(o) => {
            let mut o = o.borrow_mut();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                o.items.push(Obj::Tuple(Rc::new(vec![k, v])));
            }
        }
        _ => return Err("SETITEM on something that is not a dict".into()),
    }
    Ok(())
}

fn global_name(o: &Obj) -> Option<(&str, &str)> {
    match o {
        Obj::Val(Value::Global { module, name }) => Some((module, name)),
        _ => None,
    }
}

fn newobj(cls: Obj, args: Vec<Obj>, kwargs: Option<Obj>) -> Result<Obj, String> {
    if let Some(("collections", "OrderedDict")) = global_name(&cls) {
        return Ok(new_dict(true, Vec::new()));
    }
    let mut args = args;
    if let Some(kw) = kwargs {
        args.push(kw);
    }
    Ok(Obj::Object(Rc::new(RefCell::new(ObjBuf {
        class: cls,
        args,
        state: None,
        items: Vec::new(),
    }))))
}

/// Calls `callable(*args)` for the callables this reader understands;
/// anything else becomes an opaque object.
fn reduce(callable: Obj, args: Obj) -> Result<Obj, String> {
    let items = tuple_items(&args);
    if let Some((module, name)) = global_name(&callable) {
        match (module, name) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                let d = new_dict(module == "collections", Vec::new());
                if let Some(Obj::List(pairs)) = items.first() {
                    for pair in pairs.borrow().iter() {
                        if let Obj::Tuple(kv) = pair
                            && kv.len() == 2
                        {
                            add_pairs(&d, kv.as_ref().clone())?;
                        }
                    }
                }
                return Ok(d);
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, type, args, state): rebuild with func(*args).
                if items.len() < 3 {
                    return Err("_rebuild_from_type_v2 expects 4 arguments".into());
                }
                return reduce(items[0].clone(), items[2].clone());
            }
            ("_codecs", "encode") => {
                if let Some(Obj::Val(Value::Str(s))) = items.first() {
                    return Ok(Obj::Val(Value::Bytes(
                        s.chars().map(|c| c as u32 as u8).collect(),
                    )));
                }
            }
            ("builtins" | "__builtin__", "bytearray" | "bytes") => {
                if let Some(Obj::Val(Value::Bytes(b))) = items.first() {
                    return Ok(Obj::Val(Value::Bytes(b.clone())));
                }
            }
            ("torch", "Size") => {
                if let Some(first) = items.first() {
                    return Ok(Obj::Tuple(Rc::new(tuple_items(first))));
                }
            }
            _ => {
                if let Some(rebuilt) = rebuild::call(module, name, || {
                    items
                        .iter()
                        .map(|o| to_value(o, 0))
                        .collect::<Result<Vec<_>, _>>()
                })? {
                    return Ok(Obj::Val(rebuilt));
                }
            }
        }
    }
    Ok(Obj::Object(Rc::new(RefCell::new(ObjBuf {
        class: callable,
        args: items,
        state: None,
        items: Vec::new(),
    }))))
}

fn build(target: &Obj, state: Obj) {
    if let Obj::Object(o) = target {
        o.borrow_mut().state = Some(state);
    }
    // Dict state (OrderedDict._metadata) and tensor state are not needed.
}

fn to_value(o: &Obj, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("pickle nests too deeply (or is self-referential)".into());
    }
    let conv = |x: &Obj| to_value(x, depth + 1);
    Ok(match o {
        Obj::Val(v) => v.clone(),
        Obj::List(l) => Value::List(l.borrow().iter().map(conv).collect::<Result<_, _>>()?),
        Obj::Tuple(t) => Value::Tuple(t.iter().map(conv).collect::<Result<_, _>>()?),
        Obj::Dict(d) => {
            let d = d.borrow();
            let mut out = Dict::new(d.ordered);
            for (k, v) in &d.entries {
                out.entries.push((conv(k)?, conv(v)?));
            }
            Value::Dict(out)
        }
        Obj::Object(ob) => {
            let ob = ob.borrow();
            Value::Object(Box::new(Object {
                class: conv(&ob.class)?,
                args: ob.args.iter().map(conv).collect::<Result<_, _>>()?,
                state: ob.state.as_ref().map(conv).transpose()?,
                items: ob.items.iter().map(conv).collect::<Result<_, _>>()?,
            }))
        }
    })
}
