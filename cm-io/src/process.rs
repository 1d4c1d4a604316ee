//! Process control for supervised instances: spawn a command as an unprivileged OS user in its
//! own process group as a *direct* child (so we reap it at once, §9's zombie trap), kill the
//! whole group and confirm, read every group member's state from /proc, and adopt a postmaster
//! that survived an agent restart (§1) after checking it is the same process (start time), not a
//! recycled pid.
//!
//! /proc is read with the `procfs` crate: it parses `stat` and `status` robustly (a `comm` with
//! spaces or parentheses breaks naive parsers) and is already a workspace dependency.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cm_core::dn::ProcState;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Gid, Pid, Uid, User};

/// A failure of process control.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The OS user does not exist.
    #[error("OS user `{0}` does not exist: create it or fix `database.os_user`")]
    NoSuchUser(String),
    /// The command could not be started.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("could not signal process {pid}: {errno}")]
    Signal {
        /// The target.
        pid: i32,
        /// Why.
        errno: Errno,
    },
    /// Reading /proc or a pid file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An unprivileged OS user that runs a database (PostgreSQL refuses to run as root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
}

impl OsUser {
    /// Looks a user up by name in the system's user database.
    pub fn lookup(name: &str) -> Result<Self, ProcessError> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(Self {
                name: name.to_owned(),
                uid: u.uid,
                gid: u.gid,
            }),
            _ => Err(ProcessError::NoSuchUser(name.to_owned())),
        }
    }

    /// Makes `path` (not recursively) owned by this user.
    pub fn chown(&self, path: &Path) -> std::io::Result<()> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(std::io::Error::from)
    }

    /// Makes `path` and everything below it owned by this user (symlinks are not followed).
    pub fn chown_tree(&self, path: &Path) -> std::io::Result<()> {
        self.chown(path)?;
        if fs::symlink_metadata(path)?.is_dir() {
            for entry in fs::read_dir(path)? {
                self.chown_tree(&entry?.path())?;
            }
        }
        Ok(())
    }

    /// Sets `cmd` to run as this user (uid, gid, no supplementary groups of root).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
    }
}

/// Maps a /proc state letter to the report's process state. Sleeping and idle count as running:
/// only D, T and Z mean something to the hang check (§6).
pub fn proc_state_of(letter: char) -> ProcState {
    match letter {
        'D' => ProcState::DiskSleep,
        'T' | 't' => ProcState::Stopped,
        'Z' | 'X' => ProcState::Zombie,
        _ => ProcState::Running,
    }
}

/// One process of a process group, as /proc showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// Its pid.
    pub pid: i32,
    /// Its state.
    pub state: ProcState,
    /// A SIGKILL is pending for it (it dies as soon as it leaves state D).
    pub sigkill_pending: bool,
}

/// The state of one pid, `None` when it does not exist.
pub fn proc_state(pid: i32) -> Option<ProcState> {
    Some(proc_state_of(read_stat(pid)?.state))
}

/// The kernel start time of a pid in clock ticks since boot: with the pid it identifies a
/// process uniquely (a recycled pid has a later start time).
pub fn start_ticks(pid: i32) -> Option<u64> {
    Some(read_stat(pid)?.starttime)
}

fn sigkill_pending(p: &procfs::process::Process) -> bool {
    let bit = 1u64 << (Signal::SIGKILL as u64 - 1);
    p.status()
        .map(|s| (s.sigpnd | s.shdpnd) & bit != 0)
        .unwrap_or(false)
}

/// The fields of `/proc/<pid>/stat` the process code needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The pid.
    pub pid: i32,
    /// Its state letter.
    pub state: char,
    /// Its parent.
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// Its start time in clock ticks since boot.
    pub starttime: u64,
}

