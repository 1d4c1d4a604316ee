//! What om_monitor and cm_agent share about the processes of one node: finding the daemons of
//! this node in /proc (by name and by the `--config`/`--node` of their command line), the
//! binaries next to the running executable, the exclusive lock file, and the control address.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cm_core::dn::ProcState;
use nix::fcntl::{Flock, FlockArg};

/// One process found in /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its state.
    pub state: ProcState,
}

/// Whether a command line names this node's config and node id (`--config PATH`, `-c PATH`,
/// `--config=PATH`; the same for `--node`/`-n`). A daemon started for another node or another
/// cluster on the same host is not ours.
pub fn cmdline_matches(args: &[String], config: &Path, node: u32) -> bool {
    let value = |long: &str, short: &str| -> Option<&str> {
        let eq = format!("{long}=");
        args.iter().enumerate().find_map(|(i, a)| {
            if a == long || a == short {
                args.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(eq.as_str())
            }
        })
    };
    let config_ok = value("--config", "-c").is_some_and(|c| same_path(Path::new(c), config));
    let node_ok = value("--node", "-n").is_some_and(|n| n.parse::<u32>() == Ok(node));
    config_ok && node_ok
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Every process whose name (`comm`) is `name` and whose command line names this node's
/// config and id. Processes vanishing during the scan are skipped.
pub fn scan(name: &str, config: &Path, node: u32) -> Vec<Found> {
    use cm_io::process as p;
    // The short `comm` first: of a hundred processes, only the few of this name are read
    // further (issue 16: this scan runs every second in om_monitor and cm_agent).
    p::all_pids()
        .into_iter()
        .filter(|pid| p::comm(*pid).is_some_and(|c| c == name))
        .filter_map(|pid| {
            let stat = p::read_stat(pid)?;
            let args = p::cmdline(pid)?;
            cmdline_matches(&args, config, node).then_some(Found {
                pid: stat.pid,
                ppid: stat.ppid,
                state: p::proc_state_of(stat.state),
            })
        })
        .collect()
}

/// How long [`scan_cached`] answers from the processes it found before without a full scan.
pub const FULL_SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// When the last full scan ran and what it found: (pid, start time) of each live process.
type LastScan = Option<(std::time::Instant, Vec<(i32, u64)>)>;

/// What [`scan_cached`] found at its last full scan.
#[derive(Debug, Default)]
pub struct ScanCache(std::sync::Mutex<LastScan>);

/// [`scan`], cheaply when nothing changed: while every process the last full scan found (by pid
/// and start time) still runs, not a zombie, their states are read directly, and /proc is read
/// whole only every [`FULL_SCAN_EVERY`]. A process gone or none known means a full scan at
/// once, so an absent or dead daemon is seen in the same sample; only a second daemon started
/// beside a live one waits for the next full scan (issue 16: the full scan of every process,
/// once a second in om_monitor and cm_agent, was most of their idle CPU).
pub fn scan_cached(cache: &ScanCache, name: &str, config: &Path, node: u32) -> Vec<Found> {
    use cm_io::process as p;
    let mut c = cache
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, known)) = c.as_ref()
        && at.elapsed() < FULL_SCAN_EVERY
        && !known.is_empty()
    {
        let again: Option<Vec<Found>> = known
            .iter()
            .map(|(pid, start)| {
                let st = p::read_stat(*pid).filter(|s| s.starttime == *start && s.state != 'Z')?;
                Some(Found {
                    pid: st.pid,
                    ppid: st.ppid,
                    state: p::proc_state_of(st.state),
                })
            })
            .collect();
        if let Some(found) = again {
            return found;
        }
    }
    let found = scan(name, config, node);
    let known = found
        .iter()
        .filter(|f| f.state != ProcState::Zombie)
        .filter_map(|f| Some((f.pid, p::start_ticks(f.pid)?)))
        .collect();
    *c = Some((std::time::Instant::now(), known));
    found
}

/// A sibling binary: `name` in the directory of the running executable.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    Ok(dir.join(name))
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An absolute form of `path` (relative to the current directory), so that the daemons a
/// process starts and the /proc scans agree on it whatever their working directory.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Creates the state directory with mode 0711 if it does not exist (and its missing parents),
/// and warns when an existing one is readable or writable by group or others, or cannot be
/// traversed by them. Every daemon calls it before its first file there, so the mode does not
/// depend on which starts first or on the umask.
///
/// Why 0711 and not 0700: root's files there (flags, stores, terms) stay unlistable and
/// unreadable, but the database OS user must traverse it to reach what the driver keeps under
/// it for PostgreSQL — each DN's settings file, socket directory and log
/// (`dn_<id>/`, owned by that user) and the replication passfile. With 0700 PostgreSQL cannot
/// open its `config_file` and never starts.
pub fn ensure_state_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(STATE_DIR_MODE))
            .with_context(|| format!("cannot chmod the state directory {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the state directory {}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("the state directory {} is not a directory", dir.display());
    }
    if let Some(why) = state_dir_mode_warning(meta.permissions().mode()) {
        tracing::warn!(dir = %dir.display(), "{why}");
    }
    Ok(())
}

