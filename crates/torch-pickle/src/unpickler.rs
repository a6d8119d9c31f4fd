//! A pickle virtual machine for `torch.save` files (protocols 0-5, the
//! opcodes PyTorch, argparse, numpy and collections produce).
//!
//! [`Vm::run`] reads one opcode at a time and hands it to the method of its
//! group (stack, scalars, strings, containers, memo, globals, calls,
//! persistent ids). Mutable containers are shared while unpickling (a
//! memoized dict that is filled later is the same dict everywhere), then
//! turned into a plain [`Value`] tree at STOP.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::rc::Rc;

use crate::error::{PickleError, Result};
use crate::opcode::{Group, OpCode as Op};
use crate::rebuild;
use crate::value::{Dict, Object, Value};

/// Resolves a persistent id (BINPERSID) into a value, usually a storage.
pub type PersistentLoad<'a> = dyn FnMut(Value) -> Result<Value> + 'a;

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
pub fn unpickle(reader: &mut dyn BufRead, persistent: &mut PersistentLoad) -> Result<Value> {
    let mut vm = Vm {
        reader,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        persistent,
        op: Op::Stop,
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
    /// The opcode being executed (its group method reads it; errors name it).
    op: Op,
}

impl Vm<'_, '_> {
    /// Executes opcodes up to STOP and returns the top of the stack.
    fn run(&mut self) -> Result<Obj> {
        loop {
            self.op = Op::try_from(self.u8()?).map_err(PickleError::UnknownOpcode)?;
            match self.op.group() {
                Group::Stop => return self.pop(),
                Group::Framing => self.framing()?,
                Group::Stack => self.stack_op()?,
                Group::Scalar => self.scalar()?,
                Group::Text => self.text()?,
                Group::NewContainer => self.new_container()?,
                Group::FillContainer => self.fill_container()?,
                Group::Memo => self.memo_op()?,
                Group::Global => self.global()?,
                Group::Call => self.call()?,
                Group::PersistentId => self.persistent_id()?,
                Group::Unsupported => return Err(self.unsupported()),
            }
        }
    }

    /// PROTO (checks the version), FRAME (frames are not needed to read a
    /// pickle from memory or a buffered file), READONLY_BUFFER.
    fn framing(&mut self) -> Result<()> {
        match self.op {
            Op::Proto => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(PickleError::UnsupportedProtocol(proto));
                }
            }
            Op::Frame => {
                self.array::<8>()?;
            }
            Op::ReadonlyBuffer => {}
            op => unreachable!("{op} is no framing opcode"),
        }
        Ok(())
    }

    /// MARK, POP, POP_MARK, DUP.
    fn stack_op(&mut self) -> Result<()> {
        match self.op {
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                self.pop()?;
            }
            Op::PopMark => {
                self.pop_mark()?;
            }
            Op::Dup => {
                let top = self.top()?.clone();
                self.stack.push(top);
            }
            op => unreachable!("{op} is no stack opcode"),
        }
        Ok(())
    }

    /// None, booleans, integers and floats.
    fn scalar(&mut self) -> Result<()> {
        let v = match self.op {
            Op::None => Value::None,
            Op::NewTrue => Value::Bool(true),
            Op::NewFalse => Value::Bool(false),
            Op::Int => match self.line()?.as_str() {
                "00" => Value::Bool(false),
                "01" => Value::Bool(true),
                s => Value::Int(self.parse(s)?),
            },
            Op::BinInt => Value::Int(i32::from_le_bytes(self.array()?).into()),
            Op::BinInt1 => Value::Int(self.u8()?.into()),
            Op::BinInt2 => Value::Int(u16::from_le_bytes(self.array()?).into()),
            Op::Long => {
                let line = self.line()?;
                Value::Int(self.parse(line.trim_end_matches('L'))?)
            }
            Op::Long1 => {
                let n = self.u8()?.into();
                long_from_bytes(self.bytes(n)?)
            }
            Op::Long4 => {
                let n = self.len_u32()?;
                long_from_bytes(self.bytes(n)?)
            }
            Op::Float => {
                let line = self.line()?;
                Value::Float(self.parse(&line)?)
            }
            Op::BinFloat => Value::Float(f64::from_be_bytes(self.array()?)),
            op => unreachable!("{op} is no scalar opcode"),
        };
        self.push_val(v);
        Ok(())
    }

    /// Strings (text, and protocol 0-2's byte strings read as Latin-1) and
    /// bytes.
    fn text(&mut self) -> Result<()> {
        let v = match self.op {
            Op::String => {
                let line = self.line()?;
                Value::Str(line.trim_matches(|c| c == '\'' || c == '"').to_string())
            }
            Op::BinString => {
                let n = self.len_u32()?;
                Value::Str(latin1(&self.bytes(n)?))
            }
            Op::ShortBinString => {
                let n = self.u8()?.into();
                Value::Str(latin1(&self.bytes(n)?))
            }
            Op::Unicode => Value::Str(self.line()?),
            Op::BinUnicode => {
                let n = self.len_u32()?;
                Value::Str(self.utf8(n)?)
            }
            Op::ShortBinUnicode => {
                let n = self.u8()?.into();
                Value::Str(self.utf8(n)?)
            }
            Op::BinUnicode8 => {
                let n = self.len_u64()?;
                Value::Str(self.utf8(n)?)
            }
            Op::BinBytes => {
                let n = self.len_u32()?;
                Value::Bytes(self.bytes(n)?)
            }
            Op::ShortBinBytes => {
                let n = self.u8()?.into();
                Value::Bytes(self.bytes(n)?)
            }
            Op::BinBytes8 | Op::ByteArray8 => {
                let n = self.len_u64()?;
                Value::Bytes(self.bytes(n)?)
            }
            op => unreachable!("{op} is no string opcode"),
        };
        self.push_val(v);
        Ok(())
    }

    /// Tuples, lists, dicts and sets, empty or from the items above a MARK.
    fn new_container(&mut self) -> Result<()> {
        let op = self.op;
        let obj = match op {
            Op::EmptyTuple => Obj::Tuple(Rc::new(Vec::new())),
            Op::Tuple1 | Op::Tuple2 | Op::Tuple3 => {
                let n = usize::from(u8::from(op) - u8::from(Op::Tuple1)) + 1;
                let Some(start) = self.stack.len().checked_sub(n) else {
                    return Err(PickleError::StackUnderflow { opcode: op });
                };
                Obj::Tuple(Rc::new(self.stack.split_off(start)))
            }
            Op::Tuple => Obj::Tuple(Rc::new(self.pop_mark()?)),
            Op::EmptyList => new_list(Vec::new()),
            Op::List => new_list(self.pop_mark()?),
            Op::EmptyDict => new_dict(false, Vec::new()),
            Op::Dict => {
                let d = new_dict(false, Vec::new());
                add_pairs(&d, self.pop_mark()?, op)?;
                d
            }
            Op::EmptySet => new_object(Value::global("builtins", "set"), vec![]),
            Op::FrozenSet => {
                let o = new_object(Value::global("builtins", "frozenset"), vec![]);
                add_items(&o, self.pop_mark()?, op)?;
                o
            }
            op => unreachable!("{op} makes no container"),
        };
        self.stack.push(obj);
        Ok(())
    }

    /// APPEND(S), ADDITEMS, SETITEM(S): items into the container below them.
    fn fill_container(&mut self) -> Result<()> {
        let op = self.op;
        match op {
            Op::Append => {
                let v = self.pop()?;
                add_items(self.top()?, vec![v], op)
            }
            Op::Appends | Op::AddItems => {
                let items = self.pop_mark()?;
                add_items(self.top()?, items, op)
            }
            Op::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                add_pairs(self.top()?, vec![k, v], op)
            }
            Op::SetItems => {
                let items = self.pop_mark()?;
                add_pairs(self.top()?, items, op)
            }
            op => unreachable!("{op} fills no container"),
        }
    }

    /// PUT/MEMOIZE store the top of the stack in the memo, GET pushes it back.
    fn memo_op(&mut self) -> Result<()> {
        let key: u64 = match self.op {
            Op::Put | Op::Get => {
                let line = self.line()?;
                self.parse(&line)?
            }
            Op::BinPut | Op::BinGet => self.u8()?.into(),
            Op::LongBinPut | Op::LongBinGet => u32::from_le_bytes(self.array()?).into(),
            Op::Memoize => self.memo.len() as u64,
            op => unreachable!("{op} is no memo opcode"),
        };
        if matches!(self.op, Op::Get | Op::BinGet | Op::LongBinGet) {
            let v = self.memo.get(&key).ok_or(PickleError::MissingMemo(key))?;
            self.stack.push(v.clone());
        } else {
            let top = self.top()?.clone();
            self.memo.insert(key, top);
        }
        Ok(())
    }

    /// GLOBAL (text lines) and STACK_GLOBAL (strings on the stack).
    fn global(&mut self) -> Result<()> {
        let (module, name) = match self.op {
            Op::Global => (self.line()?, self.line()?),
            Op::StackGlobal => {
                let name = self.pop_str()?;
                (self.pop_str()?, name)
            }
            op => unreachable!("{op} is no global opcode"),
        };
        self.push_val(Value::Global { module, name });
        Ok(())
    }

    /// REDUCE, NEWOBJ(_EX), INST and OBJ call or instantiate; BUILD sets
    /// an object's state.
    fn call(&mut self) -> Result<()> {
        let obj = match self.op {
            Op::Reduce => {
                let args = self.pop()?;
                let callable = self.pop()?;
                reduce(callable, args)?
            }
            Op::NewObj => {
                let args = self.pop()?;
                let cls = self.pop()?;
                newobj(cls, tuple_items(&args), None)
            }
            Op::NewObjEx => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                newobj(cls, tuple_items(&args), Some(kwargs))
            }
            Op::Inst => {
                let (module, name) = (self.line()?, self.line()?);
                let args = self.pop_mark()?;
                newobj(Obj::Val(Value::Global { module, name }), args, None)
            }
            Op::Obj => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.bad_value("a class after the MARK"));
                }
                let cls = items.remove(0);
                newobj(cls, items, None)
            }
            Op::Build => {
                let state = self.pop()?;
                build(self.top()?, state);
                return Ok(());
            }
            op => unreachable!("{op} is no call opcode"),
        };
        self.stack.push(obj);
        Ok(())
    }

    /// PERSID (a text id) and BINPERSID (an object id), resolved by the
    /// caller's [`PersistentLoad`].
    fn persistent_id(&mut self) -> Result<()> {
        let pid = match self.op {
            Op::PersId => Value::Str(self.line()?),
            Op::BinPersId => to_value(&self.pop()?, 0)?,
            op => unreachable!("{op} is no persistent id opcode"),
        };
        let v = (self.persistent)(pid)?;
        self.push_val(v);
        Ok(())
    }

    // ---- Reading arguments.

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.reader
            .read_exact(&mut b)
            .map_err(PickleError::Truncated)?;
        Ok(b)
    }

    fn len_u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize> {
        Ok(u64::from_le_bytes(self.array()?) as usize)
    }

    /// `n` bytes, read without trusting `n` for an allocation up front.
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let got = (&mut *self.reader)
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(PickleError::Truncated)?;
        if got != n {
            return Err(truncated(format!("wanted {n} bytes, got {got}")));
        }
        Ok(out)
    }

    fn utf8(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.bytes(n)?).map_err(|_| PickleError::InvalidUtf8 { opcode: self.op })
    }

    /// A text argument up to (without) its newline.
    fn line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .map_err(PickleError::Truncated)?;
        if buf.pop() != Some(b'\n') {
            return Err(truncated("unterminated line".into()));
        }
        String::from_utf8(buf).map_err(|_| PickleError::InvalidUtf8 { opcode: self.op })
    }

    /// A number in a text argument.
    fn parse<T: std::str::FromStr>(&self, s: &str) -> Result<T> {
        s.parse().map_err(|_| PickleError::BadLine {
            opcode: self.op,
            line: s.to_string(),
        })
    }

    // ---- The stack.

    fn push_val(&mut self, v: Value) {
        self.stack.push(Obj::Val(v));
    }

    fn pop(&mut self) -> Result<Obj> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(PickleError::PopAcrossMark { opcode: self.op });
        }
        self.stack
            .pop()
            .ok_or(PickleError::StackUnderflow { opcode: self.op })
    }

    fn top(&self) -> Result<&Obj> {
        self.stack
            .last()
            .ok_or(PickleError::StackUnderflow { opcode: self.op })
    }

    /// The items above the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Obj>> {
        let opcode = self.op;
        let m = self
            .marks
            .pop()
            .ok_or(PickleError::MarkMissing { opcode })?;
        if m > self.stack.len() {
            return Err(PickleError::MarkBeyondStack { opcode });
        }
        Ok(self.stack.split_off(m))
    }

    fn pop_str(&mut self) -> Result<String> {
        match self.pop()? {
            Obj::Val(Value::Str(s)) => Ok(s),
            _ => Err(self.bad_value("a module and a name (strings)")),
        }
    }

    fn bad_value(&self, expected: &'static str) -> PickleError {
        PickleError::BadValue {
            opcode: self.op,
            expected,
        }
    }

    fn unsupported(&self) -> PickleError {
        let what = match self.op {
            Op::NextBuffer => "out-of-band pickle buffers",
            _ => "pickle extension registry codes",
        };
        PickleError::UnsupportedOpcode {
            opcode: self.op,
            what,
        }
    }
}

