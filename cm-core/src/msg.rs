//! Wire messages. Every frame carries one [`Envelope`]; its `quorum_term` fences deposed CMS
//! leaders (§4.1, §5). Encoded by [`crate::codec`].

use serde::{Deserialize, Serialize};

use crate::ctl::{CtlReply, CtlRequest, MonitorReply, MonitorRequest};
use crate::dn::{DnReport, ProcState};
use crate::history::PromotionReason;
use core::time::Duration;

use crate::ids::{CmdSeq, GroupId, InstanceId, NodeId, Position, QuorumTerm, ReportSeq, Term};
use crate::resource::{ResourceReport, ResourceState};
use crate::server::quorum::QuorumMsg;

/// The kind of process at one end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// om_monitor.
    Monitor,
    /// cm_agent.
    Agent,
    /// cm_server.
    Server,
    /// A cm_ctl client (not addressable; replies go back on its connection).
    Ctl,
}

/// A process of the cluster: (node, role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The node.
    pub node: NodeId,
    /// The process kind.
    pub role: Role,
}

impl Endpoint {
    /// The cm_server of a node.
    pub const fn server(node: NodeId) -> Self {
        Self {
            node,
            role: Role::Server,
        }
    }
    /// The cm_agent of a node.
    pub const fn agent(node: NodeId) -> Self {
        Self {
            node,
            role: Role::Agent,
        }
    }
    /// The om_monitor of a node.
    pub const fn monitor(node: NodeId) -> Self {
        Self {
            node,
            role: Role::Monitor,
        }
    }
}

impl core::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = match self.role {
            Role::Monitor => "cmm",
            Role::Agent => "cma",
            Role::Server => "cms",
            Role::Ctl => "ctl",
        };
        write!(f, "{r}@{}", self.node)
    }
}

/// One message with its routing and fencing header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: Endpoint,
    /// The addressee.
    pub to: Endpoint,
    /// The highest CMS quorum term the sender knows (0 for agents that know none).
    pub quorum_term: QuorumTerm,
    /// The message.
    pub msg: Msg,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Agent → every CMS: the node's DN reports (about once per `agent_report_interval`).
    AgentReport(AgentReport),
    /// CMS → agent: the answer to a report. Only a leader holding a lease answers `Leader`.
    ReportReply(ReportReply),
    /// CMS leader → agent: one sequenced command for one instance (§3, §4.1).
    Command(SequencedCommand),
    /// Agent → every CMS, before promoting: "does anyone know a quorum term above mine?" (§4.1).
    TermCheck {
        /// Matches the reply to the check.
        nonce: u64,
    },
    /// CMS → agent: the highest quorum term this CMS knows.
    TermCheckReply {
        /// The check answered.
        nonce: u64,
        /// The highest term known.
        highest: QuorumTerm,
        /// The weight this CMS's confirmation carries (§4.1, [`crate::quorum_math`]): 0 for a
        /// non-voter, its configured weight for a voter, the whole total for a node that is a
        /// quorum alone by the gateway rule of §5.4.
        weight: u32,
    },
    /// CMS ↔ CMS: the quorum protocol.
    Quorum(QuorumMsg),
    /// cm_ctl → CMS.
    CtlRequest {
        /// Client-chosen id echoed in the reply.
        id: u64,
        /// The request.
        req: CtlRequest,
    },
    /// CMS → cm_ctl.
    CtlReply {
        /// The request answered.
        id: u64,
        /// The reply.
        reply: CtlReply,
    },
    /// cm_ctl → om_monitor control port.
    MonitorRequest {
        /// Client-chosen id echoed in the reply.
        id: u64,
        /// The request.
        req: MonitorRequest,
    },
    /// om_monitor → cm_ctl.
    MonitorReply {
        /// The request answered.
        id: u64,
        /// The reply.
        reply: MonitorReply,
    },
    /// Agent → every CMS, before promoting a member of `group` (§4.1): [`Msg::TermCheck`], and
    /// also "what is the group's term in your log?" — a Failover superseded by a newer one
    /// (resent with a fresh term while its target was frozen) must not promote when it is
    /// finally read. (Last, so the encoding of the older variants is unchanged.)
    GroupTermCheck {
        /// Matches the reply to the check.
        nonce: u64,
        /// The group of the member to promote.
        group: GroupId,
    },
    /// CMS → agent: [`Msg::TermCheckReply`] and the highest term the group has or may get in
    /// this CMS's log (committed or not).
    GroupTermCheckReply {
        /// The check answered.
        nonce: u64,
        /// The highest quorum term known.
        highest: QuorumTerm,
        /// The weight this CMS's confirmation carries (as in [`Msg::TermCheckReply`]).
        weight: u32,
        /// The group's highest term in this CMS's log.
        group_term: Term,
    },
}

/// What an agent reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// Identifies this report; the reply echoes it so the agent knows its send time (§8).
    pub seq: ReportSeq,
    /// One entry per DN of the node.
    pub dns: Vec<DnReport>,
    /// The state of the local cm_server process, if the node runs one (None = absent).
    pub cms_process: Option<ProcState>,
    /// The agent was started by a `cm_ctl start` ("normal") rather than after a crash.
    pub normal_start: bool,
    /// The node's custom resource instances (§14), in config order.
    #[serde(default)]
    pub resources: Vec<ResourceReport>,
}

