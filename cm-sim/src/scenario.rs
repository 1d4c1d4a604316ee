//! Scenario files: TOML data describing one simulated run (format in `cm-sim/SCENARIOS.md`).
//! The cluster is embedded in the daemons' own config schema under `[cluster]`; faults and
//! operator actions are a timed list; expectations bound SPEC §12's timing figures.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::config::{ClusterConfig, ConfigError};
use cm_core::params::TestSwitches;
use cm_core::{GroupId, InstanceId, NodeId};
use serde::{Deserialize, Serialize};

use crate::db::DbTimings;
use crate::net::NetParams;

/// The timing figures of SPEC §12, in the order `cm-sim run --json` prints them.
pub const TIMING_NAMES: &[&str] = &[
    "fault_at_s",
    "failover_sent_s",
    "writable_again_s",
    "restart_sent_s",
    "build_sent_s",
    "read_only_on_s",
    "read_only_off_s",
    "cms_leader_s",
    "agent_last_report_s",
    "self_fenced_s",
    "primary_http_lost_s",
    "dual_writable_ms",
    "lost_acked_writes",
    "unwritable_max_s",
    "switchovers_sent",
    "switchovers_begun",
];

/// Simulator knobs that are not cluster parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimParams {
    /// Node clock drifts are drawn in ±(this × `max_clock_drift`).
    pub drift_fraction: f64,
    /// Interval of the client's writes, ms.
    pub write_interval_ms: f64,
    /// Interval of the replication step, ms.
    pub replication_tick_ms: f64,
    /// Seconds from power-on until the init system starts om_monitor.
    pub boot_s: f64,
    /// Initial data-disk usage of every node, percent.
    pub disk_pct: f64,
    /// Seconds a liveness phase may take beyond the bound computed from the parameters.
    pub liveness_slack_s: f64,
    /// Power-on instant of each node, seconds, in the config's node order (missing: 0): a
    /// staggered cold start, or a node that joins late.
    pub power_on_s: Vec<f64>,
    /// How each custom resource instance's script and program behave (§14; missing: `ok`).
    pub resource_models: BTreeMap<InstanceId, crate::resources::ResourceModel>,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            drift_fraction: 1.0,
            write_interval_ms: 50.0,
            replication_tick_ms: 50.0,
            boot_s: 2.0,
            disk_pct: 40.0,
            liveness_slack_s: 30.0,
            power_on_s: Vec::new(),
            resource_models: BTreeMap::new(),
        }
    }
}

/// A daemon kind in scenario files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// om_monitor.
    Monitor,
    /// cm_agent.
    Agent,
    /// cm_server.
    Server,
}

