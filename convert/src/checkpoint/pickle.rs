//! A restricted unpickler for PyTorch checkpoints: it parses a pickle, it never executes one.
//!
//! The opcodes `torch.save` writes (protocols 2 to 5, and the few older ones that are harmless)
//! are interpreted into a small value tree. Globals are looked up in an allow-list when the
//! `GLOBAL`/`STACK_GLOBAL`/`INST` opcode is read: anything else (`posix.system`,
//! `builtins.eval`, …) is refused at once, before anything is built, with a message naming it.
//! The only "calls" the machine knows are the tensor rebuild functions of `torch._utils` and
//! `collections.OrderedDict()`, and those only build records here: a tensor is a description
//! (storage key, offset, sizes, strides), never data.
//!
//! Every stack, mark and memo access is checked, sizes are bounded, and the value graph is kept
//! in a flat arena (values are `Copy` indices), so neither a hostile memo nor deep nesting can
//! make it use memory out of proportion to the input, overflow the native stack, or panic.

use std::collections::HashMap;

use crate::convert_err;
use crate::source::ConvertError;

/// Largest pickle accepted (a 65B shard's `data.pkl` is about 50 KB).
pub const MAX_PICKLE_BYTES: usize = 256 << 20;
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 20;
const MAX_DIMS: usize = 16;
const MAX_DEPTH: usize = 64;
const MAX_LINE: usize = 256;
/// Nodes the value tree may have beyond the arena's size (shared sub-objects are expanded).
const TREE_BUDGET: usize = 1 << 22;

/// Element type of a storage or tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElemType::F64 | ElemType::I64 => 8,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::BF16 | ElemType::I16 => 2,
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
        }
    }

    /// PyTorch's name of the dtype.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F64 => "float64",
            ElemType::F32 => "float32",
            ElemType::F16 => "float16",
            ElemType::BF16 => "bfloat16",
            ElemType::I64 => "int64",
            ElemType::I32 => "int32",
            ElemType::I16 => "int16",
            ElemType::I8 => "int8",
            ElemType::U8 => "uint8",
            ElemType::Bool => "bool",
        }
    }
}

/// The globals a tensor checkpoint may name. Nothing else is ever accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    /// `torch.Tensor` (only as the type argument of `_rebuild_from_type_v2`).
    TensorType,
    /// `torch.nn.parameter.Parameter` (same).
    ParameterType,
    /// A storage class: `torch.BFloat16Storage` etc.; `None` is `torch.UntypedStorage` (bytes).
    Storage(Option<ElemType>),
    /// A dtype object: `torch.bfloat16` etc.
    Dtype(ElemType),
}

impl Global {
    fn name(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensor => "torch._utils._rebuild_tensor".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildTensorV3 => "torch._utils._rebuild_tensor_v3".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::RebuildParameterWithState => {
                "torch._utils._rebuild_parameter_with_state".into()
            }
            Global::RebuildFromTypeV2 => "torch._tensor._rebuild_from_type_v2".into(),
            Global::TensorType => "torch.Tensor".into(),
            Global::ParameterType => "torch.nn.parameter.Parameter".into(),
            Global::Storage(None) => "torch.UntypedStorage".into(),
            Global::Storage(Some(t)) => format!("torch.{}", storage_class_name(t)),
            Global::Dtype(t) => format!("torch.{}", t.name()),
        }
    }
}

fn storage_class_name(t: ElemType) -> &'static str {
    match t {
        ElemType::F64 => "DoubleStorage",
        ElemType::F32 => "FloatStorage",
        ElemType::F16 => "HalfStorage",
        ElemType::BF16 => "BFloat16Storage",
        ElemType::I64 => "LongStorage",
        ElemType::I32 => "IntStorage",
        ElemType::I16 => "ShortStorage",
        ElemType::I8 => "CharStorage",
        ElemType::U8 => "ByteStorage",
        ElemType::Bool => "BoolStorage",
    }
}

const ALL_ELEM_TYPES: [ElemType; 10] = [
    ElemType::F64,
    ElemType::F32,
    ElemType::F16,
    ElemType::BF16,
    ElemType::I64,
    ElemType::I32,
    ElemType::I16,
    ElemType::I8,
    ElemType::U8,
    ElemType::Bool,
];

