//! The seam between the simulated world and the cm-core machines.
//!
//! A simulated process runs one cm-core machine and speaks that machine's own language: the
//! world hands it the machine's `Input` (a [`Delivery`]) and carries out each `Command` it
//! returns through the same [`Executor`](cm_core::io::Executor) trait the daemons implement
//! against the OS (`crate::exec`, one `match` per machine). There is no second vocabulary to
//! keep in step: a command added to a machine needs one arm in cm-io's daemons and one here.

use std::collections::BTreeMap;
use std::sync::Arc;

use cm_core::agent::{Agent, AgentCommand, AgentHealth, AgentInput};
use cm_core::config::ClusterConfig;
use cm_core::io::{Machine, WriteCompleted};
use cm_core::monitor::{Monitor, MonitorCommand, MonitorInput, StartKind};
use cm_core::msg::{Endpoint, Role};
use cm_core::server::quorum::Role as QuorumRole;
use cm_core::server::{Server, ServerCommand, ServerInput};
use cm_core::state::ReplicatedState;
use cm_core::{ClientId, GroupId, InstanceId, Instant, NodeId, QuorumTerm, Term};

/// What the invariant checkers can see of a cm_server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerObs {
    /// Its current quorum term.
    pub quorum_term: QuorumTerm,
    /// It believes it leads.
    pub leader: bool,
    /// It may vote (SPEC §5.1): not a committed non-voter, and not a CMS with an empty store
    /// still asking its peers whether they ever counted it.
    pub voter: bool,
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
    /// The newest committed promotion of the history (§15), if any: every record is the
    /// newest at least once after the step that committed it (one per step in practice).
    pub newest_promotion: Option<cm_core::history::Promotion>,
    /// It may not vote (§5.1: a CMS that rejoined after losing its store, or one that has not
    /// yet decided whether it did).
    pub not_voting: bool,
    /// The committed non-voters it knows.
    pub non_voters: std::collections::BTreeSet<NodeId>,
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

/// What the world hands a simulated process: an input of its machine, or a fact its driver
/// takes in without feeding the machine (the first of om_monitor's two sample reads, a
/// connection event om_monitor's control port does not serve, cm_agent reaping its
/// cm_server, which the agent learns of from its next `SampleCms`).
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// For om_monitor.
    Monitor(MonitorInput),
    /// For cm_agent.
    Agent(AgentInput),
    /// For cm_server.
    Server(ServerInput),
    /// Reaches the process; its machine sees nothing.
    Absorbed,
}

impl Delivery {
    /// "Your deadline passed" (or a spurious wake-up) for a process of `role`.
    pub fn tick(role: Role) -> Self {
        match role {
            Role::Monitor => Self::Monitor(MonitorInput::Tick),
            Role::Agent => Self::Agent(AgentInput::Tick),
            Role::Server => Self::Server(ServerInput::Tick),
            Role::Ctl => Self::Absorbed,
        }
    }

    /// A durable write of a process of `role` finished.
    pub fn write_completed(role: Role, done: WriteCompleted) -> Self {
        match role {
            Role::Agent => Self::Agent(AgentInput::WriteCompleted(done)),
            Role::Server => Self::Server(ServerInput::WriteCompleted(done)),
            Role::Monitor | Role::Ctl => Self::Absorbed,
        }
    }
}

impl From<MonitorInput> for Delivery {
    fn from(i: MonitorInput) -> Self {
        Self::Monitor(i)
    }
}

impl From<AgentInput> for Delivery {
    fn from(i: AgentInput) -> Self {
        Self::Agent(i)
    }
}

impl From<ServerInput> for Delivery {
    fn from(i: ServerInput) -> Self {
        Self::Server(i)
    }
}

