//! Small durable files in a node's state directory (flags, terms, machine state).
//!
//! Every write is atomic and durable: the bytes go to a temporary file in the same directory,
//! which is fsynced, renamed over the target, and then the directory is fsynced so the rename
//! itself survives a crash. A reader therefore sees either the old or the new content, never a
//! torn mix. These functions block; async callers run them on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The step that failed, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Creating or writing the temporary file.
    Write,
    /// Flushing a file or directory to stable storage.
    Sync,
    /// Renaming the temporary file over the target.
    Rename,
    /// Reading a file or listing a directory.
    Read,
    /// Removing a file.
    Remove,
    /// Asking the filesystem for its usage (statvfs).
    Statfs,
}

impl FileOp {
    fn verb(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Sync => "fsync",
            Self::Rename => "rename into place",
            Self::Read => "read",
            Self::Remove => "remove",
            Self::Statfs => "get the filesystem usage of",
        }
    }
}

/// A file operation that failed: what, where, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {}: {source}", .op.verb(), .path.display())]
pub struct FileError {
    /// The step that failed.
    pub op: FileOp,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The OS error (ENOSPC for a full disk, EACCES, EIO, ...).
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// Wraps an OS error with the step and the path.
    pub fn new(op: FileOp, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary name next to `path`, unique per process and per call, starting with a dot so
/// that flag scans (which match exact names) never mistake it for the real file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.tmp.{}.{seq}", std::process::id()))
}

/// Flushes a directory so that renames and removals inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new(FileOp::Sync, dir, e))
}

/// Atomically and durably replaces `path` with `bytes` (temp file, fsync, rename, fsync dir).
/// The file is created with mode 0600 whatever the umask: only root reads the node's state
/// (the state directory is traversable by the database OS user, 0711).
///
/// On failure the temporary file is removed and the old content of `path`, if any, is intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let result = write_temp(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| FileError::new(FileOp::Rename, path, e)));
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but wastes space on a full disk.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_dir(path))
}

fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(|e| FileError::new(FileOp::Write, tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| FileError::new(FileOp::Write, tmp, e))?;
    f.sync_all()
        .map_err(|e| FileError::new(FileOp::Sync, tmp, e))
}

/// Reads a whole file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new(FileOp::Read, path, e)),
    }
}

/// Durably removes a file; `Ok(false)` when it was already absent.
pub fn remove(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new(FileOp::Remove, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// State files are 0600 whatever the umask (they were created 0644 under umask 022).
    #[test]
    fn state_files_are_created_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("term");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let written = write_atomic(&path, b"7");
        nix::sys::stat::umask(old);
        written.unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).unwrap().as_deref(), Some(&b"7"[..]));
    }
}