/// The allow-list.
pub fn lookup_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => return Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor") => return Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_tensor_v2") => return Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor_v3") => return Some(Global::RebuildTensorV3),
        ("torch._utils", "_rebuild_parameter") => return Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            return Some(Global::RebuildParameterWithState)
        }
        ("torch._tensor", "_rebuild_from_type_v2") => return Some(Global::RebuildFromTypeV2),
        ("torch", "Tensor") | ("torch._tensor", "Tensor") => return Some(Global::TensorType),
        ("torch.nn.parameter", "Parameter") => return Some(Global::ParameterType),
        ("torch", "UntypedStorage") | ("torch.storage", "UntypedStorage") => {
            return Some(Global::Storage(None))
        }
        _ => {}
    }
    if module == "torch" || module == "torch.cuda" {
        if let Some(t) = ALL_ELEM_TYPES
            .iter()
            .copied()
            .find(|&t| storage_class_name(t) == name)
        {
            return Some(Global::Storage(Some(t)));
        }
    }
    if module == "torch" {
        let t = match name {
            "float64" | "double" => ElemType::F64,
            "float32" | "float" => ElemType::F32,
            "float16" | "half" => ElemType::F16,
            "bfloat16" => ElemType::BF16,
            "int64" | "long" => ElemType::I64,
            "int32" | "int" => ElemType::I32,
            "int16" | "short" => ElemType::I16,
            "int8" => ElemType::I8,
            "uint8" => ElemType::U8,
            "bool" => ElemType::Bool,
            _ => return None,
        };
        return Some(Global::Dtype(t));
    }
    None
}

/// A storage as `persistent_load` describes it: the key of its record, its element type and
/// length, and (legacy format only) a sub-range view of a root storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    /// Element type of the storage (`U8` for an untyped storage).
    pub dtype: ElemType,
    pub location: String,
    /// Elements of `dtype` in the (root) storage.
    pub numel: u64,
    pub view: Option<StorageView>,
}

/// Legacy `view_metadata`: elements `offset .. offset + numel` of the root storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageView {
    pub key: String,
    pub offset: u64,
    pub numel: u64,
}

/// A tensor as its rebuild call describes it; offset and strides are in elements of `dtype`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRecord {
    pub storage: StorageRef,
    pub dtype: ElemType,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The value tree a pickle evaluates to.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<PyValue>),
    List(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRecord),
}

impl PyValue {
    fn kind(&self) -> &'static str {
        match self {
            PyValue::None => "None",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::Tuple(_) => "tuple",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
            PyValue::Global(_) => "global",
            PyValue::Storage(_) => "storage",
            PyValue::Tensor(_) => "tensor",
        }
    }
}

/// The tensors of a state dict, in the pickle's order, plus the byte just after `STOP`.
#[derive(Clone, Debug, PartialEq)]
pub struct StateDict {
    pub tensors: Vec<(String, TensorRecord)>,
    /// Entries whose value is not a tensor (skipped).
    pub skipped: Vec<String>,
    pub end: usize,
}

/// Parses one pickle starting at `data[0]`; returns its value and the offset just past `STOP`.
/// `file` names the file in messages.
pub fn load(data: &[u8], file: &str) -> Result<(PyValue, usize), ConvertError> {
    let mut m = Machine::new(data, file);
    let top = m.run()?;
    let mut budget = m.objs.len().saturating_add(TREE_BUDGET);
    let tree = m.to_tree(top, 0, &mut budget)?;
    Ok((tree, m.pos))
}

