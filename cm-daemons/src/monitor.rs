//! om_monitor: runs cm-core's [`Monitor`] under cm-io's [`EventLoop`] and executes its
//! commands (SPEC.md §1, §2). Every decision (when to start, kill or alarm) is the machine's;
//! this module samples /proc and the flag files, starts and kills cm_agent, and serves the
//! authenticated control port that cm_ctl reaches every node through.
//!
//! One om_monitor per node: it holds `<state_dir>/om_monitor.lock` (flock) while it runs, and a
//! second copy exits 0 at once — so it can be started every minute by cron
//! (`dist/om_monitor.cron`) or kept alive by systemd (`dist/om_monitor.service`).
//!
//! Its cm_agent holds `<state_dir>/cm_agent.lock` the same way; every second the monitor reads
//! `/proc/locks` for the processes holding or waiting for that lock (every agent of this node)
//! and SIGKILLs the ones it did not start (SPEC §1), without scanning /proc.
//!
//! **SIGTERM/SIGINT** stop the monitor and leave its cm_agent running, as CM's om_monitor does:
//! the cluster keeps being managed while the monitor is restarted. The next monitor finds the
//! agent is not its child and the machine kills it and starts its own (SPEC.md §2), so that
//! exactly one supervised agent runs. To stop the node's cluster manager, stop the cluster
//! (`cm_ctl stop`), then the monitor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use cm_core::Instant;
use cm_core::config::ClusterConfig;
use cm_core::ctl::MonitorReply;
use cm_core::ids::{ClientId, NodeId, QuorumTerm};
use cm_core::io::{Executor, Flow, NetEvent};
use cm_core::journal::{DaemonKind, Opening};
use cm_core::monitor::{AgentProcess, Monitor, MonitorCommand, MonitorInput, Pid, StartKind};
use cm_core::msg::{Endpoint, Envelope, Msg};
use cm_io::event_loop::{Clock, EventLoop, InputMap, Journal};
use cm_io::flags::FlagDir;
use cm_io::journal::FileJournal;
use cm_io::transport::{AddressBook, Security, Transport, TransportConfig};
use tokio::sync::mpsc;

use crate::common::{self, NodeArgs, Signal};
use crate::node;

/// om_monitor's command line.
#[derive(Debug)]
pub struct MonitorArgs {
    /// Config, node and logging.
    pub node: NodeArgs,
    /// The cm_agent binary (default: `cm_agent` next to this executable).
    pub agent_bin: Option<PathBuf>,
    /// The cm_server binary, passed to cm_agent (default: the agent's own default).
    pub server_bin: Option<PathBuf>,
}

/// om_monitor's flags (see [`crate::daemon_cli`]).
pub const CLI: crate::daemon_cli::Spec = crate::daemon_cli::Spec {
    name: "om_monitor",
    about: "Keeps this node's cm_agent running; serves cm_ctl.",
    extra: &[
        (
            "agent-bin",
            "PATH",
            "The cm_agent binary (default: `cm_agent` next to this executable)",
        ),
        (
            "server-bin",
            "PATH",
            "The cm_server binary, passed to cm_agent (default: the agent's own default)",
        ),
    ],
};

impl MonitorArgs {
    /// The arguments of a parsed command line.
    pub fn from_parsed(p: &crate::daemon_cli::Parsed) -> Self {
        Self {
            node: p.node.clone(),
            agent_bin: p.value("agent-bin").map(PathBuf::from),
            server_bin: p.value("server-bin").map(PathBuf::from),
        }
    }

    /// The process's command line; prints and exits on `--help`, `--version` or an error.
    pub fn parse() -> Self {
        CLI.parse(|p| Ok(Self::from_parsed(&p)))
    }
}

/// The lock file of the node's om_monitor.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("om_monitor.lock")
}