/// A fault or operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Power loss: every process dies, pending disk writes are lost.
    CrashHost {
        /// The node.
        node: NodeId,
    },
    /// Power on again (om_monitor starts after `sim.boot_s`).
    RestartHost {
        /// The node.
        node: NodeId,
    },
    /// The whole host stops (VM pause): no process steps, frames wait.
    FreezeHost {
        /// The node.
        node: NodeId,
    },
    /// The host runs again.
    ThawHost {
        /// The node.
        node: NodeId,
    },
    /// SIGKILL of one daemon.
    KillProcess {
        /// The node.
        node: NodeId,
        /// Which daemon.
        role: RoleName,
    },
    /// SIGKILL of the cm_server that holds the leader lease now (nothing if none does).
    CrashCmsLeader,
    /// Cuts the node of the cm_server holding the leader lease now from every other node.
    IsolateCmsLeader,
    /// SIGSTOP of one daemon (state T).
    StopProcess {
        /// The node.
        node: NodeId,
        /// Which daemon.
        role: RoleName,
    },
    /// SIGCONT of one daemon.
    ContProcess {
        /// The node.
        node: NodeId,
        /// Which daemon.
        role: RoleName,
    },
    /// SIGKILL of a custom resource's program (§14).
    KillResource {
        /// The resource instance.
        instance: InstanceId,
    },
    /// SIGKILL of every process of a DN.
    KillDn {
        /// The instance.
        instance: InstanceId,
    },
    /// Breaks a standby's stream: its receiver connects and receives nothing until a Build.
    BreakStream {
        /// The instance.
        instance: InstanceId,
    },
    /// Makes a standby's stream flap: its replay is stuck on a record it cannot apply, and the
    /// startup process restarts its WAL receiver every 5 s; each retry streams for about a
    /// second (the receive position catches up with the primary's) and dies — until a Build.
    FlapStream {
        /// The instance.
        instance: InstanceId,
    },
    /// Diverges a standby's local WAL from its upstream's (a rewind that left a record with an
    /// incorrect prev-link): its WAL receiver never comes up again until a Build.
    DivergeWal {
        /// The instance.
        instance: InstanceId,
    },
    /// The WAL a standby's stream must start from is gone from its upstream (recycled while
    /// the standby was away, or a timeline the upstream never had): its receiver is refused
    /// every time, with nothing the CMS could read as `NeedRepair`. A Build by pg_rewind does
    /// not cure it (the rewind copies the source's WAL, which lacks it, or finds nothing to
    /// rewind); only a full copy does.
    RemoveWal {
        /// The instance.
        instance: InstanceId,
    },
    /// The DN's next Build loses its source mid-copy and fails, leaving data that cannot
    /// start until a Build succeeds (nemesis, issue 16).
    BreakBuild {
        /// The instance.
        instance: InstanceId,
    },
    /// The DN is killed and its data can no longer reach a consistent state: every start
    /// stays "starting up" (refusing every connection) until a full copy replaces the data;
    /// a rewind leaves it so (nemesis, issue 16).
    StallRecovery {
        /// The instance.
        instance: InstanceId,
    },
    /// Puts a DN's processes in a scheduler state: "R", "T", "D" or "Z".
    DnState {
        /// The instance.
        instance: InstanceId,
        /// The state letter.
        state: String,
    },
    /// Blocks traffic between two node sets (one direction if `one_way`).
    Partition {
        /// One side.
        a: Vec<NodeId>,
        /// The other side.
        b: Vec<NodeId>,
        /// Block only a → b.
        #[serde(default)]
        one_way: bool,
    },
    /// Cuts one node from every other.
    IsolateNode {
        /// The node.
        node: NodeId,
    },
    /// Cuts every node of an AZ from the rest.
    IsolateAz {
        /// The AZ.
        az: String,
    },
    /// Cuts one node's cm_agent from every cm_server; the DNs keep streaming.
    CutAgent {
        /// The node.
        node: NodeId,
    },
    /// Cuts the cm_server holding the leader lease now from the cm_agent of every other node
    /// hosting a DN; its links to the other cm_servers and to the agents of DN-less nodes stay
    /// up (nothing if no one holds a lease).
    CutCmsLeaderFromAgents,
    /// Blocks traffic between `node` and the node of the cm_server holding the leader lease
    /// now (only `node` → leader if `one_way`); the followers still reach both.
    PartitionFromCmsLeader {
        /// The node.
        node: NodeId,
        /// Block only node → leader.
        #[serde(default)]
        one_way: bool,
    },
    /// I/O on the node of the cm_server holding the leader lease now hangs for a while.
    DiskHangCmsLeader {
        /// For how long.
        duration_s: f64,
    },
    /// Whether `node` reaches the third-party gateways (SPEC §5.4) until the next heal
    /// (default: whenever it is linked to some other node).
    Gateway {
        /// The node.
        node: NodeId,
        /// Reachable or not.
        reachable: bool,
    },
    /// Removes every partition and cut.
    Heal,
    /// Sets a node's data-disk usage and its growth.
    DiskUsage {
        /// The node.
        node: NodeId,
        /// Usage now, percent.
        pct: f64,
        /// Growth, percent per second (negative shrinks).
        #[serde(default)]
        growth_pct_per_s: f64,
    },
    /// Disk read/write errors on a node.
    DiskError {
        /// The node.
        node: NodeId,
        /// Writes fail.
        #[serde(default)]
        write: bool,
        /// Reads fail.
        #[serde(default)]
        read: bool,
    },
    /// I/O on a node hangs for a while.
    DiskHang {
        /// The node.
        node: NodeId,
        /// For how long.
        duration_s: f64,
    },
    /// Changes network behaviour from now on.
    Net {
        /// New parameters.
        #[serde(flatten)]
        params: NetParams,
    },
    /// Loses a daemon's durable store (a replaced disk).
    WipeStore {
        /// The node.
        node: NodeId,
        /// Which daemon.
        role: RoleName,
    },
    /// An operator command through the cm_ctl planner.
    Ctl {
        /// `stop`, `start`, `switchover`, `build`, `pause`, `resume`, `readd` (`cms --readd
        /// NODE`: issued only once a CMS leader holds a lease in a quorum term above every term
        /// seen when the node's store was lost, SPEC §5.1; else the operator waits for good).
        command: String,
        /// `-n NODE`.
        #[serde(default)]
        node: Option<NodeId>,
        /// The instance (`-D DIR` resolved).
        #[serde(default)]
        instance: Option<InstanceId>,
        /// `-m smart|fast|immediate`.
        #[serde(default)]
        mode: Option<String>,
    },
}

