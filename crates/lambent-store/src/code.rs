//! Function code: what a code store keeps and why a package is refused.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// Most bytes a package may unpack to (Lambda's limit).
pub const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries a package may hold.
pub const MAX_ENTRIES: usize = 20_000;

/// Why a code package was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("code package is not a valid zip archive: {0}")]
    NotAZip(String),
    #[error("code package entry `{0}` would be written outside the function's directory")]
    UnsafePath(String),
    #[error("code package entry `{0}` is a symbolic link; links are not allowed")]
    Symlink(String),
    #[error("code package unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("code package has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("i/o error while storing code at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A stored, unpacked code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    pub sha256: String,
    pub size: u64,
}

/// Where function code lives: packages by digest, each unpacked into a local tree
/// that instances run from. Blocking: call it off the async runtime.
pub trait CodeStore: Send + Sync {
    /// Validates, stores and unpacks a zip package; nothing is left behind when it
    /// is refused.
    fn put_zip(&self, zip_bytes: &[u8]) -> Result<StoredCode, CodeError>;
    /// Where the unpacked code of a package lives on this node.
    fn tree(&self, sha256: &str) -> PathBuf;
    /// Removes packages no function version references (`in_use`) that are older
    /// than `min_age` (so a package being deployed right now is never taken);
    /// returns how many were removed.
    fn gc(&self, in_use: &HashSet<String>, min_age: Duration) -> Result<usize, CodeError>;
}
