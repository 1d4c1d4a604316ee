//! Control requests and replies (cm_ctl ↔ cm_server, cm_ctl ↔ om_monitor) and the status
//! schema of `cm_ctl query` (`--json` prints [`ClusterStatus`] as is).

use serde::{Deserialize, Serialize};

use crate::dn::{DbState, DnRole, StopMode};
use crate::flags::{Flag, FlagSet};
use crate::ids::{GroupId, InstanceId, NodeId, Position, QuorumTerm, Term};
use crate::params::ParamSide;
use crate::resource::ResourceState;

/// A request to the CMS leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// The full cluster status (`cm_ctl query -Cv`).
    Query,
    /// `switchover -n NODE -D DIR [-f]`: promote this standby.
    Switchover {
        /// The target standby.
        instance: InstanceId,
        /// `-f`.
        fast: bool,
    },
    /// `switchover -a`: every group back to its install-time primary.
    SwitchoverAll,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `start` (whole cluster): candidates wait `cluster_starting_arbit_delay` for this long.
    ClusterStarting {
        /// Seconds the starting state lasts (cm_ctl's `-t`).
        timeout_s: u32,
    },
    /// `stop` (whole cluster): halt arbitration until the next start.
    ClusterStopping,
    /// `set --param --agent|--server -k NAME=VALUE`.
    SetParam {
        /// Which side.
        side: ParamSide,
        /// Name.
        name: String,
        /// Value text.
        value: String,
    },
    /// `list --param`.
    ListParams,
    /// `build -n NODE -D DIR [--full]`.
    Build {
        /// The instance to rebuild.
        instance: InstanceId,
        /// `--full`: a full base backup instead of pg_rewind first.
        #[serde(default)]
        full: bool,
    },
    /// `cms --readd NODE`: a CMS that rejoined as a non-voter after losing its store votes
    /// again (§5.1). (Last, so the encoding of the older variants is unchanged.)
    ReaddCms {
        /// The CMS node.
        node: NodeId,
    },
}

/// The CMS's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CtlReply {
    /// The cluster status.
    Status(Box<ClusterStatus>),
    /// The request was accepted (and committed where it changes state).
    Accepted,
    /// Parameter listing: (name, side, value).
    Params(Vec<(String, ParamSide, String)>),
    /// Refused; the refusal says why.
    Refused(Refusal),
    /// `switchover -a`, once the switchovers it started committed: which ones it started and
    /// which groups it could not move, and why. (Last, so the encoding of the older variants is
    /// unchanged; bincode encodes variants by index: a cm_ctl older than this variant cannot
    /// decode this reply.)
    SwitchoverAll {
        /// The switchovers started, one per group.
        started: Vec<SwitchoverStarted>,
        /// The groups off their install-time primary that were not switched over.
        refused: Vec<SwitchoverRefused>,
    },
}

/// One switchover `switchover -a` started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverStarted {
    /// The group.
    pub group: GroupId,
    /// Its install-time primary, the target.
    pub target: InstanceId,
    /// The group's term before the switchover (it ends at a higher one).
    pub term: Term,
}

/// One group `switchover -a` did not move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRefused {
    /// The group.
    pub group: GroupId,
    /// Its install-time primary, the target.
    pub target: InstanceId,
    /// Why not.
    pub refusal: Refusal,
}

/// Why a control request was refused (data, not an error: §STYLE "refusals are data").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// This CMS is not the leader.
    #[error("this cm_server is not the leader{}", .leader.map(|l| format!(" (the leader is node {})", l.0)).unwrap_or_default())]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// The leader does not hold its lease right now; try again.
    #[error("the leader does not hold its lease; try again")]
    NoLease,
    /// The cluster is paused.
    #[error("the cluster is paused; run `cm_ctl resume` first")]
    Paused,
    /// Another operation is in progress.
    #[error("busy: {0}")]
    Busy(String),
    /// The request does not make sense for the cluster.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// CMS process role as shown in the CMS table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmsRole {
    /// The leader ("Primary" in CM's table).
    Primary,
    /// A follower ("Standby").
    Standby,
    /// Not reachable.
    Down,
}

/// One row of `[ CMServer State ]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsRow {
    /// Node id.
    pub node: NodeId,
    /// Node name.
    pub name: String,
    /// Node address.
    pub address: String,
    /// Role.
    pub role: CmsRole,
}

/// `cluster_state` of `cm_ctl query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterHealth {
    /// Every group has a Normal primary and every standby is Normal.
    Normal,
    /// Every group has a primary, but something is not Normal.
    Degraded,
    /// Some group has no primary.
    Unavailable,
}

