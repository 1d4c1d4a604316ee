//! cm_agent: runs cm-core's [`Agent`] under cm-io's [`EventLoop`] with a transport connected
//! to every CMS, and executes each of its commands (SPEC.md §1–3, §6, §7.1, §8). The machine
//! decides everything; the executor (`exec.rs`) samples, probes and acts, always off the loop,
//! and every completion comes back as an [`AgentInput`].
//!
//! * The agent's durable state is `<state_dir>/cma.store`; a corrupt store stops the agent
//!   with an error naming the file (the DN terms in it must never be forgotten silently).
//! * PostgreSQL runs as `database.os_user` of the config ([`PgDriver`]); the DNs are children
//!   of the agent in their own process groups and keep running when the agent exits.
//! * With a `rest_port` on the node, the HTTP endpoints of SPEC.md §15 listen on
//!   `address:rest_port` (`rest.rs`), answering from a snapshot the event loop publishes after
//!   every step.
//! * SIGHUP re-reads the config and feeds [`AgentInput::ParamsReloaded`]; SIGTERM/SIGINT stop
//!   the agent after its pending state writes finished; its DNs keep running and are adopted
//!   by the next agent (SPEC.md §1).

mod cms;
mod exec;
mod peers;
mod rest;
mod system;
pub mod triggers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cm_core::agent::{Agent, AgentInput};
use cm_core::config::ClusterConfig;
use cm_core::ids::NodeId;
use cm_core::journal::{DaemonKind, Opening};
use cm_core::monitor::StartKind;
use cm_core::msg::Endpoint;
use cm_io::event_loop::{Clock, EventLoop, InputMap, Journal};
use cm_io::journal::FileJournal;
use cm_io::postgres::{PgDriver, PgOptions};
use cm_io::store::Store;
use cm_io::transport::{AddressBook, Security, Transport, TransportConfig};
use tokio::sync::{mpsc, watch};

use crate::common::{self, NodeArgs, Signal};
use crate::node;

/// How om_monitor started this agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKindArg {
    /// Right after `cm_ctl start`: alarms are suppressed for a while.
    Normal,
    /// A restart after a crash, or any other start.
    Abnormal,
}

impl From<StartKindArg> for StartKind {
    fn from(k: StartKindArg) -> Self {
        match k {
            StartKindArg::Normal => Self::Normal,
            StartKindArg::Abnormal => Self::Abnormal,
        }
    }
}

/// cm_agent's command line.
#[derive(Debug)]
pub struct AgentArgs {
    /// Config, node and logging.
    pub node: NodeArgs,
    /// How om_monitor started this agent (`--start-kind normal|abnormal`, default abnormal).
    pub start_kind: StartKindArg,
    /// The cm_server binary (default: `cm_server` next to this executable).
    pub server_bin: Option<PathBuf>,
}

/// cm_agent's flags (see [`crate::daemon_cli`]).
pub const CLI: crate::daemon_cli::Spec = crate::daemon_cli::Spec {
    name: "cm_agent",
    about: "Supervises this node's DNs and reports to every CMS.",
    extra: &[
        (
            "start-kind",
            "KIND",
            "How om_monitor started this agent: normal or abnormal [default: abnormal]",
        ),
        (
            "server-bin",
            "PATH",
            "The cm_server binary (default: `cm_server` next to this executable)",
        ),
    ],
};

impl AgentArgs {
    /// The arguments of a parsed command line; an error names a bad `--start-kind`.
    pub fn from_parsed(p: &crate::daemon_cli::Parsed) -> Result<Self, String> {
        let start_kind = match p.value("start-kind") {
            None => StartKindArg::Abnormal,
            Some(v) if v == "normal" => StartKindArg::Normal,
            Some(v) if v == "abnormal" => StartKindArg::Abnormal,
            Some(v) => {
                return Err(format!(
                    "invalid value '{}' for '--start-kind <KIND>': normal or abnormal",
                    v.to_string_lossy()
                ));
            }
        };
        Ok(Self {
            node: p.node.clone(),
            start_kind,
            server_bin: p.value("server-bin").map(PathBuf::from),
        })
    }

