//! The `Server` machine (cm_server): the CMS quorum and, while this node leads with a lease,
//! the [`Leader`]'s arbitration — composed behind one `step`.
//!
//! Routing: quorum messages go to the [`Quorum`]; agent reports are answered by every CMS
//! (`Leader` only while leading with a lease, else `NotLeader` with a hint) and arbitrated by
//! the leader; term checks are answered by every CMS with the highest quorum term it knows;
//! cm_ctl requests are served by the leader. The reply to a report is sent before any command
//! the report caused, since an agent accepts commands only from the CMS whose latest reply
//! said `Leader`.

use std::collections::{BTreeMap, BTreeSet};

use core::time::Duration;

use serde::{Deserialize, Serialize};

use super::leader::Leader;
use super::outbox::LeaderOutput;
use super::quorum::{Quorum, QuorumError, QuorumInput, QuorumOutput, QuorumStatus, Role};
use crate::config::ClusterConfig;
use crate::ctl::{CmsRole, CmsRow, CtlReply, CtlRequest, Refusal};
use crate::ids::{ClientId, GroupId, InstanceId, NodeId};
use crate::io::{Alarm, Machine, NetCommand, NetEvent, PersistState, WriteCompleted};
use crate::msg::{
    AgentReport, Endpoint, Envelope, GroupView, Msg, ReportAnswer, ReportReply, Role as PeerRole,
};
use crate::state::ReplicatedState;
use crate::time::{Instant, MonotonicGuard, WallMillis};

/// How long an agent counts as connected after its last report (§5.3 counts agents).
const AGENT_SEEN_WINDOW_REPORTS: u32 = 3;
/// Delay before re-dialling a CMS peer whose connection failed or closed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// cm_ctl requests waiting for a reply, at most.
const MAX_PENDING_CLIENTS: usize = 1024;

/// A fact fed to the [`Server`]. Serializable so that daemons can journal their inputs for
/// replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerInput {
    /// Time passed.
    Tick,
    /// A connection event or a frame.
    Net(NetEvent),
    /// A `Persist` finished.
    WriteCompleted(WriteCompleted),
    /// The driver's wall clock now (at start and from time to time); replicated deadlines
    /// (cool-downs, switchover timeouts) are wall-clock times.
    WallClock(WallMillis),
    /// The fence command of §8 finished.
    FenceCommandDone {
        /// The group it fenced for.
        group: GroupId,
        /// Exit status 0.
        success: bool,
    },
    /// Two-node mode: whether every third-party gateway answered (§5.4).
    GatewaysProbed {
        /// All answered.
        reachable: bool,
    },
}

/// An order from the [`Server`]. Execute in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerCommand {
    /// Connections and frames.
    Net(NetCommand),
    /// Write the quorum's persisted state; answer with `WriteCompleted`.
    Persist(PersistState),
    /// Run `command` for a silent primary; answer with `FenceCommandDone`.
    RunFenceCommand {
        /// The group.
        group: GroupId,
        /// The silent primary.
        instance: InstanceId,
        /// Its node.
        node: NodeId,
        /// The shell command line: the *effective* `fence_command` when the command was
        /// emitted (`cm_ctl set --param --server` can change it at run time; the executor never
        /// reads it from the config file).
        command: String,
    },
    /// Probe these gateways (the effective `third_party_gateway_ip` when the command was
    /// emitted, comma-separated); answer with `GatewaysProbed`.
    ProbeGateways {
        /// Comma-separated addresses, as configured.
        gateways: String,
    },
    /// Raise an alarm.
    RaiseAlarm(Alarm),
}

/// What a [`Server`] shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The quorum's state.
    pub quorum: QuorumStatus,
    /// Leads with a lease and arbitrates.
    pub arbitrating: bool,
    /// Agents heard from recently.
    pub agents_connected: usize,
}

