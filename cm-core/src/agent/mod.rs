//! cm_agent (CMA): supervises the node's DNs, probes them, reports to every CMS, executes the
//! leader's commands and fences an isolated primary (SPEC.md §1–3, §4.1, §6, §7.1, §8).
//!
//! # Driving contract
//!
//! The agent never sleeps, reads a clock or touches a file: it keeps deadlines and, when one
//! passes, asks its driver for facts with commands ([`AgentCommand::SampleProcesses`],
//! [`AgentCommand::QueryDnStatus`], [`AgentCommand::ProbePhonyDead`], [`AgentCommand::SampleDisk`],
//! [`AgentCommand::ProbeDisk`], [`AgentCommand::ProbePeers`], [`AgentCommand::ReadFlags`],
//! [`AgentCommand::SampleSystem`]). The answers come back as [`AgentInput`]s carrying the same
//! [`OpId`]. Work on a DN goes out as [`AgentCommand::RunDnAction`] and comes back as
//! [`AgentInput::ActionCompleted`]. Durable state goes out as [`AgentCommand::PersistState`] and
//! nothing that depends on it happens before the matching [`AgentInput::WriteCompleted`].
//! `now` never decreases (asserted, release builds too); commands are executed in the order
//! returned; a [`AgentInput::Tick`] before [`Machine::next_deadline`] does nothing.
//!
//! # Loops (defaults)
//!
//! | loop | period | handler |
//! |---|---|---|
//! | CMS contact: connect to every CMS, reopen a connection silent for `agent_heartbeat_timeout` | 200 ms | `cms.rs` |
//! | flags, local cm_server check, peer DN reachability, system sample | 1 s | `instance.rs`, `local_cms.rs`, `probes.rs` |
//! | DN status: process sample + status query per DN, then one report to every CMS | `agent_report_interval` | `instance.rs` |
//! | phony-dead check per DN | `agent_phony_dead_check_interval` (36 s in state T) | `probes.rs` |
//! | disk usage + write/read probe per DN | `disk_check_interval` | `probes.rs` |
//! | custom resources: `-check` per instance, restarts, stops by intent (§14) | `check_interval` | `resource.rs` |
//!
//! Commands from the CMS are handled in `commands.rs`; the self-fence of §8 in `probes.rs`.
//! Resource scripts go out as [`AgentCommand::RunScript`] and come back as
//! [`AgentInput::ScriptCompleted`]; a resource's manual stop as [`AgentCommand::WriteFlag`].
//!
//! # Persistence
//!
//! `restored` holds the bytes of the agent's last [`AgentCommand::PersistState`]
//! ([`Persisted`], encoded with [`crate::codec::encode_persisted`]): each DN's CM term, the stamp
//! of the last command applied to it, the highest CMS quorum term seen, and the send time of the
//! newest leader-answered report (the self-fence of a restarted agent counts from it; the
//! drivers' clocks count from boot, so it stays comparable across restarts). A store that does
//! not decode is a constructor error ([`AgentError::CorruptStore`]), not a fresh start: starting
//! afresh would forget DN terms (which must never decrease) and the quorum term that fences
//! deposed CMS leaders, so an operator must look at it.
//!
//! # Example: driving the agent by hand
//!
//! ```
//! use cm_core::agent::{Agent, AgentCommand, AgentInput};
//! use cm_core::config::ClusterConfig;
//! use cm_core::io::{Machine, NetCommand};
//! use cm_core::msg::Endpoint;
//! use cm_core::{Instant, InstanceId, NodeId};
//!
//! let config = ClusterConfig::from_toml_str(r#"
//!     name = "demo"
//!     [[node]]
//!     id = 1
//!     name = "n1"
//!     address = "127.0.0.1"
//!     az = "AZ1"
//!     state_dir = "/tmp/cm/n1"
//!     monitor_port = 17001
//!     cms_port = 17101
//!     [[group]]
//!     id = 1
//!     [[group.member]]
//!     instance = 6001
//!     node = 1
//!     data_dir = "/tmp/cm/dn6001"
//!     port = 5432
//! "#).unwrap();
//! let mut agent = Agent::new(&config, NodeId(1), 42, None).unwrap();
//!
//! // The first tick is due at once: connect to the CMS, read the flags, sample the DN, ...
//! let commands = agent.step(Instant::ZERO, AgentInput::Tick);
//! assert_eq!(
//!     commands[0],
//!     AgentCommand::Net(NetCommand::Connect { peer: Endpoint::server(NodeId(1)) })
//! );
//! assert!(commands.contains(&AgentCommand::ReadFlags));
//! assert!(commands.iter().any(|c| matches!(
//!     c,
//!     AgentCommand::SampleProcesses { instance: InstanceId(6001), .. }
//! )));
//!
//! // Nothing more is due until the CMS-contact loop's next 200 ms turn.
//! assert_eq!(agent.next_deadline(), Some(Instant::from_millis(200)));
//! assert!(agent.step(Instant::from_millis(100), AgentInput::Tick).is_empty());
//! ```

