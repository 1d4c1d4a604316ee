//! `cm_ctl`'s command line: parsing into cm-core's planner operations and rendering of
//! `cm_ctl query` in CM's layout (reference/opengauss-cm.md §9).

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cm_core::config::{ClusterConfig, Placement};
use cm_core::ctl::{ClusterHealth, ClusterStatus, CmsRole, CtlRequest, DnRow};
use cm_core::ctl_plan::Operation;
use cm_core::dn::{DbState, DnRole, StopMode};
use cm_core::ids::{InstanceId, NodeId};
use cm_core::params::{ParamSide, Params};

/// cm_ctl: operate a cluster (start, stop, query, switch over, set parameters) through its
/// cm_server leader and the nodes' om_monitors.
///
/// Exit codes: 0 success; 1 refused, failed, unreachable, or (query without --json) the
/// cluster is Unavailable; 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "cm_ctl", version)]
pub struct Cli {
    /// The cluster config file (same file on every node).
    #[arg(
        long,
        short = 'c',
        env = "CM_CONFIG",
        default_value = "/etc/cm/cluster.toml",
        global = true
    )]
    pub config: String,
    /// The operator certificate (PEM), instead of `ssl_operator_cert_file` in the config.
    #[arg(
        long = "tls-cert",
        env = "CM_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The operator certificate's private key (PEM), instead of `ssl_operator_key_file`.
    #[arg(
        long = "tls-key",
        env = "CM_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Node/instance selection shared by start, stop, switchover and build.
#[derive(Debug, Args, Clone, Default)]
pub struct Target {
    /// Node id or name (as in the cluster config).
    #[arg(short = 'n', long = "node")]
    pub node: Option<String>,
    /// Data directory of the instance on that node.
    #[arg(short = 'D', long = "datadir", requires = "node")]
    pub data_dir: Option<String>,
    /// A custom resource instance id (§14); its node comes from the config (-n must match).
    #[arg(short = 'I', long = "instance", conflicts_with = "data_dir")]
    pub instance: Option<u32>,
}