/// A machine as a simulated process runs it: the machine's own inputs `I` in, its own
/// commands `C` out (cm-core's [`Machine`] contract), plus what the checkers may see of it.
/// cm-core's machines implement it; the world's own tests drive toys through it.
pub trait SimMachine<I, C> {
    /// Feeds one input at the node's local `now`; returns the commands in order.
    fn step(&mut self, now: Instant, input: I) -> Vec<C>;
    /// The machine's next deadline (local clock).
    fn next_deadline(&self) -> Option<Instant>;
    /// What the checkers may see.
    fn observe(&self) -> Obs {
        Obs::None
    }
    /// What the checkers may see of a cm_server, `prev` (what it showed before its last step)
    /// itself when it still shows the same: checkers skip what they already saw by pointer.
    fn observe_server(&self, prev: Option<&Arc<ServerObs>>) -> Option<Arc<ServerObs>> {
        match self.observe() {
            Obs::Server(obs) => Some(match prev {
                Some(p) if **p == obs => Arc::clone(p),
                _ => Arc::new(obs),
            }),
            _ => None,
        }
    }
    /// The local DNs whose `/primary` (SPEC §15) answers 200 at the node's local `now`
    /// (agents only).
    fn writable(&self, _local_now: Instant) -> Vec<InstanceId> {
        Vec::new()
    }
    /// [`SimMachine::writable`], each handed to `f` (nothing collected).
    fn for_each_writable(&self, local_now: Instant, f: &mut dyn FnMut(InstanceId)) {
        self.writable(local_now).into_iter().for_each(f);
    }
    /// The local DNs that hold the write lease (the lease-and-role part of `/primary`, SPEC
    /// §14's placement condition) at the node's local `now` (agents only).
    fn write_leased(&self, _local_now: Instant) -> Vec<InstanceId> {
        Vec::new()
    }
    /// The agent's health snapshot (SPEC §15's view of its DNs; agents only).
    fn agent_health(&self) -> Option<AgentHealth> {
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

/// om_monitor's control port as the world runs it: request frames become
/// [`MonitorInput::CtlRequest`]s and each reply goes back to the connection it came from, as
/// cm-daemons' om_monitor does over TCP.
#[derive(Debug, Default)]
pub struct ControlPort {
    next: u64,
    waiting: BTreeMap<ClientId, (Endpoint, u64)>,
}

impl ControlPort {
    /// Registers request `id` from `peer`; returns the client the machine answers.
    pub fn register(&mut self, peer: Endpoint, id: u64) -> ClientId {
        self.next += 1;
        let client = ClientId(self.next);
        self.waiting.insert(client, (peer, id));
        client
    }

    /// Where the reply to `client` goes, and its request id (None: unknown client).
    pub fn take(&mut self, client: ClientId) -> Option<(Endpoint, u64)> {
        self.waiting.remove(&client)
    }
}

/// A simulated process: one machine, by role, with the little state its driver keeps.
pub enum Daemon {
    /// om_monitor.
    Monitor {
        /// The machine.
        machine: Box<dyn SimMachine<MonitorInput, MonitorCommand>>,
        /// Its control port.
        port: ControlPort,
    },
    /// cm_agent.
    Agent {
        /// The machine.
        machine: Box<dyn SimMachine<AgentInput, AgentCommand>>,
        /// Event triggers it ordered (shown in the dump; the simulated script never finishes
        /// and touches nothing — what a script that sleeps forever does to the cluster).
        triggers: u64,
        /// Some(t): its `/primary` answered 200 for no DN at local time `t`, and it has not
        /// stepped since (every step goes through `Daemon::agent_mut`, which clears this).
        /// Until it steps the answer stays empty at any later local time: each condition of
        /// the rule is either fixed between steps or a lease or sample age that only grows
        /// with the clock (the write lease's `sent_ago < window`, the streaming quorum's
        /// fresh rows), so a DN that answers no cannot answer yes before its agent steps.
        no_primary_since: std::cell::Cell<Option<Instant>>,
    },
    /// cm_server.
    Server {
        /// The machine.
        machine: Box<dyn SimMachine<ServerInput, ServerCommand>>,
        /// Whether it was told the wall clock (the daemon does so before its first input).
        wall_fed: bool,
        /// What the checkers see of it, built on first use after each step (its observation
        /// changes only when it steps: every step goes through `Daemon::server_mut`, which
        /// moves this cache to `prev`).
        view: std::cell::OnceCell<Option<Arc<ServerObs>>>,
        /// What it showed before its last step, kept when it still shows the same.
        prev: Option<Arc<ServerObs>>,
    },
}

impl Daemon {
    /// om_monitor running `machine`.
    pub fn monitor(machine: impl SimMachine<MonitorInput, MonitorCommand> + 'static) -> Self {
        Self::Monitor {
            machine: Box::new(machine),
            port: ControlPort::default(),
        }
    }

    /// cm_agent running `machine`.
    pub fn agent(machine: impl SimMachine<AgentInput, AgentCommand> + 'static) -> Self {
        Self::Agent {
            machine: Box::new(machine),
            triggers: 0,
            no_primary_since: std::cell::Cell::new(None),
        }
    }

    /// cm_server running `machine`.
    pub fn server(machine: impl SimMachine<ServerInput, ServerCommand> + 'static) -> Self {
        Self::Server {
            machine: Box::new(machine),
            wall_fed: false,
            view: std::cell::OnceCell::new(),
            prev: None,
        }
    }

    /// The monitor's machine.
    pub(crate) fn monitor_mut(
        &mut self,
    ) -> Option<&mut dyn SimMachine<MonitorInput, MonitorCommand>> {
        match self {
            Self::Monitor { machine, .. } => Some(machine.as_mut()),
            _ => None,
        }
    }

    /// The agent's machine.
    pub(crate) fn agent_mut(&mut self) -> Option<&mut dyn SimMachine<AgentInput, AgentCommand>> {
        match self {
            Self::Agent {
                machine,
                no_primary_since,
                ..
            } => {
                // It may step: its `/primary` is evaluated afresh on next use.
                no_primary_since.set(None);
                Some(machine.as_mut())
            }
            _ => None,
        }
    }

    /// The server's machine.
    pub(crate) fn server_mut(&mut self) -> Option<&mut dyn SimMachine<ServerInput, ServerCommand>> {
        match self {
            Self::Server {
                machine,
                view,
                prev,
                ..
            } => {
                // It may step: its observation is rebuilt on next use (the last one kept for
                // comparison).
                if let Some(seen) = view.take() {
                    *prev = seen;
                }
                Some(machine.as_mut())
            }
            _ => None,
        }
    }

    /// The machine's next deadline (local clock).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Self::Monitor { machine, .. } => machine.next_deadline(),
            Self::Agent { machine, .. } => machine.next_deadline(),
            Self::Server { machine, .. } => machine.next_deadline(),
        }
    }

