//! One error type for the whole core. Every message names what the user must fix:
//! the file and line for bad input, the option for a bad setting.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A malformed line: `file:line: problem`.
    Parse { file: String, line: u64, msg: String },
    /// Input that is well-formed line by line but unusable as a whole (empty file, no users left...).
    Input(String),
    /// A file that could not be opened, read or written.
    Io { path: String, source: std::io::Error },
    /// The progress callback asked to stop (Ctrl-C in Python).
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse { file, line, msg } => write!(f, "{file}:{line}: {msg}"),
            Error::Input(msg) => f.write_str(msg),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for Error {}