/// cm_ctl's subcommands (SPEC.md §10).
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Start the cluster, a node (-n) or an instance (-n -D).
    Start {
        /// Which part.
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the result (at least 1).
        #[arg(short = 't', long = "timeout", default_value_t = 300,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Stop the cluster, a node (-n) or an instance (-n -D).
    Stop {
        /// Which part.
        #[command(flatten)]
        target: Target,
        /// smart | fast | immediate.
        #[arg(short = 'm', long = "mode", default_value = "fast")]
        mode: String,
        /// Seconds to wait for the result (at least 1).
        #[arg(short = 't', long = "timeout", default_value_t = 300,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Show the cluster status. Exits 1 when the cluster is Unavailable (some group has no
    /// primary) or no cm_server leader answers (with --json: 0 whenever a status is printed).
    ///
    /// DN table columns: P/S is the member's install-time role (the group's first member in the
    /// config is P; `switchover -a` makes it primary again), then the current role and state;
    /// read-only, unknown and down show in the state column; lag is the bytes a standby is
    /// behind its primary.
    Query {
        /// Detailed: term, timeline and LSN (PostgreSQL's X/XXXXXXXX form) of every DN.
        #[arg(short = 'v')]
        verbose: bool,
        /// Show the CMS table and the DNs group by group.
        #[arg(short = 'C')]
        by_group: bool,
        /// One JSON object (the `ClusterStatus` schema).
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds (default 2) until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              value_parser = clap::value_parser!(u64).range(1..))]
        watch: Option<u64>,
    },
    /// Switch a standby to primary (-n -D [-f]) or every group back to its install-time primary (-a).
    Switchover {
        /// The standby to promote.
        #[command(flatten)]
        target: Target,
        /// Fast switchover.
        #[arg(short = 'f')]
        fast: bool,
        /// Rebalance: every group back to its install-time primary; waits for each of those
        /// switchovers like a single one (-t, --no-wait).
        #[arg(short = 'a', conflicts_with_all = ["node", "data_dir", "fast"])]
        all: bool,
        /// Seconds to wait for the outcome (at least 1; the switchover goes on after it).
        #[arg(short = 't', long = "timeout", default_value_t = 120,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Return once the cm_server accepted the request, without waiting for the outcome.
        #[arg(long = "no-wait")]
        no_wait: bool,
    },
    /// Pause arbitration and automatic restarts.
    Pause,
    /// Resume after pause.
    Resume,
    /// Set a parameter: `set --param --agent|--server -k NAME=VALUE`.
    Set {
        /// Required marker, as in CM.
        #[arg(long = "param", required = true)]
        param: bool,
        /// An agent parameter.
        #[arg(long, conflicts_with = "server")]
        agent: bool,
        /// A server parameter.
        #[arg(long)]
        server: bool,
        /// NAME=VALUE.
        #[arg(short = 'k')]
        kv: String,
    },
    /// List parameters with their side, value, unit and default: `list --param`.
    List {
        /// Required marker, as in CM.
        #[arg(long = "param", required = true)]
        param: bool,
    },
    /// Check that a process runs: `check -B cm_agent|cm_server|om_monitor|postgres -T PATH`.
    Check {
        /// Binary name: cm_agent, cm_server, om_monitor or postgres.
        #[arg(short = 'B', value_parser = ["cm_agent", "cm_server", "om_monitor", "postgres"])]
        binary: String,
        /// Path (config file or data directory) it was started with.
        #[arg(short = 'T')]
        path: String,
    },
    /// Rebuild a standby from its primary; waits until it is a Normal standby again and exits 1
    /// if the build fails.
    Build {
        /// The standby.
        #[command(flatten)]
        target: Target,
        /// A full base backup (pg_basebackup) instead of pg_rewind first.
        #[arg(long = "full")]
        full: bool,
        /// Seconds to wait for the result (at least 1).
        #[arg(short = 't', long = "timeout", default_value_t = 600,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// The promotion history: the newest 20 promotions per group (at most 1,000 in all), with
    /// term, instance, the primary it replaced, reason, timeline and the leader's wall clock.
    History {
        /// The JSON array (the `history` field of `query --json`, and an agent's `/history`).
        #[arg(long)]
        json: bool,
    },
    /// Custom resources (§14): `res --list` prints them from the config; `res --check` checks
    /// the config and that every script exists and is executable on this host, starting
    /// nothing (exit 1 on a problem).
    Res {
        /// List the resources and their instances.
        #[arg(long, conflicts_with = "check", required_unless_present = "check")]
        list: bool,
        /// Check the config and the scripts.
        #[arg(long)]
        check: bool,
    },
    /// CMS membership: `cms --readd NODE` lets a CMS that rejoined as a non-voter after losing
    /// its store vote again (only once the cluster has moved past every term it may have
    /// voted in).
    Cms {
        /// The node (id or name) whose cm_server is re-added as a voter.
        #[arg(long = "readd", value_name = "NODE", required = true)]
        readd: String,
    },
}

/// A cm_ctl invocation that does not fit the cluster config (exit code 2).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::error::Error for UsageError {}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The node `-n` names: an id or a node name from the config.
pub fn resolve_node(config: &ClusterConfig, given: &str) -> Result<NodeId, UsageError> {
    find_node(config, given).ok_or_else(|| {
        let known: Vec<String> = config
            .nodes
            .iter()
            .map(|n| format!("{} ({})", n.id.0, n.name))
            .collect();
        UsageError(format!(
            "-n {given}: no such node (nodes: {})",
            known.join(", ")
        ))
    })
}

/// The one resolver of a node named on the command line (`-n`, `--readd`): a number is an id
/// (config validation refuses all-digit node names, so it cannot mean a name), else a name.
fn find_node(config: &ClusterConfig, given: &str) -> Option<NodeId> {
    let given = given.trim();
    match given.parse::<u32>() {
        Ok(id) => config.node(NodeId(id)).map(|n| n.id),
        Err(_) => config.nodes.iter().find(|n| n.name == given).map(|n| n.id),
    }
}