impl core::fmt::Display for ClusterHealth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Normal => "Normal",
            Self::Degraded => "Degraded",
            Self::Unavailable => "Unavailable",
        })
    }
}

/// One DN row of `[ Datanode State ]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnRow {
    /// Node id.
    pub node: NodeId,
    /// Node name.
    pub node_name: String,
    /// Node address.
    pub address: String,
    /// Instance id.
    pub instance: InstanceId,
    /// Data directory.
    pub data_dir: String,
    /// Port.
    pub port: u16,
    /// The arbitration's static primary (§4.2), which a failover may move; not the P/S letter.
    pub static_primary: bool,
    /// The install-time role (`P` in `cm_ctl query`): the group's first member in the config,
    /// which `switchover -a` restores.
    #[serde(default)]
    pub install_primary: bool,
    /// Dynamic role.
    pub role: DnRole,
    /// HA state.
    pub state: DbState,
    /// Term the instance reports.
    pub term: Term,
    /// Position.
    pub position: Position,
    /// The position's LSN in PostgreSQL's `X/XXXXXXXX` form (what `cm_ctl query -v` prints).
    #[serde(default)]
    pub lsn: String,
    /// Replication lag in bytes behind the group's primary (standbys on the primary's timeline
    /// with a known position; `None` otherwise).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Read-only.
    pub read_only: bool,
    /// A standby of the valid primary that does not stream from it: for how long (issue 18,
    /// defect 3). `None` when it streams, and for every other role.
    #[serde(default)]
    pub not_streaming_ms: Option<u64>,
    /// The outcome of the agent's last Build of this instance, from its last report (default
    /// when none was heard); `cm_ctl build` waits for its counter to pass the one it saw first.
    #[serde(default)]
    pub last_build: crate::dn::BuildOutcome,
}

/// One group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Group id.
    pub group: GroupId,
    /// Committed group term.
    pub term: Term,
    /// Members in config order.
    pub members: Vec<DnRow>,
    /// The switchover in progress, if any (§4.5).
    #[serde(default)]
    pub switchover: Option<crate::state::PendingSwitchover>,
    /// How the group's latest switchover ended (`cm_ctl switchover` waits for it).
    #[serde(default)]
    pub last_switchover: Option<crate::state::SwitchoverEnd>,
    /// Whether the group's primary can acknowledge a commit now: it serves, and with
    /// `dn_sync_mode = quorum` at least k = n − q standbys stream from it (§9).
    #[serde(default)]
    pub commits_acknowledged: bool,
}

/// The whole status, as the CMS leader sees it (`cm_ctl query --json` schema).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// The leader's quorum term.
    pub quorum_term: QuorumTerm,
    /// CMS table.
    pub cms: Vec<CmsRow>,
    /// Cluster state.
    pub state: ClusterHealth,
    /// Every group's primary is its install-time primary.
    pub balanced: bool,
    /// Paused.
    pub paused: bool,
    /// Groups.
    pub groups: Vec<GroupStatus>,
    /// The promotion history (§15), oldest first. `cm_ctl history --json` prints this array,
    /// and an agent's `/history` serves it as it last received this object.
    #[serde(default)]
    pub history: Vec<crate::history::Promotion>,
    /// Custom resource instances (§14), in config order.
    #[serde(default)]
    pub resources: Vec<ResourceRow>,
}

/// One row of `cm_ctl query`'s resource table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRow {
    /// The node.
    pub node: NodeId,
    /// The resource's name.
    pub name: String,
    /// The resource instance.
    pub instance: InstanceId,
    /// Its state as the leader sees it.
    pub state: ResourceState,
}

/// A request to a node's om_monitor control port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorRequest {
    /// Liveness and the node's flags and agent state.
    Status,
    /// Writes a flag file (with a stop mode for the manual-start flags).
    WriteFlag {
        /// The flag.
        flag: Flag,
        /// Stop mode written inside manual-start flags.
        mode: StopMode,
    },
    /// Removes a flag file (absent is fine).
    RemoveFlag {
        /// The flag.
        flag: Flag,
    },
    /// Removes `cluster_manual_start` and every `instance_manual_start_*` (cm_ctl start).
    RemoveAllManualStart,
}

/// om_monitor's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorReply {
    /// Node status.
    Status {
        /// The node.
        node: NodeId,
        /// A cm_agent runs.
        agent_running: bool,
        /// Flags present.
        flags: FlagSet,
        /// Why the node's cm_agent keeps exiting (its last error line), filled in by the
        /// om_monitor daemon while no agent runs.
        #[serde(default)]
        agent_error: Option<String>,
    },
    /// Done.
    Done,
    /// Failed (I/O), with what and where.
    Failed(String),
}
