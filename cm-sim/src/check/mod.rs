//! Invariants S1–S8, F and liveness (SPEC §13–§15), and the timing figures of SPEC §12,
//! computed from what the world observes: daemon `status()` (through adapters), frames on the
//! wire, and the database model. Nothing here steers the run.
//!
//! One file per invariant, each with the state it keeps (as TigerBeetle keeps its checkers):
//! adding one touches only its file, a field here and the call that feeds it. This file holds
//! what they share — the violation list, the two-node concession, the fault time — and the
//! timing figures.

mod flapping;
mod history;
pub mod liveness;
mod s1_leases;
mod s2_terms;
mod s3_s5_lineage;
mod s4_dual_writable;
mod s6_held_start;
mod s7_resources;
mod s8_primary_answers;

pub use flapping::{FLAP_LIMIT, FLAP_WINDOW};

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::dn::DnAction;
use cm_core::msg::{CmsCommand, Endpoint, Msg};
use cm_core::params::SyncMode;
use cm_core::{CmdStamp, GroupId, InstanceId, Instant, NodeId, QuorumTerm, Term};

use crate::daemon::ServerObs;
use crate::db::Databases;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// When (simulated).
    pub at: Instant,
    /// Which rule: S1..S6 or L (liveness).
    pub rule: &'static str,
    /// What was seen.
    pub message: String,
}

/// A cm_server's observable state at one instant, with its local clock reading.
#[derive(Clone, Debug)]
pub struct ServerView {
    /// Its node.
    pub node: NodeId,
    /// Its local clock now.
    pub local_now: Instant,
    /// Its process incarnation.
    pub incarnation: u64,
    /// What it shows (shared with the world's cache until the server next steps).
    pub obs: std::sync::Arc<ServerObs>,
}

impl ServerView {
    /// Whether it holds a lease right now.
    pub fn holds_lease(&self) -> bool {
        self.obs.leader && self.obs.lease_until.is_some_and(|u| self.local_now < u)
    }
}

/// Collects violations and timings over a run.
#[derive(Debug)]
pub struct Checker {
    /// Violations found, in order (deduplicated).
    pub violations: Vec<Violation>,
    reported: std::collections::BTreeSet<(&'static str, String)>,
    sync: bool,
    /// The group the timings are about.
    pub affected_group: GroupId,
    /// The first fault's time.
    pub fault_at: Option<Instant>,
    /// Node whose agent's silence `agent_last_report_s` measures.
    pub affected_node: Option<NodeId>,
    group_of: BTreeMap<InstanceId, GroupId>,
    /// First-occurrence instants of the figures.
    pub firsts: BTreeMap<&'static str, Instant>,
    /// Total time with two members able to acknowledge.
    pub dual_writable: Duration,
    /// Acknowledged writes lost.
    pub lost_acked_writes: u64,
    leader_term_at_fault: Option<QuorumTerm>,
    max_leader_term: QuorumTerm,
    /// Deliveries of agent reports to a cm_server, per agent node.
    pub reports: BTreeMap<NodeId, Vec<Instant>>,
    /// Acknowledged writes in total.
    pub acks_total: u64,
    /// Last acknowledgement per group.
    pub last_ack: BTreeMap<GroupId, Instant>,
    /// The longest span after the first fault without an acknowledged write in the affected
    /// group (`unwritable_max_s`).
    pub unwritable_max: Duration,
    /// Distinct (term) `Switchover` commands sent to the affected group after the fault.
    switchover_terms: std::collections::BTreeSet<Term>,
    /// Two-node mode with both CMS nodes reaching the gateway right now: SPEC §5.4 trades
    /// simultaneous leases and S4 for availability in this span (reported, not failed).
    pub two_node_concession: bool,
    /// How long after the concession ends a dual window opened in it may last before it fails
    /// S4: the time healing takes to fence the primary of the lower side (set from the
    /// parameters by the world; zero judges at once).
    pub heal_fence_bound: Duration,
    /// When the concession last ended.
    concession_ended: Option<Instant>,
    /// What was reported under that concession (not violations).
    pub conceded: Vec<Violation>,
    s1: s1_leases::S1,
    s2: s2_terms::S2,
    lineage: s3_s5_lineage::Lineage,
    s4: s4_dual_writable::S4,
    s7: s7_resources::S7,
    s8: s8_primary_answers::S8,
    flapping: flapping::Flapping,
    /// The server observations the last `check_state` saw: S2 and F read only what a server
    /// shows, so a server still showing the same (shared) observation has nothing new for them.
    obs_checked: Vec<std::sync::Arc<ServerObs>>,
}

impl Checker {
    /// A checker for a cluster.
    pub fn new(config: &cm_core::config::ClusterConfig, affected_group: GroupId) -> Self {
        let group_of = config
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(move |m| (m.instance, g.id)))
            .collect();
        Self {
            violations: Vec::new(),
            reported: std::collections::BTreeSet::new(),
            sync: config.params.dn_sync_mode == SyncMode::Quorum,
            affected_group,
            fault_at: None,
            affected_node: None,
            group_of,
            firsts: BTreeMap::new(),
            dual_writable: Duration::ZERO,
            lost_acked_writes: 0,
            leader_term_at_fault: None,
            max_leader_term: QuorumTerm(0),
            reports: BTreeMap::new(),
            acks_total: 0,
            last_ack: BTreeMap::new(),
            unwritable_max: Duration::ZERO,
            switchover_terms: std::collections::BTreeSet::new(),
            two_node_concession: false,
            conceded: Vec::new(),
            heal_fence_bound: Duration::ZERO,
            concession_ended: None,
            s1: Default::default(),
            s2: Default::default(),
            lineage: Default::default(),
            s4: Default::default(),
            s7: Default::default(),
            s8: Default::default(),
            flapping: Default::default(),
            obs_checked: Vec::new(),
        }
    }