mod cms;
mod commands;
mod health;
mod instance;
mod local_cms;
mod probes;
mod resource;
mod rest;
#[cfg(test)]
mod testkit;
mod triggers;

use core::time::Duration;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, decode_persisted};
use crate::config::ClusterConfig;
use crate::dn::{ActionError, DnAction, DnRole, DnStatus, ProcState};
use crate::flags::{Flag, FlagSet};
use crate::ids::{CmdStamp, InstanceId, NodeId, OpId, QuorumTerm, Term, WriteToken};
use crate::io::{Alarm, Machine, NetCommand, NetEvent, PersistState, WriteCompleted};
use crate::monitor::{NORMAL_START_ALARM_SUPPRESSION, StartKind};
use crate::msg::Endpoint;
use crate::params::Params;
use crate::resource::{ResourceReport, ScriptExit, ScriptVerb};
use crate::time::{Instant, MonotonicGuard};

use commands::Batch;
pub use health::{AgentHealth, InstanceHealth, LeaderView, NotWritable, lease_window};
use instance::Inst;
use local_cms::LocalCms;
pub use local_cms::{CMS_HUNG_SAMPLES, CmsAction, LocalCmsStatus};
pub use resource::ONLINE_STREAK_RESET;
use resource::ResInst;
pub use rest::{CLUSTER_STATUS_MAX_AGE, MemberView, RestAnswer, RestBody, answer, parse_size};
pub use triggers::{TRIGGER_TIMEOUT, TriggerEvent, TriggerRun};

/// Period of the CMS-contact loop (CM's `AGENT_RECV_CYCLE`).
pub const CMS_CONTACT_INTERVAL: Duration = Duration::from_millis(200);
/// Period of the flag, peer-reachability and system loops.
pub const SECOND_LOOP_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive failed or hung disk probes that make a DN `DiskDamaged` (§3).
pub const DISK_FAILURES_DAMAGED: u32 = 3;
/// Tries of one peer reachability probe (§3).
pub const PEER_PROBE_TRIES: u32 = 3;
/// Upper bound of the phony-dead probe's connect timeout (§6: min(5 s, interval)).
pub const PHONY_PROBE_MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Facts fed to the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentInput {
    /// Time passed (the driver slept until `next_deadline`).
    Tick,
    /// A connection event or a frame from a CMS.
    Net(NetEvent),
    /// Answer to [`AgentCommand::SampleProcesses`]: the states of every process of the
    /// instance (its process group); empty when none runs.
    ProcessesSampled {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Process states.
        processes: Vec<ProcState>,
    },
    /// Answer to [`AgentCommand::QueryDnStatus`].
    DnStatusQueried {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// The status, or why the query failed.
        result: Result<DnStatus, String>,
    },
    /// Answer to [`AgentCommand::ProbePhonyDead`].
    PhonyDeadProbed {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// What the probe found.
        outcome: PhonyProbe,
    },
    /// Answer to [`AgentCommand::SampleDisk`].
    DiskSampled {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Data path usage, percent (following symlinked subdirectories).
        data_pct: u8,
        /// Log path usage, percent.
        log_pct: u8,
    },
    /// Answer to [`AgentCommand::ProbeDisk`].
    DiskProbed {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Whether the write+read of the probe file worked.
        result: Result<(), String>,
        /// How long it took.
        elapsed: Duration,
    },
    /// Answer to [`AgentCommand::ProbePeers`].
    PeersProbed {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// At least one peer DN of the group accepted a TCP connection (3 tries).
        reachable: bool,
    },
    /// Answer to [`AgentCommand::ReadFlags`].
    FlagsObserved(FlagSet),
    /// Answer to [`AgentCommand::SampleCms`]: the states of every cm_server process of this
    /// node (same state directory); empty when none runs.
    CmsSampled {
        /// The request.
        op: OpId,
        /// Process states.
        processes: Vec<ProcState>,
    },
    /// A [`AgentCommand::StartCms`], [`AgentCommand::StopCms`] or [`AgentCommand::KillCms`]
    /// finished.
    CmsActionCompleted {
        /// The action.
        op: OpId,
        /// `Err(reason)` when it failed.
        result: Result<(), String>,
    },
    /// Answer to [`AgentCommand::SampleSystem`].
    SystemSampled {
        /// CPU usage, percent.
        cpu_pct: u8,
        /// Memory usage, percent.
        mem_pct: u8,
        /// Disk I/O utilisation, percent.
        io_pct: u8,
    },
    /// A [`AgentCommand::RunDnAction`] finished.
    ActionCompleted {
        /// The action.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// `Err(why)` when it failed.
        result: Result<(), ActionError>,
    },
    /// A [`AgentCommand::PersistState`] finished.
    WriteCompleted(WriteCompleted),
    /// The parameters were reloaded (SIGHUP, `cm_ctl set --agent`).
    ParamsReloaded(Params),
    /// A [`AgentCommand::RunScript`] finished (§14).
    ScriptCompleted {
        /// The run.
        op: OpId,
        /// The resource instance.
        instance: InstanceId,
        /// How it ended.
        exit: ScriptExit,
    },
}