fn resolve(
    config: &ClusterConfig,
    t: &Target,
) -> Result<(Option<NodeId>, Option<InstanceId>), UsageError> {
    if let Some(id) = t.instance {
        let id = InstanceId(id);
        let Some((res, inst)) = config.resource_instance(id) else {
            let known: Vec<String> = config
                .resources
                .iter()
                .flat_map(|r| r.instances.iter().map(|i| i.id.0.to_string()))
                .collect();
            return Err(UsageError(format!(
                "-I {}: no resource instance with that id (resource instances: {})",
                id.0,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        };
        if let Some(given) = &t.node {
            let node = resolve_node(config, given)?;
            if node != inst.node {
                return Err(UsageError(format!(
                    "-I {}: instance of `{}` runs on node {}, not on node {}",
                    id.0, res.name, inst.node.0, node.0
                )));
            }
        }
        return Ok((Some(inst.node), Some(id)));
    }
    let Some(given) = &t.node else {
        return Ok((None, None));
    };
    let node = resolve_node(config, given)?;
    let Some(dir) = &t.data_dir else {
        return Ok((Some(node), None));
    };
    let found = config
        .groups
        .iter()
        .flat_map(|g| g.members.iter())
        .find(|m| m.node == node && trim_slash(&m.data_dir) == trim_slash(&absolute(dir)));
    match found {
        Some(m) => Ok((Some(node), Some(m.instance))),
        None => Err(UsageError(format!(
            "-D {dir}: no instance with that data directory on node {}",
            node.0
        ))),
    }
}

/// A CMS node named by id or name.
fn cms_node(config: &ClusterConfig, text: &str) -> Result<NodeId, UsageError> {
    match find_node(config, text).and_then(|id| config.node(id)) {
        Some(n) if n.cms_port.is_some() => Ok(n.id),
        Some(n) => Err(UsageError(format!(
            "--readd {text}: node {} runs no cm_server (no cms_port)",
            n.id.0
        ))),
        None => {
            let known: Vec<String> = config.nodes.iter().map(|n| n.id.0.to_string()).collect();
            Err(UsageError(format!(
                "--readd {text}: no such node (nodes: {})",
                known.join(", ")
            )))
        }
    }
}

/// A `-D` path as the config names data directories: a relative one is taken from the current
/// directory (lexically: `.` and repeated separators removed, nothing resolved on disk, since
/// the directory may be on another host).
fn absolute(dir: &str) -> String {
    std::path::absolute(dir).map_or_else(|_| dir.to_string(), |p| p.display().to_string())
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

fn stop_mode(s: &str) -> Result<StopMode, UsageError> {
    StopMode::parse(s)
        .ok_or_else(|| UsageError(format!("-m {s}: expected smart, fast or immediate")))
}

/// Turns a parsed command into a planner operation. `None` for commands that need no plan
/// (`query`, `check`).
pub fn operation(
    config: &ClusterConfig,
    cmd: &CtlCommand,
) -> Result<Option<Operation>, UsageError> {
    let op = match cmd {
        CtlCommand::Start { target, timeout } => {
            let timeout = Duration::from_secs(*timeout);
            match resolve(config, target)? {
                (None, _) => Operation::StartCluster { timeout },
                (Some(node), instance) => Operation::StartInstance {
                    node,
                    instance,
                    timeout,
                },
            }
        }
        CtlCommand::Stop {
            target,
            mode,
            timeout,
        } => {
            let mode = stop_mode(mode)?;
            let timeout = Duration::from_secs(*timeout);
            match resolve(config, target)? {
                (None, _) => Operation::StopCluster { mode, timeout },
                (Some(node), instance) => Operation::StopInstance {
                    node,
                    instance,
                    mode,
                    timeout,
                },
            }
        }
        CtlCommand::Switchover {
            target,
            fast,
            all,
            timeout,
            no_wait,
        } => {
            if *all {
                Operation::SwitchoverAll {
                    wait: (!*no_wait).then(|| Duration::from_secs(*timeout)),
                }
            } else {
                match resolve(config, target)? {
                    (_, Some(instance)) => Operation::Switchover {
                        instance,
                        fast: *fast,
                        wait: (!*no_wait).then(|| Duration::from_secs(*timeout)),
                    },
                    _ => {
                        return Err(UsageError(
                            "switchover needs -n NODE -D DATADIR, or -a".into(),
                        ));
                    }
                }
            }
        }
        CtlCommand::Build {
            target,
            full,
            timeout,
        } => match resolve(config, target)? {
            (_, Some(instance)) => Operation::Build {
                instance,
                full: *full,
                timeout: Duration::from_secs(*timeout),
            },
            _ => return Err(UsageError("build needs -n NODE -D DATADIR".into())),
        },
        CtlCommand::Cms { readd } => Operation::Leader(CtlRequest::ReaddCms {
            node: cms_node(config, readd)?,
        }),
        CtlCommand::Pause => Operation::Leader(CtlRequest::Pause),
        CtlCommand::Resume => Operation::Leader(CtlRequest::Resume),
        CtlCommand::Set {
            agent, server, kv, ..
        } => set_param(*agent, *server, kv)?,
        CtlCommand::List { .. } => Operation::Leader(CtlRequest::ListParams),
        CtlCommand::Query { .. }
        | CtlCommand::Check { .. }
        | CtlCommand::History { .. }
        | CtlCommand::Res { .. } => {
            return Ok(None);
        }
    };
    Ok(Some(op))
}

fn set_param(agent: bool, server: bool, kv: &str) -> Result<Operation, UsageError> {
    let side = match (agent, server) {
        (true, false) => ParamSide::Agent,
        (false, true) => ParamSide::Server,
        _ => {
            return Err(UsageError(
                "set needs exactly one of --agent or --server".into(),
            ));
        }
    };
    let (name, value) = kv
        .split_once('=')
        .ok_or_else(|| UsageError(format!("-k {kv}: expected NAME=VALUE")))?;
    let (name, value) = (
        name.trim(),
        value.trim().trim_matches(|c| c == '"' || c == '\''),
    );
    let canon = Params::canonical(name)
        .ok_or_else(|| UsageError(format!("-k {name}: unknown parameter")))?;
    let declared = Params::side_of(canon).unwrap_or(ParamSide::Both);
    if declared != ParamSide::Both && declared != side {
        return Err(UsageError(format!(
            "{canon} is a {declared} parameter, not {side}"
        )));
    }
    // Validate the value here so a typo fails before anything is sent.
    Params::defaults()
        .set_text(canon, value)
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(Operation::Leader(CtlRequest::SetParam {
        side,
        name: canon.into(),
        value: value.into(),
    }))
}

fn role_name(r: DnRole) -> &'static str {
    r.name()
}

fn state_name(s: DbState) -> &'static str {
    s.name()
}

/// The state column: the HA state, then what else an operator must see at a glance.
fn state_cell(m: &DnRow) -> String {
    let mut cell = state_name(m.state).to_string();
    if m.read_only {
        cell.push_str(", read-only");
    }
    if let Some(ms) = m.not_streaming_ms {
        let _ = write!(cell, ", not streaming {:.1} s", ms as f64 / 1000.0);
    }
    cell
}

/// Bytes in a short human form (`0 B`, `12 kB`, `3.5 MB`, `1.2 GB`).
pub fn bytes_text(b: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// Rows of cells printed as left-aligned columns, two spaces apart, no trailing blanks.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn dn_header(verbose: bool) -> Vec<String> {
    let mut h: Vec<String> = [
        "node", "name", "node_ip", "instance", "port", "data_dir", "P/S", "role", "state", "lag",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    if verbose {
        h.extend(["term", "timeline", "lsn"].map(String::from));
    }
    h
}

fn dn_cells(m: &DnRow, verbose: bool) -> Vec<String> {
    let mut r = vec![
        m.node.0.to_string(),
        m.node_name.clone(),
        m.address.clone(),
        m.instance.0.to_string(),
        m.port.to_string(),
        m.data_dir.clone(),
        if m.install_primary { "P" } else { "S" }.to_string(),
        role_name(m.role).to_string(),
        state_cell(m),
        m.lag_bytes.map(bytes_text).unwrap_or_else(|| "-".into()),
    ];
    if verbose {
        r.push(m.term.0.to_string());
        r.push(m.position.timeline.0.to_string());
        r.push(if m.lsn.is_empty() {
            m.position.lsn_text()
        } else {
            m.lsn.clone()
        });
    }
    r
}

/// `cm_ctl res --list`: one line per resource instance with its script and settings.
pub fn render_resources(config: &ClusterConfig) -> String {
    if config.resources.is_empty() {
        return "no resources in the config\n".into();
    }
    let mut rows = vec![vec![
        "name".to_string(),
        "instance".into(),
        "node".into(),
        "placement".into(),
        "script".into(),
        "args".into(),
    ]];
    for r in &config.resources {
        let placement = match r.placement {
            Placement::Fixed => "fixed".to_string(),
            Placement::WithPrimaryOf(g) => format!("with_primary_of={}", g.0),
        };
        for i in &r.instances {
            rows.push(vec![
                r.name.clone(),
                i.id.0.to_string(),
                i.node.0.to_string(),
                placement.clone(),
                r.script.clone(),
                i.args.clone(),
            ]);
        }
    }
    let mut out = table(&rows);
    for r in &config.resources {
        let times = r
            .restart_times
            .map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{}: check_interval {:?}, time_out {:?}, restart_delay {:?}, restart_period {:?}, \
             restart_times {times}, abnormal_timeout {:?}",
            r.name,
            r.check_interval,
            r.time_out,
            r.restart_delay,
            r.restart_period,
            r.abnormal_timeout
        );
    }
    out
}

/// `cm_ctl res --check`: the problems of every resource script on this host (missing, not a
/// file, not executable), one line each; empty when all are fine.
pub fn check_resource_scripts(config: &ClusterConfig) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    for (i, r) in config.resources.iter().enumerate() {
        let at = format!("resource[{i}].script ({})", r.name);
        match std::fs::metadata(&r.script) {
            Err(e) => out.push(format!("{at}: {}: {e}", r.script)),
            Ok(m) if !m.is_file() => out.push(format!("{at}: {} is not a file", r.script)),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                out.push(format!("{at}: {} is not executable (chmod +x)", r.script));
            }
            Ok(_) => {}
        }
    }
    out
}

