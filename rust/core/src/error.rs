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

/// `rows * cols` zeros, or an error naming `what` where the size overflows or the memory cannot be had:
/// an allocation failure must not abort the process.
pub fn zeros<T: Clone + Default>(rows: usize, cols: usize, what: &str) -> Result<Vec<T>> {
    let too_large = || Error::Input(format!("{what}: {rows} x {cols} values do not fit in memory"));
    let len = rows.checked_mul(cols).ok_or_else(too_large)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_large())?;
    out.resize(len, T::default());
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeros_refuses_what_cannot_fit() {
        assert_eq!(super::zeros::<i32>(3, 2, "x").unwrap(), vec![0; 6]);
        assert!(super::zeros::<i32>(usize::MAX, 2, "x").unwrap_err().to_string().contains("do not fit in memory"));
        assert!(super::zeros::<i32>(1 << 40, 1 << 20, "x").is_err());
    }
}