/// What a phony-dead probe (a fresh connection running a status query) found (§6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhonyProbe {
    /// The query answered.
    Answered,
    /// The server refused with "too many clients": busy, not hung.
    TooManyClients,
    /// The connection or the query failed or timed out.
    Failed {
        /// Age of the newest file in the WAL directory (`None`: it could not be read).
        newest_wal_age: Option<Duration>,
    },
}

/// Orders from the agent, executed in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentCommand {
    /// Connection management and frames to the CMS nodes.
    Net(NetCommand),
    /// Sample the states of every process of the instance; answer with
    /// [`AgentInput::ProcessesSampled`].
    SampleProcesses {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Run the DN status query (connect timeout 2 s); answer with
    /// [`AgentInput::DnStatusQueried`].
    QueryDnStatus {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Open a fresh connection and run a status query; on failure also report the age of the
    /// newest WAL file. Answer with [`AgentInput::PhonyDeadProbed`].
    ProbePhonyDead {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Connect timeout of the probe.
        connect_timeout: Duration,
    },
    /// Sample data/log path usage; answer with [`AgentInput::DiskSampled`].
    SampleDisk {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Write and read back a probe file in the data directory; answer with
    /// [`AgentInput::DiskProbed`] (the agent counts it hung after `timeout` anyway).
    ProbeDisk {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// `disk_check_timeout`.
        timeout: Duration,
    },
    /// Try a TCP connection to each peer DN of the instance's group (3 tries); answer with
    /// [`AgentInput::PeersProbed`].
    ProbePeers {
        /// Matches the answer.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// `agent_connect_timeout`, per try: the driver answers within 3 × this.
        connect_timeout: Duration,
    },
    /// Read the node's flag files; answer with [`AgentInput::FlagsObserved`].
    ReadFlags,
    /// Sample the states of the local cm_server's processes; answer with
    /// [`AgentInput::CmsSampled`].
    SampleCms {
        /// Matches the answer.
        op: OpId,
    },
    /// Start the local cm_server (as a child of the agent); answer with
    /// [`AgentInput::CmsActionCompleted`] once it is spawned or failed to.
    StartCms {
        /// Matches the completion.
        op: OpId,
    },
    /// Stop the local cm_server (SIGTERM, then wait for it to exit; the cluster is stopping);
    /// answer with [`AgentInput::CmsActionCompleted`].
    StopCms {
        /// Matches the completion.
        op: OpId,
    },
    /// SIGKILL the local cm_server (it stayed in state T); answer with
    /// [`AgentInput::CmsActionCompleted`].
    KillCms {
        /// Matches the completion.
        op: OpId,
    },
    /// Sample cpu/mem/io usage; answer with [`AgentInput::SystemSampled`].
    SampleSystem,
    /// Run a DN action; answer with [`AgentInput::ActionCompleted`].
    RunDnAction {
        /// Matches the completion.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// The action.
        action: DnAction,
    },
    /// Durably write the agent's state; answer with [`AgentInput::WriteCompleted`].
    PersistState(PersistState),
    /// Remove a flag file (absent is fine); no answer needed.
    RemoveFlag {
        /// The flag.
        flag: Flag,
    },
    /// Create a flag file (a resource's manual stop, §14); no answer needed (the next
    /// [`AgentCommand::ReadFlags`] shows it).
    WriteFlag {
        /// The flag.
        flag: Flag,
    },
    /// Run a resource instance's script, `<script> <verb> <id> <args>` from the config, killed
    /// with its process group after `timeout`; answer with [`AgentInput::ScriptCompleted`].
    RunScript {
        /// Matches the completion.
        op: OpId,
        /// The resource instance.
        instance: InstanceId,
        /// The verb.
        verb: ScriptVerb,
        /// The resource's `time_out`.
        timeout: Duration,
    },
    /// Raise an alarm.
    RaiseAlarm(Alarm),
    /// Exit the agent process (every local instance is down under `cluster_manual_start`).
    Exit,
    /// Run an event trigger script (§15) in the background, killed after [`TRIGGER_TIMEOUT`];
    /// no answer: nothing waits for it. (Last, so older variants encode as before.)
    RunTrigger(TriggerRun),
}

/// What the agent persists (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// The highest CMS quorum term seen.
    pub highest_quorum_term: QuorumTerm,
    /// Per local DN: its CM term and the stamp of the last applied command.
    pub instances: BTreeMap<InstanceId, PersistedInstance>,
    /// Send time (this host's monotonic clock) of the newest report a CMS leader answered,
    /// written at most every [`CONTACT_PERSIST_STEP`], so never later than the truth. A
    /// restarted agent counts its self-fence timeout (§8) from it, not from its own start:
    /// the CMS's fencing waits assume the agent of a silent primary fences on time even if
    /// it restarts meanwhile (swarm seed 8460).
    pub contact: Option<Instant>,
}

/// How far the leader-answered send time may run ahead of its persisted copy before it is
/// written again (one small write a second at most; a restarted agent fences at most this
/// much early).
pub const CONTACT_PERSIST_STEP: Duration = Duration::from_secs(1);

/// One DN's durable agent state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedInstance {
    /// The DN's CM term (never decreases).
    pub term: Term,
    /// The last command applied.
    pub last_applied: CmdStamp,
    /// The role last read from the DN (written when it changes): a restarted agent reports it,
    /// with an unknown state, until it can read the DN again (§3).
    pub role: Option<DnRole>,
}

