//! What can go wrong reading or writing a `torch.save` file.

use std::path::{Path, PathBuf};

use crate::opcode::OpCode;

/// Everything that can go wrong reading or writing a `torch.save` file.
///
/// Errors of [`load`](crate::load), [`detect`](crate::detect) and
/// [`save`](crate::save) name their file: either [`PickleError::Io`] (the
/// file itself could not be opened, read or written) or
/// [`PickleError::InFile`], which wraps one of the other variants (what is
/// wrong with the contents) with the file and the part of it (`archive/data.pkl`,
/// `header`) where it was found.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    // ---- The file.
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The contents of `path` are wrong; `part` says where (`archive/data.pkl`,
    /// `object`, ...) when it is not the file as a whole.
    #[error("{path}: {}{source}", part_prefix(part))]
    InFile {
        path: PathBuf,
        part: Option<String>,
        #[source]
        source: Box<PickleError>,
    },

    // ---- The container.
    /// Neither a zip archive with a `data.pkl` nor a legacy pickle stream.
    #[error("not a torch.save file ({0})")]
    NotATorchFile(&'static str),
    /// The file starts like a zip archive but cannot be read as one.
    #[error("not a readable zip archive: {0}")]
    Zip(#[source] zip::result::ZipError),
    /// An entry of the zip archive could not be read.
    #[error("reading {name}: {source}")]
    Entry {
        name: String,
        #[source]
        source: zip::result::ZipError,
    },
    /// The zip archive's `byteorder` entry names no known byte order.
    #[error("unknown byteorder {0:?}")]
    UnknownByteOrder(String),
    /// A legacy file's header has a protocol version other than 1001.
    #[error("unsupported legacy protocol version {0}")]
    UnsupportedLegacyVersion(String),

    // ---- The pickle stream.
    /// The pickle ends early.
    #[error("truncated pickle: {0}")]
    Truncated(#[source] std::io::Error),
    /// A PROTO opcode asks for a protocol newer than 5.
    #[error("unsupported pickle protocol {0}")]
    UnsupportedProtocol(u8),
    /// A byte that is no pickle opcode.
    #[error("unknown pickle opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// A valid opcode this reader does not implement.
    #[error("{what} are not supported ({opcode})")]
    UnsupportedOpcode { opcode: OpCode, what: &'static str },
    /// An opcode needs more items than the stack holds.
    #[error("pickle stack underflow in {opcode}")]
    StackUnderflow { opcode: OpCode },
    /// An opcode pops an item that a MARK has fenced off.
    #[error("pickle pops across a MARK in {opcode}")]
    PopAcrossMark { opcode: OpCode },
    /// An opcode that collects items up to a MARK finds none.
    #[error("pickle MARK missing in {opcode}")]
    MarkMissing { opcode: OpCode },
    /// A MARK points past the top of the stack.
    #[error("pickle MARK beyond the stack in {opcode}")]
    MarkBeyondStack { opcode: OpCode },
    /// An opcode finds an operand of the wrong kind.
    #[error("{opcode} expects {expected}")]
    BadValue {
        opcode: OpCode,
        expected: &'static str,
    },
    /// A text opcode's argument line does not parse.
    #[error("bad {opcode} argument {line:?}")]
    BadLine { opcode: OpCode, line: String },
    /// A string or line is not UTF-8.
    #[error("invalid UTF-8 in the argument of {opcode}")]
    InvalidUtf8 { opcode: OpCode },
    /// A GET of a memo key nothing was PUT under.
    #[error("pickle memo key {0} missing")]
    MissingMemo(u64),
    /// The object tree is deeper than the reader follows.
    #[error("pickle nests too deeply (or is self-referential)")]
    TooDeep,

    // ---- Storages and tensors.
    /// A persistent id that names no storage.
    #[error("unexpected persistent id {0}")]
    UnexpectedPersistentId(String),
    /// A storage's key is neither a string nor an integer.
    #[error("storage key {0} is not a string")]
    BadStorageKey(String),
    /// A storage's element count is not a non-negative integer.
    #[error("storage size {0} is not a count")]
    BadStorageSize(String),
    /// A storage class (or dtype) with no tch kind.
    #[error("unsupported storage type {0}")]
    UnsupportedStorage(String),
    /// A legacy storage view that is malformed or leaves its storage.
    #[error("storage view {view} is {problem}")]
    BadStorageView { view: String, problem: &'static str },
    /// A storage the pickle uses is not in the file.
    #[error("storage {name}: {source}")]
    MissingStorage {
        name: String,
        #[source]
        source: zip::result::ZipError,
    },
    /// A zip storage entry is smaller than the pickle says.
    #[error("storage {name} holds {bytes} bytes, the pickle expects {expected}")]
    StorageTooSmall {
        name: String,
        bytes: u64,
        expected: u64,
    },
    /// A legacy storage's element count differs from the pickle's.
    #[error("storage {key} has {count} elements in the file, the pickle expects {expected}")]
    StorageCountMismatch {
        key: String,
        count: i64,
        expected: i64,
    },
    /// A storage's bytes could not be read.
    #[error("reading storage {name}: {source}")]
    StorageRead {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A legacy file's list of storage keys is not a list.
    #[error("storage key list is {0}")]
    BadStorageKeys(String),
    /// A legacy file stores a storage its pickle never uses.
    #[error("storage {0} is listed but never used")]
    UnusedStorage(String),
    /// A legacy file stores fewer storages than its pickle uses.
    #[error("{used} storages are used but only {stored} are stored")]
    MissingStorages { used: usize, stored: usize },
    /// A tensor rebuild function got arguments it cannot use.
    #[error("{func}: {problem}")]
    BadRebuild { func: String, problem: String },
    /// A tensor's offset, size and stride (`view`) do not fit its storage.
    #[error("tensor {view} {problem}")]
    BadTensorView { view: String, problem: String },
    /// libtorch refused an operation (allocating a storage, making a view).
    #[error("{context}: {source}")]
    Tensor {
        context: String,
        // Boxed: a TchError is 64 bytes, and errors travel in every Result.
        #[source]
        source: Box<tch::TchError>,
    },

    // ---- Writing.
    /// A value [`save`](crate::save) cannot write.
    #[error("cannot write {0}")]
    CannotWrite(String),
}

fn part_prefix(part: &Option<String>) -> String {
    part.as_deref()
        .map(|p| format!("{p}: "))
        .unwrap_or_default()
}

/// Result with a [`PickleError`].
pub type Result<T, E = PickleError> = std::result::Result<T, E>;

impl PickleError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// libtorch refused `context`.
    pub fn tensor(context: impl Into<String>, source: tch::TchError) -> Self {
        Self::Tensor {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// This error, found in `part` of the file at `path`.
    pub fn in_file(self, path: &Path, part: Option<&str>) -> Self {
        Self::InFile {
            path: path.to_path_buf(),
            part: part.map(str::to_string),
            source: Box::new(self),
        }
    }

    /// The file the error is about, when it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. } | Self::InFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// What failed, without the file: the wrapped error of
    /// [`PickleError::InFile`], this error otherwise.
    pub fn cause(&self) -> &PickleError {
        match self {
            Self::InFile { source, .. } => source.cause(),
            other => other,
        }
    }

    /// The message without the leading `path: `.
    pub fn message(&self) -> String {
        match self {
            Self::Io { source, .. } => source.to_string(),
            Self::InFile { part, source, .. } => format!("{}{source}", part_prefix(part)),
            other => other.to_string(),
        }
    }

    /// True when the file itself could not be opened, read or written
    /// ([`PickleError::Io`]); false for anything wrong with its contents.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    /// True when the input is invalid (retrying will not help): everything
    /// but an I/O error that may be transient. Contents that libtorch refuses
    /// (a storage too large to allocate) count as invalid input.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::PermissionDenied
            ),
            _ => true,
        }
    }
}
