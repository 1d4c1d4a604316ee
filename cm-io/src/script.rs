//! Runs an operator's script (a custom resource's `-start|-stop|-check|-clean`, SPEC §14, or an
//! event trigger, §15) without ever blocking the caller's loop.
//!
//! The script runs as `<program> <args…>` in its own process group (so a timeout kills every
//! process it forked, not just the shell), with stdin closed, and is SIGKILLed — the whole group —
//! when `timeout` passes. Its stdout and stderr are captured *bounded*: the first
//! [`ScriptSpec::output_limit`] bytes of each are kept and the rest is read and counted, so a
//! script that prints megabytes neither fills memory nor blocks on a full pipe.
//!
//! A script that exits normally keeps its process group alive: a `-start` that puts a daemon in
//! the background must not see it killed. Such a daemon often inherits the script's stdout, so
//! the runner does not wait for end-of-file after the script exits: it drains the pipes for at
//! most [`DRAIN_AFTER_EXIT`] and returns, leaving the readers running (detached) so that the
//! daemon's later writes never hit a closed pipe (SIGPIPE); what they read past the output bound
//! is dropped.
//!
//! Run as another user ([`ScriptSpec::user`]), the child sets its gid, drops every supplementary
//! group (the standard library's `setgroups(0)` when root switches uid), then sets its uid: a
//! script never keeps root's groups.
//!
//! Everything is async (tokio): the caller spawns [`run`] as a task and feeds its
//! [`ScriptResult`] back to its machine as an input.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::process::OsUser;

/// How long the pipes are drained after the script itself exited (a background child may hold
/// them open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The default number of bytes kept of each of stdout and stderr.
pub const DEFAULT_OUTPUT_LIMIT: usize = 4096;

/// What to run.
#[derive(Clone, Debug)]
pub struct ScriptSpec {
    /// The program (an absolute path in the config).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// SIGKILL of the whole process group after this long.
    pub timeout: Duration,
    /// Run as this OS user (root otherwise runs it as itself).
    pub user: Option<OsUser>,
    /// Bytes kept of each of stdout and stderr.
    pub output_limit: usize,
    /// SIGKILL the process group also after a normal exit (an event trigger leaves nothing
    /// behind; a resource's `-start` must, so it keeps the default `false`).
    pub kill_group_on_exit: bool,
    /// Where the running script's process group is registered, so its owner can kill every
    /// group still running when it exits.
    pub tracker: Option<GroupTracker>,
}

/// The process groups of the scripts running now (shared by a runner's owner).
#[derive(Clone, Debug, Default)]
pub struct GroupTracker(Arc<Mutex<std::collections::BTreeSet<i32>>>);

impl GroupTracker {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The groups registered now.
    pub fn running(&self) -> Vec<i32> {
        self.set().iter().copied().collect()
    }

    /// SIGKILLs every registered group (at the owner's exit).
    pub fn kill_all(&self) {
        for pgid in std::mem::take(&mut *self.set()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl ScriptSpec {
    /// A spec with the default output bound and no user change.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args,
            timeout,
            user: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            kill_group_on_exit: false,
            tracker: None,
        }
    }

    /// The command line as one string, for logs.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// How a script ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal not sent by the runner ended it.
    Signaled(i32),
    /// It ran past its timeout and was killed (with its process group).
    TimedOut,
    /// It could not be started (missing, not executable, bad interpreter...).
    SpawnFailed(String),
}

impl ScriptOutcome {
    /// The exit code when it exited, `None` otherwise.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exited(c) => Some(*c),
            _ => None,
        }
    }
}

/// One bounded output stream: its first bytes and how many more were thrown away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes, at most the spec's `output_limit`.
    pub head: Vec<u8>,
    /// Bytes read past the limit and dropped.
    pub dropped: u64,
}

impl Captured {
    fn push(&mut self, buf: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.head.len());
        let take = room.min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        self.dropped += (buf.len() - take) as u64;
    }

    /// The kept bytes as text (lossy), with a note of the dropped count, for a log line.
    pub fn summary(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).trim_end().to_owned();
        if self.dropped > 0 {
            s.push_str(&format!(" [... {} more bytes dropped]", self.dropped));
        }
        s
    }
}

/// The result of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptResult {
    /// How it ended.
    pub outcome: ScriptOutcome,
    /// Its standard output, bounded.
    pub stdout: Captured,
    /// Its standard error, bounded.
    pub stderr: Captured,
    /// Wall time from spawn to exit (or kill).
    pub elapsed: Duration,
}

type Shared = Arc<Mutex<Captured>>;

async fn pump(mut r: impl AsyncRead + Unpin, into: Shared, limit: usize) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut c) = into.lock() {
                    c.push(&buf[..n], limit);
                }
            }
        }
    }
}

fn take(s: &Shared) -> Captured {
    s.lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default()
}

/// Runs the script to its end or its timeout. Never panics; a spawn failure is a result.
pub async fn run(spec: &ScriptSpec) -> ScriptResult {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(u) = &spec.user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ScriptResult {
                outcome: ScriptOutcome::SpawnFailed(format!("{}: {e}", spec.program.display())),
                stdout: Captured::default(),
                stderr: Captured::default(),
                elapsed: started.elapsed(),
            };
        }
    };
    let pgid = child.id().map(|p| p as i32);
    if let (Some(t), Some(g)) = (&spec.tracker, pgid) {
        t.set().insert(g);
    }
    let out: Shared = Arc::default();
    let err: Shared = Arc::default();
    let mut pumps = tokio::task::JoinSet::new();
    if let Some(o) = child.stdout.take() {
        pumps.spawn(pump(o, out.clone(), spec.output_limit));
    }
    if let Some(e) = child.stderr.take() {
        pumps.spawn(pump(e, err.clone(), spec.output_limit));
    }
    let outcome = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => ScriptOutcome::Exited(c),
                (None, Some(s)) => ScriptOutcome::Signaled(s),
                (None, None) => ScriptOutcome::Signaled(0),
            }
        }
        Ok(Err(e)) => ScriptOutcome::SpawnFailed(format!("waiting for the script: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            ScriptOutcome::TimedOut
        }
    };
    if let Some(g) = pgid {
        if spec.kill_group_on_exit {
            // Whatever the script left in its group (a background child) goes with it.
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
        if let Some(t) = &spec.tracker {
            t.set().remove(&g);
        }
    }
    let elapsed = started.elapsed();
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    // Not aborted: that would close the read ends, and a background daemon still writing to
    // the inherited stdout/stderr would die of SIGPIPE. The pumps read on, to nowhere past the
    // bound, until the daemon closes them or exits.
    pumps.detach_all();
    ScriptResult {
        outcome,
        stdout: take(&out),
        stderr: take(&err),
        elapsed,
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
