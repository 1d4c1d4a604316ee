//! What every daemon does the same way: command-line basics, loading the cluster config with
//! errors that name the file, logging (human or JSON), and signals (SIGHUP reload, SIGTERM
//! clean exit).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use cm_core::config::{ClusterConfig, NodeConfig};
use cm_core::ids::NodeId;
use cm_io::transport::{Secret, SecretError};

/// Arguments shared by cm_server, cm_agent and om_monitor.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The cluster config file (the same file on every node).
    #[arg(
        long,
        short = 'c',
        env = "CM_CONFIG",
        default_value = "/etc/cm/cluster.toml"
    )]
    pub config: PathBuf,
    /// This node's id in the config.
    #[arg(long, short = 'n', env = "CM_NODE")]
    pub node: u32,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CM_LOG_JSON")]
    pub log_json: bool,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `cm_core=debug`.
    #[arg(long, env = "CM_LOG", default_value = "info")]
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

/// The per-cluster secret that authenticates connections: `secret_file` from the config, read
/// relative to the config file's directory when relative.
pub fn secret_path(config_path: &Path, config: &ClusterConfig) -> anyhow::Result<PathBuf> {
    let file = config.secret_file.as_deref().with_context(|| {
        format!(
            "{}: `secret_file` is required (connections are authenticated)",
            config_path.display()
        )
    })?;
    let p = PathBuf::from(file);
    Ok(if p.is_absolute() {
        p
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    })
}

/// Loads the cluster secret named by the config; a missing file says how to create one.
pub fn load_secret(config_path: &Path, config: &ClusterConfig) -> anyhow::Result<Secret> {
    let path = secret_path(config_path, config)?;
    match Secret::load(&path) {
        Ok(s) => Ok(s),
        Err(SecretError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(anyhow::anyhow!(
                "the cluster secret file {} does not exist: create it once with \
                 `head -c 32 /dev/urandom | base64 > {}; chmod 600 {}` and copy the same file \
                 to every node (`secret_file` in {})",
                path.display(),
                path.display(),
                path.display(),
                config_path.display()
            ))
        }
        Err(e) => Err(anyhow::anyhow!("{}", error_text(&e.into()))),
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
pub fn init_logging(json: bool, filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter `{filter}`"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logging: {e}"))
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
    fn a_missing_secret_says_how_to_create_it_and_other_errors_are_not_repeated() {
        let mut cfg = ClusterConfig::from_toml_str(SAMPLE).unwrap();
        cfg.secret_file = Some("/nonexistent-cm-dir/secret".into());
        let text = error_text(&load_secret(Path::new("/etc/cm/cluster.toml"), &cfg).unwrap_err());
        assert!(
            text.contains("head -c 32 /dev/urandom | base64 > /nonexistent-cm-dir/secret"),
            "{text}"
        );
        // A cause already in its message is printed once (SecretError::Read carries its
        // source in its text and as its source).
        let dir = std::env::temp_dir().join(format!("cm-secret-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        cfg.secret_file = Some(dir.display().to_string());
        let text = error_text(&load_secret(Path::new("/etc/cm/cluster.toml"), &cfg).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text.matches("(os error 21)").count(), 1, "{text}");
    }

    #[test]
    fn relative_secret_files_are_next_to_the_config() {
        let mut cfg = ClusterConfig::from_toml_str(SAMPLE).unwrap();
        assert!(secret_path(Path::new("/etc/cm/cluster.toml"), &cfg).is_err());
        cfg.secret_file = Some("secret".into());
        assert_eq!(
            secret_path(Path::new("/etc/cm/cluster.toml"), &cfg).unwrap(),
            PathBuf::from("/etc/cm/secret")
        );
        cfg.secret_file = Some("/run/s".into());
        assert_eq!(
            secret_path(Path::new("x.toml"), &cfg).unwrap(),
            PathBuf::from("/run/s")
        );
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