/// The store layout before `contact` and `role` existed, still read so that an upgraded agent
/// keeps its terms and fencing quorum term.
#[derive(Deserialize)]
struct PersistedV1 {
    highest_quorum_term: QuorumTerm,
    instances: BTreeMap<InstanceId, PersistedInstanceV1>,
}

#[derive(Deserialize)]
struct PersistedInstanceV1 {
    term: Term,
    last_applied: CmdStamp,
}

impl From<PersistedV1> for Persisted {
    fn from(v: PersistedV1) -> Self {
        Self {
            highest_quorum_term: v.highest_quorum_term,
            instances: v
                .instances
                .into_iter()
                .map(|(id, i)| {
                    let p = PersistedInstance {
                        term: i.term,
                        last_applied: i.last_applied,
                        role: None,
                    };
                    (id, p)
                })
                .collect(),
            contact: None,
        }
    }
}

/// Decodes the agent store, current layout first, then the previous one.
fn decode_store(bytes: &[u8]) -> Result<Persisted, DecodeError> {
    decode_persisted::<Persisted>(bytes).or_else(|e| {
        decode_persisted::<PersistedV1>(bytes)
            .map(Persisted::from)
            .map_err(|_| e)
    })
}

/// Why an agent could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The node is not in the cluster config.
    #[error("node {0} is not in the cluster config")]
    UnknownNode(NodeId),
    /// The persisted state does not decode: check the agent state file in the node's state
    /// directory (restore it from a backup, or remove it only if the DN terms are known).
    #[error("the agent's persisted state is corrupt: {0}")]
    CorruptStore(DecodeError),
}