fn truncated(what: String) -> PickleError {
    PickleError::Truncated(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what))
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

/// Appends `items` to a list (or set) for `op`.
fn add_items(target: &Obj, items: Vec<Obj>, op: Op) -> Result<()> {
    match target {
        Obj::List(l) => l.borrow_mut().extend(items),
        Obj::Object(o) => o.borrow_mut().items.extend(items),
        _ => {
            return Err(PickleError::BadValue {
                opcode: op,
                expected: "a list below the items",
            });
        }
    }
    Ok(())
}

/// Sets `items` (keys and values in turn) in a dict for `op`.
fn add_pairs(target: &Obj, items: Vec<Obj>, op: Op) -> Result<()> {
    let bad = |expected| PickleError::BadValue {
        opcode: op,
        expected,
    };
    if !items.len().is_multiple_of(2) {
        return Err(bad("keys and values (an even number of items)"));
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
        _ => return Err(bad("a dict below the items")),
    }
    Ok(())
}

fn global_name(o: &Obj) -> Option<(&str, &str)> {
    match o {
        Obj::Val(Value::Global { module, name }) => Some((module, name)),
        _ => None,
    }
}

fn newobj(cls: Obj, args: Vec<Obj>, kwargs: Option<Obj>) -> Obj {
    if let Some(("collections", "OrderedDict")) = global_name(&cls) {
        return new_dict(true, Vec::new());
    }
    let mut args = args;
    if let Some(kw) = kwargs {
        args.push(kw);
    }
    Obj::Object(Rc::new(RefCell::new(ObjBuf {
        class: cls,
        args,
        state: None,
        items: Vec::new(),
    })))
}

