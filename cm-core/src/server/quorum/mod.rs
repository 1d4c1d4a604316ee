//! The CMS quorum: Raft-style election and the replicated cluster state (SPEC.md §5).
//!
//! [`Quorum`] is a pure state machine embedded in the `Server` machine. It elects a leader among
//! the CMS nodes (pre-vote, randomized timeouts, check-quorum, leader stickiness, a start-up vote
//! hold-off), replicates [`Change`]s through a log that is folded into whole-state snapshots,
//! applies committed changes to a [`ClusterState`], and gives the leader a *lease* (§5.2) during
//! which no other node can have been elected, under the clock-drift bound ρ.
//!
//! # Driving contract
//!
//! * `step(now, input)` feeds one fact and returns orders to execute **in order**. `now` never
//!   goes backwards (asserted, in release builds too). Call `step(now, Tick)` at
//!   [`Quorum::next_deadline`]; an early or repeated tick does nothing.
//! * **Durability.** Every change to the term, the vote, the membership mark or the log is
//!   written by one [`QuorumOutput::Persist`] carrying the *whole* persisted state. The driver
//!   must complete writes in the order they were issued (a later write is never overwritten by
//!   an earlier one) and report each with [`QuorumInput::WriteCompleted`]. A completion of token
//!   `t` makes every earlier write durable too.
//! * **Persist before acting.** A `Persist` precedes, in the output list, the messages
//!   produced after the state change it records. Messages whose truth depends on the write — a granted vote, a successful append or snapshot
//!   acknowledgement, a candidate's vote requests — are *not* in that list: they are released by
//!   the `WriteCompleted` of the write that covers them, and dropped if the write fails or the
//!   term moved on meanwhile. A candidate counts its own vote, and a leader its own log, only
//!   once durable; a single CMS therefore elects itself after its write completes.
//! * Heartbeats, refusals and pre-vote answers depend on nothing durable and go out at once.
//! * A failed write drops whatever waited for it, makes a leader or candidate step down, and the
//!   state is written again at once.
//! * `BecameLeader { term }` is emitted when this node wins an election (it does not yet hold a
//!   lease: see [`Quorum::holds_lease`]); `SteppedDown { term }` when it stops leading. Pending
//!   proposals get a [`OutcomeError::Dropped`] outcome then (they may still commit under the next
//!   leader: the arbiter re-reads the committed state).
//!
//! # Membership and empty stores (§5.1)
//!
//! A node constructed with `restored = None` has an empty store: a node powered on for the
//! first time, maybe late to its cluster's first election, or one whose store was lost or
//! replaced. It neither votes nor campaigns; it sends `Hello { nonce, rejoining }` to every
//! other CMS node and ignores all other quorum traffic until it has decided:
//! * any node answers `counted: true` → it lost a store it had written: it rejoins as a
//!   **non-voter**. It follows the leader and acknowledges entries (its writes are real) but
//!   never grants a vote or pre-vote and never campaigns, since it may have forgotten a vote it
//!   gave or entries it acknowledged. The leader commits `SetVoter { node, voter: false }` when
//!   it hears a hello from a node it counted, or one that says `rejoining`; the node becomes a
//!   voter again only after it has seen itself in `non_voters` and then removed by an
//!   operator's `cm_ctl cms --readd NODE` (`SetVoter { voter: true }`) — both at log indices
//!   above the largest `last_index` answered to its hello, so older re-adds in the history it
//!   replays do not count;
//! * every other CMS node answered `counted: false` → no vote or acknowledgement of it was ever
//!   counted: it joins as a **voter**, however far the cluster has got meanwhile (a fresh
//!   cluster, or a node merely late to the first election). While some node has not answered
//!   it keeps asking.
//!
//! **Why this is safe.** An empty store is dangerous only if something this node once said was
//! *counted*: a granted vote that made a leader (it could vote again in that term: two leaders)
//! or an acknowledgement that made an entry committed (it could vote for a candidate lacking the
//! entry). Whoever counts — a candidate counting votes, a leader counting acknowledgements —
//! first adds the sender to its persisted `counted` set and handles the message only once that
//! write is durable (the first time per peer only). So every counted vote or acknowledgement
//! of X is recorded in the durable store of the node that counted it. X decides "voter" only
//! when *every* other CMS node answered that it never counted X; with the stores of the other
//! nodes intact (we tolerate the loss of one store at a time, a minority), no vote or
//! acknowledgement of X's lost store was ever counted, so nothing X forgot matters. One gap
//! remains: a reply of X's earlier incarnation still in flight, counted after the answer.
//! Hence a node that hears a hello from X stops counting what X sent before it: a candidate
//! ignores X's votes for the rest of its candidacy, a leader ignores X's acknowledgements of
//! rounds sent before the hello and forgets X's match index. (etcd solves the same problem
//! with an explicit `initial-cluster-state=new|existing` given by the operator; this needs no
//! operator input and also tells a late first boot from a lost store.) The decision is
//! persisted with the rest of the state; stores written before `counted` existed decode with
//! every peer counted (the conservative answer).
//!
//! Every node counts majorities over the configured CMS nodes minus the committed
//! `non_voters` (one membership change at a time keeps old and new majorities overlapping);
//! the arithmetic is [`crate::quorum_math`]. Agents confirming a Failover's term count only
//! voters' replies, with the weight each CMS reports ([`Quorum::confirmation_weight`]). Limits:
//! an operator should re-add a node only once the cluster has moved past every term its lost
//! store may have voted in (a re-added node cannot know those terms); and the loss of two
//! stores at once (a node and one that counted it) is outside what this tolerates.
//!
//! # Leader and follower writes
//!
//! The leader sends new entries while its own write is in flight (Raft allows it); it counts
//! itself toward a commit only after that write completes. Followers apply committed entries
//! from memory; the snapshot written is always of applied, hence committed, state.
//!
//! # Two-node mode (§5.4)
//!
//! With two CMS nodes the first (in config order, W2) has weight 2 and is a quorum alone. With
//! `cms_enable_failover_on2nodes` (arithmetic in [`crate::quorum_math`]):
//! * W2's weight counts only while it heard its peer within `cms_network_isolation_timeout ×
//!   (1 − ρ)/(1 + ρ)`, or a gateway probe sent after that instant answered; otherwise it is not
//!   a quorum alone, stops using its lease at once and steps down.
//! * From that instant an isolated node probes the gateways ([`QuorumOutput::ProbeGateways`],
//!   answered by [`QuorumInput::GatewaysProbed`]; answers are matched to the oldest probe
//!   outstanding). W1 is a quorum alone only once its peer has been silent for
//!   `(cms_network_isolation_timeout + GATEWAY_PROBE_BOUND) × (1 + ρ)/(1 − ρ) + lease` and on a
//!   probe sent at or after that instant; a probe that does not answer ends it.
//! * In this mode each node campaigns only for terms of its own parity (W2 odd, W1 even), so
//!   no quorum term is ever led by both, even each alone on its side of a partition.
//! * **This trades S4 (and simultaneous leases) for availability while both nodes reach the
//!   gateways but not each other.** Agents count term confirmations with the weight each CMS
//!   reports ([`Quorum::confirmation_weight`]).
//!
//! * Group terms are disjoint by the same parity ([`crate::quorum_math::next_group_term`]),
//!   and on healing the logs that diverged while both sides led alone are reconciled: the
//!   follower's committed group terms are merged into the leader's state (each group takes the
//!   higher term, so the lower side's primary is restarted, §4.4), then its log is overwritten
//!   by the leader's snapshot. The rules and the argument are in `heal.rs`.

