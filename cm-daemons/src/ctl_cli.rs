//! `cm_ctl`'s command line: parsing into cm-core's planner operations and rendering of
//! `cm_ctl query` in CM's layout (reference/opengauss-cm.md §9).

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cm_core::config::ClusterConfig;
use cm_core::ctl::{ClusterHealth, ClusterStatus, CmsRole, CtlRequest};
use cm_core::ctl_plan::Operation;
use cm_core::dn::{DbState, DnRole, StopMode};
use cm_core::ids::{InstanceId, NodeId};
use cm_core::params::{ParamSide, Params};

/// cm_ctl: operate a cluster managed by cm_server / cm_agent / om_monitor.
#[derive(Debug, Parser)]
#[command(name = "cm_ctl", version, about)]
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
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Node/instance selection shared by start, stop, switchover and build.
#[derive(Debug, Args, Clone, Default)]
pub struct Target {
    /// Node id.
    #[arg(short = 'n', long = "node")]
    pub node: Option<u32>,
    /// Data directory of the instance on that node.
    #[arg(short = 'D', long = "datadir", requires = "node")]
    pub data_dir: Option<String>,
}

/// cm_ctl's subcommands (SPEC.md §10).
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Start the cluster, a node (-n) or an instance (-n -D).
    Start {
        /// Which part.
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the result.
        #[arg(short = 't', long = "timeout", default_value_t = 300)]
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
        /// Seconds to wait for the result.
        #[arg(short = 't', long = "timeout", default_value_t = 300)]
        timeout: u64,
    },
    /// Show the cluster status.
    Query {
        /// Detailed (positions, terms, read-only).
        #[arg(short = 'v')]
        verbose: bool,
        /// Show the CMS table and pair DNs by group.
        #[arg(short = 'C')]
        by_group: bool,
        /// One JSON object (the `ClusterStatus` schema).
        #[arg(long)]
        json: bool,
    },
    /// Switch a standby to primary (-n -D [-f]) or every group back to its install-time primary (-a).
    Switchover {
        /// The standby to promote.
        #[command(flatten)]
        target: Target,
        /// Fast switchover.
        #[arg(short = 'f')]
        fast: bool,
        /// Rebalance every group.
        #[arg(short = 'a', conflicts_with_all = ["node", "data_dir", "fast"])]
        all: bool,
        /// Seconds to wait for the outcome (the switchover goes on after it).
        #[arg(short = 't', long = "timeout", default_value_t = 120)]
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
    /// List parameters: `list --param`.
    List {
        /// Required marker, as in CM.
        #[arg(long = "param", required = true)]
        param: bool,
    },
    /// Check that a process runs: `check -B cm_agent|cm_server|postgres -T PATH`.
    Check {
        /// Binary name.
        #[arg(short = 'B')]
        binary: String,
        /// Path (config file or data directory) it was started with.
        #[arg(short = 'T')]
        path: String,
    },
    /// Rebuild a standby from its primary.
    Build {
        /// The standby.
        #[command(flatten)]
        target: Target,
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

fn resolve(
    config: &ClusterConfig,
    t: &Target,
) -> Result<(Option<NodeId>, Option<InstanceId>), UsageError> {
    let Some(node) = t.node.map(NodeId) else {
        return Ok((None, None));
    };
    if config.node(node).is_none() {
        let known: Vec<String> = config.nodes.iter().map(|n| n.id.0.to_string()).collect();
        return Err(UsageError(format!(
            "-n {}: no such node (nodes: {})",
            node.0,
            known.join(", ")
        )));
    }
    let Some(dir) = &t.data_dir else {
        return Ok((Some(node), None));
    };
    let found = config
        .groups
        .iter()
        .flat_map(|g| g.members.iter())
        .find(|m| m.node == node && trim_slash(&m.data_dir) == trim_slash(dir));
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
    let found = config
        .nodes
        .iter()
        .find(|n| n.name == text || text.parse::<u32>().is_ok_and(|id| n.id.0 == id));
    match found {
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
                Operation::Leader(CtlRequest::SwitchoverAll)
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
        CtlCommand::Build { target } => match resolve(config, target)? {
            (_, Some(instance)) => Operation::Leader(CtlRequest::Build { instance }),
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
        CtlCommand::Query { .. } | CtlCommand::Check { .. } => return Ok(None),
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
    match r {
        DnRole::Primary => "Primary",
        DnRole::Standby => "Standby",
        DnRole::Pending => "Pending",
        DnRole::Unknown => "Unknown",
        DnRole::Down => "Down",
    }
}

fn state_name(s: DbState) -> &'static str {
    match s {
        DbState::Normal => "Normal",
        DbState::NeedRepair => "Need repair",
        DbState::Starting => "Starting",
        DbState::Promoting => "Promoting",
        DbState::Demoting => "Demoting",
        DbState::Building => "Building",
        DbState::CatchUp => "Catchup",
        DbState::ManuallyStopped => "Manually stopped",
        DbState::DiskDamaged => "Disk damaged",
        DbState::BuildFailed => "Build failed",
        DbState::Unknown => "Unknown",
    }
}

/// Renders `cm_ctl query [-v] [-C]` in CM's layout.
pub fn render_query(s: &ClusterStatus, verbose: bool, by_group: bool) -> String {
    let mut out = String::new();
    if by_group {
        out.push_str("[  CMServer State   ]\n\nnode      node_ip         state\n");
        out.push_str(&"-".repeat(40));
        out.push('\n');
        for c in &s.cms {
            let role = match c.role {
                CmsRole::Primary => "Primary",
                CmsRole::Standby => "Standby",
                CmsRole::Down => "Down",
            };
            let _ = writeln!(
                out,
                "{:<2} {:<6} {:<15} {role}",
                c.node.0, c.name, c.address
            );
        }
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
    for g in &s.groups {
        let cells: Vec<String> = g
            .members
            .iter()
            .map(|m| {
                let mut cell = format!(
                    "{:<2} {:<6} {:<15} {} {} {} {} {}",
                    m.node.0,
                    m.node_name,
                    m.address,
                    m.instance.0,
                    m.data_dir,
                    if m.static_primary { "P" } else { "S" },
                    role_name(m.role),
                    state_name(m.state)
                );
                if let Some(ms) = m.not_streaming_ms {
                    let _ = write!(cell, " not-streaming={:.1}s", ms as f64 / 1000.0);
                }
                if verbose {
                    let _ = write!(cell, " term={} pos={}", m.term.0, m.position);
                    if m.read_only {
                        cell.push_str(" read-only");
                    }
                }
                cell
            })
            .collect();
        if by_group {
            let _ = writeln!(out, "{}", cells.join(" | "));
        } else {
            for c in cells {
                let _ = writeln!(out, "{c}");
            }
        }
        if !g.commits_acknowledged {
            let _ = writeln!(
                out,
                "group {}: commits are NOT acknowledged (no primary, or too few streaming standbys)",
                g.group.0
            );
        }
    }
    out
}

#[cfg(test)]
#[path = "ctl_cli_tests.rs"]
mod tests;