/// Calls `callable(*args)` for the callables this reader understands;
/// anything else becomes an opaque object.
fn reduce(callable: Obj, args: Obj) -> Result<Obj> {
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
                            add_pairs(&d, kv.as_ref().clone(), Op::Reduce)?;
                        }
                    }
                }
                return Ok(d);
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, type, args, state): rebuild with func(*args).
                if items.len() < 3 {
                    return Err(PickleError::BadRebuild {
                        func: name.to_string(),
                        problem: "expects 4 arguments".into(),
                    });
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
                        .collect::<Result<Vec<_>>>()
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

fn to_value(o: &Obj, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(PickleError::TooDeep);
    }
    let conv = |x: &Obj| to_value(x, depth + 1);
    Ok(match o {
        Obj::Val(v) => v.clone(),
        Obj::List(l) => Value::List(l.borrow().iter().map(conv).collect::<Result<_>>()?),
        Obj::Tuple(t) => Value::Tuple(t.iter().map(conv).collect::<Result<_>>()?),
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
                args: ob.args.iter().map(conv).collect::<Result<_>>()?,
                state: ob.state.as_ref().map(conv).transpose()?,
                items: ob.items.iter().map(conv).collect::<Result<_>>()?,
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickler::Pickler;

    fn load(bytes: &[u8]) -> Result<Value> {
        let mut no_pid = |pid: Value| Err(PickleError::UnexpectedPersistentId(format!("{pid:?}")));
        unpickle(&mut &bytes[..], &mut no_pid)
    }

    #[test]
    fn reads_what_the_pickler_writes() {
        let mut inner = Dict::new(true);
        inner.insert("k", Value::List(vec![Value::Int(300), Value::Int(-5)]));
        let mut top = Dict::new(false);
        top.insert("ordered", Value::Dict(inner));
        top.insert("big", Value::Int(1 << 40));
        top.insert("pi", Value::Float(3.25));
        top.insert("s", Value::Str("h\u{e9}".into()));
        top.insert("b", Value::Bytes(vec![0, 255]));
        top.insert("t", Value::Tuple(vec![Value::None, Value::Bool(true)]));
        top.insert("g", Value::global("torch", "float16"));
        let p = Pickler::encode(&Value::Dict(top)).unwrap();
        let back = load(&p.out).unwrap();
        let ordered = back.get("ordered").unwrap();
        assert!(ordered.as_dict().unwrap().ordered);
        let k: Vec<_> = ordered
            .get("k")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(Value::as_i64)
            .collect();
        assert_eq!(k, vec![Some(300), Some(-5)]);
        assert_eq!(back.get("big").unwrap().as_i64(), Some(1 << 40));
        assert_eq!(back.get("pi").unwrap().as_f64(), Some(3.25));
        assert_eq!(back.get("s").unwrap().as_str(), Some("h\u{e9}"));
        assert!(matches!(back.get("b").unwrap(), Value::Bytes(b) if b == &[0, 255]));
        assert_eq!(format!("{:?}", back.get("t").unwrap()), "(None, true)");
        assert_eq!(back.get("g").unwrap().as_dtype(), Some(tch::Kind::Half));
    }

    #[test]
    fn pickler_bytes_are_pinned() {
        let mut d = Dict::new(false);
        d.insert("a", Value::List(vec![Value::Int(1), Value::Bool(false)]));
        let p = Pickler::encode(&Value::Dict(d)).unwrap();
        assert_eq!(p.out, b"\x80\x02}(X\x01\x00\x00\x00a](K\x01\x89eu.");
    }

    #[test]
    fn reads_protocol_0_text_opcodes() {
        // [True, 12, 1.5, 'abc', u'x', 12 (memo 1 again)].
        let v = load(b"(lp0\nI01\naL12L\np1\naF1.5\naS'abc'\naVx\nag1\na.").unwrap();
        assert_eq!(format!("{v:?}"), "[true, 12, 1.5, \"abc\", \"x\", 12]");
    }

    #[test]
    fn self_reference_is_an_error() {
        // A list appended to itself. Following it MAX_DEPTH levels deep takes
        // ~3 MiB of stack in a debug build: more than a test thread's 2 MiB.
        let err = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(|| load(b"]q\x00h\x00a.").unwrap_err().to_string())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(err, PickleError::TooDeep.to_string());
    }

    #[test]
    fn errors_name_what_failed() {
        let err = |bytes: &[u8]| load(bytes).unwrap_err();
        assert!(matches!(
            err(b"\x80\x02\xff"),
            PickleError::UnknownOpcode(0xff)
        ));
        assert!(matches!(
            err(b"\x80\x06."),
            PickleError::UnsupportedProtocol(6)
        ));
        assert!(matches!(
            err(b"\x80\x02."),
            PickleError::StackUnderflow { opcode: Op::Stop }
        ));
        assert!(matches!(
            err(b"N(0."),
            PickleError::PopAcrossMark { opcode: Op::Pop }
        ));
        assert!(matches!(
            err(b"Nt."),
            PickleError::MarkMissing { opcode: Op::Tuple }
        ));
        assert!(matches!(err(b"h\x05."), PickleError::MissingMemo(5)));
        assert!(matches!(
            err(b"X\x05\x00\x00\x00ab"),
            PickleError::Truncated(_)
        ));
        assert!(matches!(
            err(b"K\x01K\x02\x93."),
            PickleError::BadValue {
                opcode: Op::StackGlobal,
                ..
            }
        ));
        assert!(matches!(
            err(b"Ix1\n."),
            PickleError::BadLine {
                opcode: Op::Int,
                ..
            }
        ));
        assert!(matches!(
            err(b"\x97"),
            PickleError::UnsupportedOpcode {
                opcode: Op::NextBuffer,
                ..
            }
        ));
        assert!(matches!(
            err(b"X\x01\x00\x00\x00aQ."),
            PickleError::UnexpectedPersistentId(_)
        ));
        assert_eq!(err(b"N(0.").to_string(), "pickle pops across a MARK in POP");
    }
}