mod cut;
mod election;
mod heal;
mod lease;
mod log;
mod membership;
mod msg;
mod replication;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod sim_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

pub use msg::{EntryPayload, LogEntry, QuorumMsg};

use self::log::Log;
use crate::codec::{self, DecodeError};
use crate::config::ClusterConfig;
use crate::ids::{GroupId, LogIndex, NodeId, ProposalId, QuorumTerm, Term, WriteToken};
use crate::io::{PersistState, WriteCompleted};
use crate::params::Params;
use crate::quorum_math;
use crate::rng::Prng;
use crate::state::{Change, ClusterState, Outcome, OutcomeError, ReplicatedState};
use crate::time::{Instant, MonotonicGuard};

/// Most entries carried by one `Append`.
pub const MAX_ENTRIES_PER_APPEND: usize = 64;
/// Applied entries kept in the log before they are folded into the snapshot.
pub const COMPACT_AFTER: u64 = 128;
/// Most proposals queued between two `Flush` inputs; more are refused.
pub const MAX_QUEUED_PROPOSALS: usize = 1024;
/// Heartbeat rounds remembered for lease accounting (older unacknowledged rounds are dropped).
pub const MAX_ROUNDS: usize = 64;

/// A fact fed to the [`Quorum`].
#[derive(Clone, Debug, PartialEq)]
pub enum QuorumInput {
    /// Time passed (a deadline was reached, or any wake-up).
    Tick,
    /// A quorum message from another CMS node; `term` is the envelope's `quorum_term`.
    Message {
        /// The sender (the authenticated peer).
        from: NodeId,
        /// The sender's term.
        term: QuorumTerm,
        /// The message.
        msg: QuorumMsg,
    },
    /// A `Persist` finished (or failed).
    WriteCompleted(WriteCompleted),
    /// How many agents this CMS is connected to (§5.3); fed whenever it changes.
    AgentsConnected {
        /// Connected agents.
        count: usize,
        /// Whether the local node's agent is among them.
        includes_local: bool,
    },
    /// The answer to [`QuorumOutput::ProbeGateways`] (§5.4).
    GatewaysProbed {
        /// Whether every `third_party_gateway_ip` answered.
        reachable: bool,
    },
    /// Append the proposals queued through [`ReplicatedState::propose`], persist and replicate.
    Flush,
    /// How many DN-hosting nodes' agents this CMS heard within `instance_heartbeat_timeout`
    /// (§5.3, second rule); fed whenever it changes.
    DnAgentsHeard {
        /// The count.
        count: usize,
    },
}

