//! Files root reads from and writes into directories the database OS user owns: that user can
//! plant a symlink there, so nothing here follows one (a planted link would make root read, or
//! truncate and chown, any file of the machine).

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::process::OsUser;

/// The largest user configuration file read (pg_hba.conf, pg_ident.conf): a bound, not a limit
/// anyone meets.
pub(super) const MAX_READ: u64 = 4 << 20;

fn err(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::other(format!("{}: {what}", path.display()))
}

/// Reads a regular file without following a symlink at its last component. A missing file
/// reads as empty; a symlink, a directory, a fifo or a file over [`MAX_READ`] is an error.
pub(super) fn read_regular(path: &Path) -> std::io::Result<String> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(err(path, "is a symlink: refusing to follow it"));
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(err(path, "is not a regular file"));
    }
    if meta.len() > MAX_READ {
        return Err(err(path, &format!("is larger than {MAX_READ} bytes")));
    }
    let mut text = String::new();
    f.take(MAX_READ).read_to_string(&mut text)?;
    Ok(text)
}

/// Writes `path` atomically, mode 0600, owned by `owner`: a fresh temporary file created
/// exclusively (O_EXCL, O_NOFOLLOW: never an existing file or link), fchowned through its open
/// descriptor, synced, then renamed over `path` (a rename replaces a link, not its target).
pub(super) fn write_owned(path: &Path, text: &str, owner: &OsUser) -> std::io::Result<()> {
    let tmp = temp_name(path);
    // A leftover of a crash, or something planted: removing a symlink removes the link only.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    let written = (|| {
        nix::unistd::fchown(&f, Some(owner.uid), Some(owner.gid)).map_err(std::io::Error::from)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.cm-tmp"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn me() -> OsUser {
        OsUser {
            name: "me".into(),
            uid: nix::unistd::getuid(),
            gid: nix::unistd::getgid(),
        }
    }

    /// A link planted at the temporary name and at the destination: the write replaces the
    /// destination link with a 0600 file, the files they pointed at stay untouched.
    #[test]
    fn write_never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        let dest = dir.path().join("pg_hba.conf");
        std::os::unix::fs::symlink(&victim, temp_name(&dest)).unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        write_owned(&dest, "local all all peer\n", &me()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
        let meta = fs::symlink_metadata(&dest).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "local all all peer\n");
        assert!(!temp_name(&dest).exists());
    }

    #[test]
    fn read_refuses_a_symlink_and_a_non_regular_file_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("shadow");
        fs::write(&secret, "root:x").unwrap();
        let link = dir.path().join("pg_hba.conf");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read_regular(&link).unwrap_err().to_string();
        assert!(e.contains("pg_hba.conf: is a symlink"), "{e}");
        let e = read_regular(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        assert_eq!(read_regular(&dir.path().join("missing")).unwrap(), "");
        fs::write(&secret, "host all all ::1/128 md5\n").unwrap();
        assert_eq!(read_regular(&secret).unwrap(), "host all all ::1/128 md5\n");
    }
}