/// Renders `cm_ctl query [-v] [-C]` after CM's layout (reference/opengauss-cm.md §9), with a
/// header row over the DN table and one line per member.
pub fn render_query(s: &ClusterStatus, verbose: bool, by_group: bool) -> String {
    let mut out = String::new();
    if by_group {
        out.push_str("[  CMServer State   ]\n\n");
        let mut rows = vec![vec![
            "node".to_string(),
            "name".into(),
            "node_ip".into(),
            "state".into(),
        ]];
        for c in &s.cms {
            let role = match c.role {
                CmsRole::Primary => "Primary",
                CmsRole::Standby => "Standby",
                CmsRole::Down => "Down",
            };
            rows.push(vec![
                c.node.0.to_string(),
                c.name.clone(),
                c.address.clone(),
                role.into(),
            ]);
        }
        out.push_str(&table(&rows));
        out.push('\n');
    }
    let state = match s.state {
        ClusterHealth::Normal => "Normal",
        ClusterHealth::Degraded => "Degraded",
        ClusterHealth::Unavailable => "Unavailable",
    };
    out.push_str("[   Cluster State   ]\n\n");
    let _ = writeln!(out, "cluster_state   : {state}");
    let _ = writeln!(out, "redistributing  : No");
    let _ = writeln!(
        out,
        "balanced        : {}",
        if s.balanced { "Yes" } else { "No" }
    );
    let _ = writeln!(out, "current_az      : AZ_ALL");
    if s.paused {
        let _ = writeln!(out, "paused          : Yes");
    }
    out.push_str("\n[  Datanode State   ]\n\n");
    if by_group {
        for (i, g) in s.groups.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "group {} (term {})", g.group.0, g.term.0);
            let mut rows = vec![dn_header(verbose)];
            rows.extend(g.members.iter().map(|m| dn_cells(m, verbose)));
            out.push_str(&table(&rows));
        }
    } else {
        let mut rows = vec![dn_header(verbose)];
        rows.extend(
            s.groups
                .iter()
                .flat_map(|g| g.members.iter())
                .map(|m| dn_cells(m, verbose)),
        );
        out.push_str(&table(&rows));
    }
    for g in s.groups.iter().filter(|g| !g.commits_acknowledged) {
        let _ = writeln!(
            out,
            "group {}: commits are NOT acknowledged (no primary, or too few streaming standbys)",
            g.group.0
        );
    }
    if verbose {
        out.push_str("\n[  Last promotion   ]\n\n");
        out.push_str(&crate::ctl_history::render_last_promotions(s));
    }
    if !s.resources.is_empty() {
        out.push_str("\n[  Resource State   ]\n\n");
        let mut rows = vec![vec![
            "node".to_string(),
            "res_name".into(),
            "instance".into(),
            "state".into(),
        ]];
        rows.extend(s.resources.iter().map(|r| {
            vec![
                r.node.0.to_string(),
                r.name.clone(),
                r.instance.0.to_string(),
                r.state.name().into(),
            ]
        }));
        out.push_str(&table(&rows));
    }
    out
}

#[cfg(test)]
#[path = "ctl_cli_tests.rs"]
mod tests;