/// An order from the [`Quorum`]. Execute in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QuorumOutput {
    /// Send a quorum message to another CMS node, with `term` as the envelope's `quorum_term`.
    Send {
        /// The addressee.
        to: NodeId,
        /// The sender's term (fencing).
        term: QuorumTerm,
        /// The message.
        msg: QuorumMsg,
    },
    /// Write the whole persisted state; report completion with `WriteCompleted`.
    Persist(PersistState),
    /// This node won the election of `term` (it holds no lease yet).
    BecameLeader {
        /// The term.
        term: QuorumTerm,
    },
    /// This node stopped leading `term`: stop arbitrating at once.
    SteppedDown {
        /// The term it led.
        term: QuorumTerm,
    },
    /// Two-node mode: probe every `third_party_gateway_ip` and answer with `GatewaysProbed`.
    ProbeGateways,
}

/// The role of a CMS node in the quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes (its term is unchanged).
    PreCandidate,
    /// Asking for votes at its new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Whether this node may vote (§5.1, empty stores).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// A voter (unless the committed state lists it in `non_voters`).
    Voter,
    /// Started with an empty store; waiting for hello answers.
    Joining {
        /// The nonce of its hellos.
        nonce: u64,
        /// Nodes that answered they never counted this node's vote or acknowledgement.
        cleared_by: BTreeSet<NodeId>,
    },
    /// Its store was lost: a non-voter until an operator re-adds it.
    Rejoining {
        /// Membership changes at or below this index predate the rejoin.
        horizon: LogIndex,
        /// Whether it has seen itself marked non-voter above the horizon.
        marked: bool,
        /// The nonce of its hellos.
        nonce: u64,
    },
}

/// Why a [`Quorum`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// The node does not run a cm_server in this configuration.
    #[error("{0} is not a CMS node of this cluster (give it a `cms_port`)")]
    NotMember(NodeId),
    /// The restored store does not decode (torn or corrupt write, or another version).
    #[error("the quorum store of this node cannot be read: {0}")]
    Store(#[from] DecodeError),
}

/// Plain data describing a [`Quorum`] (for cm_ctl, the simulator and metrics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// This node.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: QuorumTerm,
    /// The leader it knows for this term.
    pub leader: Option<NodeId>,
    /// Its vote in this term.
    pub voted_for: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the committed state.
    pub applied_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// Index folded into the snapshot.
    pub snapshot_index: LogIndex,
    /// Until when this leader's lease holds, if it holds one at the instant asked.
    pub lease_until: Option<Instant>,
    /// Whether it may vote.
    pub voter: bool,
    /// Its membership state.
    pub membership: Membership,
    /// Writes issued but not yet completed.
    pub pending_writes: usize,
    /// The PRNG seed it was built with (reproduces its election timeouts).
    pub seed: u64,
}

/// What is written to disk (through `codec::encode_persisted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    term: QuorumTerm,
    voted_for: Option<NodeId>,
    membership: Membership,
    log: Log,
    /// Peers whose vote or acknowledgement this node has counted (written before counting).
    counted: BTreeSet<NodeId>,
}

/// The store layout before `counted` existed, still read: such a node may have counted anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredV1 {
    term: QuorumTerm,
    voted_for: Option<NodeId>,
    membership: Membership,
    log: Log,
}

/// Decodes a store, current layout first, then the previous one (whose `counted` is every
/// other CMS node: the conservative answer).
fn decode_store(bytes: &[u8], members: &[NodeId], node: NodeId) -> Result<Stored, DecodeError> {
    match codec::decode_persisted::<Stored>(bytes) {
        Ok(s) => Ok(s),
        Err(e) => match codec::decode_persisted::<StoredV1>(bytes) {
            Ok(v1) => Ok(Stored {
                term: v1.term,
                voted_for: v1.voted_for,
                membership: v1.membership,
                log: v1.log,
                counted: members.iter().copied().filter(|n| *n != node).collect(),
            }),
            Err(_) => Err(e),
        },
    }
}

