//! `cm_server`: wires cm-io's drivers to cm-core's `Server` machine.
//!
//! At start: load the config (errors name the file), refuse a node without `cms_port`, create
//! the state directory (0700), load the quorum store `<state_dir>/cms_quorum.store` (a corrupt
//! file stops the start with a message naming it), listen on `address:cms_port` with the
//! cluster secret, and run the machine in an [`EventLoop`]. The wall clock is fed at start and
//! every [`WALL_CLOCK_EVERY`]. SIGTERM/SIGINT: stop the loop, wait for pending quorum writes,
//! close the listener, exit 0. SIGHUP: see [`reload`].

pub mod executor;
pub mod fence;
pub mod gateways;
pub mod machine;
pub mod metrics;
pub mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use cm_core::config::ClusterConfig;
use cm_core::ids::NodeId;
use cm_core::journal::{DaemonKind, Opening};
use cm_core::monitor::StartKind;
use cm_core::msg::Endpoint;
use cm_core::server::ServerInput;
use cm_core::time::WallMillis;
use cm_io::event_loop::{Clock, EventLoop, InputMap, Journal};
use cm_io::store::Store;
use cm_io::transport::{AddressBook, Security, Transport, TransportConfig};
use tokio::sync::mpsc;

use crate::common::{self, NodeArgs, Signal};
use executor::CmsExecutor;
use machine::CmsMachine;
use metrics::ServerMetrics;

/// How often the wall clock is fed to the machine (replicated deadlines are wall-clock times).
pub const WALL_CLOCK_EVERY: Duration = Duration::from_secs(10);
/// The quorum store's file name in the state directory.
pub const STORE_FILE: &str = "cms_quorum.store";
/// How long a clean exit waits for pending quorum writes.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Inputs queued for the machine (completions, wall clock) before senders wait.
const INPUT_QUEUE: usize = 1024;

/// cm_server's command line.
#[derive(Debug)]
pub struct ServerArgs {
    /// Node, config and logging.
    pub node: NodeArgs,
}

/// cm_server's flags (see [`crate::daemon_cli`]).
pub const CLI: crate::daemon_cli::Spec = crate::daemon_cli::Spec {
    name: "cm_server",
    about: "The CMS: quorum member and, when leading, arbiter",
    extra: &[],
};

impl ServerArgs {
    /// The process's command line; prints and exits on `--help`, `--version` or an error.
    pub fn parse() -> Self {
        CLI.parse(|p| Ok(Self { node: p.node }))
    }
}

/// A seed for the quorum's election timeouts: different per node and per start.
fn seed(node: NodeId) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ u64::from(node.0)
}

fn wall_now() -> WallMillis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    WallMillis(ms)
}

async fn listen_addr(address: &str, port: u16) -> anyhow::Result<std::net::SocketAddr> {
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    tokio::net::lookup_host(&host)
        .await
        .with_context(|| format!("cannot resolve this node's address {host}"))?
        .next()
        .with_context(|| format!("this node's address {host} resolves to nothing"))
}