impl FaultAction {
    /// The groups of `config` whose faults this action changes, for the availability check:
    /// the group of a targeted instance; the groups with a member on a targeted node, or every
    /// group when that node runs a cm_server (the CMS quorum serves them all); every group for
    /// network-wide, CMS-leader and operator actions.
    pub fn touches(&self, config: &ClusterConfig) -> Vec<GroupId> {
        let all = || config.groups.iter().map(|g| g.id).collect();
        let of_instance = |i: InstanceId| {
            config
                .groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m.instance == i))
                .map(|g| g.id)
                .collect()
        };
        let of_node = |n: NodeId| {
            if config.cms_nodes().contains(&n) {
                return all();
            }
            config
                .groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m.node == n))
                .map(|g| g.id)
                .collect()
        };
        match self {
            Self::KillDn { instance }
            | Self::BreakStream { instance }
            | Self::FlapStream { instance }
            | Self::DivergeWal { instance }
            | Self::RemoveWal { instance }
            | Self::BreakBuild { instance }
            | Self::StallRecovery { instance }
            | Self::DnState { instance, .. } => of_instance(*instance),
            Self::KillResource { .. } => Vec::new(),
            Self::CrashHost { node }
            | Self::RestartHost { node }
            | Self::FreezeHost { node }
            | Self::ThawHost { node }
            | Self::KillProcess { node, .. }
            | Self::StopProcess { node, .. }
            | Self::ContProcess { node, .. }
            | Self::IsolateNode { node }
            | Self::CutAgent { node }
            | Self::DiskUsage { node, .. }
            | Self::DiskError { node, .. }
            | Self::DiskHang { node, .. }
            | Self::WipeStore { node, .. }
            | Self::Gateway { node, .. } => of_node(*node),
            _ => all(),
        }
    }
}

/// A fault at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Simulated time of the fault.
    pub at: Duration,
    /// What happens.
    pub action: FaultAction,
}

/// An expectation on one timing figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Expect {
    /// It happened, within `[min, max]` inclusive.
    Within(f64, f64),
    /// It did not happen (null).
    Never,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The cluster.
    pub config: ClusterConfig,
    /// Length of the safety phase.
    pub duration: Duration,
    /// Whether a liveness phase follows (faults healed).
    pub liveness: bool,
    /// The group the timings are about.
    pub affected_group: GroupId,
    /// Network behaviour.
    pub net: NetParams,
    /// Database delays.
    pub db: DbTimings,
    /// Simulator knobs.
    pub sim: SimParams,
    /// Faults in time order.
    pub faults: Vec<Fault>,
    /// Expectations by timing name.
    pub expect: BTreeMap<String, Expect>,
}