/// cm_server's machine: quorum + leader-side arbitration. See the module docs.
///
/// Driving contract: as every cm-core machine ([`Machine`]); `now` never goes backwards.
/// Feed `WallClock` at start (replicated deadlines need it); until then the wall clock is taken
/// as the monotonic clock's milliseconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Server {
    node: NodeId,
    config: ClusterConfig,
    quorum: Quorum,
    leader: Leader,
    guard: MonotonicGuard,
    started: bool,
    wall_base: Option<(Instant, WallMillis)>,
    agents_seen: BTreeMap<NodeId, Instant>,
    agents_reported: (usize, bool),
    /// Agents of DN-hosting nodes → when last heard (§5.3, second rule).
    dn_agents_heard: BTreeMap<NodeId, Instant>,
    dn_agents_reported: Option<usize>,
    peers_heard: BTreeMap<NodeId, Instant>,
    redial_at: BTreeMap<NodeId, Instant>,
    clients: BTreeMap<ClientId, (Endpoint, u64)>,
    next_client: u64,
    /// Each node's newest resource report (§14).
    resources: super::resources::ResourceBook,
    /// Control requests refused because the peer was not a cm_ctl (§16: only the operator's
    /// certificate may ask for switchover, set, stop, …).
    ctl_refused_not_operator: u64,
}

impl Server {
    /// Builds the cm_server of `node`; `restored` is its quorum store (last completed persist).
    pub fn new(
        config: &ClusterConfig,
        node: NodeId,
        seed: u64,
        restored: Option<Vec<u8>>,
    ) -> Result<Self, QuorumError> {
        Ok(Self {
            node,
            config: config.clone(),
            quorum: Quorum::new(config, node, seed, restored)?,
            leader: Leader::new(config),
            guard: MonotonicGuard::default(),
            started: false,
            wall_base: None,
            agents_seen: BTreeMap::new(),
            agents_reported: (usize::MAX, false),
            dn_agents_heard: BTreeMap::new(),
            dn_agents_reported: None,
            peers_heard: BTreeMap::new(),
            redial_at: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_client: 1,
            resources: Default::default(),
            ctl_refused_not_operator: 0,
        })
    }

    /// The quorum (for status and checkers).
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// The leader-side component (for status and checkers).
    pub fn leader(&self) -> &Leader {
        &self.leader
    }

    /// Control requests refused since start because they came from a component (a node
    /// certificate), not from cm_ctl (the operator certificate).
    pub fn ctl_refused_not_operator(&self) -> u64 {
        self.ctl_refused_not_operator
    }

    fn wall(&self, now: Instant) -> WallMillis {
        match self.wall_base {
            Some((at, wall)) => wall.saturating_add(now - at),
            None => WallMillis(now.as_nanos() / 1_000_000),
        }
    }

    /// The quorum term this CMS shows outside the quorum — on every envelope to an agent or
    /// cm_ctl and in term-check answers: the durable one (see [`Quorum::durable_term`]).
    /// Quorum messages carry the quorum's own term (`quorum_step`).
    fn quorum_term(&self) -> crate::ids::QuorumTerm {
        self.quorum.durable_term()
    }

    fn me(&self) -> Endpoint {
        Endpoint::server(self.node)
    }

    fn envelope(&self, to: Endpoint, msg: Msg) -> Envelope {
        Envelope {
            from: self.me(),
            to,
            quorum_term: self.quorum_term(),
            msg,
        }
    }

    fn send(&self, out: &mut Vec<ServerCommand>, to: Endpoint, msg: Msg) {
        out.push(ServerCommand::Net(NetCommand::Send {
            envelope: self.envelope(to, msg),
        }));
    }

    fn on_start(&mut self, out: &mut Vec<ServerCommand>) {
        self.started = true;
        for peer in self.config.cms_nodes() {
            if peer != self.node {
                out.push(ServerCommand::Net(NetCommand::Connect {
                    peer: Endpoint::server(peer),
                }));
            }
        }
    }