    /// Whether `s` shows something the last `check_state` did not see (a server that stepped
    /// since, or a new one).
    fn obs_changed(&self, s: &ServerView) -> bool {
        !self
            .obs_checked
            .iter()
            .any(|o| std::sync::Arc::ptr_eq(o, &s.obs))
    }

    /// Reports what SPEC §5.4 concedes in two-node mode (once per rule and message).
    fn concede(&mut self, at: Instant, rule: &'static str, message: String) {
        if self.reported.insert((rule, format!("conceded {message}"))) {
            self.conceded.push(Violation { at, rule, message });
        }
    }

    /// Records a violation (once per rule and message).
    pub fn violate(&mut self, at: Instant, rule: &'static str, message: String) {
        let key = message.clone();
        self.violate_once(at, rule, key, message);
    }

    /// Records a violation once per `(rule, key)`: a lasting condition is reported where it
    /// began, not at every event.
    pub(crate) fn violate_keyed(
        &mut self,
        at: Instant,
        rule: &'static str,
        key: String,
        message: String,
    ) {
        self.violate_once(at, rule, key, message);
    }

    fn violate_once(&mut self, at: Instant, rule: &'static str, key: String, message: String) {
        if self.reported.insert((rule, key)) {
            self.violations.push(Violation { at, rule, message });
        }
    }

    fn first(&mut self, name: &'static str, at: Instant) {
        if self.fault_at.is_some_and(|f| at >= f) {
            self.firsts.entry(name).or_insert(at);
        }
    }

    /// A report of `node`'s agent reached a cm_server.
    pub fn on_report(&mut self, node: NodeId, at: Instant) {
        let list = self.reports.entry(node).or_default();
        if list.last() != Some(&at) {
            list.push(at);
        }
    }

    /// The first fault happened now.
    pub fn on_fault(&mut self, at: Instant, affected_node: Option<NodeId>) {
        if self.fault_at.is_none() {
            self.fault_at = Some(at);
            self.affected_node = affected_node;
            self.leader_term_at_fault = Some(self.max_leader_term);
        }
    }

    /// A frame left `from` (sent on an open connection).
    pub fn on_send(&mut self, at: Instant, from: Endpoint, msg: &Msg, quorum_term: QuorumTerm) {
        let Msg::Command(c) = msg else {
            return;
        };
        let stamp = CmdStamp {
            quorum_term,
            seq: c.seq,
        };
        match &c.cmd {
            CmsCommand::Failover { term, .. } | CmsCommand::Switchover { term } => {
                if matches!(c.cmd, CmsCommand::Failover { .. }) {
                    self.first("failover_sent_s", at);
                }
                let Some(group) = self.group_of.get(&c.instance).copied() else {
                    return;
                };
                if matches!(c.cmd, CmsCommand::Switchover { .. })
                    && group == self.affected_group
                    && self.fault_at.is_some_and(|f| at >= f)
                {
                    self.switchover_terms.insert(*term);
                }
                self.s2_promotion_sent(at, from, group, *term, c.instance, stamp);
            }
            CmsCommand::Restart => self.first("restart_sent_s", at),
            CmsCommand::Build { .. } => self.first("build_sent_s", at),
            CmsCommand::SetReadOnly { on: true } => self.first("read_only_on_s", at),
            CmsCommand::SetReadOnly { on: false } => self.first("read_only_off_s", at),
            _ => {}
        }
    }

