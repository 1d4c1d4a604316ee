//! PostgreSQL's own door (SPEC.md §16): the generated password that replication and the
//! agent's remote connections authenticate with (SCRAM), kept in a libpq passfile.
//!
//! The password is created once, when the cluster is created ([`new_password`]; `initdb
//! --pwfile` sets it as the database user's), and the same passfile is placed on every node as
//! `<state_dir>/pgpass` ([`passfile_path`]): mode 0600, owned by the database OS user, because
//! PostgreSQL's own processes read it (the WAL receiver through `passfile=` in
//! `primary_conninfo`, pg_rewind and pg_basebackup through their connection string). The agent
//! (root) reads it to give the password to its own remote connections ([`read_password`]).
//! Local connections use the unix socket with peer authentication instead.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::DriverError;
use crate::process::OsUser;

/// The passfile's name in a node's state directory.
pub const PASSFILE: &str = "pgpass";

/// The passfile's mode (libpq ignores a passfile that group or others can read).
pub const PASSFILE_MODE: u32 = 0o600;

/// Where a node keeps the passfile: `<state_dir>/pgpass`.
pub fn passfile_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PASSFILE)
}

/// A new random password: 32 bytes as 64 hex digits (nothing a passfile, a conninfo string or
/// SQL would have to escape).
pub fn new_password() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    // The same ring provider the transport's TLS uses (SPEC §16): no second randomness source.
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system's random source failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random number from the same source (a cm_agent's incarnation id, drawn at each start).
pub fn random_u64() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system's random source failed"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A passfile field with `:` and `\` escaped, as libpq reads them.
fn escape(field: &str) -> String {
    field.replace('\\', "\\\\").replace(':', "\\:")
}

/// The passfile's text: one line for `db_user` on every host, port and database (replication
/// connections match the `*` database too).
pub fn passfile_text(db_user: &str, password: &str) -> String {
    format!("*:*:*:{}:{}\n", escape(db_user), escape(password))
}

/// Splits a passfile line into its five fields (`\:` and `\\` unescaped); `None` when it is not
/// a line of five fields.
fn fields(line: &str) -> Option<[String; 5]> {
    let mut out: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut()?.push(c),
        }
    }
    out.try_into().ok()
}

/// The password for `db_user` in a passfile's text: the first line whose user field is
/// `db_user` or `*` (libpq's rule for a wildcard host, port and database). Comment and blank
/// lines are skipped; `None` when no line matches.
pub fn password_in(text: &str, db_user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(fields)
        .find(|f| f[3] == db_user || f[3] == "*")
        .map(|[_, _, _, _, password]| password)
}

/// What is missing or wrong with a passfile, saying how to create it.
fn passfile_error(path: &Path, what: &str) -> DriverError {
    DriverError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!(
            "{what}. Replication and the agent's remote connections authenticate with the \
             cluster's database password from this file (mode 0600, owned by the database OS \
             user, the same file on every node); `cm_local` creates it, on real hosts see \
             \"Database password\" in docs/operator-guide.md"
        )),
    }
}

/// Reads the password for `db_user` from the passfile at `path`.
pub fn read_password(path: &Path, db_user: &str) -> Result<String, DriverError> {
    let text = fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            passfile_error(path, "no passfile")
        } else {
            DriverError::Io {
                path: path.display().to_string(),
                source: e,
            }
        }
    })?;
    password_in(&text, db_user)
        .ok_or_else(|| passfile_error(path, &format!("no line for the database user `{db_user}`")))
}

/// Checks the passfile at `path` holds a password for `db_user`, and makes it owned by `user`
/// with mode 0600 (what libpq requires of a file PostgreSQL's processes read).
pub fn check_passfile(path: &Path, db_user: &str, user: &OsUser) -> Result<(), DriverError> {
    read_password(path, db_user)?;
    let io = |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    };
    user.chown(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(PASSFILE_MODE)).map_err(io)
}

/// Writes the passfile for `db_user` at `path`: created 0600 (never readable by others, not even
/// for a moment), then handed to `user`.
pub fn write_passfile(
    path: &Path,
    db_user: &str,
    password: &str,
    user: &OsUser,
) -> Result<(), DriverError> {
    let io = |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    };
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PASSFILE_MODE)
        .open(path)
        .map_err(io)?;
    f.write_all(passfile_text(db_user, password).as_bytes())
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    check_passfile(path, db_user, user)
}

/// A libpq connection-string value, quoted when it needs to be.
pub fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_owned();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passfile_line_round_trips_with_escapes() {
        let text = passfile_text("post:gres", "pa\\ss:word");
        assert_eq!(text, "*:*:*:post\\:gres:pa\\\\ss\\:word\n");
        assert_eq!(
            password_in(&text, "post:gres").as_deref(),
            Some("pa\\ss:word")
        );
        assert_eq!(password_in(&text, "postgres"), None);
    }

    #[test]
    fn the_first_matching_line_wins_and_bad_lines_are_skipped() {
        let text = "# comment\n\nnot a line\nh:1:db:other:x\n*:*:*:*:any\n*:*:*:postgres:late\n";
        assert_eq!(password_in(text, "postgres").as_deref(), Some("any"));
        assert_eq!(
            password_in("a:b:c:postgres:p:q", "postgres").as_deref(),
            Some("p:q")
        );
        assert_eq!(password_in("", "postgres"), None);
        // A trailing backslash does not panic the reader.
        assert_eq!(
            password_in("*:*:*:postgres:x\\", "postgres").as_deref(),
            Some("x\\")
        );
    }

    #[test]
    fn new_passwords_are_64_hex_digits_and_differ() {
        let (a, b) = (new_password().unwrap(), new_password().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn conninfo_values_are_quoted_only_when_needed() {
        assert_eq!(conninfo_value("/var/lib/cm/pgpass"), "/var/lib/cm/pgpass");
        assert_eq!(conninfo_value("/a b/it's"), "'/a b/it\\'s'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn a_missing_passfile_says_how_to_create_it() {
        let e = read_password(Path::new("/nonexistent/pgpass"), "postgres")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/pgpass: no passfile."), "{e}");
        assert!(e.contains("docs/operator-guide.md"), "{e}");
    }
}