/// Runs om_monitor until SIGTERM/SIGINT. Exits 0 at once when another om_monitor of this node
/// holds the lock.
pub fn main(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    common::init_logging(args.node.log_json, &args.node.log)?;
    let config_path = node::absolute(&args.node.config)?;
    let (config, me) = common::load_node(&NodeArgs {
        config: config_path.clone(),
        ..args.node.clone()
    })?;
    node::ensure_state_dir(Path::new(&me.state_dir))?;
    let lock_file = lock_path(Path::new(&me.state_dir));
    let Some(_lock) = node::try_lock(&lock_file)? else {
        eprintln!(
            "om_monitor: another om_monitor of node {} holds {}; exiting",
            me.id,
            lock_file.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let agent_bin = match args.agent_bin {
        Some(p) => node::absolute(&p)?,
        None => node::sibling_binary("cm_agent")?,
    };
    let server_bin = args.server_bin.map(|p| node::absolute(&p)).transpose()?;
    let security = common::load_security(&config_path, &config, &common::Identity::Node(me.id))?;
    let listen = node::resolve(&me.address, me.monitor_port)?;
    let spawn = AgentSpawn {
        agent_bin,
        server_bin,
        error_file: Path::new(&me.state_dir).join(AGENT_ERROR_FILE),
        config: config_path,
        node: me.id,
        log: args.node.log.clone(),
        log_json: args.node.log_json,
        agent_lock: node::agent_lock_path(Path::new(&me.state_dir)),
        child: Arc::default(),
    };
    // One thread: the loop and its tasks only wait for IO (blocking work goes to the blocking
    // pool), and idle worker threads each cost wake-ups and memory (issue 16).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let journal = common::open_journal(
        Path::new(&me.state_dir),
        &Opening {
            kind: DaemonKind::Monitor,
            node: spawn.node,
            config: config.clone(),
            seed: 0,
            restored: None,
            start_kind: StartKind::Normal,
            start: true,
        },
    );
    rt.block_on(run(
        config,
        spawn,
        security,
        listen,
        FlagDir::new(&me.state_dir),
        journal,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The file (in the node's state directory) where cm_agent writes the error it exits with;
/// its path reaches the agent in the environment variable [`AGENT_ERROR_ENV`].
pub const AGENT_ERROR_FILE: &str = "cm_agent.error";
/// The environment variable naming [`AGENT_ERROR_FILE`] for cm_agent.
pub const AGENT_ERROR_ENV: &str = "CM_AGENT_ERROR_FILE";

/// How cm_agent is started and recognised.
#[derive(Clone, Debug)]
struct AgentSpawn {
    agent_bin: PathBuf,
    server_bin: Option<PathBuf>,
    error_file: PathBuf,
    config: PathBuf,
    node: NodeId,
    log: String,
    log_json: bool,
    /// The lock file every cm_agent of this node holds or waits for ([`node::agent_lock_path`]).
    agent_lock: PathBuf,
    /// The pid of the agent this monitor started, until it has been reaped.
    child: Arc<Mutex<Option<i32>>>,
}

async fn run(
    config: ClusterConfig,
    spawn: AgentSpawn,
    security: Security,
    listen: std::net::SocketAddr,
    flags: FlagDir,
    journal: Option<FileJournal>,
) -> anyhow::Result<()> {
    let clock = Clock::process();
    // Unmap the start's code once it has run, then now and then (issue 16).
    let machine = Monitor::new(&config, spawn.node, 0, None);
    let map = InputMap {
        // The monitor has no connection inputs: control frames are translated below.
        net: |_| MonitorInput::Tick,
        tick: || MonitorInput::Tick,
    };
    let (event_loop, tx) = EventLoop::new(machine, clock, map, 256);
    let event_loop =
        event_loop.with_journal(journal.map(|j| Box::new(j) as Box<dyn Journal<Monitor> + Send>));
    let (transport, net) = Transport::start(TransportConfig {
        local: Endpoint::monitor(spawn.node),
        security: security.clone(),
        listen: Some(listen),
        addresses: AddressBook::from_config(&config),
        limits: common::limits(&config),
    })
    .await
    .context("cannot open the control port")?;
    tracing::info!(node = %spawn.node, %listen, "om_monitor running");
    let clients = Arc::new(Mutex::new(Clients::default()));
    tokio::spawn(forward_control(net, Arc::clone(&clients), tx.clone()));
    let mut exec = MonitorExec {
        spawn,
        flags,
        tx,
        transport: transport.clone(),
        clients,
        agent_error: Arc::new(Mutex::new(AgentError::default())),
    };
    let mut sigs = common::signals()?;
    let stop = async move {
        while let Some(s) = sigs.recv().await {
            match s {
                Signal::Terminate => return,
                Signal::Reload => common::reload_tls(&security),
            }
        }
    };
    let (_, why) = event_loop.run(&mut exec, stop).await;
    tracing::info!(%why, "om_monitor stopping; its cm_agent keeps running");
    transport.shutdown().await;
    Ok(())
}

/// Control clients waiting for a reply: which connection and which request id.
#[derive(Debug, Default)]
struct Clients {
    next: u64,
    waiting: BTreeMap<ClientId, (Endpoint, u64)>,
}

/// Turns control-port frames into [`MonitorInput::CtlRequest`]s carrying the sender the
/// transport authenticated; the machine decides whom it serves (only cm_ctl).
async fn forward_control(
    mut net: mpsc::Receiver<NetEvent>,
    clients: Arc<Mutex<Clients>>,
    tx: mpsc::Sender<MonitorInput>,
) {
    while let Some(ev) = net.recv().await {
        let NetEvent::FrameReceived { peer, envelope } = ev else {
            continue;
        };
        let Msg::MonitorRequest { id, req } = envelope.msg else {
            tracing::debug!(%peer, "ignoring a frame that is not a control request");
            continue;
        };
        let client = {
            let mut c = clients.lock().unwrap_or_else(|e| e.into_inner());
            c.next += 1;
            let client = ClientId(c.next);
            c.waiting.insert(client, (peer, id));
            client
        };
        let input = MonitorInput::CtlRequest {
            client,
            from: peer,
            req,
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

struct MonitorExec {
    spawn: AgentSpawn,
    flags: FlagDir,
    tx: mpsc::Sender<MonitorInput>,
    transport: Transport,
    clients: Arc<Mutex<Clients>>,
    agent_error: Arc<Mutex<AgentError>>,
}

/// What the last cm_agent exits said, so a crash loop is logged once, not every restart.
#[derive(Debug, Default)]
struct AgentError {
    /// The error the agent last exited with (shown by `cm_ctl query` while no agent runs).
    last: Option<String>,
}

impl AgentError {
    /// Records an exit; returns whether it is news (log at ERROR/INFO) rather than a repeat.
    fn record(&mut self, error: Option<String>) -> bool {
        let news = error != self.last;
        self.last = error;
        news
    }
}

/// The agent's exit in plain words: `code 1` or `signal 9`.
fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

impl Executor<MonitorCommand> for MonitorExec {
    fn execute(&mut self, _now: Instant, command: MonitorCommand) -> Flow {
        match command {
            MonitorCommand::SampleAgent => self.sample(),
            MonitorCommand::StartAgent { kind } => self.start_agent(kind),
            MonitorCommand::KillAgent { pid } => kill_agent(pid),
            MonitorCommand::RaiseAlarm(alarm) => {
                let f = crate::server::executor::alarm_fields(&alarm);
                tracing::warn!(alarm = f.kind, node = f.node, "alarm raised");
            }
            MonitorCommand::WriteFlag { op, flag, mode } => {
                let flags = self.flags.clone();
                self.flag_op(op, move || flags.write(flag, mode).map(|_| ()));
            }
            MonitorCommand::RemoveFlag { op, flag } => {
                let flags = self.flags.clone();
                self.flag_op(op, move || flags.remove(flag).map(|_| ()));
            }
            MonitorCommand::RemoveAllManualStart { op } => {
                let flags = self.flags.clone();
                self.flag_op(op, move || flags.remove_manual_start().map(|_| ()));
            }
            MonitorCommand::Reply { client, reply } => self.reply(client, reply),
        }
        Flow::Continue
    }
}

impl MonitorExec {
    /// Scans /proc and the state directory off the loop; answers `AgentSampled`.
    fn sample(&self) {
        let spawn = self.spawn.clone();
        let flags = self.flags.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let sampled = tokio::task::spawn_blocking(move || sample_agent(&spawn, &flags)).await;
            match sampled {
                Ok(Some(input)) => {
                    let _ = tx.send(input).await;
                }
                // No sample this turn; the machine samples again at its next check.
                Ok(None) => {}
                Err(e) => tracing::error!("agent sample failed: {e}"),
            }
        });
    }

    fn start_agent(&self, kind: StartKind) {
        let s = &self.spawn;
        let mut cmd = tokio::process::Command::new(&s.agent_bin);
        let kind = match kind {
            StartKind::Normal => "normal",
            StartKind::Abnormal => "abnormal",
        };
        cmd.arg("--config")
            .arg(&s.config)
            .arg("--node")
            .arg(s.node.0.to_string())
            .arg("--start-kind")
            .arg(kind)
            .arg("--log")
            .arg(&s.log);
        if s.log_json {
            cmd.arg("--log-json");
        }
        if let Some(server) = &s.server_bin {
            cmd.arg("--server-bin").arg(server);
        }
        let _ = std::fs::remove_file(&s.error_file);
        cmd.env(AGENT_ERROR_ENV, &s.error_file);
        // Its own process group: a terminal's Ctrl-C aimed at the monitor spares the agent.
        cmd.process_group(0).stdin(std::process::Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // The next check finds no agent and the machine decides again.
                tracing::error!(bin = %s.agent_bin.display(), "cannot start cm_agent: {e}");
                return;
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        *s.child.lock().unwrap_or_else(|e| e.into_inner()) = pid;
        let child_slot = Arc::clone(&s.child);
        let errors = Arc::clone(&self.agent_error);
        let repeat = errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .is_some();
        if repeat {
            tracing::debug!(pid = child.id(), kind, "cm_agent started again");
        } else {
            tracing::info!(pid = child.id(), kind, "cm_agent started");
        }
        let tx = self.tx.clone();
        let error_file = s.error_file.clone();
        tokio::spawn(async move {
            let waited = child.wait().await;
            {
                let mut slot = child_slot.lock().unwrap_or_else(|e| e.into_inner());
                if *slot == pid {
                    *slot = None;
                }
            }
            let abnormal = match waited {
                Ok(status) => {
                    let error = (!status.success()).then(|| {
                        std::fs::read_to_string(&error_file)
                            .ok()
                            .map(|t| t.trim().to_owned())
                            .filter(|t| !t.is_empty())
                            .unwrap_or_else(|| format!("exited with {}", exit_text(status)))
                    });
                    let news = errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(error.clone());
                    match (&error, news) {
                        (Some(e), true) => tracing::error!(
                            exit = %exit_text(status),
                            "cm_agent exited abnormally: {e}; om_monitor restarts it, backing \
                             off while it keeps failing (`cm_ctl query` shows this error)"
                        ),
                        (Some(_), false) => {
                            tracing::debug!(exit = %exit_text(status), "cm_agent failed again");
                        }
                        (None, _) => tracing::info!(exit = %exit_text(status), "cm_agent exited"),
                    }
                    !status.success()
                }
                Err(e) => {
                    tracing::error!("cannot wait for cm_agent: {e}");
                    true
                }
            };
            let _ = tx.send(MonitorInput::AgentExited { abnormal }).await;
        });
    }

    fn flag_op<F>(&self, op: cm_core::ids::OpId, work: F)
    where
        F: FnOnce() -> Result<(), cm_io::statedir::FileError> + Send + 'static,
    {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = match tokio::task::spawn_blocking(work).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("flag operation failed: {e}")),
            };
            let _ = tx.send(MonitorInput::FlagOpCompleted { op, result }).await;
        });
    }

    fn reply(&self, client: ClientId, mut reply: MonitorReply) {
        if let MonitorReply::Status {
            agent_running: false,
            agent_error,
            ..
        } = &mut reply
        {
            agent_error.clone_from(
                &self
                    .agent_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last,
            );
        }
        let waiting = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&client);
        let Some((peer, id)) = waiting else {
            tracing::debug!(%client, "reply for an unknown control client");
            return;
        };
        let envelope = Envelope {
            from: self.transport.local(),
            to: peer,
            quorum_term: QuorumTerm(0),
            msg: Msg::MonitorReply { id, reply },
        };
        if let Err(e) = self.transport.send(&envelope) {
            tracing::debug!(%peer, "control reply dropped: {e}");
        }
    }
}

/// The monitor's facts: this node's cm_agent processes, the flags, the binary and the config.
/// `None` (logged) when the flags cannot be read: guessing "no flags" could restart an agent
/// an operator stopped.
fn sample_agent(spawn: &AgentSpawn, flags: &FlagDir) -> Option<MonitorInput> {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let processes = agent_processes(spawn)
        .into_iter()
        .map(|f| AgentProcess {
            pid: Pid(u32::try_from(f.pid).unwrap_or(0)),
            state: f.state,
            started_by_me: f.ppid == me,
        })
        .collect();
    let flags = match flags.read() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot read the flags: {e}");
            return None;
        }
    };
    Some(MonitorInput::AgentSampled {
        processes,
        flags,
        binary_executable: node::is_executable(&spawn.agent_bin),
        config_readable: std::fs::File::open(&spawn.config).is_ok(),
    })
}