/// A scenario file that could not be used: every problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// `(location, message)` pairs.
    pub problems: Vec<(String, String)>,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (loc, msg)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{loc}: {msg}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    description: String,
    duration_s: f64,
    #[serde(default = "yes")]
    liveness: bool,
    #[serde(default = "one")]
    affected_group: u32,
    cluster: toml::Table,
    #[serde(default)]
    network: NetParams,
    #[serde(default)]
    database: DbTimings,
    #[serde(default)]
    sim: SimParams,
    #[serde(default, rename = "fault")]
    faults: Vec<toml::Table>,
    #[serde(default)]
    expect: toml::Table,
    /// Safety-breaking switches for negative controls (not parameters; SPEC.md §16).
    #[serde(default)]
    test_switches: TestSwitches,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl Scenario {
    /// Parses a scenario file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, ScenarioError> {
        let err = |loc: &str, msg: String| ScenarioError {
            problems: vec![(loc.to_owned(), msg)],
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err("scenario", e.to_string()))?;
        let mut problems = Vec::new();
        let cluster_text =
            toml::to_string(&raw.cluster).map_err(|e| err("cluster", e.to_string()))?;
        let config = match ClusterConfig::from_toml_str(&cluster_text) {
            Ok(c) => Some(c),
            Err(ConfigError::Syntax(m)) => {
                problems.push(("cluster".to_owned(), m));
                None
            }
            Err(ConfigError::Invalid(issues)) => {
                for i in issues {
                    problems.push((format!("cluster.{}", i.location), i.message));
                }
                None
            }
        };
        let mut faults = Vec::new();
        for (i, table) in raw.faults.iter().enumerate() {
            match parse_fault(table, config.as_ref()) {
                Ok(f) => faults.push(f),
                Err(m) => problems.push((format!("fault[{i}]"), m)),
            }
        }
        faults.sort_by_key(|f| f.at);
        let mut expect = BTreeMap::new();
        for (k, v) in &raw.expect {
            match parse_expect(k, v) {
                Ok(e) => {
                    expect.insert(k.clone(), e);
                }
                Err(m) => problems.push((format!("expect.{k}"), m)),
            }
        }
        if !(raw.duration_s.is_finite() && raw.duration_s > 0.0) {
            problems.push(("duration_s".into(), "must be a positive number".into()));
        }
        for (i, s) in raw.sim.power_on_s.iter().enumerate() {
            if !(s.is_finite() && (0.0..=86_400.0).contains(s)) {
                let m = format!("{s}: expected seconds in [0, 86400]");
                problems.push((format!("sim.power_on_s[{i}]"), m));
            }
        }
        let group = GroupId(raw.affected_group);
        if let Some(c) = &config
            && c.group(group).is_none()
        {
            problems.push(("affected_group".into(), format!("no group {}", group.0)));
        }
        match config {
            Some(mut config) if problems.is_empty() => Ok(Self {
                config: {
                    config.params.test = raw.test_switches;
                    config
                },
                name: raw.name,
                description: raw.description,
                duration: Duration::from_secs_f64(raw.duration_s.max(0.0)),
                liveness: raw.liveness,
                affected_group: group,
                net: raw.network,
                db: raw.database,
                sim: raw.sim,
                faults,
                expect,
            }),
            _ => Err(ScenarioError { problems }),
        }
    }

    /// The first fault's time, if any.
    pub fn first_fault(&self) -> Option<Duration> {
        self.faults.first().map(|f| f.at)
    }
}

fn parse_fault(table: &toml::Table, config: Option<&ClusterConfig>) -> Result<Fault, String> {
    let mut t = table.clone();
    let at = match t.remove("at_s") {
        Some(toml::Value::Float(f)) if f >= 0.0 => f,
        Some(toml::Value::Integer(i)) if i >= 0 => i as f64,
        Some(other) => return Err(format!("at_s: expected seconds >= 0, found `{other}`")),
        None => return Err("at_s: missing".into()),
    };
    let action: FaultAction = toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    if let Some(c) = config {
        check_refs(&action, c)?;
    }
    Ok(Fault {
        at: Duration::from_secs_f64(at),
        action,
    })
}