    /// What the checkers may see.
    pub fn observe(&self) -> Obs {
        match self {
            Self::Monitor { machine, .. } => machine.observe(),
            Self::Agent { machine, .. } => machine.observe(),
            Self::Server { machine, .. } => machine.observe(),
        }
    }

    /// What the checkers see of a cm_server (None: not one, or it shows nothing), shared until
    /// it next steps.
    pub fn server_obs(&self) -> Option<Arc<ServerObs>> {
        self.server_obs_ref().cloned()
    }

    /// [`Daemon::server_obs`] borrowed: the per-event checks compare it with the one they
    /// hold and take a new reference (an atomic increment, and a decrement when dropped) only
    /// when it changed.
    pub fn server_obs_ref(&self) -> Option<&Arc<ServerObs>> {
        match self {
            Self::Server {
                machine,
                view,
                prev,
                ..
            } => view
                .get_or_init(|| machine.observe_server(prev.as_ref()))
                .as_ref(),
            _ => None,
        }
    }

    /// See [`SimMachine::writable`].
    pub fn writable(&self, local_now: Instant) -> Vec<InstanceId> {
        match self {
            Self::Agent { machine, .. } => machine.writable(local_now),
            _ => Vec::new(),
        }
    }

    /// See [`SimMachine::for_each_writable`].
    /// An agent that answered no for every DN and has not stepped since is not asked again
    /// (see `no_primary_since`); debug builds (every test) check that it would still say no.
    pub fn for_each_writable(&self, local_now: Instant, f: &mut dyn FnMut(InstanceId)) {
        if let Self::Agent {
            machine,
            no_primary_since,
            ..
        } = self
        {
            if no_primary_since.get().is_some_and(|t| local_now >= t) {
                debug_assert!(
                    machine.writable(local_now).is_empty(),
                    "an agent's /primary turned 200 without a step"
                );
                return;
            }
            let mut any = false;
            machine.for_each_writable(local_now, &mut |i| {
                any = true;
                f(i);
            });
            no_primary_since.set((!any).then_some(local_now));
        }
    }

    /// See [`SimMachine::write_leased`].
    pub fn write_leased(&self, local_now: Instant) -> Vec<InstanceId> {
        match self {
            Self::Agent { machine, .. } => machine.write_leased(local_now),
            _ => Vec::new(),
        }
    }