    fn on_net(&mut self, now: Instant, ev: NetEvent, out: &mut Vec<ServerCommand>) {
        match ev {
            NetEvent::FrameReceived { peer, envelope } => self.on_frame(now, peer, envelope, out),
            NetEvent::Closed { peer } | NetEvent::ConnectFailed { peer } => match peer.role {
                PeerRole::Server if peer.node != self.node => {
                    self.redial_at.insert(peer.node, now + RECONNECT_DELAY);
                }
                PeerRole::Agent => {
                    self.agents_seen.remove(&peer.node);
                }
                _ => {}
            },
            NetEvent::Connected { peer } => {
                self.redial_at.remove(&peer.node);
            }
        }
    }

    fn on_frame(
        &mut self,
        now: Instant,
        peer: Endpoint,
        env: Envelope,
        out: &mut Vec<ServerCommand>,
    ) {
        match env.msg {
            Msg::Quorum(msg) if peer.role == PeerRole::Server => {
                self.peers_heard.insert(peer.node, now);
                let input = QuorumInput::Message {
                    from: peer.node,
                    term: env.quorum_term,
                    msg,
                };
                self.quorum_step(now, input, out);
            }
            Msg::AgentReport(report) if peer.role == PeerRole::Agent => {
                self.on_report(now, peer.node, &report, out);
            }
            Msg::TermCheck { nonce } => {
                let highest = self.quorum_term();
                let weight = self.quorum.confirmation_weight();
                let reply = Msg::TermCheckReply {
                    nonce,
                    highest,
                    weight,
                };
                self.send(out, peer, reply);
            }
            Msg::GroupTermCheck { nonce, group } => {
                let reply = Msg::GroupTermCheckReply {
                    nonce,
                    highest: self.quorum_term(),
                    weight: self.quorum.confirmation_weight(),
                    group_term: self.quorum.group_term_bound(group),
                };
                self.send(out, peer, reply);
            }
            // cm_ctl may ask anything; an agent serving `/cluster` (§15) only the read-only status.
            Msg::CtlRequest { id, req }
                if peer.role == PeerRole::Ctl
                    || (peer.role == PeerRole::Agent && matches!(req, CtlRequest::Query)) =>
            {
                self.on_ctl(now, peer, id, req, out);
            }
            Msg::CtlRequest { id, .. } => {
                // The transport authenticated a component's node certificate, not the
                // operator's: a node must not be able to switch over, set or stop the cluster.
                self.ctl_refused_not_operator += 1;
                tracing::warn!(%peer, id, "refusing a control request that does not come from cm_ctl");
                let why = Refusal::Invalid(format!(
                    "control requests are accepted only from cm_ctl (the operator certificate), not from {peer}"
                ));
                self.send(
                    out,
                    peer,
                    Msg::CtlReply {
                        id,
                        reply: CtlReply::Refused(why),
                    },
                );
            }
            // Anything else is not for a cm_server; a confused or hostile peer is ignored.
            _ => {}
        }
    }

    fn on_report(
        &mut self,
        now: Instant,
        node: NodeId,
        report: &AgentReport,
        out: &mut Vec<ServerCommand>,
    ) {
        self.agents_seen.insert(node, now);
        self.resources.record(now, node, &report.resources);
        if !self.config.instances_on(node).is_empty() {
            self.dn_agents_heard.insert(node, now);
            self.report_dn_agents(now, out);
        }
        let answer = if self.arbitrating() {
            let st = self.quorum.committed();
            ReportAnswer::Leader {
                paused: st.paused,
                stopping: st.stopping,
                groups: self.group_views(now, node),
                resources: self.resources.relay(&self.config, now, node),
            }
        } else {
            ReportAnswer::NotLeader {
                leader: self.quorum.status(now).leader,
            }
        };
        let arbitrate = matches!(answer, ReportAnswer::Leader { .. });
        self.send(
            out,
            Endpoint::agent(node),
            Msg::ReportReply(ReportReply {
                seq: report.seq,
                answer,
            }),
        );
        if arbitrate {
            let wall = self.wall(now);
            let outs = self
                .leader
                .on_report(now, wall, node, report, &mut self.quorum);
            self.leader_outputs(outs, out);
        }
    }