/// Parses a pickled state dict (a `dict`/`OrderedDict` of name → tensor).
pub fn load_state_dict(data: &[u8], file: &str) -> Result<StateDict, ConvertError> {
    let (value, end) = load(data, file)?;
    let PyValue::Dict(items) = value else {
        return Err(convert_err!(
            "{file}: the pickle holds a {}, not a state dict (a dict of tensors)",
            value.kind()
        ));
    };
    let mut tensors: Vec<(String, TensorRecord)> = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (k, v) in items {
        let PyValue::Str(name) = k else {
            return Err(convert_err!(
                "{file}: state dict key is a {}, not a str",
                k.kind()
            ));
        };
        match v {
            PyValue::Tensor(t) => {
                if let Some(&i) = index.get(&name) {
                    tensors[i].1 = t;
                } else {
                    index.insert(name.clone(), tensors.len());
                    tensors.push((name, t));
                }
            }
            _ => skipped.push(name),
        }
    }
    Ok(StateDict {
        tensors,
        skipped,
        end,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Global(Global),
    Obj(usize),
}

#[derive(Debug)]
enum Obj {
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Storage(StorageRef),
    Tensor(TensorRecord),
}

struct Machine<'a> {
    data: &'a [u8],
    file: &'a str,
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objs: Vec<Obj>,
}

/// Printable form of a name read from the file (escaped, bounded).
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(120).flat_map(char::escape_debug).collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], file: &'a str) -> Self {
        Machine {
            data,
            file,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objs: Vec::new(),
        }
    }

    fn err(&self, at: usize, what: impl std::fmt::Display) -> ConvertError {
        convert_err!("{}: pickle at byte {at}: {what}", self.file)
    }

    fn take(&mut self, n: usize, op_at: usize) -> Result<&'a [u8], ConvertError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(
                op_at,
                format_args!(
                    "truncated: needs {n} more bytes, {} left",
                    self.data.len().saturating_sub(self.pos)
                ),
            )),
        }
    }

    fn take_arr<const N: usize>(&mut self, op_at: usize) -> Result<[u8; N], ConvertError> {
        let s = self.take(N, op_at)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, at: usize) -> Result<u8, ConvertError> {
        Ok(self.take_arr::<1>(at)?[0])
    }
    fn u16(&mut self, at: usize) -> Result<u16, ConvertError> {
        Ok(u16::from_le_bytes(self.take_arr(at)?))
    }
    fn u32(&mut self, at: usize) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.take_arr(at)?))
    }
    fn u64(&mut self, at: usize) -> Result<u64, ConvertError> {
        Ok(u64::from_le_bytes(self.take_arr(at)?))
    }

    fn len_u64(&self, n: u64, at: usize) -> Result<usize, ConvertError> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len())
            .ok_or_else(|| {
                self.err(
                    at,
                    format_args!(
                        "length {n} exceeds the pickle's size ({} bytes)",
                        self.data.len()
                    ),
                )
            })
    }

    fn line(&mut self, at: usize) -> Result<&'a str, ConvertError> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let limit = rest.len().min(MAX_LINE);
        let Some(nl) = rest[..limit].iter().position(|&b| b == b'\n') else {
            return Err(self.err(at, "unterminated or overlong text line"));
        };
        let line = &rest[..nl];
        self.pos += nl + 1;
        std::str::from_utf8(line).map_err(|_| self.err(at, "text line is not UTF-8"))
    }

    fn push(&mut self, v: Value, at: usize) -> Result<(), ConvertError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(at, "stack too deep"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, at: usize) -> Result<Value, ConvertError> {
        self.stack
            .pop()
            .ok_or_else(|| self.err(at, "stack underflow"))
    }

    fn top(&self, at: usize) -> Result<Value, ConvertError> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err(at, "stack underflow"))
    }

    /// Pops everything down to the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, ConvertError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(at, "no MARK on the stack"))?;
        if m > self.stack.len() {
            return Err(self.err(at, "MARK above the top of the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn obj(&self, v: Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    fn str_of(&self, v: Value) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn tuple_of(&self, v: Value) -> Option<&[Value]> {
        match self.obj(v) {
            Some(Obj::Tuple(t)) => Some(t),
            _ => None,
        }
    }

    fn describe(&self, v: Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Global(_) => "global",
            Value::Obj(i) => match self.objs.get(i) {
                Some(Obj::Str(_)) => "str",
                Some(Obj::Bytes(_)) => "bytes",
                Some(Obj::Tuple(_)) => "tuple",
                Some(Obj::List(_)) => "list",
                Some(Obj::Dict(_)) => "dict",
                Some(Obj::Storage(_)) => "storage",
                Some(Obj::Tensor(_)) => "tensor",
                None => "invalid object",
            },
        }
    }

    fn global(&self, module: &str, name: &str, at: usize) -> Result<Global, ConvertError> {
        lookup_global(module, name).ok_or_else(|| {
            convert_err!(
                "refusing {}: its pickle calls {}.{} (byte {at}); only tensor data is accepted from a checkpoint",
                self.file,
                shown(module),
                shown(name)
            )
        })
    }

    fn memo_put(&mut self, key: u64, at: usize) -> Result<(), ConvertError> {
        let v = self.top(at)?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(self.err(at, "too many memo entries"));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64, at: usize) -> Result<(), ConvertError> {
        let v = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.err(at, format_args!("memo key {key} was never stored")))?;
        self.push(v, at)
    }

    fn int_from_le(&self, bytes: &[u8], at: usize) -> Result<i64, ConvertError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if bytes.len() > 8 {
            // Accept over-long encodings of values that still fit (sign extension only).
            let (low, high) = bytes.split_at(8);
            let neg = low[7] & 0x80 != 0;
            let fill = if neg { 0xff } else { 0 };
            if high.iter().any(|&b| b != fill) {
                return Err(self.err(
                    at,
                    format_args!("integer of {} bytes is too large", bytes.len()),
                ));
            }
            return self.int_from_le(low, at);
        }
        let neg = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(buf))
    }

    fn run(&mut self) -> Result<Value, ConvertError> {
        if self.data.len() > MAX_PICKLE_BYTES {
            return Err(convert_err!(
                "{}: pickle of {} bytes is larger than the {} bytes accepted",
                self.file,
                self.data.len(),
                MAX_PICKLE_BYTES
            ));
        }
        loop {
            let at = self.pos;
            let op = self
                .u8(at)
                .map_err(|_| self.err(at, "truncated: the pickle ends before its STOP opcode"))?;
            match op {
                // PROTO
                0x80 => {
                    let v = self.u8(at)?;
                    if v > 5 {
                        return Err(self.err(at, format_args!("unsupported pickle protocol {v}")));
                    }
                }
                // FRAME: framing is only a hint for buffered readers; check it fits.
                0x95 => {
                    let n = self.u64(at)?;
                    if n > (self.data.len() - self.pos) as u64 {
                        return Err(self.err(
                            at,
                            format_args!(
                                "FRAME of {n} bytes, only {} left",
                                self.data.len() - self.pos
                            ),
                        ));
                    }
                }
                // STOP
                b'.' => return self.pop(at),
                // MARK
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err(at, "too many MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    if self.stack.is_empty() {
                        self.pop_mark(at)?;
                    } else {
                        self.stack.pop();
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark(at)?;
                }
                // DUP
                b'2' => {
                    let v = self.top(at)?;
                    self.push(v, at)?;
                }
                // NONE, NEWTRUE, NEWFALSE
                b'N' => self.push(Value::None, at)?,
                0x88 => self.push(Value::Bool(true), at)?,
                0x89 => self.push(Value::Bool(false), at)?,
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = i32::from_le_bytes(self.take_arr(at)?);
                    self.push(Value::Int(v.into()), at)?;
                }
                b'K' => {
                    let v = self.u8(at)?;
                    self.push(Value::Int(v.into()), at)?;
                }
                b'M' => {
                    let v = self.u16(at)?;
                    self.push(Value::Int(v.into()), at)?;
                }
                // LONG1, LONG4
                0x8a => {
                    let n = self.u8(at)? as usize;
                    let b = self.take(n, at)?;
                    let v = self.int_from_le(b, at)?;
                    self.push(Value::Int(v), at)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.take_arr(at)?);
                    let n = usize::try_from(n)
                        .map_err(|_| self.err(at, "LONG4 with a negative length"))?;
                    let b = self.take(n, at)?;
                    let v = self.int_from_le(b, at)?;
                    self.push(Value::Int(v), at)?;
                }
                // INT, LONG (text, protocol 0)
                b'I' | b'L' => {
                    let l = self.line(at)?;
                    let t = l.strip_suffix('L').unwrap_or(l);
                    let v = match t {
                        "00" if op == b'I' => Value::Bool(false),
                        "01" if op == b'I' => Value::Bool(true),
                        _ => Value::Int(t.parse::<i64>().map_err(|_| {
                            self.err(at, format_args!("bad integer literal {:?}", shown(l)))
                        })?),
                    };
                    self.push(v, at)?;
                }
                // BINFLOAT (big-endian), FLOAT (text)
                b'G' => {
                    let v = f64::from_be_bytes(self.take_arr(at)?);
                    self.push(Value::Float(v), at)?;
                }
                b'F' => {
                    let l = self.line(at)?;
                    let v = l.parse::<f64>().map_err(|_| {
                        self.err(at, format_args!("bad float literal {:?}", shown(l)))
                    })?;
                    self.push(Value::Float(v), at)?;
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32(at)?),
                        0x8c => u64::from(self.u8(at)?),
                        _ => self.u64(at)?,
                    };
                    let n = self.len_u64(n, at)?;
                    let b = self.take(n, at)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| self.err(at, "string is not valid UTF-8"))?;
                    let v = self.new_obj(Obj::Str(s.to_owned()));
                    self.push(v, at)?;
                }
                // BINSTRING, SHORT_BINSTRING (Python 2 str): text if UTF-8, else bytes
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        let n = i32::from_le_bytes(self.take_arr(at)?);
                        u64::try_from(n)
                            .map_err(|_| self.err(at, "BINSTRING with a negative length"))?
                    } else {
                        u64::from(self.u8(at)?)
                    };
                    let n = self.len_u64(n, at)?;
                    let b = self.take(n, at)?;
                    let o = match std::str::from_utf8(b) {
                        Ok(s) => Obj::Str(s.to_owned()),
                        Err(_) => Obj::Bytes(b.to_vec()),
                    };
                    let v = self.new_obj(o);
                    self.push(v, at)?;
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32(at)?),
                        b'C' => u64::from(self.u8(at)?),
                        _ => self.u64(at)?,
                    };
                    let n = self.len_u64(n, at)?;
                    let b = self.take(n, at)?;
                    let v = self.new_obj(Obj::Bytes(b.to_vec()));
                    self.push(v, at)?;
                }
                // EMPTY_TUPLE, TUPLE, TUPLE1..3
                b')' => {
                    let v = self.new_obj(Obj::Tuple(Vec::new()));
                    self.push(v, at)?;
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v, at)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.err(at, "stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let v = self.new_obj(Obj::Tuple(items));
                    self.push(v, at)?;
                }
                // EMPTY_LIST, LIST, EMPTY_SET, FROZENSET (sets are kept as lists)
                b']' | 0x8f => {
                    let v = self.new_obj(Obj::List(Vec::new()));
                    self.push(v, at)?;
                }
                b'l' | 0x91 => {
                    let items = self.pop_mark(at)?;
                    let v = self.new_obj(Obj::List(items));
                    self.push(v, at)?;
                }
                // APPEND
                b'a' => {
                    let item = self.pop(at)?;
                    let list = self.top(at)?;
                    self.extend_list(list, vec![item], at)?;
                }
                // APPENDS, ADDITEMS
                b'e' | 0x90 => {
                    let items = self.pop_mark(at)?;
                    let list = self.top(at)?;
                    self.extend_list(list, items, at)?;
                }
                // EMPTY_DICT, DICT
                b'}' => {
                    let v = self.new_obj(Obj::Dict(Vec::new()));
                    self.push(v, at)?;
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let pairs = self.pairs(items, at)?;
                    let v = self.new_obj(Obj::Dict(pairs));
                    self.push(v, at)?;
                }
                // SETITEM, SETITEMS
                b's' => {
                    let value = self.pop(at)?;
                    let key = self.pop(at)?;
                    let dict = self.top(at)?;
                    self.extend_dict(dict, vec![(key, value)], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let pairs = self.pairs(items, at)?;
                    let dict = self.top(at)?;
                    self.extend_dict(dict, pairs, at)?;
                }
                // BINPUT, LONG_BINPUT, PUT, MEMOIZE
                b'q' => {
                    let k = self.u8(at)?;
                    self.memo_put(k.into(), at)?;
                }
                b'r' => {
                    let k = self.u32(at)?;
                    self.memo_put(k.into(), at)?;
                }
                b'p' => {
                    let l = self.line(at)?;
                    let k = l
                        .parse::<u64>()
                        .map_err(|_| self.err(at, format_args!("bad memo key {:?}", shown(l))))?;
                    self.memo_put(k, at)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k, at)?;
                }
                // BINGET, LONG_BINGET, GET
                b'h' => {
                    let k = self.u8(at)?;
                    self.memo_get(k.into(), at)?;
                }
                b'j' => {
                    let k = self.u32(at)?;
                    self.memo_get(k.into(), at)?;
                }
                b'g' => {
                    let l = self.line(at)?;
                    let k = l
                        .parse::<u64>()
                        .map_err(|_| self.err(at, format_args!("bad memo key {:?}", shown(l))))?;
                    self.memo_get(k, at)?;
                }
                // GLOBAL: checked against the allow-list as soon as it is read.
                b'c' => {
                    let module = self.line(at)?;
                    let name = self.line(at)?;
                    let g = self.global(module, name, at)?;
                    self.push(Value::Global(g), at)?;
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name))
                    else {
                        return Err(self.err(at, "STACK_GLOBAL operands are not strings"));
                    };
                    let g = self.global(module, name, at)?;
                    self.push(Value::Global(g), at)?;
                }
                // INST: names a class inline; refuse unknown ones like GLOBAL, and the rest
                // too (torch never writes it).
                b'i' => {
                    let module = self.line(at)?;
                    let name = self.line(at)?;
                    let g = self.global(module, name, at)?;
                    return Err(
                        self.err(at, format_args!("unsupported opcode INST ({})", g.name()))
                    );
                }
                // REDUCE
                b'R' => {
                    let args = self.pop(at)?;
                    let func = self.pop(at)?;
                    let v = self.call(func, args, at)?;
                    self.push(v, at)?;
                }
                // NEWOBJ, NEWOBJ_EX: only OrderedDict (an empty dict) is accepted.
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop(at)?; // kwargs
                    }
                    let _args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    match cls {
                        Value::Global(Global::OrderedDict) => {
                            let v = self.new_obj(Obj::Dict(Vec::new()));
                            self.push(v, at)?;
                        }
                        Value::Global(g) => {
                            return Err(self.err(
                                at,
                                format_args!("cannot instantiate {} with NEWOBJ", g.name()),
                            ))
                        }
                        other => {
                            return Err(
                                self.err(at, format_args!("NEWOBJ on a {}", self.describe(other)))
                            )
                        }
                    }
                }
                // BUILD: the state (e.g. a state dict's `_metadata`) is ignored.
                b'b' => {
                    self.pop(at)?;
                    self.top(at)?;
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop(at)?;
                    let v = self.persistent_load(pid, at)?;
                    self.push(v, at)?;
                }
                // EXT1, EXT2, EXT4: the copyreg extension registry resolves to arbitrary globals.
                0x82..=0x84 => {
                    return Err(convert_err!(
                        "refusing {}: its pickle uses the copyreg extension registry (opcode EXT at byte {at}), which can name any global",
                        self.file
                    ));
                }
                b'P' => return Err(self.err(at, "unsupported opcode PERSID (text persistent id)")),
                b'S' | b'V' => {
                    return Err(self.err(at, "unsupported text string opcode (protocol 0)"))
                }
                b'o' => return Err(self.err(at, "unsupported opcode OBJ")),
                0x97 | 0x98 => return Err(self.err(at, "unsupported out-of-band buffer opcode")),
                _ => return Err(self.err(at, format_args!("unknown opcode 0x{op:02x}"))),
            }
        }
    }

    fn pairs(&self, items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, ConvertError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(at, "odd number of items for a dict"));
        }
        let mut it = items.into_iter();
        let mut out = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn extend_list(
        &mut self,
        list: Value,
        items: Vec<Value>,
        at: usize,
    ) -> Result<(), ConvertError> {
        let kind = self.describe(list);
        match list {
            Value::Obj(i) => match self.objs.get_mut(i) {
                Some(Obj::List(l)) => {
                    l.extend(items);
                    Ok(())
                }
                _ => Err(self.err(at, format_args!("APPEND to a {kind}"))),
            },
            _ => Err(self.err(at, format_args!("APPEND to a {kind}"))),
        }
    }

    fn extend_dict(
        &mut self,
        dict: Value,
        pairs: Vec<(Value, Value)>,
        at: usize,
    ) -> Result<(), ConvertError> {
        let kind = self.describe(dict);
        match dict {
            Value::Obj(i) => match self.objs.get_mut(i) {
                Some(Obj::Dict(d)) => {
                    d.extend(pairs);
                    Ok(())
                }
                _ => Err(self.err(at, format_args!("SETITEM on a {kind}"))),
            },
            _ => Err(self.err(at, format_args!("SETITEM on a {kind}"))),
        }
    }

    fn key_string(&self, v: Value) -> Option<String> {
        match v {
            Value::Int(i) => Some(i.to_string()),
            _ => self.str_of(v).map(str::to_owned),
        }
    }

    fn uint(&self, v: Value, what: &str, at: usize) -> Result<u64, ConvertError> {
        match v {
            Value::Int(i) if i >= 0 => Ok(i as u64),
            Value::Int(i) => Err(self.err(at, format_args!("{what} is negative ({i})"))),
            other => Err(self.err(
                at,
                format_args!("{what} is a {}, not an int", self.describe(other)),
            )),
        }
    }

    fn uint_tuple(&self, v: Value, what: &str, at: usize) -> Result<Vec<u64>, ConvertError> {
        let Some(items) = self.tuple_of(v) else {
            return Err(self.err(
                at,
                format_args!("{what} is a {}, not a tuple", self.describe(v)),
            ));
        };
        if items.len() > MAX_DIMS {
            return Err(self.err(
                at,
                format_args!("{what} has {} dimensions (at most {MAX_DIMS})", items.len()),
            ));
        }
        items.iter().map(|&x| self.uint(x, what, at)).collect()
    }

    /// `persistent_load`: `('storage', storage_type, key, location, numel[, view_metadata])`.
    fn persistent_load(&mut self, pid: Value, at: usize) -> Result<Value, ConvertError> {
        let Some(t) = self.tuple_of(pid) else {
            return Err(self.err(
                at,
                format_args!("persistent id is a {}, not a tuple", self.describe(pid)),
            ));
        };
        let t = t.to_vec();
        let Some(&tag) = t.first() else {
            return Err(self.err(at, "empty persistent id"));
        };
        if self.str_of(tag) != Some("storage") {
            let shown_tag = self.str_of(tag).map(shown).unwrap_or_default();
            return Err(self.err(
                at,
                format_args!(
                    "unsupported persistent id {shown_tag:?} (only storages are accepted)"
                ),
            ));
        }
        if t.len() != 5 && t.len() != 6 {
            return Err(self.err(
                at,
                format_args!(
                    "storage persistent id has {} fields, expected 5 or 6",
                    t.len()
                ),
            ));
        }
        let dtype = match t[1] {
            Value::Global(Global::Storage(Some(d))) => d,
            Value::Global(Global::Storage(None)) => ElemType::U8,
            other => {
                let what = match other {
                    Value::Global(g) => g.name(),
                    v => self.describe(v).to_owned(),
                };
                return Err(self.err(
                    at,
                    format_args!("storage type is {what}, not a storage class"),
                ));
            }
        };
        let key = self
            .key_string(t[2])
            .ok_or_else(|| self.err(at, "storage key is not a str"))?;
        let location = self.str_of(t[3]).unwrap_or("").to_owned();
        let numel = self.uint(t[4], "storage size", at)?;
        let view = match t.get(5) {
            None | Some(Value::None) => None,
            Some(&v) => {
                let Some(vm) = self.tuple_of(v) else {
                    return Err(self.err(at, "storage view metadata is not a tuple"));
                };
                if vm.len() != 3 {
                    return Err(self.err(at, "storage view metadata does not have 3 fields"));
                }
                let vm = vm.to_vec();
                Some(StorageView {
                    key: self
                        .key_string(vm[0])
                        .ok_or_else(|| self.err(at, "storage view key is not a str"))?,
                    offset: self.uint(vm[1], "storage view offset", at)?,
                    numel: self.uint(vm[2], "storage view size", at)?,
                })
            }
        };
        Ok(self.new_obj(Obj::Storage(StorageRef {
            key,
            dtype,
            location,
            numel,
            view,
        })))
    }

    fn call(&mut self, func: Value, args: Value, at: usize) -> Result<Value, ConvertError> {
        let Value::Global(g) = func else {
            return Err(self.err(
                at,
                format_args!(
                    "REDUCE calls a {}, not an allowed function",
                    self.describe(func)
                ),
            ));
        };
        let Some(a) = self.tuple_of(args) else {
            return Err(self.err(
                at,
                format_args!(
                    "REDUCE arguments are a {}, not a tuple",
                    self.describe(args)
                ),
            ));
        };
        let a = a.to_vec();
        let bad_args = |m: &Self| {
            m.err(
                at,
                format_args!(
                    "{} called with unexpected arguments ({} given)",
                    g.name(),
                    a.len()
                ),
            )
        };
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return Err(bad_args(self));
                }
                Ok(self.new_obj(Obj::Dict(Vec::new())))
            }
            Global::RebuildTensor | Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                let (min, max) = match g {
                    Global::RebuildTensor => (4, 4),
                    Global::RebuildTensorV2 => (6, 7),
                    _ => (7, 8),
                };
                if a.len() < min || a.len() > max {
                    return Err(bad_args(self));
                }
                let storage = match self.obj(a[0]) {
                    Some(Obj::Storage(s)) => s.clone(),
                    _ => {
                        return Err(self.err(
                            at,
                            format_args!(
                                "{} expects a storage, got a {}",
                                g.name(),
                                self.describe(a[0])
                            ),
                        ))
                    }
                };
                let offset = self.uint(a[1], "storage offset", at)?;
                let shape = self.uint_tuple(a[2], "size", at)?;
                let stride = self.uint_tuple(a[3], "stride", at)?;
                if shape.len() != stride.len() {
                    return Err(self.err(
                        at,
                        format_args!(
                            "size has {} dimensions but stride has {}",
                            shape.len(),
                            stride.len()
                        ),
                    ));
                }
                let dtype = if g == Global::RebuildTensorV3 {
                    match a[6] {
                        Value::Global(Global::Dtype(d)) => d,
                        _ => return Err(self.err(at, "_rebuild_tensor_v3 dtype is not a dtype")),
                    }
                } else {
                    storage.dtype
                };
                Ok(self.new_obj(Obj::Tensor(TensorRecord {
                    storage,
                    dtype,
                    offset,
                    shape,
                    stride,
                })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let n = if g == Global::RebuildParameter { 3 } else { 4 };
                if a.len() != n {
                    return Err(bad_args(self));
                }
                match self.obj(a[0]) {
                    Some(Obj::Tensor(_)) => Ok(a[0]),
                    _ => Err(self.err(
                        at,
                        format_args!(
                            "{} expects a tensor, got a {}",
                            g.name(),
                            self.describe(a[0])
                        ),
                    )),
                }
            }
            Global::RebuildFromTypeV2 => {
                if a.len() != 4 {
                    return Err(bad_args(self));
                }
                match a[1] {
                    Value::Global(Global::TensorType | Global::ParameterType) => {}
                    _ => {
                        return Err(self.err(
                            at,
                            "_rebuild_from_type_v2 of a type other than torch.Tensor/Parameter",
                        ))
                    }
                }
                match a[0] {
                    Value::Global(
                        Global::RebuildTensor
                        | Global::RebuildTensorV2
                        | Global::RebuildTensorV3
                        | Global::RebuildParameter
                        | Global::RebuildParameterWithState,
                    ) => self.call(a[0], a[2], at),
                    _ => Err(self.err(
                        at,
                        "_rebuild_from_type_v2 with a function other than a tensor rebuild",
                    )),
                }
            }
            Global::TensorType | Global::ParameterType | Global::Storage(_) | Global::Dtype(_) => {
                Err(self.err(at, format_args!("{} cannot be called here", g.name())))
            }
        }
    }

    /// Expands the arena graph into an owned tree (bounded depth and size: shared or cyclic
    /// structures cannot blow up).
    fn to_tree(&self, v: Value, depth: usize, budget: &mut usize) -> Result<PyValue, ConvertError> {
        if depth > MAX_DEPTH {
            return Err(convert_err!(
                "{}: pickle nests deeper than {MAX_DEPTH} levels",
                self.file
            ));
        }
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| convert_err!("{}: pickle expands to too many objects", self.file))?;
        Ok(match v {
            Value::None => PyValue::None,
            Value::Bool(b) => PyValue::Bool(b),
            Value::Int(i) => PyValue::Int(i),
            Value::Float(f) => PyValue::Float(f),
            Value::Global(g) => PyValue::Global(g),
            Value::Obj(i) => match self.objs.get(i) {
                Some(Obj::Str(s)) => PyValue::Str(s.clone()),
                Some(Obj::Bytes(b)) => PyValue::Bytes(b.clone()),
                Some(Obj::Storage(s)) => PyValue::Storage(s.clone()),
                Some(Obj::Tensor(t)) => PyValue::Tensor(t.clone()),
                Some(Obj::Tuple(items)) => PyValue::Tuple(self.tree_list(items, depth, budget)?),
                Some(Obj::List(items)) => PyValue::List(self.tree_list(items, depth, budget)?),
                Some(Obj::Dict(pairs)) => {
                    let mut out = Vec::with_capacity(pairs.len().min(*budget));
                    for &(k, v) in pairs {
                        out.push((
                            self.to_tree(k, depth + 1, budget)?,
                            self.to_tree(v, depth + 1, budget)?,
                        ));
                    }
                    PyValue::Dict(out)
                }
                None => {
                    return Err(convert_err!(
                        "{}: pickle refers to a missing object",
                        self.file
                    ))
                }
            },
        })
    }

    fn tree_list(
        &self,
        items: &[Value],
        depth: usize,
        budget: &mut usize,
    ) -> Result<Vec<PyValue>, ConvertError> {
        let mut out = Vec::with_capacity(items.len().min(*budget));
        for &x in items {
            out.push(self.to_tree(x, depth + 1, budget)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_global_before_building() {
        let p = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00echo\x85R.";
        let e = load(p, "x.bin").unwrap_err().0;
        assert!(
            e.contains("refusing x.bin: its pickle calls posix.system"),
            "{e}"
        );
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        let e = load(p, "x.bin").unwrap_err().0;
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn small_values() {
        let p = b"\x80\x02(K\x01J\xff\xff\xff\xff\x8a\x02\x00\x80\x89N]q\x00K\x05a\x88t.";
        let (v, end) = load(p, "t").unwrap();
        assert_eq!(end, p.len());
        let PyValue::Tuple(t) = v else { panic!() };
        assert_eq!(t[0], PyValue::Int(1));
        assert_eq!(t[1], PyValue::Int(-1));
        assert_eq!(t[2], PyValue::Int(-32768));
        assert_eq!(t[3], PyValue::Bool(false));
        assert_eq!(t[4], PyValue::None);
        assert_eq!(t[5], PyValue::List(vec![PyValue::Int(5)]));
        assert_eq!(t[6], PyValue::Bool(true));
        // a list that contains itself is an error, not a hang
        assert!(load(b"\x80\x02]q\x00h\x00a.", "t").is_err());
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80",
            b"\x80\x02.",
            b"\x80\x02h\x05.",
            b"\x80\x02u.",
            b"\x80\x02(u.",
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02}K\x01s.",
            b"\x80\x02K\x01K\x02R.",
            b"\x80\x02\x8b\xff\xff\xff\xff.",
            b"\x80\x09.",
            b"\x80\x02\x95\xff\xff\xff\xff\xff\xff\xff\xff.",
            b"\x80\x02)Q.",
            b"\x80\x02\x82\x01.",
        ];
        for c in cases {
            assert!(load(c, "t").is_err(), "{c:?}");
        }
        // deep nesting is bounded
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 10_000));
        p.extend(std::iter::repeat_n(b'a', 9_999));
        p.push(b'.');
        assert!(load(&p, "t").is_err());
        // exponential sharing is bounded
        let mut p = b"\x80\x02N".to_vec();
        for _ in 0..60 {
            p.extend_from_slice(b"2\x86");
        }
        p.push(b'.');
        assert!(load(&p, "t").is_err());
    }
}
