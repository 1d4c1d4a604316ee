//! What every daemon does the same way: command-line basics, loading the cluster config with
//! errors that name the file, logging (human or JSON), and signals (SIGHUP reload, SIGTERM
//! clean exit).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cm_core::config::{ClusterConfig, NodeConfig};
use cm_core::ids::NodeId;
use std::sync::Arc;

use cm_core::journal::Opening;
use cm_core::security::SecurityConfig;
use cm_io::journal::{FileJournal, JournalStats, journal_dir};
use cm_io::transport::{Limits, Security, Tls, TlsFiles, tls};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Arguments shared by cm_server, cm_agent and om_monitor (parsed by [`crate::daemon_cli`]:
/// `-c/--config` or `CM_CONFIG`, `-n/--node` or `CM_NODE`, `--log-json` or `CM_LOG_JSON`,
/// `--log` or `CM_LOG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArgs {
    /// The cluster config file (the same file on every node).
    pub config: PathBuf,
    /// This node's id in the config.
    pub node: u32,
    /// Log as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// Log filter: a level and `target=level` pairs, e.g. `info` or `cm_core=debug,info`.
    pub log: String,
}

/// Reads and validates the cluster config; errors name the file and every problem in it.
pub fn load_config(path: &Path) -> anyhow::Result<ClusterConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (give the cluster config with -c FILE or the CM_CONFIG environment variable)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "cannot read the cluster config {}: {e}{hint}",
            path.display()
        )
    })?;
    ClusterConfig::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The config and this node's entry in it.
pub fn load_node(args: &NodeArgs) -> anyhow::Result<(ClusterConfig, NodeConfig)> {
    let config = load_config(&args.config)?;
    let node = config.node(NodeId(args.node)).cloned().with_context(|| {
        format!(
            "{}: node {} is not in the cluster config",
            args.config.display(),
            args.node
        )
    })?;
    Ok((config, node))
}