    /// What this leader holds of each group with a DN on `node` (§15): nothing until it has
    /// committed an entry of its own term (its committed state may lag until then).
    fn group_views(&self, now: Instant, node: NodeId) -> Vec<GroupView> {
        if !self.quorum.committed_own_term() {
            return Vec::new();
        }
        let st = self.quorum.committed();
        let mut groups: Vec<GroupId> = self
            .config
            .instances_on(node)
            .into_iter()
            .filter_map(|i| self.config.member(i).map(|(g, _)| g.id))
            .collect();
        groups.dedup();
        groups
            .into_iter()
            .filter_map(|g| {
                let gs = st.groups.get(&g)?;
                let primary_position = self
                    .leader
                    .groups()
                    .get(&g)
                    .and_then(|a| a.member(gs.static_primary))
                    .and_then(|m| Some((m.report.as_ref()?.position, m.silence(now))));
                Some(GroupView {
                    group: g,
                    primary: gs.static_primary,
                    term: gs.term,
                    primary_position,
                })
            })
            .collect()
    }

    fn on_ctl(
        &mut self,
        now: Instant,
        peer: Endpoint,
        id: u64,
        req: CtlRequest,
        out: &mut Vec<ServerCommand>,
    ) {
        if !self.arbitrating() {
            let st = self.quorum.status(now);
            let refusal = if st.role == Role::Leader {
                Refusal::NoLease
            } else {
                Refusal::NotLeader { leader: st.leader }
            };
            self.send(
                out,
                peer,
                Msg::CtlReply {
                    id,
                    reply: CtlReply::Refused(refusal),
                },
            );
            return;
        }
        if req == CtlRequest::Query {
            let status = self.query_status(now);
            self.send(
                out,
                peer,
                Msg::CtlReply {
                    id,
                    reply: CtlReply::Status(Box::new(status)),
                },
            );
            return;
        }
        if self.clients.len() >= MAX_PENDING_CLIENTS {
            let busy = CtlReply::Refused(Refusal::Busy("too many pending cm_ctl requests".into()));
            self.send(out, peer, Msg::CtlReply { id, reply: busy });
            return;
        }
        let client = ClientId(self.next_client);
        self.next_client += 1;
        self.clients.insert(client, (peer, id));
        let wall = self.wall(now);
        let outs = self.leader.on_ctl(now, wall, client, req, &mut self.quorum);
        self.leader_outputs(outs, out);
    }

    fn query_status(&self, now: Instant) -> crate::ctl::ClusterStatus {
        let mut status = self.leader.status(
            self.quorum.committed(),
            self.cms_rows(now),
            self.quorum_term(),
        );
        let timeout = self.config.params.instance_heartbeat_timeout();
        let rows = self.resources.rows(&self.config, now, timeout);
        super::resources::add_to_status(&mut status, rows);
        status
    }

    /// The `cm_ctl query --json` object while this node arbitrates (its `/cluster`, §15), as of
    /// the last step; `None` otherwise.
    pub fn cluster_status(&self) -> Option<crate::ctl::ClusterStatus> {
        self.arbitrating()
            .then(|| self.query_status(self.guard.last()))
    }

    /// The CMS table of `cm_ctl query`: this node as seen by itself, peers by recency.
    fn cms_rows(&self, now: Instant) -> Vec<CmsRow> {
        let recent = self.config.params.election_timeout_max() * 2;
        let leader = self.quorum.status(now).leader;
        self.config
            .nodes
            .iter()
            .filter(|n| n.cms_port.is_some())
            .map(|n| {
                let alive = n.id == self.node
                    || self
                        .peers_heard
                        .get(&n.id)
                        .is_some_and(|t| now - *t <= recent);
                let role = match (alive, leader == Some(n.id)) {
                    (false, _) => CmsRole::Down,
                    (true, true) => CmsRole::Primary,
                    (true, false) => CmsRole::Standby,
                };
                CmsRow {
                    node: n.id,
                    name: n.name.clone(),
                    address: n.address.clone(),
                    role,
                }
            })
            .collect()
    }

    fn arbitrating(&self) -> bool {
        self.leader.is_elected()
    }