fn check_refs(action: &FaultAction, c: &ClusterConfig) -> Result<(), String> {
    use FaultAction as F;
    let node_ok = |n: &NodeId| {
        c.node(*n)
            .map(|_| ())
            .ok_or_else(|| format!("node: node {} is not in the cluster", n.0))
    };
    let inst_ok = |i: &InstanceId| {
        c.member(*i)
            .map(|_| ())
            .ok_or_else(|| format!("instance: instance {} is not in the cluster", i.0))
    };
    match action {
        F::CrashHost { node }
        | F::RestartHost { node }
        | F::FreezeHost { node }
        | F::ThawHost { node }
        | F::KillProcess { node, .. }
        | F::StopProcess { node, .. }
        | F::ContProcess { node, .. }
        | F::IsolateNode { node }
        | F::CutAgent { node }
        | F::DiskUsage { node, .. }
        | F::DiskError { node, .. }
        | F::DiskHang { node, .. }
        | F::PartitionFromCmsLeader { node, .. }
        | F::Gateway { node, .. }
        | F::WipeStore { node, .. } => node_ok(node),
        F::KillDn { instance }
        | F::BreakStream { instance }
        | F::FlapStream { instance }
        | F::DivergeWal { instance }
        | F::RemoveWal { instance }
        | F::BreakBuild { instance }
        | F::StallRecovery { instance } => inst_ok(instance),
        F::KillResource { instance } => c
            .resource_instance(*instance)
            .map(|_| ())
            .ok_or_else(|| format!("instance: {} is not a resource instance", instance.0)),
        F::DnState { instance, state } => {
            inst_ok(instance)?;
            match state.as_str() {
                "R" | "T" | "D" | "Z" => Ok(()),
                s => Err(format!("state: `{s}` is not one of R, T, D, Z")),
            }
        }
        F::Partition { a, b, .. } => a.iter().chain(b).try_for_each(node_ok),
        F::IsolateAz { az } => {
            if c.nodes.iter().any(|n| n.az.0 == *az) {
                Ok(())
            } else {
                Err(format!("az: no node is in AZ `{az}`"))
            }
        }
        F::Ctl {
            command,
            node,
            instance,
            mode,
        } => {
            if let Some(n) = node {
                node_ok(n)?;
            }
            if let Some(i) = instance {
                inst_ok(i)?;
            }
            if let Some(m) = mode {
                cm_core::dn::StopMode::parse(m)
                    .ok_or_else(|| format!("mode: `{m}` is not smart, fast or immediate"))?;
            }
            match command.as_str() {
                "stop" | "start" | "pause" | "resume" => Ok(()),
                "readd" if node.is_some() => Ok(()),
                "readd" => Err("readd needs `node` (a CMS node)".into()),
                "switchover" | "build" if instance.is_some() => Ok(()),
                "switchover" | "build" => Err(format!("{command} needs `instance`")),
                other => Err(format!(
                    "command: `{other}` is not stop, start, switchover, build, pause, resume or readd"
                )),
            }
        }
        F::Heal
        | F::Net { .. }
        | F::CrashCmsLeader
        | F::IsolateCmsLeader
        | F::CutCmsLeaderFromAgents
        | F::DiskHangCmsLeader { .. } => Ok(()),
    }
}

fn parse_expect(key: &str, v: &toml::Value) -> Result<Expect, String> {
    if !TIMING_NAMES.contains(&key) {
        return Err(format!(
            "unknown timing figure; known: {}",
            TIMING_NAMES.join(", ")
        ));
    }
    let num = |v: &toml::Value| match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    };
    match v {
        toml::Value::String(s) if s == "never" => Ok(Expect::Never),
        toml::Value::Array(a) if a.len() == 2 => match (num(&a[0]), num(&a[1])) {
            (Some(lo), Some(hi)) if lo <= hi => Ok(Expect::Within(lo, hi)),
            _ => Err("expected [min, max] with min <= max".into()),
        },
        _ => Err("expected [min, max] or \"never\"".into()),
    }
}

#[cfg(test)]
#[path = "scenario_tests.rs"]
mod tests;