/// This node's cm_agent processes: the agent this monitor started (from its start until it
/// takes the lock, too) and every process holding or waiting for the node's agent lock, read
/// from `/proc/locks` — one file and a `stat` per agent each second, however many processes
/// run (SPEC §1: a foreign agent is seen at the next check). Only when `/proc/locks` cannot be
/// read is every process in /proc scanned.
fn agent_processes(spawn: &AgentSpawn) -> Vec<node::Found> {
    use cm_io::process as p;
    let holders = match p::FileId::of(&spawn.agent_lock) {
        // No lock file: no agent of this node ever ran here.
        None => Some(Vec::new()),
        Some(id) => p::lock_holders(id),
    };
    let Some(mut pids) = holders else {
        return node::scan("cm_agent", &spawn.config, spawn.node.0);
    };
    pids.extend(*spawn.child.lock().unwrap_or_else(|e| e.into_inner()));
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(p::read_stat)
        .map(|st| node::Found {
            pid: st.pid,
            ppid: st.ppid,
            state: p::proc_state_of(st.state),
        })
        .collect()
}

fn kill_agent(pid: Pid) {
    let Ok(raw) = i32::try_from(pid.0) else {
        return;
    };
    let target = nix::unistd::Pid::from_raw(raw);
    match nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL) {
        Ok(()) => tracing::warn!(pid = raw, "cm_agent killed"),
        Err(e) => tracing::warn!(pid = raw, "cannot kill cm_agent: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_is_news_once_then_a_repeat_until_the_error_changes() {
        let mut e = AgentError::default();
        assert!(e.record(Some("bad config".into())));
        assert!(!e.record(Some("bad config".into())));
        assert!(!e.record(Some("bad config".into())));
        assert!(e.record(Some("other".into())));
        assert!(e.record(None));
        assert_eq!(e.last, None);
    }

    #[test]
    fn exits_are_plain_words() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            exit_text(std::process::ExitStatus::from_raw(1 << 8)),
            "code 1"
        );
        assert_eq!(exit_text(std::process::ExitStatus::from_raw(9)), "signal 9");
    }
}