/// One DN as the agent sees it (plain data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance.
    pub instance: InstanceId,
    /// Role as reported.
    pub role: DnRole,
    /// Processes of the last sample.
    pub processes: Vec<ProcState>,
    /// Durable CM term.
    pub term: Term,
    /// Durable last applied stamp.
    pub last_applied: CmdStamp,
    /// Phony-dead hits.
    pub phony_dead_hits: u32,
    /// Disk damaged.
    pub disk_damaged: bool,
    /// Kept stopped by a manual-start flag.
    pub manually_stopped: bool,
    /// A start is in flight.
    pub starting: bool,
    /// A kill is in flight or not yet confirmed by a sample.
    pub fencing: bool,
}

/// What the agent shows (plain data for ctl, the simulator and metrics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// This node.
    pub node: NodeId,
    /// The CMS whose latest reply was `Leader`.
    pub leader: Option<NodeId>,
    /// Pause in effect (learned from the leader, lapsed with contact).
    pub paused: bool,
    /// Highest quorum term seen.
    pub highest_quorum_term: QuorumTerm,
    /// CMS nodes with an open connection.
    pub connected: Vec<NodeId>,
    /// Local DNs.
    pub instances: Vec<InstanceStatus>,
    /// The local cm_server, if this node runs one.
    pub local_cms: Option<LocalCmsStatus>,
    /// `Exit` was ordered.
    pub exited: bool,
    /// Local resource instances (§14), in config order.
    pub resources: Vec<ResourceReport>,
}

/// Per-loop deadlines.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Loops {
    cms: Instant,
    second: Instant,
    status: Instant,
    disk: Instant,
}

/// The cm_agent machine. See the module documentation for its contract and rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    node: NodeId,
    params: Params,
    cms_nodes: Vec<NodeId>,
    guard: MonotonicGuard,
    /// This start's id (see [`Agent::new`]).
    incarnation: u64,
    started_at: Option<Instant>,
    /// The previous incarnation's persisted contact (dropped if it lies in the future: the
    /// host rebooted and its clock restarted).
    inherited_contact: Option<Instant>,
    /// The contact time last written (or attempted: a failed write is retried a step later).
    durable_contact: Option<Instant>,
    start_kind: StartKind,
    next_op: u64,
    loops: Loops,
    cms: cms::Contact,
    highest_qterm: QuorumTerm,
    durable_qterm: QuorumTerm,
    batch: Batch,
    flags: Option<FlagSet>,
    exit_sent: bool,
    system_alarmed: [bool; 3],
    insts: BTreeMap<InstanceId, Inst>,
    local_cms: Option<LocalCms>,
    triggers: triggers::Triggers,
    /// This node serves the HTTP endpoints (§15): the agent then asks the leader for the
    /// cluster status once a second, for `/cluster` and `/history`.
    rest_enabled: bool,
    /// The newest cluster status from the leader and its receipt.
    cluster: Option<(Instant, std::sync::Arc<crate::ctl::ClusterStatus>)>,
    /// Self-fences since the agent started (a metric, §15).
    self_fences: u64,
    /// Local resource instances, in config order (§14).
    res: Vec<ResInst>,
    /// Other nodes' `with_primary_of` resource instances, as relayed by the leader (§14).
    peer_res: BTreeMap<InstanceId, resource::PeerRes>,
}