/// Runs cm_server until SIGTERM. Errors say what was wrong and where.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let clock = Clock::process();
    // Unmap the start's code once it has run, then now and then (issue 16).
    let (config, me) = common::load_node(&args.node)?;
    let cfg_path = args.node.config.clone();
    let port = me.cms_port.with_context(|| {
        format!(
            "{}: node {} has no cms_port, so it runs no cm_server",
            cfg_path.display(),
            me.id.0
        )
    })?;
    let state_dir = PathBuf::from(&me.state_dir);
    crate::node::ensure_state_dir(&state_dir)?;
    let store = Store::new(state_dir.join(STORE_FILE));
    let restored = store.load()?;
    let metrics = Arc::new(ServerMetrics::new());
    let seed = seed(me.id);
    let opening = Opening {
        kind: DaemonKind::Server,
        node: me.id,
        config: config.clone(),
        seed,
        restored: restored.clone(),
        start_kind: StartKind::Normal,
        start: true,
    };
    let machine = CmsMachine::new(&config, me.id, seed, restored)
        .with_context(|| {
            format!(
                "cannot restore the quorum state from {}",
                store.path().display()
            )
        })?
        .with_metrics(Arc::clone(&metrics));
    let security = common::load_security(&cfg_path, &config, &common::Identity::Node(me.id))?;
    let listen = listen_addr(&me.address, port).await?;
    let (transport, net) = Transport::start(TransportConfig {
        local: Endpoint::server(me.id),
        security: security.clone(),
        listen: Some(listen),
        addresses: AddressBook::from_config(&config),
        limits: common::limits(&config),
    })
    .await?;
    let journal = common::open_journal(&state_dir, &opening).map(|j| {
        metrics.journal.attach(j.stats());
        Box::new(j) as Box<dyn Journal<CmsMachine> + Send>
    });
    let map = InputMap {
        net: ServerInput::Net,
        tick: || ServerInput::Tick,
    };
    let (event_loop, inputs) = EventLoop::new(machine, clock, map, INPUT_QUEUE);
    let event_loop = event_loop.with_net(net).with_journal(journal);
    spawn_wall_clock(inputs.clone());
    if let Some(port) = me.cms_http_port {
        let addr = listen_addr(&me.address, port).await?;
        let listener = cm_io::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr} (cms_http_port)"))?;
        spawn_http(
            listener,
            metrics,
            transport.clone(),
            clock,
            security.clone(),
        );
        tracing::info!(%addr, "serving /metrics and /cluster");
    }
    let mut executor = CmsExecutor::new(transport.clone(), store, inputs);
    tracing::info!(
        node = me.id.0,
        %listen,
        state_dir = %state_dir.display(),
        cms = config.cms_nodes().len(),
        "cm_server started"
    );
    let signals = common::signals()?;
    let (_, why) = event_loop
        .run(
            &mut executor,
            until_terminated(signals, cfg_path, config, security),
        )
        .await;
    tracing::info!(%why, "cm_server stopping");
    if !executor.flush(FLUSH_LIMIT).await {
        tracing::error!("quorum writes still pending at exit");
    }
    transport.shutdown().await;
    tracing::info!("cm_server stopped");
    Ok(())
}

/// Serves `/metrics` and `/cluster` (§15) on `cms_http_port` until the process exits.
fn spawn_http(
    listener: tokio::net::TcpListener,
    served: Arc<ServerMetrics>,
    transport: Transport,
    clock: Clock,
    security: Security,
) {
    let http_stats = Arc::new(cm_io::http::HttpStats::default());
    let refused = Arc::clone(&http_stats);
    let handler = Arc::new(move |req: &cm_io::http::HttpRequest| {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        metrics::handle(
            &served,
            req,
            clock.now(),
            transport.stats(),
            load(&refused.refused),
            load(&refused.handshake_failed),
        )
    });
    tokio::spawn(cm_io::http::serve_secure(
        listener,
        cm_io::http::HttpLimits::default(),
        handler,
        http_stats,
        std::future::pending(),
        security,
    ));
}

fn spawn_wall_clock(inputs: mpsc::Sender<ServerInput>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(WALL_CLOCK_EVERY);
        loop {
            // The first tick is immediate: the machine gets the wall clock at start.
            every.tick().await;
            if inputs
                .send(ServerInput::WallClock(wall_now()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// Resolves at SIGTERM/SIGINT; handles SIGHUP reloads meanwhile.
async fn until_terminated(
    mut signals: mpsc::Receiver<Signal>,
    path: PathBuf,
    running: ClusterConfig,
    security: Security,
) {
    while let Some(s) = signals.recv().await {
        match s {
            Signal::Terminate => return,
            Signal::Reload => {
                match common::load_config(&path) {
                    // Always against the config the machine was built with: that is what runs.
                    Ok(file) => reload::log(&path, &reload::diff(&running, &file)),
                    Err(e) => tracing::error!("config reload failed, nothing changed: {e:#}"),
                }
                // The TLS files are reloaded whether or not the config parses (as agent and
                // monitor do): a certificate rotation must not wait for a config fix.
                common::reload_tls(&security);
            }
        }
    }
}