    /// See [`SimMachine::agent_health`].
    pub fn agent_health(&self) -> Option<AgentHealth> {
        match self {
            Self::Agent { machine, .. } => machine.agent_health(),
            _ => None,
        }
    }

    /// See [`SimMachine::resource_handover_clear`].
    pub fn resource_handover_clear(
        &self,
        local_now: Instant,
        instance: InstanceId,
    ) -> Option<bool> {
        match self {
            Self::Agent { machine, .. } => machine.resource_handover_clear(local_now, instance),
            _ => None,
        }
    }

    /// A one-line state dump for failure reports.
    pub fn dump(&self) -> String {
        match self {
            Self::Monitor { machine, .. } => machine.dump(),
            Self::Agent {
                machine, triggers, ..
            } => format!("{} triggers={triggers}", machine.dump()),
            Self::Server { machine, .. } => machine.dump(),
        }
    }
}

impl SimMachine<MonitorInput, MonitorCommand> for Monitor {
    fn step(&mut self, now: Instant, input: MonitorInput) -> Vec<MonitorCommand> {
        Machine::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Machine::next_deadline(self)
    }

    fn dump(&self) -> String {
        let s = self.status();
        format!(
            "monitor agent_running={} attempts={} hung={} last_exit_abnormal={}",
            s.agent_running, s.start_attempts, s.hung_checks, s.last_exit_abnormal
        )
    }
}

impl SimMachine<AgentInput, AgentCommand> for Agent {
    fn step(&mut self, now: Instant, input: AgentInput) -> Vec<AgentCommand> {
        Machine::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Machine::next_deadline(self)
    }

    fn observe(&self) -> Obs {
        Obs::Agent {
            paused: self.status().paused,
        }
    }

    fn writable(&self, local_now: Instant) -> Vec<InstanceId> {
        Self::writable(self, local_now)
    }

    fn for_each_writable(&self, local_now: Instant, f: &mut dyn FnMut(InstanceId)) {
        self.writable_iter(local_now).for_each(f);
    }

    fn write_leased(&self, local_now: Instant) -> Vec<InstanceId> {
        let h = self.health();
        h.instances
            .iter()
            .filter(|i| i.write_lease(&h.params, local_now).is_ok())
            .map(|i| i.instance)
            .collect()
    }

    fn agent_health(&self) -> Option<AgentHealth> {
        Some(self.health())
    }

    fn resource_handover_clear(&self, local_now: Instant, instance: InstanceId) -> Option<bool> {
        Self::resource_handover_clear(self, local_now, instance)
    }

    fn dump(&self) -> String {
        let s = self.status();
        let insts: Vec<String> = s
            .instances
            .iter()
            .map(|i| format!("{}:{:?}/{}/{}", i.instance, i.role, i.term, i.last_applied))
            .collect();
        format!(
            "agent leader={:?} paused={} qterm={} connected={:?} [{}]",
            s.leader,
            s.paused,
            s.highest_quorum_term,
            s.connected,
            insts.join(" "),
        )
    }
}

/// cm_server with the local instant of its last step, at which the checkers read its lease.
pub struct SimServer {
    server: Server,
    last_now: Instant,
}

impl SimServer {
    /// Whether it shows exactly `obs` (what `observe` would build), compared in place.
    fn shows(&self, obs: &ServerObs) -> bool {
        let q = self.server.quorum().status(self.last_now);
        let committed = self.server.quorum().committed();
        if obs.quorum_term != q.term
            || obs.leader != (q.role == QuorumRole::Leader)
            || obs.lease_until != q.lease_until
            || obs.paused != committed.paused
            || obs.stopping != committed.stopping
            || obs.group_terms.len() != committed.groups.len()
            || obs.newest_promotion.as_ref() != committed.promotions.entries().next_back()
            || obs.not_voting == q.voter
            || obs.non_voters != committed.non_voters
        {
            return false;
        }
        let terms = committed
            .groups
            .iter()
            .zip(&obs.group_terms)
            .all(|((g, s), (og, ot))| g == og && s.term == *ot);
        let mut switchovers = committed
            .groups
            .iter()
            .filter_map(|(g, s)| s.switchover.as_ref().map(|sw| (*g, sw.term)));
        let mut seen = obs.switchover_terms.iter();
        let same_switchovers = obs.switchovers.len() == obs.switchover_terms.len()
            && obs.switchovers.iter().eq(obs.switchover_terms.keys())
            && loop {
                match (switchovers.next(), seen.next()) {
                    (None, None) => break true,
                    (Some(a), Some((g, t))) if a == (*g, *t) => {}
                    _ => break false,
                }
            };
        terms && same_switchovers
    }
}