/// The state directory's mode (see [`ensure_state_dir`]).
pub const STATE_DIR_MODE: u32 = 0o711;

/// What is wrong with the state directory's mode, if anything: group/other read or write, or
/// no traverse for others (the database user could not reach its files under it).
fn state_dir_mode_warning(mode: u32) -> Option<&'static str> {
    if mode & 0o066 != 0 {
        Some("the state directory is readable or writable by group or others; chmod 711 it")
    } else if mode & 0o001 == 0 {
        Some(
            "the database user cannot traverse the state directory, so PostgreSQL cannot reach \
             its settings and passfile under it; chmod 711 it",
        )
    } else {
        None
    }
}

/// Takes the exclusive lock on `path` (created if absent). `Ok(None)`: another process holds
/// it. The lock lasts as long as the returned value.
pub fn try_lock(path: &Path) -> anyhow::Result<Option<Flock<File>>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    match Flock::lock(open_lock_file(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
    }
}

/// Opens (creating if absent, never truncating) the lock file `path` for [`try_lock`] and
/// [`lock_waiting`].
fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// The lock file cm_agent holds (flock) while it runs: one agent per node and state directory,
/// and om_monitor finds it, and any other agent of this node waiting for it, in `/proc/locks`
/// every second (SPEC §1) without reading every process in /proc.
pub fn agent_lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cm_agent.lock")
}

/// Takes the exclusive lock on `path` (created if absent), waiting up to `wait` for a holder to
/// go (an agent killed by om_monitor releases it only once it has exited). While it waits, this
/// process shows in `/proc/locks` as a waiter. `Ok(None)`: still held after `wait`.
pub fn lock_waiting(path: &Path, wait: std::time::Duration) -> anyhow::Result<Option<Flock<File>>> {
    if let Some(held) = try_lock(path)? {
        return Ok(Some(held));
    }
    let file = open_lock_file(path)?;
    // A blocking flock has no timeout: it waits on its own thread, and the process gives up
    // (and exits, which ends the waiting thread) after `wait`.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("lock-wait".into())
        .spawn(move || {
            let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e));
        })
        .context("cannot start the lock waiter")?;
    match rx.recv_timeout(wait) {
        Ok(Ok(lock)) => Ok(Some(lock)),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// `host:port` resolved to one socket address.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .next()
        .with_context(|| format!("{host}:{port} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guide's 0711 is what a daemon creates, whatever the umask and whichever daemon
    /// starts first (cm_server created 0700, which PostgreSQL running as the database user
    /// cannot traverse to reach its settings; cm_agent and om_monitor created 0755).
    #[test]
    fn a_missing_state_directory_is_created_0711() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        ensure_state_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o711);
        // An existing directory keeps its mode (the operator's choice; only warned about).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        ensure_state_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = ensure_state_dir(&file).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[test]
    fn the_guides_711_is_accepted_group_or_other_read_or_write_and_no_traverse_are_not() {
        assert_eq!(state_dir_mode_warning(0o40711), None);
        assert!(state_dir_mode_warning(0o40755).is_some_and(|w| w.contains("chmod 711")));
        assert!(state_dir_mode_warning(0o40702).is_some());
        assert!(state_dir_mode_warning(0o40720).is_some());
        assert!(
            state_dir_mode_warning(0o40700).is_some_and(|w| w.contains("cannot traverse")),
            "0700 keeps PostgreSQL from its settings file"
        );
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_daemon_is_ours_only_with_our_config_and_node() {
        let cfg = Path::new("/etc/cm/cluster.toml");
        let ours = args(&[
            "cm_agent",
            "--config",
            "/etc/cm/cluster.toml",
            "--node",
            "2",
        ]);
        assert!(cmdline_matches(&ours, cfg, 2));
        assert!(!cmdline_matches(&ours, cfg, 3));
        assert!(!cmdline_matches(&ours, Path::new("/etc/other.toml"), 2));
        let short = args(&["cm_agent", "-c", "/etc/cm/cluster.toml", "-n", "2"]);
        assert!(cmdline_matches(&short, cfg, 2));
        let eq = args(&["cm_agent", "--config=/etc/cm/cluster.toml", "--node=2"]);
        assert!(cmdline_matches(&eq, cfg, 2));
        assert!(!cmdline_matches(
            &args(&["cm_agent", "--node", "2"]),
            cfg,
            2
        ));
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("cm-node-lock-{}", std::process::id()));
        let path = dir.join("x.lock");
        let first = try_lock(&path).unwrap();
        assert!(first.is_some());
        assert!(try_lock(&path).unwrap().is_none());
        drop(first);
        assert!(try_lock(&path).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