/// Something that waits for a write to complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AfterWrite {
    /// A message whose truth depends on the write; dropped if the term moved.
    Send {
        to: NodeId,
        term: QuorumTerm,
        msg: QuorumMsg,
    },
    /// The candidate's own vote in `term` is durable.
    SelfVote { term: QuorumTerm },
    /// The leader's own log up to `index` is durable.
    SelfAppended { term: QuorumTerm, index: LogIndex },
    /// A vote or acknowledgement from a peer not yet in `counted`, handled once `counted`
    /// (which now holds the peer) is durable; dropped if the term moved.
    Redeliver {
        term: QuorumTerm,
        from: NodeId,
        msg: QuorumMsg,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingWrite {
    token: WriteToken,
    actions: Vec<AfterWrite>,
    /// When the write was issued (a leader whose store stops completing writes stops counting
    /// itself, see `lease.rs`).
    since: Instant,
    /// The term it records: durable once it completes (see [`Quorum::durable_term`]).
    #[serde(default)]
    term: QuorumTerm,
}

/// One heartbeat round of a leader: when it was sent and who acknowledged it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Round {
    sent_at: Instant,
    acks: BTreeSet<NodeId>,
}

/// Leader-only state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaderState {
    next: BTreeMap<NodeId, LogIndex>,
    matched: BTreeMap<NodeId, LogIndex>,
    rounds: BTreeMap<u64, Round>,
    next_round: u64,
    lease_until: Option<Instant>,
    /// Peer → first round sent after its hello: acknowledgements of earlier rounds came from
    /// an earlier incarnation of the peer and are not counted.
    ack_fence: BTreeMap<NodeId, u64>,
    /// Send time of the newest round a quorum acknowledged (check-quorum counts from it).
    quorum_heard_at: Instant,
    heartbeat_at: Instant,
    /// Log index → proposal made by this node in this term.
    pending: BTreeMap<LogIndex, ProposalId>,
    /// Two-node healing: index of the newest `MergeDiverged` appended in this term.
    merge_at: Option<LogIndex>,
    /// Two-node mode: peers heard at this term since it began (voters, then every sender).
    heard: BTreeSet<NodeId>,
    /// Two-node mode: when a peer this node led without was first heard at this term — the
    /// latest instant that peer's own leadership (and the leases it granted) can have ended.
    other_side_ended_at: Option<Instant>,
}

/// The CMS consensus component. See the module documentation for the driving contract.
#[derive(Debug, Serialize, Deserialize)]
pub struct Quorum {
    node: NodeId,
    params: Params,
    members: Vec<NodeId>,
    seed: u64,
    rng: Prng,
    clock: MonotonicGuard,
    started_at: Option<Instant>,

    // Persistent.
    term: QuorumTerm,
    /// The term of the newest completed write (or of the restored store): what this node may
    /// tell agents (see [`Quorum::durable_term`]).
    #[serde(default)]
    durable_term: QuorumTerm,
    voted_for: Option<NodeId>,
    membership: Membership,
    log: Log,
    counted: BTreeSet<NodeId>,

    // Volatile.
    role: Role,
    leader: Option<NodeId>,
    commit: LogIndex,
    applied: LogIndex,
    state: ClusterState,
    election_at: Instant,
    leader_seen_at: Option<Instant>,
    prevotes: BTreeSet<NodeId>,
    votes: BTreeSet<NodeId>,
    /// Peers that said hello during this candidacy: their votes in it are not counted.
    vote_fence: BTreeSet<NodeId>,
    lead: Option<LeaderState>,
    hello_at: Instant,
    /// Two-node healing: a leader's log conflicts with what this node committed, and no
    /// snapshot covering its committed group terms replaced its log yet (`heal.rs`).
    diverged: bool,