impl SimMachine<ServerInput, ServerCommand> for SimServer {
    fn step(&mut self, now: Instant, input: ServerInput) -> Vec<ServerCommand> {
        self.last_now = now;
        self.server.step(now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    fn observe_server(&self, prev: Option<&Arc<ServerObs>>) -> Option<Arc<ServerObs>> {
        if let Some(p) = prev
            && self.shows(p)
        {
            return Some(Arc::clone(p));
        }
        match self.observe() {
            Obs::Server(obs) => Some(Arc::new(obs)),
            _ => None,
        }
    }

    fn observe(&self) -> Obs {
        let q = self.server.quorum().status(self.last_now);
        let committed = self.server.quorum().committed();
        Obs::Server(ServerObs {
            quorum_term: q.term,
            leader: q.role == QuorumRole::Leader,
            voter: q.voter,
            lease_until: q.lease_until,
            group_terms: committed.groups.iter().map(|(g, s)| (*g, s.term)).collect(),
            paused: committed.paused,
            stopping: committed.stopping,
            switchovers: committed
                .groups
                .iter()
                .filter(|(_, s)| s.switchover.is_some())
                .map(|(g, _)| *g)
                .collect(),
            switchover_terms: committed
                .groups
                .iter()
                .filter_map(|(g, s)| s.switchover.as_ref().map(|sw| (*g, sw.term)))
                .collect(),
            newest_promotion: committed.promotions.entries().next_back().cloned(),
            not_voting: !q.voter,
            non_voters: committed.non_voters.clone(),
        })
    }

    fn dump(&self) -> String {
        let s = self.server.status();
        let committed = self.server.quorum().committed();
        let non_voters = &committed.non_voters;
        let groups: Vec<String> = committed
            .groups
            .iter()
            .map(|(g, st)| format!("{g}:{}/{}", st.term, st.static_primary))
            .collect();
        format!(
            "server {:?} {} leader={:?} commit={} lease={:?} arbitrating={} agents={} non_voters={non_voters:?} groups=[{}]",
            s.quorum.role,
            s.quorum.term,
            s.quorum.leader,
            s.quorum.commit_index,
            s.quorum.lease_until,
            s.arbitrating,
            s.agents_connected,
            groups.join(" ")
        )
    }
}

/// Everything a factory needs to build a process's machine.
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

/// Builds the processes of each role. Roles it does not know are not simulated.
pub trait DaemonFactory: Send + Sync {
    /// A new process of `role`, or None if this role is not simulated (or its machine
    /// refuses to start).
    fn spawn(&self, role: Role, spawn: Spawn<'_>) -> Option<Daemon>;

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

/// The cm-core machines: om_monitor (started at boot), which starts cm_agent, which starts the
/// node's cm_server. An agent or server whose store does not decode refuses to start, as the
/// real daemon does (the monitor, or the agent, keeps trying).
#[derive(Clone, Copy, Debug, Default)]
pub struct Machines;

impl DaemonFactory for Machines {
    fn spawn(&self, role: Role, s: Spawn<'_>) -> Option<Daemon> {
        match role {
            Role::Monitor => Some(Daemon::monitor(Monitor::new(
                s.config, s.node, s.seed, s.restored,
            ))),
            Role::Agent => {
                let kind = if s.normal_start {
                    StartKind::Normal
                } else {
                    StartKind::Abnormal
                };
                let agent = Agent::new(s.config, s.node, s.seed, s.restored).ok()?;
                Some(Daemon::agent(agent.with_start_kind(kind)))
            }
            Role::Server => {
                let server = Server::new(s.config, s.node, s.seed, s.restored).ok()?;
                Some(Daemon::server(SimServer {
                    server,
                    last_now: Instant::ZERO,
                }))
            }
            Role::Ctl => None,
        }
    }
}
