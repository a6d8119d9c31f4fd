//! The pickle opcodes of protocols 0 to 5, named as in Python's
//! `pickletools`.

/// Declares [`OpCode`] with its byte, pickletools name and [`Group`], its
/// `TryFrom<u8>`, [`OpCode::name`] and [`OpCode::group`] from one table.
macro_rules! opcodes {
    ($($(#[$doc:meta])* $variant:ident = $byte:literal, $name:literal, $group:ident;)*) => {
        /// One pickle opcode (the byte that starts an instruction).
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OpCode {
            $($(#[$doc])* $variant = $byte,)*
        }

        impl TryFrom<u8> for OpCode {
            /// The byte, when it is no opcode.
            type Error = u8;

            fn try_from(byte: u8) -> Result<Self, u8> {
                match byte {
                    $($byte => Ok(Self::$variant),)*
                    other => Err(other),
                }
            }
        }

        impl OpCode {
            /// The opcode's name in Python's `pickletools` (`BINUNICODE`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The group of opcodes the VM handles together.
            pub(crate) fn group(self) -> Group {
                match self {
                    $(Self::$variant => Group::$group,)*
                }
            }
        }
    };
}

opcodes! {
    // Stack and framing (protocol 0, PROTO and FRAME from 2 and 4).
    /// Pushes a MARK: the start of the items a later opcode collects.
    Mark = b'(', "MARK", Stack;
    /// Ends the pickle; the top of the stack is the result.
    Stop = b'.', "STOP", Stop;
    Pop = b'0', "POP", Stack;
    PopMark = b'1', "POP_MARK", Stack;
    Dup = b'2', "DUP", Stack;
    Proto = 0x80, "PROTO", Framing;
    Frame = 0x95, "FRAME", Framing;

    // Scalars.
    None = b'N', "NONE", Scalar;
    NewTrue = 0x88, "NEWTRUE", Scalar;
    NewFalse = 0x89, "NEWFALSE", Scalar;
    /// Decimal text; `00`/`01` are protocol 0's booleans.
    Int = b'I', "INT", Scalar;
    BinInt = b'J', "BININT", Scalar;
    BinInt1 = b'K', "BININT1", Scalar;
    BinInt2 = b'M', "BININT2", Scalar;
    /// Decimal text ending in `L`.
    Long = b'L', "LONG", Scalar;
    Long1 = 0x8a, "LONG1", Scalar;
    Long4 = 0x8b, "LONG4", Scalar;
    /// Decimal text.
    Float = b'F', "FLOAT", Scalar;
    /// Big-endian f64.
    BinFloat = b'G', "BINFLOAT", Scalar;

    // Strings and bytes.
    /// Protocol 0 quoted str (Python 2 `str`).
    String = b'S', "STRING", Text;
    BinString = b'T', "BINSTRING", Text;
    ShortBinString = b'U', "SHORT_BINSTRING", Text;
    /// Protocol 0 text line.
    Unicode = b'V', "UNICODE", Text;
    BinUnicode = b'X', "BINUNICODE", Text;
    ShortBinUnicode = 0x8c, "SHORT_BINUNICODE", Text;
    BinUnicode8 = 0x8d, "BINUNICODE8", Text;
    BinBytes = b'B', "BINBYTES", Text;
    ShortBinBytes = b'C', "SHORT_BINBYTES", Text;
    BinBytes8 = 0x8e, "BINBYTES8", Text;
    ByteArray8 = 0x96, "BYTEARRAY8", Text;
    /// Out-of-band buffer (protocol 5).
    NextBuffer = 0x97, "NEXT_BUFFER", Unsupported;
    ReadonlyBuffer = 0x98, "READONLY_BUFFER", Framing;

    // Containers.
    EmptyTuple = b')', "EMPTY_TUPLE", NewContainer;
    Tuple = b't', "TUPLE", NewContainer;
    Tuple1 = 0x85, "TUPLE1", NewContainer;
    Tuple2 = 0x86, "TUPLE2", NewContainer;
    Tuple3 = 0x87, "TUPLE3", NewContainer;
    EmptyList = b']', "EMPTY_LIST", NewContainer;
    List = b'l', "LIST", NewContainer;
    EmptyDict = b'}', "EMPTY_DICT", NewContainer;
    Dict = b'd', "DICT", NewContainer;
    EmptySet = 0x8f, "EMPTY_SET", NewContainer;
    FrozenSet = 0x91, "FROZENSET", NewContainer;
    Append = b'a', "APPEND", FillContainer;
    Appends = b'e', "APPENDS", FillContainer;
    AddItems = 0x90, "ADDITEMS", FillContainer;
    SetItem = b's', "SETITEM", FillContainer;
    SetItems = b'u', "SETITEMS", FillContainer;

    // The memo.
    Put = b'p', "PUT", Memo;
    BinPut = b'q', "BINPUT", Memo;
    LongBinPut = b'r', "LONG_BINPUT", Memo;
    Memoize = 0x94, "MEMOIZE", Memo;
    Get = b'g', "GET", Memo;
    BinGet = b'h', "BINGET", Memo;
    LongBinGet = b'j', "LONG_BINGET", Memo;

    // Globals, calls and object construction.
    /// `module\nname\n` text lines.
    Global = b'c', "GLOBAL", Global;
    /// Module and name strings from the stack.
    StackGlobal = 0x93, "STACK_GLOBAL", Global;
    Ext1 = 0x82, "EXT1", Unsupported;
    Ext2 = 0x83, "EXT2", Unsupported;
    Ext4 = 0x84, "EXT4", Unsupported;
    Reduce = b'R', "REDUCE", Call;
    NewObj = 0x81, "NEWOBJ", Call;
    NewObjEx = 0x92, "NEWOBJ_EX", Call;
    Inst = b'i', "INST", Call;
    Obj = b'o', "OBJ", Call;
    Build = b'b', "BUILD", Call;

    // Persistent ids (torch storages).
    PersId = b'P', "PERSID", PersistentId;
    BinPersId = b'Q', "BINPERSID", PersistentId;
}

/// Opcodes the VM executes together (one method each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    /// STOP.
    Stop,
    /// PROTO, FRAME, READONLY_BUFFER.
    Framing,
    /// MARK, POP, POP_MARK, DUP.
    Stack,
    /// None, booleans, integers, floats.
    Scalar,
    /// Strings and bytes.
    Text,
    /// Tuples, lists, dicts and sets, empty or from the items above a MARK.
    NewContainer,
    /// APPEND(S), ADDITEMS, SETITEM(S).
    FillContainer,
    /// PUT, MEMOIZE, GET.
    Memo,
    /// GLOBAL, STACK_GLOBAL.
    Global,
    /// REDUCE, NEWOBJ(_EX), INST, OBJ, BUILD.
    Call,
    /// PERSID, BINPERSID.
    PersistentId,
    /// Extension registry codes, out-of-band buffers.
    Unsupported,
}

impl std::fmt::Display for OpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<OpCode> for u8 {
    fn from(op: OpCode) -> u8 {
        op as u8
    }
}

#[cfg(test)]
mod tests {
    use super::OpCode;

    #[test]
    fn every_byte_round_trips_or_is_unknown() {
        let mut known = 0;
        for byte in 0..=u8::MAX {
            if let Ok(op) = OpCode::try_from(byte) {
                assert_eq!(u8::from(op), byte, "{op}");
                known += 1;
            }
        }
        // pickletools lists 68 opcodes for protocols 0-5.
        assert_eq!(known, 68);
        assert_eq!(OpCode::try_from(b'z'), Err(b'z'));
        assert_eq!(OpCode::StackGlobal.to_string(), "STACK_GLOBAL");
    }
}