    // §5.3 and §5.4.
    few_agents_since: Option<Instant>,
    demoted_until: Option<Instant>,
    peer_heard_at: Instant,
    /// The peer was heard since this process started (§5.4: a restarted W2 knows nothing of
    /// how long its peer has been silent, so its weight does not count until it hears it or
    /// the gateway answers; swarm seed 1222).
    #[serde(default)]
    peer_heard_since_start: bool,
    /// The length of the newest store written: past [`STORE_BUDGET`] proposals are refused
    /// (with an error logged) so that the store never reaches the frame limit, whose encoding
    /// failure would stop the node.
    #[serde(default)]
    store_len: usize,
    isolated: bool,
    gateways: Option<bool>,
    probe_at: Instant,
    /// Send times of the gateway probes not yet answered, oldest first.
    probes_out: VecDeque<Instant>,
    /// Send time of the newest probe that answered "reachable" since the peer was last heard.
    gateway_ok_sent_at: Option<Instant>,
    // §5.3, second rule (see `cut.rs`).
    /// D: the nodes hosting DNs.
    dn_nodes: usize,
    /// How many of their agents this node heard within `instance_heartbeat_timeout`.
    dn_heard: usize,
    /// Peer → its last view and when it arrived.
    views: BTreeMap<NodeId, (usize, Instant)>,
    /// Leader: since when it has been cut from the DN agents.
    cut_since: Option<Instant>,
    /// Held out of elections until then after stepping down under the rule.
    cut_held_until: Option<Instant>,
    /// Follower: the last view sent (to whom, at which term, the count, when).
    view_sent: Option<(NodeId, QuorumTerm, usize, Instant)>,

    // Persistence.
    next_token: u64,
    writes: VecDeque<PendingWrite>,
    dirty: bool,
    out: Vec<QuorumOutput>,
    deferred: Vec<AfterWrite>,

    // Proposals.
    next_proposal: u64,
    queued: Vec<(ProposalId, Change)>,
    outcomes: Vec<Outcome>,
}

impl Quorum {
    /// Builds the quorum member `node`. `restored` is the bytes of its last completed
    /// `Persist` (`None`: an empty store, see "Membership and empty stores").
    pub fn new(
        config: &ClusterConfig,
        node: NodeId,
        seed: u64,
        restored: Option<Vec<u8>>,
    ) -> Result<Self, QuorumError> {
        let members = config.cms_nodes();
        if !members.contains(&node) {
            return Err(QuorumError::NotMember(node));
        }
        let mut rng = Prng::new(seed);
        let (stored, blank) = match restored {
            Some(bytes) => (decode_store(&bytes, &members, node)?, false),
            None => {
                let membership = if members.len() == 1 {
                    Membership::Voter
                } else {
                    Membership::Joining {
                        nonce: rng.next_u64(),
                        cleared_by: BTreeSet::new(),
                    }
                };
                let stored = Stored {
                    term: QuorumTerm(0),
                    voted_for: None,
                    membership,
                    log: Log::new(ClusterState::initial(config)),
                    counted: BTreeSet::new(),
                };
                (stored, true)
            }
        };
        let snapshot_index = stored.log.snapshot_index();
        let state = stored.log.snapshot.state.clone();
        Ok(Self {
            node,
            params: config.params.clone(),
            members,
            seed,
            rng,
            clock: MonotonicGuard::default(),
            started_at: None,
            term: stored.term,
            durable_term: stored.term,
            voted_for: stored.voted_for,
            membership: stored.membership,
            log: stored.log,
            counted: stored.counted,
            role: Role::Follower,
            leader: None,
            commit: snapshot_index,
            applied: snapshot_index,
            state,
            election_at: Instant::ZERO,
            leader_seen_at: None,
            prevotes: BTreeSet::new(),
            votes: BTreeSet::new(),
            vote_fence: BTreeSet::new(),
            lead: None,
            hello_at: Instant::ZERO,
            diverged: false,
            few_agents_since: None,
            demoted_until: None,
            peer_heard_at: Instant::ZERO,
            peer_heard_since_start: false,
            store_len: 0,
            isolated: false,
            gateways: None,
            probe_at: Instant::ZERO,
            probes_out: VecDeque::new(),
            gateway_ok_sent_at: None,
            dn_nodes: config
                .nodes
                .iter()
                .filter(|n| !config.instances_on(n.id).is_empty())
                .count(),
            dn_heard: 0,
            views: BTreeMap::new(),
            cut_since: None,
            cut_held_until: None,
            view_sent: None,
            next_token: 1,
            writes: VecDeque::new(),
            dirty: blank,
            out: Vec::new(),
            deferred: Vec::new(),
            next_proposal: 1,
            queued: Vec::new(),
            outcomes: Vec::new(),
        })
    }