    /// A DN action was executed (S2 promotions, S6 restarts).
    pub fn on_dn_action(
        &mut self,
        at: Instant,
        instance: InstanceId,
        action: &DnAction,
        kept_stopped: bool,
        paused: bool,
    ) {
        self.s2_action(at, instance, action);
        self.s6_action(at, instance, action, kept_stopped, paused);
    }

    /// An agent killed its own primary (self-fence or peer check).
    pub fn on_self_fence(&mut self, at: Instant) {
        self.first("self_fenced_s", at);
    }

    /// After every event: S1, S2 (terms monotonic), S4 and the leader/dual-writable figures.
    pub fn check_state(
        &mut self,
        at: Instant,
        servers: &[ServerView],
        dbs: &Databases,
        frozen: &dyn Fn(NodeId) -> bool,
        agents_alive: &dyn Fn(NodeId) -> bool,
    ) {
        self.check_leaders(at, servers);
        if servers.iter().any(|s| self.obs_changed(s)) {
            self.check_terms(at, servers);
            self.check_history(at, servers);
            self.check_switchover_flapping(at, servers);
            self.obs_checked.clear();
            self.obs_checked
                .extend(servers.iter().map(|s| std::sync::Arc::clone(&s.obs)));
        }
        if self.two_node_concession {
            self.concession_ended = None;
        } else if !self.s4.conceded_dual.is_empty()
            || !self.s8.conceded.is_empty()
            || self.s7_pending()
        {
            self.concession_ended.get_or_insert(at);
        }
        let fence_due = self.fence_due(at);
        self.check_dual_writable(at, dbs, frozen, agents_alive, fence_due);
    }

    /// Whether the two-node concession ended at least the healing fence bound before `at`.
    fn fence_due(&self, at: Instant) -> bool {
        self.concession_ended
            .is_some_and(|e| at >= e + self.heal_fence_bound)
    }

    /// The affected group had no acknowledged write since its last one (or the fault) until `at`.
    fn note_unwritable_until(&mut self, at: Instant) {
        let Some(fault) = self.fault_at else {
            return;
        };
        let since = self
            .last_ack
            .get(&self.affected_group)
            .map_or(fault, |l| (*l).max(fault));
        if at > since {
            self.unwritable_max = self.unwritable_max.max(at - since);
        }
    }

    /// Closes open dual-writable windows at the end of the run.
    pub fn finish(&mut self, at: Instant) {
        self.note_unwritable_until(at);
        for (_, since) in std::mem::take(&mut self.s4.dual_since) {
            self.dual_writable += at - since;
        }
    }

    /// The timing figures of SPEC §12 (seconds from the first fault; null when absent).
    pub fn timings(
        &self,
        heartbeat_timeout: Duration,
        end: Instant,
    ) -> BTreeMap<&'static str, Option<f64>> {
        let mut out = BTreeMap::new();
        let fault = self.fault_at;
        let rel = |t: Instant| fault.map(|f| (t.as_nanos() as f64 - f.as_nanos() as f64) / 1e9);
        // One entry per name of `TIMING_NAMES` (SPEC §12), in its order; most are the first
        // instant of their event after the fault.
        for name in crate::scenario::TIMING_NAMES {
            let value = match *name {
                "fault_at_s" => fault.map(|f| f.as_secs_f64()),
                "agent_last_report_s" => self
                    .silent_agent_last_report(heartbeat_timeout, end)
                    .and_then(rel),
                "dual_writable_ms" => Some(self.dual_writable.as_secs_f64() * 1000.0),
                "lost_acked_writes" => Some(self.lost_acked_writes as f64),
                "switchovers_sent" => fault.map(|_| self.switchover_terms.len() as f64),
                "switchovers_begun" => fault.map(|f| {
                    self.flapping
                        .begun
                        .iter()
                        .filter(|((g, _), t)| *g == self.affected_group && **t >= f)
                        .count() as f64
                }),
                "unwritable_max_s" => fault.map(|_| self.unwritable_max.as_secs_f64()),
                first => self.firsts.get(first).and_then(|t| rel(*t)),
            };
            out.insert(*name, value);
        }
        out
    }

    /// The last report before the affected agent's first silence of at least
    /// `heartbeat_timeout` / 2 that overlaps the time after the fault.
    fn silent_agent_last_report(
        &self,
        heartbeat_timeout: Duration,
        end: Instant,
    ) -> Option<Instant> {
        let fault = self.fault_at?;
        let gap = heartbeat_timeout / 2;
        let reports = self.reports.get(&self.affected_node?)?;
        for (i, r) in reports.iter().enumerate() {
            let next = reports.get(i + 1).copied().unwrap_or(end);
            if next > fault && next - *r >= gap {
                return Some(*r);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