    /// The process's command line; prints and exits on `--help`, `--version` or an error.
    pub fn parse() -> Self {
        CLI.parse(|p| Self::from_parsed(&p))
    }
}

/// The agent's store file.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cma.store")
}

/// How long the agent waits at exit for its state writes to finish.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a starting agent waits for the node's agent lock before it gives up.
const AGENT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Runs cm_agent until `Exit`, SIGTERM or SIGINT.
pub fn main(args: AgentArgs) -> anyhow::Result<ExitCode> {
    common::init_logging(args.node.log_json, &args.node.log)?;
    let config_path = node::absolute(&args.node.config)?;
    let (config, me) = common::load_node(&NodeArgs {
        config: config_path.clone(),
        ..args.node.clone()
    })?;
    let state_dir = PathBuf::from(&me.state_dir);
    node::ensure_state_dir(&state_dir)?;
    // One agent per node (SPEC §1): the lock is held until the process exits. A new agent
    // waits for one om_monitor just killed; om_monitor sees waiters too and kills a foreign one.
    let lock_file = node::agent_lock_path(&state_dir);
    let Some(_lock) = node::lock_waiting(&lock_file, AGENT_LOCK_WAIT)? else {
        anyhow::bail!(
            "another cm_agent of node {} holds {}",
            me.id,
            lock_file.display()
        );
    };
    let store = Store::new(store_path(&state_dir));
    let restored = store.load()?;
    // This start's id (a restarted agent's build count begins again; cm_ctl build sees it).
    let incarnation = cm_io::postgres::credential::random_u64()
        .context("cannot draw the agent's incarnation id")?;
    let opening = Opening {
        kind: DaemonKind::Agent,
        node: me.id,
        config: config.clone(),
        seed: incarnation,
        restored: restored.clone(),
        start_kind: args.start_kind.into(),
        start: true,
    };
    let agent = Agent::new(&config, me.id, incarnation, restored)
        .with_context(|| format!("{}", store.path().display()))?
        .with_start_kind(args.start_kind.into());
    let server_bin = match args.server_bin {
        Some(p) => node::absolute(&p)?,
        None => node::sibling_binary("cm_server")?,
    };
    let security = common::load_security(&config_path, &config, &common::Identity::Node(me.id))?;
    let rest = match me.rest_port {
        Some(port) => Some(rest_addr(&me.address, port).with_context(|| {
            format!(
                "{}: node {}: cannot resolve `address` for rest_port",
                config_path.display(),
                me.id
            )
        })?),
        None => None,
    };
    // One thread: the loop and its tasks only wait for IO (blocking work goes to the blocking
    // pool), and idle worker threads each cost wake-ups and memory (issue 16).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let setup = Setup {
        config: Arc::new(config),
        config_path,
        node: me.id,
        state_dir,
        server_bin,
        security,
        rest,
        opening,
    };
    rt.block_on(run(agent, store, setup))?;
    Ok(ExitCode::SUCCESS)
}

/// Everything the agent's executor needs besides the machine.
struct Setup {
    config: Arc<ClusterConfig>,
    config_path: PathBuf,
    node: NodeId,
    state_dir: PathBuf,
    server_bin: PathBuf,
    security: Security,
    /// Where the HTTP endpoints listen, if the node has a `rest_port`.
    rest: Option<std::net::SocketAddr>,
    /// What the journal's opening record holds (SPEC §17).
    opening: Opening,
}

/// `address:port` as a socket address (the first address a host name resolves to).
fn rest_addr(address: &str, port: u16) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    (address, port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{address} resolves to no address"))
}