    /// Feeds one input at `now`; returns the orders to execute, in order.
    pub fn step(&mut self, now: Instant, input: QuorumInput) -> Vec<QuorumOutput> {
        self.clock.observe(now);
        if self.started_at.is_none() {
            self.start(now);
        }
        match input {
            QuorumInput::Tick => self.on_tick(now),
            QuorumInput::Message { from, term, msg } => self.on_message(now, from, term, msg),
            QuorumInput::WriteCompleted(done) => self.on_write_completed(now, done),
            QuorumInput::AgentsConnected {
                count,
                includes_local,
            } => self.on_agents_connected(now, count, includes_local),
            QuorumInput::GatewaysProbed { reachable } => self.on_gateways_probed(now, reachable),
            QuorumInput::Flush => self.on_flush(now),
            QuorumInput::DnAgentsHeard { count } => self.on_dn_agents_heard(now, count),
        }
        self.finish(now)
    }

    /// When the quorum next wants a `Tick` (before the first step: at once).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.started_at.is_none() {
            return Some(Instant::ZERO);
        }
        let mut at = Vec::with_capacity(6);
        match &self.lead {
            Some(lead) => {
                at.push(lead.heartbeat_at);
                at.push(lead.quorum_heard_at + self.check_quorum_timeout());
                if let Some(since) = self.few_agents_since
                    && self.minority_demotion_applies()
                {
                    at.push(since + lease::DEMOTE_AFTER);
                }
                at.extend(self.cut_deadline());
            }
            None => at.push(self.election_at),
        }
        if self.sends_hellos() {
            at.push(self.hello_at);
        }
        if self.two_node_failover() {
            at.push(if self.isolated {
                self.probe_at
            } else {
                quorum_math::w2_weight_until(
                    self.peer_heard_at,
                    self.params.cms_network_isolation_timeout(),
                    self.params.max_clock_drift,
                )
            });
        }
        at.into_iter().min()
    }

    /// The observable state at `now` (`now` only decides whether the lease still holds).
    pub fn status(&self, now: Instant) -> QuorumStatus {
        QuorumStatus {
            node: self.node,
            role: self.role,
            term: self.term,
            leader: self.leader,
            voted_for: self.voted_for,
            commit_index: self.commit,
            applied_index: self.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            lease_until: self.lease_until(now),
            voter: self.is_voter(),
            membership: self.membership.clone(),
            pending_writes: self.writes.len(),
            seed: self.seed,
        }
    }

    /// The newest quorum term this node's store holds durably: the one it tells agents and
    /// answers their term checks with (SPEC §4.1), never its in-memory term. Agents reject
    /// every command below the highest quorum term they have seen, so a term they saw must
    /// survive a restart of the CMS that told them; a term not yet written may not (swarm seed
    /// 1093: a single CMS whose disk hung campaigned in memory from term 4 to 15 and told the
    /// agents in its refusals; restarted with term 3 on disk, it led term 4 for good and
    /// every agent ignored it). A leader's term is always durable: it counts its own vote only
    /// once written.
    pub fn durable_term(&self) -> QuorumTerm {
        self.durable_term
    }

    /// Whether this node has committed an entry of its own term: only then is its committed
    /// state known to hold every entry a previous leader committed (Raft §5.4.2), so only then
    /// may it tell agents which member is a group's primary (§15).
    pub fn committed_own_term(&self) -> bool {
        self.log.term_at(self.commit) == Some(self.term)
    }

    /// Whether this node leads with a valid lease at `now` (§5.2): only then may it arbitrate,
    /// answer agents, send commands or propose.
    pub fn holds_lease(&self, now: Instant) -> bool {
        self.lease_until(now).is_some()
    }

    fn lease_until(&self, now: Instant) -> Option<Instant> {
        let until = self.lead.as_ref()?.lease_until?;
        // §5.4: an isolated node in two-node mode uses its lease only while it is a quorum
        // alone (W2 while its weight counts, W1 while it may lead alone).
        if self.two_node_failover() && self.isolated && !self.alone_is_quorum(now) {
            return None;
        }
        (now < until).then_some(until)
    }

    /// The CMS nodes in config order.
    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .copied()
            .filter(move |n| *n != self.node)
    }

    fn start(&mut self, now: Instant) {
        self.started_at = Some(now);
        self.peer_heard_at = now;
        self.peer_heard_since_start = false;
        self.reset_election_timer(now);
        if self.sends_hellos() {
            self.send_hellos(now);
        }
    }

    /// Queues a message that needs no durability.
    fn send(&mut self, to: NodeId, msg: QuorumMsg) {
        self.out.push(QuorumOutput::Send {
            to,
            term: self.term,
            msg,
        });
    }

    /// Queues a message that may go out only once the current state is durable.
    fn send_durable(&mut self, to: NodeId, msg: QuorumMsg) {
        self.deferred.push(AfterWrite::Send {
            to,
            term: self.term,
            msg,
        });
    }

    fn stored(&self) -> Stored {
        Stored {
            term: self.term,
            voted_for: self.voted_for,
            membership: self.membership.clone(),
            log: self.log.clone(),
            counted: self.counted.clone(),
        }
    }

    /// Emits the write (if the state changed), then the immediate sends, then either attaches
    /// the durability-dependent actions to the newest write in flight or, when everything is
    /// already durable, performs them.
    fn finish(&mut self, now: Instant) -> Vec<QuorumOutput> {
        let mut result = Vec::new();
        loop {
            if self.dirty {
                self.dirty = false;
                let token = WriteToken(self.next_token);
                self.next_token += 1;
                let bytes = match codec::encode_persisted(&self.stored()) {
                    Ok(b) => b,
                    // Proposals are refused past STORE_BUDGET (a quarter of the frame limit
                    // below it), far above a 10,000-group cluster's snapshot (1.1 MB); if the
                    // encoding still fails, stopping is safer than acting on state that cannot
                    // be kept.
                    Err(e) => panic!("cannot encode the quorum store: {e}"),
                };
                self.store_len = bytes.len();
                result.push(QuorumOutput::Persist(PersistState { token, bytes }));
                self.writes.push_back(PendingWrite {
                    token,
                    actions: Vec::new(),
                    since: now,
                    term: self.term,
                });
            }
            result.append(&mut self.out);
            let deferred = std::mem::take(&mut self.deferred);
            if deferred.is_empty() {
                break;
            }
            if let Some(w) = self.writes.back_mut() {
                w.actions.extend(deferred);
                break;
            }
            for a in deferred {
                self.perform(now, a);
            }
        }
        result
    }

    fn on_write_completed(&mut self, now: Instant, done: WriteCompleted) {
        let Some(pos) = self.writes.iter().position(|w| w.token == done.token) else {
            return;
        };
        let completed: Vec<PendingWrite> = self.writes.drain(..=pos).collect();
        match done.result {
            Ok(()) => {
                for w in &completed {
                    self.durable_term = self.durable_term.max(w.term);
                }
                for action in completed.into_iter().flat_map(|w| w.actions) {
                    self.perform(now, action);
                }
            }
            Err(reason) => {
                tracing::warn!(node = %self.node, %reason, "quorum store write failed");
                if self.role != Role::Follower {
                    self.become_follower(now, self.term, None);
                }
                self.dirty = true;
            }
        }
    }

    fn perform(&mut self, now: Instant, action: AfterWrite) {
        match action {
            AfterWrite::Send { to, term, msg } => {
                if term == self.term {
                    self.out.push(QuorumOutput::Send { to, term, msg });
                }
            }
            AfterWrite::SelfVote { term } => {
                if self.role == Role::Candidate && term == self.term {
                    self.votes.insert(self.node);
                    self.check_election_won(now);
                }
            }
            AfterWrite::SelfAppended { term, index } => {
                if term == self.term
                    && let Some(lead) = self.lead.as_mut()
                {
                    let m = lead.matched.entry(self.node).or_default();
                    *m = (*m).max(index);
                    self.advance_commit(now);
                }
            }
            AfterWrite::Redeliver { term, from, msg } => {
                if term == self.term {
                    self.dispatch(now, from, msg);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.sends_hellos() && now >= self.hello_at {
            self.send_hellos(now);
        }
        self.check_two_node(now);
        if self.lead.is_some() {
            self.leader_tick(now);
        } else if now >= self.election_at {
            self.election_timeout(now);
        }
    }

    /// Whether `set` is a quorum of the voters (weights and the gateway rule of §5.4, from
    /// [`crate::quorum_math`]).
    fn is_quorum(&self, set: &BTreeSet<NodeId>) -> bool {
        if self.two_node_failover() && self.state.non_voters.is_empty() {
            let now = self.clock.last();
            let mine = set.contains(&self.node);
            let (w2, w1) = (self.members[0], self.members[1]);
            return quorum_math::two_node_quorum(
                set.contains(&w2),
                set.contains(&w1),
                mine && self.is_w2() && self.w2_weight_counts(now),
                mine && !self.is_w2() && self.alone_is_quorum(now),
            );
        }
        quorum_math::is_voter_quorum(&self.members, &self.state.non_voters, set)
    }

    /// The highest term `group` has or may get in this node's log: the applied state's, or
    /// what an entry not yet applied (committed or not) would give it. An agent asks it of a
    /// quorum before promoting (§4.1): a committed newer term is in the log of at least one
    /// node of any quorum, so a Failover superseded by a newer one never promotes (swarm seed
    /// 1475: a Failover read at a thaw, 30 s after it had been resent with a fresh term to
    /// another member that then acknowledged writes). An upper bound: an entry that does not
    /// commit or apply only makes a promotion wait for the leader's resend.
    pub fn group_term_bound(&self, group: GroupId) -> Term {
        let mut term = self.state.groups.get(&group).map_or(Term(0), |g| g.term);
        let mut index = self.applied;
        while index < self.log.last_index() {
            index = index.next();
            let Some(entry) = self.log.entry(index) else {
                break;
            };
            let EntryPayload::Change(change) = &entry.payload else {
                continue;
            };
            let step = |t: Term| {
                quorum_math::next_group_term(t, self.two_node_failover().then_some(entry.term))
            };
            let moved = match change {
                Change::Promote {
                    group: g,
                    expected_term,
                    ..
                }
                | Change::BeginSwitchover {
                    group: g,
                    expected_term,
                    ..
                }
                | Change::RenewSwitchoverTerm {
                    group: g,
                    expected_term,
                } if *g == group => Some(step(*expected_term)),
                Change::AbortSwitchover { group: g, term } if *g == group => Some(step(*term)),
                Change::MergeDiverged { groups } => groups.get(&group).map(|g| g.term),
                _ => None,
            };
            term = term.max(moved.unwrap_or(Term(0)));
        }
        term
    }

    /// The weight this node's confirmation of a term carries for an agent (§4.1), counted as
    /// this quorum counts it: 0 for a non-voter, the whole total while it is a quorum alone by
    /// the gateway rule, else its configured weight.
    pub fn confirmation_weight(&self) -> u32 {
        if !self.is_voter() {
            return 0;
        }
        let count = self.members.len();
        if self.two_node_failover() {
            let now = self.clock.last();
            // Alone a quorum now (W2's weight counts, or W1 leads alone): the whole total;
            // else one vote among the two.
            return if self.alone_is_quorum(now) {
                quorum_math::total_weight(count)
            } else {
                1
            };
        }
        let index = self.members.iter().position(|n| *n == self.node);
        index.map_or(0, |i| quorum_math::cms_weight(i, count))
    }

    /// The quorum term that steps group terms (§5.4): this node's, in two-node mode with
    /// failover; else none (group terms step by one).
    fn term_step(&self) -> Option<QuorumTerm> {
        self.two_node_failover().then_some(self.term)
    }

    /// Whether this node may vote (for itself or others) as far as membership goes.
    fn is_voter(&self) -> bool {
        self.membership == Membership::Voter && !self.state.non_voters.contains(&self.node)
    }

    /// Drops every proposal this node made and has not seen committed.
    fn drop_proposals(&mut self) {
        let pending = self
            .lead
            .as_mut()
            .map(|l| std::mem::take(&mut l.pending))
            .unwrap_or_default();
        for (index, id) in pending {
            if let Some(EntryPayload::Change(change)) =
                self.log.entry(index).map(|e| e.payload.clone())
            {
                self.outcomes.push(Outcome {
                    id,
                    change,
                    result: Err(OutcomeError::Dropped),
                });
            }
        }
        self.drop_queued();
    }

    /// Drops the proposals not yet appended.
    fn drop_queued(&mut self) {
        for (id, change) in std::mem::take(&mut self.queued) {
            self.outcomes.push(Outcome {
                id,
                change,
                result: Err(OutcomeError::Dropped),
            });
        }
    }
}

/// The store size past which proposals are refused: three quarters of the frame limit, so
/// that the entries already queued and the snapshot still fit.
pub(crate) const STORE_BUDGET: usize = codec::MAX_BODY_LEN / 4 * 3;

impl ReplicatedState for Quorum {
    /// Queues a change; `None` unless this node leads with a lease (as of the last step) and
    /// the queue has room. It is appended on the next [`QuorumInput::Flush`].
    fn propose(&mut self, change: Change) -> Option<ProposalId> {
        if !self.holds_lease(self.clock.last()) || self.queued.len() >= MAX_QUEUED_PROPOSALS {
            return None;
        }
        if self.store_len > STORE_BUDGET {
            tracing::error!(
                store_bytes = self.store_len,
                budget = STORE_BUDGET,
                "the replicated state is too large to grow: change refused"
            );
            return None;
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.queued.push((id, change));
        Some(id)
    }

    fn committed(&self) -> &ClusterState {
        &self.state
    }

    fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// §5.4: in two-node mode with failover, by the parity of this leader's quorum term (the
    /// term its entries carry, so every replica applies the same step).
    fn next_term(&self, current: Term) -> Term {
        quorum_math::next_group_term(current, self.term_step())
    }

    fn other_side_ended_at(&self) -> Option<Instant> {
        self.lead.as_ref().and_then(|l| l.other_side_ended_at)
    }
}