impl Agent {
    /// An agent for `node`, restoring its persisted state if any (see the module docs).
    /// `incarnation` names this start of the agent (the daemon draws it at random at each
    /// start; the core draws no randomness): reports carry it, so that `cm_ctl build` tells a
    /// restarted agent (whose build count began again) from the one it asked.
    pub fn new(
        config: &ClusterConfig,
        node: NodeId,
        incarnation: u64,
        restored: Option<Vec<u8>>,
    ) -> Result<Self, AgentError> {
        if config.node(node).is_none() {
            return Err(AgentError::UnknownNode(node));
        }
        let persisted: Persisted = match restored {
            Some(bytes) => decode_store(&bytes).map_err(AgentError::CorruptStore)?,
            None => Persisted::default(),
        };
        let cms_nodes = config.cms_nodes();
        let local_cms = cms_nodes.contains(&node).then(LocalCms::default);
        let insts = config
            .instances_on(node)
            .into_iter()
            .map(|id| {
                let saved = persisted.instances.get(&id).copied().unwrap_or_default();
                (id, Inst::new(config, id, saved))
            })
            .collect();
        Ok(Self {
            node,
            params: config.params.clone(),
            cms: cms::Contact::new(&cms_nodes),
            cms_nodes,
            guard: MonotonicGuard::default(),
            incarnation,
            started_at: None,
            inherited_contact: persisted.contact,
            durable_contact: persisted.contact,
            start_kind: StartKind::Abnormal,
            next_op: 1,
            loops: Loops::default(),
            highest_qterm: persisted.highest_quorum_term,
            durable_qterm: persisted.highest_quorum_term,
            batch: Batch::default(),
            flags: None,
            exit_sent: false,
            system_alarmed: [false; 3],
            insts,
            local_cms,
            triggers: triggers::Triggers::new(&config.event_triggers),
            rest_enabled: config.node(node).is_some_and(|n| n.rest_port.is_some()),
            cluster: None,
            self_fences: 0,
            res: ResInst::for_node(config, node),
            peer_res: BTreeMap::new(),
        })
    }

    /// Records how om_monitor started this agent (its command-line argument). A
    /// [`StartKind::Normal`] start suppresses the agent's alarms for its first 300 s.
    pub fn with_start_kind(mut self, kind: StartKind) -> Self {
        self.start_kind = kind;
        self
    }

    fn me(&self) -> Endpoint {
        Endpoint::agent(self.node)
    }

    fn op(&mut self) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        op
    }

    fn token(&mut self) -> WriteToken {
        WriteToken(self.op().0)
    }

    fn alarm(&self, now: Instant, alarm: Alarm, out: &mut Vec<AgentCommand>) {
        let suppressed = self.start_kind == StartKind::Normal
            && self
                .started_at
                .is_some_and(|s| now < s + NORMAL_START_ALARM_SUPPRESSION);
        if suppressed {
            tracing::info!(%alarm, "alarm suppressed during a normal start");
        } else {
            out.push(AgentCommand::RaiseAlarm(alarm));
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        if due(&mut self.loops.cms, now, CMS_CONTACT_INTERVAL) {
            self.cms_loop(now, out);
            self.persist_if_needed(out);
        }
        let second = due(&mut self.loops.second, now, SECOND_LOOP_INTERVAL);
        if second {
            out.push(AgentCommand::ReadFlags);
            self.local_cms_loop(out);
            self.cluster_query(out);
        }
        let report_interval = self.params.report_interval();
        if due(&mut self.loops.status, now, report_interval) {
            self.status_loop(now, out);
        }
        self.phony_dead_loop(now, out);
        let disk_interval = self.params.disk_check_interval();
        if due(&mut self.loops.disk, now, disk_interval) {
            self.disk_loop(now, out);
        }
        self.disk_hung_check(now, out);
        if second {
            self.peer_loop(now, out);
            out.push(AgentCommand::SampleSystem);
        }
        self.self_fence_check(now, out);
        self.term_check_timeouts(now, out);
        self.resource_loop(now, out);
    }

    /// Paused: the latest leader reply said so and CMS contact has not lapsed (§2, ours).
    fn paused(&self, now: Instant) -> bool {
        self.cms.leader_paused && !self.contact_lapsed(now)
    }

    /// CMS contact lapsed: `agent_self_fence_timeout` since the send time of the newest report
    /// a leader answered — by this incarnation, else the persisted one of the previous
    /// incarnation, else since the agent's start (a fresh store), §8.
    fn contact_lapsed(&self, now: Instant) -> bool {
        now >= self.contact_deadline()
    }

    fn contact_deadline(&self) -> Instant {
        let base = self
            .cms
            .answered_send
            .or(self.inherited_contact)
            .or(self.started_at)
            .unwrap_or(Instant::ZERO);
        base + self.params.self_fence_timeout()
    }
}