/// A path from the config, relative to the config file's directory when relative.
pub fn config_relative(config_path: &Path, file: &str) -> PathBuf {
    let p = PathBuf::from(file);
    if p.is_absolute() {
        p
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

/// Who a process is on its links: a node's component, or the operator (cm_ctl).
#[derive(Clone, Debug)]
pub enum Identity {
    /// A node's daemon: the node's certificate (`ssl_cert_file`/`ssl_key_file`).
    Node(NodeId),
    /// cm_ctl: the operator certificate, from flags (`cert`, `key`) or the config.
    Operator {
        /// `--tls-cert`, overriding `ssl_operator_cert_file`.
        cert: Option<PathBuf>,
        /// `--tls-key`, overriding `ssl_operator_key_file`.
        key: Option<PathBuf>,
    },
}

const HOW_TO_GET_TLS: &str = "every link is mutual TLS: set ssl_ca_file, ssl_cert_file and \
    ssl_key_file (and ssl_operator_cert_file/ssl_operator_key_file for cm_ctl) in the config; \
    `cm_local up` generates a test set, and cm-daemons/README.md (\"TLS with an existing CA\") \
    gives the openssl commands for a production CA. Only an all-loopback test cluster may set \
    `allow_plaintext = true` instead";

/// The TLS files of `identity`, or `None` when the config has none for it.
pub fn tls_files(
    config_path: &Path,
    config: &ClusterConfig,
    identity: &Identity,
) -> anyhow::Result<Option<TlsFiles>> {
    let s = &config.security;
    let Some(ca) = s.ssl_ca_file.as_deref() else {
        return Ok(None);
    };
    let rel = |f: &str| config_relative(config_path, f);
    let (cert, key) = match identity {
        Identity::Node(id) => {
            let name = &config
                .node(*id)
                .with_context(|| format!("node {} is not in the config", id.0))?
                .name;
            let (Some(c), Some(k)) = (s.ssl_cert_file.as_deref(), s.ssl_key_file.as_deref()) else {
                return Ok(None);
            };
            (
                rel(&SecurityConfig::for_node(c, name)),
                rel(&SecurityConfig::for_node(k, name)),
            )
        }
        Identity::Operator { cert, key } => {
            let cert = cert
                .clone()
                .or_else(|| s.ssl_operator_cert_file.as_deref().map(rel));
            let key = key
                .clone()
                .or_else(|| s.ssl_operator_key_file.as_deref().map(rel));
            let (Some(c), Some(k)) = (cert, key) else {
                return Ok(None);
            };
            (c, k)
        }
    };
    Ok(Some(TlsFiles {
        ca: rel(ca),
        cert,
        key,
    }))
}

/// How this process's links are protected: the TLS material named by the config (loaded, so a
/// bad file stops the start with its name), or plaintext when `allow_plaintext` is set (the
/// config accepts that only on an all-loopback cluster; warned at every start). Installs the
/// ring crypto provider.
pub fn load_security(
    config_path: &Path,
    config: &ClusterConfig,
    identity: &Identity,
) -> anyhow::Result<Security> {
    tls::install_crypto_provider();
    if config.security.allow_plaintext {
        tracing::warn!(
            config = %config_path.display(),
            "allow_plaintext = true: links are neither encrypted nor authenticated (tests only)"
        );
        return Ok(Security::Plaintext);
    }
    let Some(files) = tls_files(config_path, config, identity)? else {
        anyhow::bail!(
            "{}: no TLS material for {}: {HOW_TO_GET_TLS}",
            config_path.display(),
            match identity {
                Identity::Node(id) => format!("node {}", id.0),
                Identity::Operator { .. } => "cm_ctl (the operator certificate)".into(),
            }
        );
    };
    let names = config
        .nodes
        .iter()
        .map(|n| (n.id, n.name.clone()))
        .collect();
    let own = match identity {
        Identity::Node(id) => config
            .node(*id)
            .map(|n| n.name.clone())
            .ok_or_else(|| anyhow::anyhow!("node {} is not in the config", id.0))?,
        Identity::Operator { .. } => cm_core::security::OPERATOR_NAME.to_owned(),
    };
    let loaded = Tls::load_as(files, names, &own).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Security::Tls(Arc::new(loaded)))
}

/// SIGHUP: re-reads the TLS files for new connections; a bad file is logged and the old
/// material stays.
pub fn reload_tls(security: &Security) {
    let Security::Tls(tls) = security else {
        return;
    };
    match tls.reload() {
        Ok(()) => tracing::info!(
            certificate = %tls.files().cert.display(),
            "SIGHUP: TLS material reloaded; new connections use it"
        ),
        Err(e) => tracing::error!("SIGHUP: TLS material NOT reloaded, the old stays in use: {e}"),
    }
}

/// Opens the daemon's journal (SPEC §17) in `<state_dir>/journal/<daemon>`, bounded by
/// `journal_max_mb` (0: none). A journal that cannot be opened is logged, not fatal: the
/// cluster manager runs without it.
pub fn open_journal(state_dir: &Path, opening: &Opening) -> Option<FileJournal> {
    let dir = journal_dir(state_dir, opening.kind);
    let max = opening.config.params.journal_max_mb.saturating_mul(1 << 20);
    match FileJournal::open(&dir, opening, max) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(
                "cannot open the journal in {}, running without: {e}",
                dir.display()
            );
            None
        }
    }
}

/// The journal's counters on a daemon's `/metrics` (SPEC §17), copied from its
/// [`JournalStats`] at each scrape; zero while no journal is attached (`journal_max_mb = 0`).
#[derive(Debug, Default)]
pub struct JournalCounters {
    records: Counter,
    dropped: Counter,
    bytes: Counter,
    stats: OnceLock<Arc<JournalStats>>,
}

impl JournalCounters {
    /// Registers the counters (`journal_records_written_total`, ...) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "journal_records_written",
            "Journal records written to the state directory (SPEC 17)",
            self.records.clone(),
        );
        registry.register(
            "journal_records_dropped",
            "Journal records dropped because the writer fell behind or could not write (a gap a replay skips)",
            self.dropped.clone(),
        );
        registry.register(
            "journal_bytes_written",
            "Bytes written to the journal",
            self.bytes.clone(),
        );
    }

    /// Counts from this journal's statistics from now on.
    pub fn attach(&self, stats: Arc<JournalStats>) {
        let _ = self.stats.set(stats);
    }

    /// Copies the statistics into the counters (call before encoding the registry).
    pub fn refresh(&self) {
        let Some(s) = self.stats.get() else {
            return;
        };
        let copy = |from: &AtomicU64, to: &Counter| {
            to.inner()
                .store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        copy(&s.records_written, &self.records);
        copy(&s.records_dropped, &self.dropped);
        copy(&s.bytes_written, &self.bytes);
    }
}

