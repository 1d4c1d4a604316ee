//! The seam between the simulated world and the cm-core machines.
//!
//! The world speaks one generic vocabulary to every simulated daemon: [`SimInput`] (facts the
//! world delivers: frames, completions, samples, ticks) and [`EnvOp`] (what a daemon asks the
//! world to do: send, persist, run a DN action, sample a process, write a flag...). Each role's
//! adapter (`adapters::*`) owns one cm-core machine and translates between this vocabulary and
//! the machine's own `Input`/`Command` enums, so the world knows no machine's internals.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::dn::{DnAction, DnStatus, ProcState, StopMode};
use cm_core::flags::{Flag, FlagSet};
use cm_core::io::{Alarm, NetCommand, NetEvent, PersistState, WriteCompleted};
use cm_core::msg::Role;
use cm_core::time::WallMillis;
use cm_core::{GroupId, InstanceId, Instant, NodeId, OpId, QuorumTerm, Term};

/// A fact the world delivers to a daemon.
#[derive(Clone, Debug, PartialEq)]
pub enum SimInput {
    /// The daemon's deadline passed (or a spurious wake-up).
    Tick,
    /// A connection-level event.
    Net(NetEvent),
    /// A `Persist` completed.
    WriteDone(WriteCompleted),
    /// A DN action finished.
    DnDone {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Outcome.
        result: Result<(), String>,
    },
    /// A DN status query finished.
    DnStatus {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Outcome.
        result: Result<DnStatus, String>,
    },
    /// The processes of an instance, as /proc shows them (empty: none).
    Processes {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// States.
        states: Vec<ProcState>,
    },
    /// Disk usage of an instance's data and log paths.
    DiskUsage {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Data path usage, percent.
        data_pct: u8,
        /// Log path usage, percent.
        log_pct: u8,
    },
    /// A disk probe (write + read of a probe file) finished.
    DiskProbe {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Whether it succeeded.
        ok: bool,
        /// How long it took.
        elapsed: Duration,
    },
    /// TCP reachability of the instance's peer DNs.
    Peers {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// (peer, reachable).
        reachable: Vec<(InstanceId, bool)>,
    },
    /// Age of the newest file in the instance's WAL directory.
    WalAge {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Age.
        age: Duration,
    },
    /// What a phony-dead probe found.
    PhonyProbe {
        /// The request.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// The query answered.
        answered: bool,
        /// Age of the newest WAL file (when the query failed).
        newest_wal_age: Option<Duration>,
    },
    /// cpu/mem/io usage, percent.
    System {
        /// CPU.
        cpu_pct: u8,
        /// Memory.
        mem_pct: u8,
        /// Disk I/O.
        io_pct: u8,
    },
    /// The node's flag files.
    Flags {
        /// The request (None when pushed unasked).
        op: Option<OpId>,
        /// The flags.
        flags: FlagSet,
    },
    /// A local daemon process sampled (None: absent).
    ProcessSampled {
        /// The request.
        op: OpId,
        /// Which daemon.
        role: Role,
        /// Its state, pid (the world's process incarnation) and the incarnation that started
        /// it (None: the init system).
        state: Option<(ProcState, u64, Option<u64>)>,
    },
    /// The fence command of §8 finished.
    FenceDone {
        /// The group it fenced for.
        group: GroupId,
        /// Exit status 0.
        success: bool,
    },
    /// A resource script finished (§14).
    ScriptDone {
        /// The run.
        op: OpId,
        /// The resource instance.
        instance: InstanceId,
        /// How it ended.
        exit: cm_core::resource::ScriptExit,
    },
    /// Two-node mode: whether the third-party gateways answered.
    Gateways {
        /// All answered.
        reachable: bool,
    },
    /// A daemon this process started exited (the parent reaps its child).
    ChildExited {
        /// Which daemon.
        role: Role,
        /// Killed or crashed, rather than exiting on its own.
        abnormal: bool,
    },
}