/// Whether a loop's deadline has passed; if so, schedules its next turn `period` from `now`.
fn due(deadline: &mut Instant, now: Instant, period: Duration) -> bool {
    if now < *deadline {
        return false;
    }
    *deadline = now + period;
    true
}

impl Machine for Agent {
    type Input = AgentInput;
    type Command = AgentCommand;
    type Status = AgentStatus;

    fn step(&mut self, now: Instant, input: AgentInput) -> Vec<AgentCommand> {
        self.guard.observe(now);
        if self.started_at.is_none() {
            // A contact from the future was written before a reboot restarted the clock.
            self.started_at = Some(now);
            self.inherited_contact = self.inherited_contact.filter(|c| *c <= now);
            self.durable_contact = self.durable_contact.filter(|c| *c <= now);
        }
        let mut out = Vec::new();
        if self.exit_sent {
            return out;
        }
        match input {
            AgentInput::Tick => self.on_tick(now, &mut out),
            AgentInput::Net(ev) => self.on_net(now, ev, &mut out),
            AgentInput::ProcessesSampled {
                op,
                instance,
                processes,
            } => self.on_processes(now, op, instance, processes, &mut out),
            AgentInput::DnStatusQueried {
                op,
                instance,
                result,
            } => self.on_status(now, op, instance, result, &mut out),
            AgentInput::PhonyDeadProbed {
                op,
                instance,
                outcome,
            } => self.on_phony_probe(op, instance, &outcome),
            AgentInput::DiskSampled {
                op,
                instance,
                data_pct,
                log_pct,
            } => self.on_disk_sample(op, instance, data_pct, log_pct),
            AgentInput::DiskProbed {
                op,
                instance,
                result,
                elapsed,
            } => self.on_disk_probe(now, op, instance, result.is_ok(), elapsed, &mut out),
            AgentInput::PeersProbed {
                op,
                instance,
                reachable,
            } => self.on_peers(now, op, instance, reachable, &mut out),
            AgentInput::FlagsObserved(flags) => self.on_flags(now, flags, &mut out),
            AgentInput::CmsSampled { op, processes } => {
                self.on_cms_sampled(now, op, processes, &mut out);
            }
            AgentInput::CmsActionCompleted { op, result } => {
                self.on_cms_action_completed(now, op, result, &mut out);
            }
            AgentInput::SystemSampled {
                cpu_pct,
                mem_pct,
                io_pct,
            } => self.on_system(now, [cpu_pct, mem_pct, io_pct], &mut out),
            AgentInput::ActionCompleted {
                op,
                instance,
                result,
            } => self.on_action_completed(now, op, instance, result, &mut out),
            AgentInput::WriteCompleted(w) => self.on_write_completed(now, w, &mut out),
            AgentInput::ParamsReloaded(p) => self.params = p,
            AgentInput::ScriptCompleted { op, instance, exit } => {
                self.on_script(now, op, instance, exit, &mut out);
                self.check_cluster_stop_done(now, &mut out);
            }
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.exit_sent {
            return None;
        }
        let l = &self.loops;
        let mut d = l.cms.min(l.second).min(l.status).min(l.disk);
        for inst in self.insts.values() {
            d = d.min(inst.next_phony);
            if let Some(at) = inst.disk_probe_deadline() {
                d = d.min(at);
            }
            if let Some(tc) = &inst.term_check {
                d = d.min(tc.started + self.params.agent_heartbeat_timeout());
                d = d.min(tc.retry_at());
            }
        }
        if let Some(at) = self.resource_deadline() {
            d = d.min(at);
        }
        if self.params.enable_self_fence && self.insts.values().any(Inst::is_live_primary) {
            let at = self.contact_deadline();
            if at > self.guard.last() {
                d = d.min(at);
            }
        }
        Some(d)
    }

    fn status(&self) -> AgentStatus {
        let now = self.guard.last();
        AgentStatus {
            node: self.node,
            leader: self.cms.leader,
            paused: self.paused(now),
            highest_quorum_term: self.highest_qterm,
            connected: self.cms.connected(),
            instances: self.insts.values().map(|i| i.status(now)).collect(),
            local_cms: self.local_cms.as_ref().map(LocalCms::status),
            exited: self.exit_sent,
            resources: self.res.iter().map(ResInst::report).collect(),
        }
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