/// The transport limits of a daemon: defaults, the certificate-expiry alarm threshold, and the
/// bound on unacknowledged sends after which a connection is dropped and redialled.
pub fn limits(config: &ClusterConfig) -> Limits {
    Limits {
        cert_expire_alert: std::time::Duration::from_secs(
            config
                .params
                .ssl_cert_expire_alert_threshold
                .saturating_mul(86_400),
        ),
        unacked_timeout: Some(config.params.unacked_send_bound()),
        ..Limits::default()
    }
}

/// An error and its causes on one line, without repeating a cause whose text the message
/// already carries (`cannot read X: No such file or directory (os error 2)` once, not twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Installs the tracing subscriber (stderr), human or JSON. Colours only when stderr is a
/// terminal: a log file or the journal gets plain text.
///
/// The filter is tracing-subscriber's `Targets` (`info`, `cm_core=debug,info`: a default level
/// and levels per module path), not `EnvFilter`: `EnvFilter`'s span and field filters bring
/// regex-automata and regex-syntax into every daemon, about 250 kB of code each that is never
/// run but stays resident through the kernel's fault-around (issue 16).
pub fn init_logging(json: bool, filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = parse_log_filter(filter)?;
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let layer = if json {
        layer.json().with_filter(filter).boxed()
    } else {
        layer.with_filter(filter).boxed()
    };
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install logging: {e}"))
}

/// The `--log` filter: a default level and `target=level` pairs, comma-separated.
pub fn parse_log_filter(filter: &str) -> anyhow::Result<tracing_subscriber::filter::Targets> {
    filter
        .parse()
        .map_err(|e| anyhow::anyhow!("bad log filter `{filter}`: {e}"))
}

/// A signal that asks a daemon to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload parameters from the config file.
    Reload,
    /// SIGTERM or SIGINT: exit cleanly.
    Terminate,
}