/// Parses the text of `/proc/<pid>/stat`: the fields are counted after the last `)`, since
/// the command name may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().take(20).collect();
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        // Field 22 of the whole line; the 20th after the name.
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` in one open and read (the `procfs` crate opens the process directory,
/// stats it and then the file: three times the system calls of an idle daemon's scans).
pub fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&read_proc_file(&format!("/proc/{pid}/stat"))?)
}

/// A small /proc file's text with one open and its reads (`fs::read_to_string` also stats the
/// file and seeks to size its buffer: two more calls that /proc answers with size 0 anyway).
fn read_proc_file(path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut f = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(buf).ok()
}

/// The identity of a file as `/proc/locks` names it: device major, minor and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// The device's major number.
    pub major: u64,
    /// The device's minor number.
    pub minor: u64,
    /// The inode number.
    pub inode: u64,
}

impl FileId {
    /// The identity of the file at `path` (one `stat`); `None` when it does not exist.
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = fs::metadata(path).ok()?;
        let dev = m.dev();
        Some(Self {
            major: nix::sys::stat::major(dev),
            minor: nix::sys::stat::minor(dev),
            inode: m.ino(),
        })
    }
}

/// The pids holding or waiting for a lock on `file` in the text of `/proc/locks`, sorted and
/// without repeats. Lines look like `1: FLOCK  ADVISORY  WRITE 4242 fe:00:5382148 0 EOF`, a
/// blocked request with `->` after the number; the device is `major:minor` in hex.
pub fn parse_lock_holders(text: &str, file: FileId) -> Vec<i32> {
    let mut out: Vec<i32> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().skip(1).skip_while(|t| *t == "->");
            let pid = f.nth(3)?.parse::<i32>().ok()?;
            let mut id = f.next()?.split(':');
            let major = u64::from_str_radix(id.next()?, 16).ok()?;
            let minor = u64::from_str_radix(id.next()?, 16).ok()?;
            let inode = id.next()?.parse::<u64>().ok()?;
            (FileId {
                major,
                minor,
                inode,
            } == file
                && pid > 0)
                .then_some(pid)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The pids holding or waiting for a lock on `file`, from `/proc/locks` (one open and read,
/// whatever the number of processes: om_monitor finds its node's cm_agent this way every
/// second, SPEC §1). `None` when `/proc/locks` cannot be read.
pub fn lock_holders(file: FileId) -> Option<Vec<i32>> {
    Some(parse_lock_holders(&read_proc_file("/proc/locks")?, file))
}

/// The name of a pid (`/proc/<pid>/comm`, at most 15 bytes), without reading its `stat`.
pub fn comm(pid: i32) -> Option<String> {
    let mut c = read_proc_file(&format!("/proc/{pid}/comm"))?;
    if c.ends_with('\n') {
        c.pop();
    }
    Some(c)
}

/// The arguments of a pid's command line (empty for a kernel thread or a zombie).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Every pid in /proc now.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The children of every thread of `pid` (`/proc/<pid>/task/<tid>/children`).
fn children(pid: i32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(t.path().join("children")).ok()?;
        out.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
    }
    Some(out)
}

fn member(stat: &Stat) -> GroupMember {
    let state = proc_state_of(stat.state);
    let sigkill_pending = state == ProcState::DiskSleep
        && procfs::process::Process::new(stat.pid).is_ok_and(|p| sigkill_pending(&p));
    GroupMember {
        pid: stat.pid,
        state,
        sigkill_pending,
    }
}

/// Every process whose process group is `pgid`, with its state (children of a killed leader
/// keep the group id after they are re-parented, so they are found too).
///
/// While the leader `pgid` lives, the group is found by walking down from it through the
/// children of members (a process can only join a group of its own session, and whatever it
/// forks starts in its group): a few files instead of every process's `stat`, once a second
/// for each DN. Once the leader is gone (a kill being confirmed), every process is read.
pub fn group_members(pgid: i32) -> Vec<GroupMember> {
    let mut out = group_from_leader(pgid).unwrap_or_else(|| group_by_scan(pgid));
    out.sort_by_key(|m| m.pid);
    out
}

/// The group walked from its live leader; `None` when the leader is gone, a zombie, or its
/// children cannot be read (then only a full scan is exact).
fn group_from_leader(pgid: i32) -> Option<Vec<GroupMember>> {
    let leader = read_stat(pgid).filter(|s| s.pgrp == pgid && s.state != 'Z')?;
    let mut out = vec![member(&leader)];
    let mut todo = vec![pgid];
    while let Some(pid) = todo.pop() {
        for child in children(pid)? {
            // A child gone meanwhile is no member any more.
            if let Some(st) = read_stat(child).filter(|s| s.pgrp == pgid) {
                out.push(member(&st));
                todo.push(child);
            }
        }
    }
    Some(out)
}

/// Every live descendant of `pid` (children, their children, ...), whatever their group;
/// empty when `pid` is gone. Processes vanishing meanwhile are skipped.
fn descendants(pid: i32) -> Vec<Stat> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for child in children(p).unwrap_or_default() {
            if let Some(st) = read_stat(child) {
                todo.push(child);
                out.push(st);
            }
        }
    }
    out
}

fn group_by_scan(pgid: i32) -> Vec<GroupMember> {
    all_pids()
        .into_iter()
        .filter_map(read_stat)
        .filter(|s| s.pgrp == pgid)
        .map(|s| member(&s))
        .collect()
}

/// Whether a killed group is gone in the sense of §3: no process remains, or each remaining one
/// is a zombie or holds a pending SIGKILL.
pub fn group_fenced(members: &[GroupMember]) -> bool {
    members
        .iter()
        .all(|m| m.state == ProcState::Zombie || m.sigkill_pending)
}

#[derive(Default)]
struct ExitSlot {
    status: Mutex<Option<std::io::Result<ExitStatus>>>,
    cond: Condvar,
}

/// A process we supervise: either our direct child (reaped by a dedicated thread the moment it
/// exits, so it never lingers as a zombie holding `postmaster.pid`) or an adopted one found
/// running after an agent restart (its exit is seen through /proc).
#[derive(Clone)]
pub struct Supervised {
    pid: i32,
    start_ticks: u64,
    /// Its process group leads itself (always for our children).
    own_group: bool,
    exit: Option<Arc<ExitSlot>>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("pid", &self.pid)
            .field("start_ticks", &self.start_ticks)
            .field("child", &self.exit.is_some())
            .finish()
    }
}

impl Supervised {
    /// Spawns `cmd` as `user` (when given) in a new process group led by the child.
    pub fn spawn(mut cmd: Command, user: Option<&OsUser>) -> Result<Self, ProcessError> {
        if let Some(u) = user {
            u.apply(&mut cmd);
        }
        cmd.process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .spawn()
            .map_err(|source| ProcessError::Spawn { program, source })?;
        let pid = child.id() as i32;
        // Read before the reaper can reap it: the child cannot vanish before it is waited for.
        let start_ticks = start_ticks(pid).unwrap_or(0);
        let slot = Arc::new(ExitSlot::default());
        let reaper_slot = Arc::clone(&slot);
        std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || {
                let st = child.wait();
                *reaper_slot.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(st);
                reaper_slot.cond.notify_all();
            })
            .map_err(ProcessError::Io)?;
        Ok(Self {
            pid,
            start_ticks,
            own_group: true,
            exit: Some(slot),
        })
    }

    /// Takes over a running process that is not our child, after checking that `pid` still is
    /// the process that started at `start_ticks`.
    pub fn adopt(pid: i32, expected_start_ticks: u64) -> Option<Self> {
        let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
        if stat.starttime != expected_start_ticks || proc_state_of(stat.state) == ProcState::Zombie
        {
            return None;
        }
        Some(Self {
            pid,
            start_ticks: stat.starttime,
            own_group: stat.pgrp == pid,
            exit: None,
        })
    }

    /// Its pid (also its process group id when it leads its group).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it is our direct child (reaped by us) rather than adopted.
    pub fn is_child(&self) -> bool {
        self.exit.is_some()
    }

    /// Its exit status once it exited and was reaped (children only).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let slot = self.exit.as_ref()?;
        let guard = slot.status.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().and_then(|r| r.as_ref().ok().copied())
    }

    /// Whether the process still runs (a zombie or a recycled pid counts as exited).
    pub fn is_alive(&self) -> bool {
        if let Some(slot) = &self.exit
            && slot
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            return false;
        }
        // A child not reaped yet is checked like any process: a zombie (killed by another
        // process, its exit not yet collected by our reaper thread) is not alive.
        read_stat(self.pid).is_some_and(|stat| {
            stat.starttime == self.start_ticks && proc_state_of(stat.state) != ProcState::Zombie
        })
    }

    /// Blocks until it exited (and, for a child, was reaped) or `timeout` passed; true if exited.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        if let Some(slot) = &self.exit {
            let mut guard = slot.status.lock().unwrap_or_else(|e| e.into_inner());
            while guard.is_none() {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return false;
                }
                guard = slot
                    .cond
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            return true;
        }
        while self.is_alive() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Sends `sig` to the process only (e.g. SIGINT for a fast shutdown of a postmaster).
    pub fn signal(&self, sig: Signal) -> Result<(), ProcessError> {
        if !self.is_alive() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid), sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ProcessError::Signal {
                pid: self.pid,
                errno,
            }),
        }
    }

    /// The states of every process of its group (empty when none remains).
    pub fn group(&self) -> Vec<GroupMember> {
        if self.own_group {
            return group_members(self.pid);
        }
        // An adopted process that shares its parent's group: itself and its children.
        let mut out = Vec::new();
        for stat in all_pids().into_iter().filter_map(read_stat) {
            let is_self = stat.pid == self.pid && stat.starttime == self.start_ticks;
            if is_self || (stat.ppid == self.pid && self.is_alive()) {
                out.push(member(&stat));
            }
        }
        out
    }

    /// Fences the instance (§3): SIGKILL to its whole process group and to every descendant
    /// with the group it leads, then waits up to `timeout` until the leader is reaped
    /// (children) and every remaining member is a zombie or holds a pending SIGKILL. Returns
    /// the members still present (all fenced) or an error listing what survived.
    ///
    /// The descendants matter: PostgreSQL's postmaster children each call `setsid`, so a
    /// SIGKILL to the postmaster's group reaches the postmaster alone and its backends,
    /// walsenders and background workers would run on until they notice its death. The leader
    /// is stopped first (SIGSTOP) so that it forks nothing while its tree is read.
    pub fn kill_group(&self, timeout: Duration) -> Result<Vec<GroupMember>, KillError> {
        let deadline = std::time::Instant::now() + timeout;
        if self.is_alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGSTOP);
        }
        // (pid, start time) of every descendant seen while the leader lived: once it is
        // gone they are re-parented and can no longer be found from it.
        let mut tree: Vec<(i32, u64)> = Vec::new();
        loop {
            if self.is_alive() {
                for st in descendants(self.pid) {
                    if !tree.iter().any(|(p, _)| *p == st.pid) {
                        tree.push((st.pid, st.starttime));
                    }
                }
            }
            let mut members = self.group();
            let mut others = Vec::new();
            for (pid, start) in &tree {
                if let Some(st) = read_stat(*pid).filter(|st| st.starttime == *start)
                    && !members.iter().any(|m| m.pid == st.pid)
                {
                    others.push(st);
                }
            }
            members.extend(others.iter().map(member));
            let leader_done = !self.is_alive();
            if leader_done && group_fenced(&members) {
                return Ok(members);
            }
            self.send_kill(&members)?;
            for st in others.iter().filter(|st| st.state != 'Z') {
                // A descendant leading its own group (a backend and whatever it runs) is
                // killed with its group; another only by itself.
                let target = Pid::from_raw(st.pid);
                let _ = if st.pgrp == st.pid {
                    killpg(target, Signal::SIGKILL)
                } else {
                    kill(target, Signal::SIGKILL)
                };
            }
            if std::time::Instant::now() >= deadline {
                return Err(KillError::Survivors(members));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn send_kill(&self, members: &[GroupMember]) -> Result<(), KillError> {
        let sig = Signal::SIGKILL;
        let res = if self.own_group {
            // Only while the group still has a live member: an empty group's id may be reused.
            if members.iter().all(|m| m.state == ProcState::Zombie) {
                return Ok(());
            }
            killpg(Pid::from_raw(self.pid), sig)
        } else {
            for m in members {
                let _ = kill(Pid::from_raw(m.pid), sig);
            }
            Ok(())
        };
        match res {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(KillError::Signal(ProcessError::Signal {
                pid: self.pid,
                errno,
            })),
        }
    }
}

/// Why a kill could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// Processes still ran (not zombie, no pending SIGKILL) when the wait ended.
    #[error("processes survived SIGKILL: {0:?}")]
    Survivors(Vec<GroupMember>),
    /// The signal could not be sent.
    #[error(transparent)]
    Signal(ProcessError),
}

/// The contents of PostgreSQL's `postmaster.pid` (one value per line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Line 1: the postmaster's pid.
    pub pid: i32,
    /// Line 2: the data directory.
    pub data_dir: PathBuf,
    /// Line 3: start time, seconds since the epoch.
    pub start_epoch_s: u64,
    /// Line 4: the port.
    pub port: u16,
    /// Line 5: the first unix socket directory (may be empty).
    pub socket_dir: String,
    /// Line 8: `starting`, `ready`, `standby` or `stopping` (absent early in startup).
    pub status: Option<String>,
}

impl PostmasterPid {
    /// Parses the file's text; `None` when a required line is missing or malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = lines
            .first()?
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)?;
        Some(Self {
            pid,
            data_dir: PathBuf::from(lines.get(1)?.trim()),
            start_epoch_s: lines.get(2)?.trim().parse().ok()?,
            port: lines.get(3)?.trim().parse().ok()?,
            socket_dir: lines
                .get(4)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            status: lines
                .get(7)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        })
    }

    /// Reads `<data_dir>/postmaster.pid`; `None` when absent or unreadable.
    pub fn read(data_dir: &Path) -> Option<Self> {
        Self::parse(&fs::read_to_string(data_dir.join("postmaster.pid")).ok()?)
    }
}

/// Seconds since the epoch at which a pid started, from its start ticks and the boot time.
fn start_epoch_s(ticks: u64) -> Option<u64> {
    let boot = procfs::boot_time_secs().ok()?;
    Some(boot + ticks / procfs::ticks_per_second())
}

/// Finds the postmaster of `data_dir` after an agent restart (§1): the pid in `postmaster.pid`
/// must run, not be a zombie, have the data directory as its working directory, and have
/// started within 3 s of the file's start time (so a recycled pid is not mistaken for it).
pub fn adopt_postmaster(data_dir: &Path) -> Option<(Supervised, PostmasterPid)> {
    let file = PostmasterPid::read(data_dir)?;
    let proc = procfs::process::Process::new(file.pid).ok()?;
    let stat = proc.stat().ok()?;
    if proc_state_of(stat.state) == ProcState::Zombie {
        return None;
    }
    let started = start_epoch_s(stat.starttime)?;
    if started.abs_diff(file.start_epoch_s) > 3 {
        return None;
    }
    let cwd = proc.cwd().ok()?;
    let want = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if cwd != want {
        return None;
    }
    Supervised::adopt(file.pid, stat.starttime).map(|s| (s, file))
}

/// Removes a `postmaster.pid` whose postmaster no longer runs: absent, a zombie not yet reaped
/// by init, or a recycled pid (a process whose working directory is not the data directory).
/// PostgreSQL's own `kill(pid, 0)` check would otherwise refuse to start or rewind for as long
/// as the zombie lingers or the pid is reused. Returns whether a file was removed.
pub fn remove_stale_pid_file(data_dir: &Path) -> std::io::Result<bool> {
    let path = data_dir.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(false);
    };
    if PostmasterPid::parse(&text).is_some_and(|f| runs_in(f.pid, data_dir)) {
        return Ok(false);
    }
    fs::remove_file(&path)?;
    Ok(true)
}

/// Whether `pid` is a live (non-zombie) process working in `dir`, as a postmaster does.
fn runs_in(pid: i32, dir: &Path) -> bool {
    let Ok(proc) = procfs::process::Process::new(pid) else {
        return false;
    };
    let live = proc
        .stat()
        .is_ok_and(|s| proc_state_of(s.state) != ProcState::Zombie);
    let want = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    live && proc.cwd().is_ok_and(|cwd| cwd == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holders_and_waiters_of_one_file_are_found_in_proc_locks_text() {
        let text = "1: FLOCK  ADVISORY  WRITE 16756 fe:00:5382148 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 17001 fe:00:5382148 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 17140 fe:00:7111056 0 EOF\n\
                    3: POSIX  ADVISORY  READ 16756 fe:01:5382148 0 EOF\n\
                    4: OFDLCK ADVISORY  READ -1 fe:00:5382148 0 EOF\n\
                    garbage\n\
                    5: FLOCK  ADVISORY  WRITE 99 103:0a:5382148 0 EOF\n";
        let file = FileId {
            major: 0xfe,
            minor: 0,
            inode: 5_382_148,
        };
        assert_eq!(parse_lock_holders(text, file), vec![16756, 17001]);
        let other = FileId {
            major: 0x103,
            minor: 0x0a,
            inode: 5_382_148,
        };
        assert_eq!(parse_lock_holders(text, other), vec![99]);
        assert_eq!(parse_lock_holders("", file), Vec::<i32>::new());
    }

    #[test]
    fn a_real_flock_shows_its_holder_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let f = fs::File::create(&path).unwrap();
        let id = FileId::of(&path).unwrap();
        assert_eq!(lock_holders(id), Some(vec![]));
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(lock_holders(id), Some(vec![me]));
        drop(lock);
        assert_eq!(lock_holders(id), Some(vec![]));
    }

    #[test]
    fn state_letters_map_to_report_states() {
        assert_eq!(proc_state_of('R'), ProcState::Running);
        assert_eq!(proc_state_of('S'), ProcState::Running);
        assert_eq!(proc_state_of('I'), ProcState::Running);
        assert_eq!(proc_state_of('D'), ProcState::DiskSleep);
        assert_eq!(proc_state_of('T'), ProcState::Stopped);
        assert_eq!(proc_state_of('t'), ProcState::Stopped);
        assert_eq!(proc_state_of('Z'), ProcState::Zombie);
    }

    #[test]
    fn postmaster_pid_parses_pg15_layout() {
        let text = "4242\n/data/dn1\n1700000000\n5432\n/run/cm/sock\n127.0.0.1\n  1234567   65538\nready   \n";
        let f = PostmasterPid::parse(text).expect("parses");
        assert_eq!(f.pid, 4242);
        assert_eq!(f.data_dir, PathBuf::from("/data/dn1"));
        assert_eq!(f.start_epoch_s, 1_700_000_000);
        assert_eq!(f.port, 5432);
        assert_eq!(f.socket_dir, "/run/cm/sock");
        assert_eq!(f.status.as_deref(), Some("ready"));
    }

    #[test]
    fn postmaster_pid_refuses_truncated_or_garbage() {
        assert_eq!(PostmasterPid::parse(""), None);
        assert_eq!(PostmasterPid::parse("12\n/d\n"), None);
        assert_eq!(PostmasterPid::parse("x\n/d\n1\n5432\n"), None);
        assert_eq!(PostmasterPid::parse("0\n/d\n1\n5432\n"), None);
        let early = PostmasterPid::parse("7\n/d\n1\n5432\n").expect("early file");
        assert_eq!(early.status, None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                pgrp: 4242,
                starttime: 987_654,
            }
        );
        assert_eq!(parse_stat("12 (x) S 1"), None, "truncated");
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn the_readers_agree_with_procfs_on_this_process() {
        let me = std::process::id() as i32;
        let ours = read_stat(me).expect("our stat");
        let theirs = procfs::process::Process::myself().unwrap().stat().unwrap();
        assert_eq!(ours.pid, theirs.pid);
        assert_eq!(ours.ppid, theirs.ppid);
        assert_eq!(ours.pgrp, theirs.pgrp);
        assert_eq!(ours.starttime, theirs.starttime);
        assert_eq!(comm(me).as_deref(), Some(theirs.comm.as_str()));
        assert!(all_pids().contains(&me));
        assert!(!cmdline(me).expect("cmdline").is_empty());
    }

    #[test]
    fn fenced_means_only_zombies_or_pending_kills() {
        let m = |state, sigkill_pending| GroupMember {
            pid: 1,
            state,
            sigkill_pending,
        };
        assert!(group_fenced(&[]));
        assert!(group_fenced(&[m(ProcState::Zombie, false)]));
        assert!(group_fenced(&[m(ProcState::DiskSleep, true)]));
        assert!(!group_fenced(&[m(ProcState::DiskSleep, false)]));
        assert!(!group_fenced(&[
            m(ProcState::Zombie, false),
            m(ProcState::Running, false)
        ]));
    }
}