    fn quorum_step(&mut self, now: Instant, input: QuorumInput, out: &mut Vec<ServerCommand>) {
        let outs = self.quorum.step(now, input);
        for o in outs {
            match o {
                QuorumOutput::Send { to, term, msg } => {
                    let envelope = Envelope {
                        from: self.me(),
                        to: Endpoint::server(to),
                        quorum_term: term,
                        msg: Msg::Quorum(msg),
                    };
                    out.push(ServerCommand::Net(NetCommand::Send { envelope }));
                }
                QuorumOutput::Persist(p) => out.push(ServerCommand::Persist(p)),
                QuorumOutput::ProbeGateways => out.push(ServerCommand::ProbeGateways {
                    gateways: self.leader.params().third_party_gateway_ip.clone(),
                }),
                // Leadership is acted on through the lease (see `sync_leadership`).
                QuorumOutput::BecameLeader { .. } => {}
                QuorumOutput::SteppedDown { .. } => self.depose(),
            }
        }
    }

    fn depose(&mut self) {
        self.resources.deposed();
        if self.leader.is_elected() {
            self.leader.on_deposed();
            // Waiting cm_ctl clients get an answer rather than a silent timeout.
            self.clients.clear();
        }
    }

    /// Starts or stops arbitration as the lease comes and goes (§5.2: only while it holds).
    fn sync_leadership(&mut self, now: Instant, out: &mut Vec<ServerCommand>) {
        let lease = self.quorum.holds_lease(now);
        if lease && !self.leader.is_elected() {
            let wall = self.wall(now);
            // A leader's term is durable (it counted its own vote only once written).
            let term = self.quorum.status(now).term;
            debug_assert_eq!(term, self.quorum_term());
            let outs = self.leader.on_elected(now, wall, term, &mut self.quorum);
            self.resources.elected(now);
            self.leader_outputs(outs, out);
        } else if !lease && self.leader.is_elected() {
            self.depose();
        }
    }

    /// Hands committed outcomes to the leader and replicates new proposals, until quiet (a
    /// single-node quorum commits within one flush, which may cause further proposals).
    fn settle(&mut self, now: Instant, out: &mut Vec<ServerCommand>) {
        for _ in 0..8 {
            self.sync_leadership(now, out);
            let outcomes = self.quorum.take_outcomes();
            let had_outcomes = !outcomes.is_empty();
            if had_outcomes && self.leader.is_elected() {
                let wall = self.wall(now);
                let outs = self
                    .leader
                    .on_outcomes(now, wall, outcomes, &mut self.quorum);
                self.leader_outputs(outs, out);
            }
            let before = out.len();
            self.quorum_step(now, QuorumInput::Flush, out);
            if out.len() == before && !had_outcomes {
                return;
            }
        }
    }