async fn run(agent: Agent, store: Store, s: Setup) -> anyhow::Result<()> {
    let clock = Clock::process();
    // Unmap the start's code once it has run, then now and then (issue 16).
    let driver = Arc::new(
        PgDriver::new(
            Arc::clone(&s.config),
            s.node,
            PgOptions::from_config(&s.config),
        )
        .context("cannot set up the PostgreSQL driver")?,
    );
    let (transport, net) = Transport::start(TransportConfig {
        local: Endpoint::agent(s.node),
        security: s.security.clone(),
        listen: None,
        addresses: AddressBook::from_config(&s.config),
        limits: common::limits(&s.config),
    })
    .await
    .context("cannot start the transport")?;
    let map = InputMap {
        net: AgentInput::Net,
        tick: || AgentInput::Tick,
    };
    let published = s.rest.map(|addr| {
        let (health_tx, health_rx) = watch::channel(Arc::new(agent.health()));
        (addr, health_tx, health_rx)
    });
    let (event_loop, tx) = EventLoop::new(agent, clock, map, 1024);
    let journal = common::open_journal(&s.state_dir, &s.opening);
    let journal_stats = journal.as_ref().map(FileJournal::stats);
    let journal = journal.map(|j| Box::new(j) as Box<dyn Journal<Agent> + Send>);
    let mut event_loop = event_loop.with_net(net).with_journal(journal);
    let mut rest_task = None;
    let counters = rest::Counters {
        tls: match &s.security {
            Security::Tls(t) => Some(Arc::clone(t)),
            Security::Plaintext => None,
        },
        journal: journal_stats,
        ..rest::Counters::default()
    };
    if let Some((addr, health_tx, health_rx)) = published {
        event_loop = event_loop.with_observer(move |a: &Agent| {
            health_tx.send_replace(Arc::new(a.health()));
        });
        rest_task = Some(rest::spawn_thread(
            addr,
            health_rx,
            s.security.clone(),
            counters.clone(),
        )?);
    }
    let persist = exec::Persister::spawn(store, tx.clone());
    let mut exec = exec::AgentExec::new(exec::Parts {
        config: Arc::clone(&s.config),
        config_path: s.config_path.clone(),
        node: s.node,
        state_dir: s.state_dir.clone(),
        server_bin: s.server_bin.clone(),
        driver,
        transport: transport.clone(),
        persist: persist.clone(),
        tx: tx.clone(),
    });
    exec.triggers = Arc::clone(&counters.triggers);
    exec.scripts = Arc::clone(&counters.scripts);
    tracing::info!(node = %s.node, "cm_agent running");
    let sigs = common::signals()?;
    let stop = watch_signals(sigs, s.config_path.clone(), tx, s.security.clone());
    let (_, why) = event_loop.run(&mut exec, stop).await;
    drop(rest_task);
    tracing::info!(%why, "cm_agent stopping; its DNs keep running");
    // Event triggers still running go with the agent (their whole process groups).
    exec.triggers.groups.kill_all();
    if !persist.flushed(FLUSH_TIMEOUT).await {
        tracing::error!("state writes still pending after {FLUSH_TIMEOUT:?}; exiting anyway");
    }
    transport.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM/SIGINT; on SIGHUP re-reads the config and feeds the new parameters,
/// and re-reads the TLS files.
async fn watch_signals(
    mut sigs: mpsc::Receiver<Signal>,
    config_path: PathBuf,
    tx: mpsc::Sender<AgentInput>,
    security: Security,
) {
    while let Some(s) = sigs.recv().await {
        match s {
            Signal::Terminate => return,
            Signal::Reload => {
                match common::load_config(&config_path) {
                    Ok(cfg) => {
                        tracing::info!("SIGHUP: parameters reloaded");
                        let _ = tx.send(AgentInput::ParamsReloaded(cfg.params)).await;
                    }
                    Err(e) => tracing::error!("SIGHUP: config not reloaded: {e:#}"),
                }
                common::reload_tls(&security);
            }
        }
    }
}