/// A stream of [`Signal`]s (SIGHUP, SIGTERM, SIGINT). Needs a tokio runtime.
pub fn signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = hup.recv() => Signal::Reload,
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Terminate,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_takes_a_default_level_and_levels_per_target() {
        use tracing::Level;
        let f = parse_log_filter("info").unwrap();
        assert!(f.would_enable("cm_io::transport", &Level::INFO));
        assert!(!f.would_enable("cm_io::transport", &Level::DEBUG));
        let f = parse_log_filter("cm_core=debug,warn").unwrap();
        assert!(f.would_enable("cm_core::agent", &Level::DEBUG));
        assert!(!f.would_enable("cm_io", &Level::INFO));
        assert!(f.would_enable("cm_io", &Level::WARN));
        let f = parse_log_filter("cm_core=debug").unwrap();
        assert!(!f.would_enable("tokio_postgres", &Level::ERROR));
        let e = parse_log_filter("cm_core=loud").unwrap_err().to_string();
        assert!(e.contains("bad log filter `cm_core=loud`"), "{e}");
    }

    #[test]
    fn the_journal_counters_show_the_journal_statistics_at_each_scrape() {
        let mut registry = Registry::with_prefix("cm_server");
        let c = JournalCounters::default();
        c.register(&mut registry);
        let render = |c: &JournalCounters| {
            c.refresh();
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(render(&c).contains("cm_server_journal_records_written_total 0"));
        let stats = Arc::new(JournalStats::default());
        c.attach(Arc::clone(&stats));
        stats.records_written.store(12, Ordering::Relaxed);
        stats.records_dropped.store(3, Ordering::Relaxed);
        stats.bytes_written.store(4096, Ordering::Relaxed);
        let text = render(&c);
        for line in [
            "cm_server_journal_records_written_total 12",
            "cm_server_journal_records_dropped_total 3",
            "cm_server_journal_bytes_written_total 4096",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn config_errors_name_the_file_and_the_problem() {
        let dir = std::env::temp_dir().join(format!("cm-common-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        let err = load_config(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\n[[node]]\nid = 0\n").unwrap();
        let err = load_config(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_config_says_how_to_give_one_and_the_os_error_once() {
        let missing = Path::new("/nonexistent-cm-dir/cluster.toml");
        let text = error_text(&load_config(missing).unwrap_err());
        assert!(text.contains("-c FILE or the CM_CONFIG"), "{text}");
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
    }

    #[test]
    fn without_tls_material_the_refusal_says_how_to_get_it() {
        let mut cfg = ClusterConfig::from_toml_str(SAMPLE).unwrap();
        let text = error_text(
            &load_security(
                Path::new("/etc/cm/cluster.toml"),
                &cfg,
                &Identity::Node(NodeId(1)),
            )
            .unwrap_err(),
        );
        assert!(
            text.contains("/etc/cm/cluster.toml") && text.contains("ssl_ca_file"),
            "{text}"
        );
        assert!(
            text.contains("cm_local") && text.contains("README"),
            "{text}"
        );
        cfg.security.ssl_ca_file = Some("/nonexistent-cm-dir/ca.crt".into());
        cfg.security.ssl_cert_file = Some("{node}.crt".into());
        cfg.security.ssl_key_file = Some("{node}.key".into());
        let text = error_text(
            &load_security(
                Path::new("/etc/cm/cluster.toml"),
                &cfg,
                &Identity::Node(NodeId(1)),
            )
            .unwrap_err(),
        );
        assert!(text.contains("/nonexistent-cm-dir/ca.crt"), "{text}");
    }

    #[test]
    fn cm_ctl_takes_the_operator_certificate_and_key_together() {
        use clap::Parser as _;
        let parse = |args: &[&str]| crate::ctl_cli::Cli::try_parse_from(args);
        let cli = parse(&[
            "cm_ctl",
            "--tls-cert",
            "/o.crt",
            "--tls-key",
            "/o.key",
            "query",
        ])
        .unwrap();
        assert_eq!(cli.tls_cert, Some(PathBuf::from("/o.crt")));
        assert_eq!(cli.tls_key, Some(PathBuf::from("/o.key")));
        assert!(parse(&["cm_ctl", "--tls-cert", "/o.crt", "query"]).is_err());
        let cli = parse(&["cm_ctl", "query"]).unwrap();
        assert_eq!((cli.tls_cert, cli.tls_key), (None, None));
    }

    #[test]
    fn tls_paths_are_next_to_the_config_and_name_the_node_or_the_operator() {
        let mut cfg = ClusterConfig::from_toml_str(SAMPLE).unwrap();
        cfg.security.ssl_ca_file = Some("tls/ca.crt".into());
        cfg.security.ssl_cert_file = Some("tls/{node}.crt".into());
        cfg.security.ssl_key_file = Some("/keys/{node}.key".into());
        let name = cfg.nodes[0].name.clone();
        let f = tls_files(
            Path::new("/etc/cm/c.toml"),
            &cfg,
            &Identity::Node(cfg.nodes[0].id),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.ca, PathBuf::from("/etc/cm/tls/ca.crt"));
        assert_eq!(f.cert, PathBuf::from(format!("/etc/cm/tls/{name}.crt")));
        assert_eq!(f.key, PathBuf::from(format!("/keys/{name}.key")));
        let op = Identity::Operator {
            cert: None,
            key: None,
        };
        assert_eq!(
            tls_files(Path::new("/etc/cm/c.toml"), &cfg, &op).unwrap(),
            None
        );
        cfg.security.ssl_operator_cert_file = Some("tls/operator.crt".into());
        cfg.security.ssl_operator_key_file = Some("tls/operator.key".into());
        let flags = Identity::Operator {
            cert: Some("/home/me/op.crt".into()),
            key: None,
        };
        let f = tls_files(Path::new("/etc/cm/c.toml"), &cfg, &flags)
            .unwrap()
            .unwrap();
        assert_eq!(f.cert, PathBuf::from("/home/me/op.crt"));
        assert_eq!(f.key, PathBuf::from("/etc/cm/tls/operator.key"));
    }

    const SAMPLE: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/t1"
monitor_port = 17001
cms_port = 17101
"#;
}