    fn leader_outputs(&mut self, outs: Vec<LeaderOutput>, out: &mut Vec<ServerCommand>) {
        for o in outs {
            match o {
                LeaderOutput::Command { node, cmd } => {
                    self.send(out, Endpoint::agent(node), Msg::Command(cmd));
                }
                LeaderOutput::Reply { client, reply } => {
                    if let Some((peer, id)) = self.clients.remove(&client) {
                        self.send(out, peer, Msg::CtlReply { id, reply });
                    }
                }
                LeaderOutput::Alarm(a) => out.push(ServerCommand::RaiseAlarm(a)),
                LeaderOutput::RunFenceCommand {
                    group,
                    instance,
                    node,
                } => {
                    out.push(ServerCommand::RunFenceCommand {
                        group,
                        instance,
                        node,
                        command: self.leader.params().fence_command.clone(),
                    });
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<ServerCommand>) {
        let due: Vec<NodeId> = self
            .redial_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| *n)
            .collect();
        for node in due {
            self.redial_at.remove(&node);
            out.push(ServerCommand::Net(NetCommand::Connect {
                peer: Endpoint::server(node),
            }));
        }
        self.report_agents(now, out);
        self.report_dn_agents(now, out);
        self.quorum_step(now, QuorumInput::Tick, out);
        self.sync_leadership(now, out);
        if self.leader.is_elected() {
            let wall = self.wall(now);
            let outs = self.leader.on_tick(now, wall, &mut self.quorum);
            self.leader_outputs(outs, out);
        }
    }

    /// Feeds the quorum the count of agents heard from recently (§5.3), when it changes.
    fn report_agents(&mut self, now: Instant, out: &mut Vec<ServerCommand>) {
        let window = self.config.params.report_interval() * AGENT_SEEN_WINDOW_REPORTS;
        self.agents_seen.retain(|_, at| now - *at <= window);
        let count = self.agents_seen.len();
        let local = self.agents_seen.contains_key(&self.node);
        if (count, local) != self.agents_reported {
            self.agents_reported = (count, local);
            self.quorum_step(
                now,
                QuorumInput::AgentsConnected {
                    count,
                    includes_local: local,
                },
                out,
            );
        }
    }

    /// Feeds the quorum the count of DN-hosting nodes whose agent reported within
    /// `instance_heartbeat_timeout` (§5.3, second rule), when it changes.
    fn report_dn_agents(&mut self, now: Instant, out: &mut Vec<ServerCommand>) {
        let window = self.config.params.instance_heartbeat_timeout();
        self.dn_agents_heard.retain(|_, at| now - *at < window);
        let count = self.dn_agents_heard.len();
        if self.dn_agents_reported != Some(count) {
            self.dn_agents_reported = Some(count);
            self.quorum_step(now, QuorumInput::DnAgentsHeard { count }, out);
        }
    }

    fn dn_agents_deadline(&self) -> Option<Instant> {
        let window = self.config.params.instance_heartbeat_timeout();
        self.dn_agents_heard.values().map(|at| *at + window).min()
    }

    fn agent_window_deadline(&self) -> Option<Instant> {
        let window = self.config.params.report_interval() * AGENT_SEEN_WINDOW_REPORTS;
        self.agents_seen
            .values()
            .map(|at| *at + window + Duration::from_nanos(1))
            .min()
    }

    /// CMS nodes this server has heard from within the election timeout (for tests, checkers).
    pub fn peers_alive(&self, now: Instant) -> BTreeSet<NodeId> {
        let recent = self.config.params.election_timeout_max();
        self.peers_heard
            .iter()
            .filter(|(_, t)| now - **t <= recent)
            .map(|(n, _)| *n)
            .collect()
    }
}

impl Machine for Server {
    type Input = ServerInput;
    type Command = ServerCommand;
    type Status = ServerStatus;

    fn step(&mut self, now: Instant, input: ServerInput) -> Vec<ServerCommand> {
        self.guard.observe(now);
        self.resources.start(now);
        let mut out = Vec::new();
        if !self.started {
            self.on_start(&mut out);
        }
        match input {
            ServerInput::Tick => self.on_tick(now, &mut out),
            ServerInput::Net(ev) => self.on_net(now, ev, &mut out),
            ServerInput::WriteCompleted(done) => {
                self.quorum_step(now, QuorumInput::WriteCompleted(done), &mut out);
            }
            ServerInput::WallClock(wall) => self.wall_base = Some((now, wall)),
            ServerInput::FenceCommandDone { group, success } => {
                if self.leader.is_elected() {
                    let outs =
                        self.leader
                            .on_fence_command_done(now, group, success, &mut self.quorum);
                    self.leader_outputs(outs, &mut out);
                }
            }
            ServerInput::GatewaysProbed { reachable } => {
                self.quorum_step(now, QuorumInput::GatewaysProbed { reachable }, &mut out);
            }
        }
        self.settle(now, &mut out);
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        if !self.started {
            return Some(Instant::ZERO);
        }
        let lease_end = self.quorum.status(self.guard.last()).lease_until;
        [
            self.quorum.next_deadline(),
            self.leader.next_deadline(),
            self.redial_at.values().min().copied(),
            self.agent_window_deadline(),
            self.dn_agents_deadline(),
            lease_end,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn status(&self) -> ServerStatus {
        ServerStatus {
            quorum: self.quorum.status(self.guard.last()),
            arbitrating: self.leader.is_elected(),
            agents_connected: self.agents_seen.len(),
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