/// What a daemon asks the world to do.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvOp {
    /// A transport order.
    Net(NetCommand),
    /// Durable write.
    Persist(PersistState),
    /// Run a DN action.
    RunDn {
        /// Matches the completion.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// The action.
        action: DnAction,
        /// The agent chose to kill on its own (self-fence / peer check), for the timings.
        self_fence: bool,
    },
    /// Query a DN's status.
    QueryDn {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Sample the instance's processes.
    SampleProcesses {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Sample disk usage.
    SampleDisk {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Probe the disk.
    ProbeDisk {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Try TCP connections to the instance's peer DNs (3 tries each).
    ProbePeers {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Per try; an unreachable peer is known after 3 × this.
        connect_timeout: Duration,
    },
    /// Age of the newest WAL file.
    WalAge {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
    },
    /// Read the node's flag files.
    ReadFlags {
        /// Matches the result (None: the answer carries none).
        op: Option<OpId>,
    },
    /// A phony-dead probe: a fresh connection running a status query.
    ProbePhonyDead {
        /// Matches the result.
        op: OpId,
        /// The instance.
        instance: InstanceId,
        /// Connect timeout of the probe.
        connect_timeout: Duration,
    },
    /// Sample cpu/mem/io usage.
    SampleSystem,
    /// Write a flag file.
    WriteFlag {
        /// Which.
        flag: Flag,
        /// Stop mode written inside.
        mode: StopMode,
    },
    /// Remove a flag file.
    RemoveFlag {
        /// Which.
        flag: Flag,
    },
    /// Remove `cluster_manual_start` and every `instance_manual_start_*`.
    RemoveAllManualStart,
    /// Start a local daemon (om_monitor starts cm_agent; cm_agent starts cm_server).
    StartProcess {
        /// Which.
        role: Role,
        /// Started right after `cluster_manual_start` disappeared ("normal" start).
        normal: bool,
    },
    /// SIGKILL a local daemon (only the process with this pid, if given).
    KillProcess {
        /// Which.
        role: Role,
        /// The pid (the world's process incarnation) it must have.
        pid: Option<u64>,
    },
    /// Sample a local daemon's process.
    SampleProcess {
        /// Matches the result.
        op: OpId,
        /// Which.
        role: Role,
    },
    /// The daemon exits on its own.
    Exit,
    /// Run the fence command for a silent primary's node: the simulated one powers the node
    /// off (a STONITH) and succeeds.
    FenceNode {
        /// The group fenced for.
        group: GroupId,
        /// The node to fence.
        node: NodeId,
    },
    /// Two-node mode: probe the third-party gateways (they answer while the node reaches any
    /// other node of the cluster).
    ProbeGateways,
    /// An alarm, for the log.
    Alarm(Alarm),
    /// Run a resource instance's script (§14).
    RunScript {
        /// Matches the completion.
        op: OpId,
        /// The resource instance.
        instance: InstanceId,
        /// The verb.
        verb: cm_core::resource::ScriptVerb,
        /// Killed after this long.
        timeout: Duration,
    },
}

/// What the invariant checkers can see of a cm_server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerObs {
    /// Its current quorum term.
    pub quorum_term: QuorumTerm,
    /// It believes it leads.
    pub leader: bool,
    /// Until when (its local clock) its lease holds, if it leads.
    pub lease_until: Option<Instant>,
    /// Committed group terms it knows.
    pub group_terms: BTreeMap<GroupId, Term>,
    /// Committed pause flag.
    pub paused: bool,
    /// Committed `cm_ctl stop` in progress.
    pub stopping: bool,
    /// Groups with a committed pending switchover.
    pub switchovers: std::collections::BTreeSet<GroupId>,
    /// The committed term of each group's pending switchover (one per switchover begun, a
    /// renewal by a new leader aside).
    pub switchover_terms: BTreeMap<GroupId, Term>,
}

/// What the checkers can see of a daemon.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Obs {
    /// Nothing the checkers use.
    #[default]
    None,
    /// A cm_server.
    Server(ServerObs),
    /// A cm_agent.
    Agent {
        /// A pause is in force at this agent: learned from a leader, its CMS contact not
        /// lapsed (SPEC §2).
        paused: bool,
    },
}

/// A simulated daemon: one cm-core machine behind its adapter.
pub trait SimDaemon {
    /// Feeds one fact at the node's local `now` (and wall clock); returns the world orders.
    fn handle(&mut self, now: Instant, wall: WallMillis, input: SimInput) -> Vec<EnvOp>;
    /// The machine's next deadline (local clock).
    fn next_deadline(&self) -> Option<Instant>;
    /// What the checkers may see.
    fn observe(&self) -> Obs;
    /// The local DNs whose `/primary` (SPEC §15) answers 200 at the node's local `now`
    /// (agents only).
    fn writable(&self, _local_now: Instant) -> Vec<InstanceId> {
        Vec::new()
    }
    /// The local DNs that hold the write lease (the lease-and-role part of `/primary`, SPEC
    /// §14's placement condition) at the node's local `now` (agents only).
    fn write_leased(&self, _local_now: Instant) -> Vec<InstanceId> {
        Vec::new()
    }
    /// The agent's health snapshot (SPEC §15's view of its DNs; agents only).
    fn agent_health(&self) -> Option<cm_core::agent::AgentHealth> {
        None
    }
    /// Whether §14's hand-over rule lets local `with_primary_of` resource instance `instance`
    /// start at the node's local `now` (agents only; None: not such an instance).
    fn resource_handover_clear(&self, _local_now: Instant, _instance: InstanceId) -> Option<bool> {
        None
    }
    /// A one-line state dump for failure reports.
    fn dump(&self) -> String;
}

/// Everything an adapter needs to build its machine.
pub struct Spawn<'a> {
    /// The cluster.
    pub config: &'a ClusterConfig,
    /// The node.
    pub node: NodeId,
    /// Seed of this process incarnation.
    pub seed: u64,
    /// This process's incarnation (its pid in the simulated world).
    pub incarnation: u64,
    /// What its earlier incarnations persisted (None: nothing, or unreadable).
    pub restored: Option<Vec<u8>>,
    /// A "normal" start (right after `cm_ctl start`).
    pub normal_start: bool,
}

/// Builds the daemons of each role. Roles it does not know are not simulated.
pub trait DaemonFactory: Send + Sync {
    /// A new process of `role`, or None if this role is not simulated.
    fn spawn(&self, role: Role, spawn: Spawn<'_>) -> Option<Box<dyn SimDaemon>>;

    /// The daemons the init system starts when a host boots (om_monitor, which starts the
    /// rest). A factory without a monitor names what it has instead.
    fn boot_roles(&self, is_cms: bool) -> Vec<Role> {
        let _ = is_cms;
        vec![Role::Monitor]
    }

    /// Roles no simulated daemon supervises: the world restarts them 1 s after they die, as
    /// an init system would.
    fn world_supervised(&self) -> Vec<Role> {
        Vec::new()
    }
}

/// A factory that simulates no daemon: the world runs databases, disks, network and client only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDaemons;

impl DaemonFactory for NoDaemons {
    fn spawn(&self, _role: Role, _spawn: Spawn<'_>) -> Option<Box<dyn SimDaemon>> {
        None
    }
}