/// A CMS's answer to an agent report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReply {
    /// The report answered.
    pub seq: ReportSeq,
    /// Who answered and in what capacity.
    pub answer: ReportAnswer,
}

/// The substance of a [`ReportReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportAnswer {
    /// The leader, holding its lease, received the report.
    Leader {
        /// Cluster paused (§2: pause lives in the quorum state).
        paused: bool,
        /// Cluster stopping (`cm_ctl stop` in progress).
        stopping: bool,
        /// Per group of the reporting node's DNs, the primary and term the leader holds
        /// (§15's `/primary` lease, §14's placement). Empty until the leader has committed an
        /// entry of its own quorum term: before that its committed state may lag the log.
        groups: Vec<GroupView>,
        /// For each `with_primary_of` resource with an instance on the reporting node, its
        /// instances on the other nodes as this leader last heard of them (§14's hand-over).
        #[serde(default)]
        resources: Vec<PeerResource>,
    },
    /// Not the leader; the leader is believed to be this node, if known.
    NotLeader {
        /// Hint.
        leader: Option<NodeId>,
    },
}

/// What the CMS leader holds of one DN group when it answers a report (§15): the group's
/// primary (the committed static primary) at the group's committed term, and that primary's
/// position as last reported to this leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group.
    pub group: GroupId,
    /// The group's primary as the committed state names it.
    pub primary: InstanceId,
    /// The group's committed term.
    pub term: Term,
    /// The primary's newest reported position and how long before the reply the leader
    /// received it (`None`: no report from it under this leadership).
    pub primary_position: Option<(Position, Duration)>,
}

/// A resource instance on another node, relayed by the CMS leader for the hand-over of a
/// `with_primary_of` resource (§14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerResource {
    /// The resource instance.
    pub instance: InstanceId,
    /// Its state in its node's newest report (`None`: no report from that node).
    pub state: Option<ResourceState>,
    /// How long before this reply that report was received — or, without one, how long this
    /// CMS has been running (the node's last report cannot be younger than that).
    pub age: Duration,
}

/// A command to one instance, with its per-member sequence number (§3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedCommand {
    /// The target instance.
    pub instance: InstanceId,
    /// Per-member sequence number; the agent applies only newer ones.
    pub seq: CmdSeq,
    /// The command.
    pub cmd: CmsCommand,
}

/// What the CMS leader orders an agent to do to one DN (§4.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmsCommand {
    /// Stop replicating from any primary and never reconnect; report `Prohibit`.
    Lock1,
    /// Follow only the given primary.
    Lock2 {
        /// The chosen primary.
        primary: InstanceId,
    },
    /// Normal following of the current primary.
    Unlock {
        /// The current primary.
        primary: InstanceId,
    },
    /// Record `term` durably, confirm no higher quorum term exists, then promote.
    Failover {
        /// The new group term.
        term: Term,
        /// Why, as the leader that decided the promotion committed it (§15: the agent's
        /// triggers tell a cluster start from a failover by it).
        reason: PromotionReason,
    },
    /// Planned promotion of a caught-up standby once the old primary is down (§4.5, §9).
    Switchover {
        /// The new group term.
        term: Term,
    },
    /// Switchover, old primary's half: fast shutdown; the agent restarts it pending.
    Demote,
    /// Turn a pending DN into a standby of the current primary.
    NotifyStandby {
        /// The current primary.
        primary: InstanceId,
    },
    /// Kill the instance (every process); the agent restarts it pending.
    Restart,
    /// Resynchronise a diverged standby from the primary.
    Build {
        /// The primary.
        source: InstanceId,
        /// A full base backup, no pg_rewind first (`cm_ctl build --full`).
        #[serde(default)]
        full: bool,
    },
    /// `default_transaction_read_only` on/off (§7.2).
    SetReadOnly {
        /// On or off.
        on: bool,
    },
    /// Quorum synchronous replication settings (§9).
    SetSyncStandbys {
        /// k of `ANY k (...)`.
        k: u32,
        /// All member names.
        members: Vec<InstanceId>,
    },
}

impl core::fmt::Display for CmsCommand {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Lock1 => f.write_str("Lock1"),
            Self::Lock2 { primary } => write!(f, "Lock2 primary={primary}"),
            Self::Unlock { primary } => write!(f, "Unlock primary={primary}"),
            Self::Failover { term, reason } => {
                write!(f, "Failover term={} reason={}", term.0, reason.as_str())
            }
            Self::Switchover { term } => write!(f, "Switchover term={}", term.0),
            Self::Demote => f.write_str("Demote"),
            Self::NotifyStandby { primary } => write!(f, "NotifyStandby primary={primary}"),
            Self::Restart => f.write_str("Restart"),
            Self::Build { source, full } => write!(f, "Build source={source} full={full}"),
            Self::SetReadOnly { on } => write!(f, "SetReadOnly on={on}"),
            Self::SetSyncStandbys { k, members } => {
                let names: Vec<String> = members.iter().map(ToString::to_string).collect();
                write!(f, "SetSyncStandbys k={k} members={}", names.join(","))
            }
        }
    }
}
