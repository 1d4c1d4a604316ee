//! Invariants S1–S6 and liveness (SPEC §13), and the timing figures of SPEC §12, computed from
//! what the world observes: daemon `status()` (through adapters), frames on the wire, and the
//! database model. Nothing here steers the run.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::dn::DnAction;
use cm_core::msg::{CmsCommand, Endpoint, Msg};
use cm_core::params::SyncMode;
use cm_core::{CmdStamp, GroupId, InstanceId, Instant, Lsn, NodeId, QuorumTerm, Term, Timeline};

use crate::daemon::ServerObs;
use crate::db::{Ack, Databases, Promotion};

/// The span of the switchover-flapping check (F): the §4.4 restart window.
pub const FLAP_WINDOW: Duration = Duration::from_secs(600);
/// Switchovers a group may begin within [`FLAP_WINDOW`] beyond the operator's requests.
pub const FLAP_LIMIT: usize = 3;

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
    /// What it shows.
    pub obs: ServerObs,
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
    dual_since: BTreeMap<GroupId, Instant>,
    /// Groups whose two `/primary` 200s (S8) began under the two-node concession and have not
    /// ended since: judged, like S4's windows, once healing had the time to fence (§5.4).
    conceded_s8: std::collections::BTreeSet<GroupId>,
    /// Resources (S7 keys) that began running on two nodes under the two-node concession and
    /// have not stopped since: judged like S8's.
    conceded_s7: std::collections::BTreeSet<String>,
    /// Total time with two members able to acknowledge.
    pub dual_writable: Duration,
    /// Acknowledged writes lost.
    pub lost_acked_writes: u64,
    acked: BTreeMap<GroupId, BTreeMap<Timeline, Vec<Lsn>>>,
    lost_marked: BTreeMap<(GroupId, Timeline), usize>,
    commands: BTreeMap<(GroupId, Term), (InstanceId, CmdStamp)>,
    promote_terms: BTreeMap<(GroupId, Term), InstanceId>,
    leaders: BTreeMap<QuorumTerm, NodeId>,
    terms_seen: BTreeMap<(NodeId, u64), BTreeMap<GroupId, Term>>,
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
    /// Switchovers begun (distinct committed switchover terms, as any cm_server shows them):
    /// the group and term → when first seen.
    switchovers_begun: BTreeMap<(GroupId, Term), Instant>,
    /// When the operator asked for a switchover (`ctl switchover`).
    switchover_requests: Vec<Instant>,
    /// Two-node mode with both CMS nodes reaching the gateway right now: SPEC §5.4 trades
    /// simultaneous leases and S4 for availability in this span (reported, not failed).
    pub two_node_concession: bool,
    /// How long after the concession ends a dual window opened in it may last before it fails
    /// S4: the time healing takes to fence the lower side's primary (set from the parameters
    /// by the world; zero judges at once).
    pub heal_fence_bound: Duration,
    /// When the concession last ended.
    concession_ended: Option<Instant>,
    /// What was reported under that concession (not violations).
    pub conceded: Vec<Violation>,
    conceded_dual: std::collections::BTreeSet<GroupId>,
    /// (node, incarnation, quorum term) → the latest lease end (its local clock) it showed
    /// during the two-node concession: a lease granted in the span outlives it by at most its
    /// length.
    span_leases: BTreeMap<(NodeId, u64, QuorumTerm), Instant>,
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
            dual_since: BTreeMap::new(),
            conceded_s8: std::collections::BTreeSet::new(),
            conceded_s7: std::collections::BTreeSet::new(),
            dual_writable: Duration::ZERO,
            lost_acked_writes: 0,
            acked: BTreeMap::new(),
            lost_marked: BTreeMap::new(),
            commands: BTreeMap::new(),
            promote_terms: BTreeMap::new(),
            leaders: BTreeMap::new(),
            terms_seen: BTreeMap::new(),
            leader_term_at_fault: None,
            max_leader_term: QuorumTerm(0),
            reports: BTreeMap::new(),
            acks_total: 0,
            last_ack: BTreeMap::new(),
            unwritable_max: Duration::ZERO,
            switchover_terms: std::collections::BTreeSet::new(),
            switchovers_begun: BTreeMap::new(),
            switchover_requests: Vec::new(),
            two_node_concession: false,
            conceded: Vec::new(),
            conceded_dual: std::collections::BTreeSet::new(),
            span_leases: BTreeMap::new(),
            heal_fence_bound: Duration::ZERO,
            concession_ended: None,
        }
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
                match self.commands.get(&(group, *term)) {
                    Some((inst, s)) if *inst != c.instance || *s != stamp => {
                        let msg = format!(
                            "S2: two promotions sent for {group} {term}: {inst} ({s}) and {} ({stamp}) by {from}",
                            c.instance
                        );
                        self.violate(at, "S2", msg);
                    }
                    Some(_) => {}
                    None => {
                        self.commands.insert((group, *term), (c.instance, stamp));
                    }
                }
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
        if let DnAction::Promote { term } = action {
            let group = self.group_of.get(&instance).copied().unwrap_or_default();
            if let Some(prev) = self.promote_terms.insert((group, *term), instance)
                && prev != instance
            {
                let m = format!("S2: {prev} and {instance} both promoted with {group} {term}");
                self.violate(at, "S2", m);
            }
        }
        if matches!(action, DnAction::StartPending) && (kept_stopped || paused) {
            let why = if kept_stopped {
                "its manual-start flag exists"
            } else {
                "the cluster is paused"
            };
            self.violate(at, "S6", format!("S6: {instance} started while {why}"));
        }
    }

    /// An agent killed its own primary (self-fence or peer check).
    pub fn on_self_fence(&mut self, at: Instant) {
        self.first("self_fenced_s", at);
    }

    /// Writes were acknowledged (by the primaries whose histories are given).
    pub fn on_acks(&mut self, at: Instant, acks: &[Ack], dbs: &Databases) {
        for a in acks {
            self.acks_total += 1;
            if a.group == self.affected_group {
                self.note_unwritable_until(at);
            }
            self.last_ack.insert(a.group, at);
            if a.group == self.affected_group && self.fault_at.is_some_and(|f| a.accepted_at > f) {
                self.first("writable_again_s", at);
            }
            let lsns = self
                .acked
                .entry(a.group)
                .or_default()
                .entry(a.position.timeline)
                .or_default();
            let pos = lsns.partition_point(|l| *l <= a.position.lsn);
            lsns.insert(pos, a.position.lsn);
        }
        let mut ackers: Vec<(GroupId, InstanceId)> =
            acks.iter().map(|a| (a.group, a.instance)).collect();
        ackers.dedup();
        for (g, i) in ackers {
            if let Some(inst) = dbs.get(i) {
                let history = inst.history.clone();
                self.check_lineage(at, g, i, &history, inst.position());
            }
        }
    }

    /// A promotion took effect: S5 (its position covers every acknowledged commit) and S3.
    pub fn on_promotion(&mut self, at: Instant, p: &Promotion) {
        self.check_lineage(at, p.group, p.instance, &p.history, p.before);
    }

    /// S3/S5: every acknowledged write of `group` must lie on `history` up to `upto` (the
    /// position of a member that is promoted or acknowledging). Writes past a fork are lost;
    /// each is counted once.
    fn check_lineage(
        &mut self,
        at: Instant,
        group: GroupId,
        instance: InstanceId,
        history: &cm_core::dn::History,
        upto: cm_core::Position,
    ) {
        if !self.sync {
            return;
        }
        let Some(by_tli) = self.acked.get(&group) else {
            return;
        };
        let mut lost = Vec::new();
        for (tli, lsns) in by_tli {
            let end = if *tli == upto.timeline {
                Some(upto.lsn)
            } else {
                history
                    .forks
                    .iter()
                    .find(|(t, _)| t == tli)
                    .map(|(_, e)| *e)
            };
            let kept = end.map_or(0, |e| lsns.partition_point(|l| *l <= e));
            if kept < lsns.len() {
                lost.push((*tli, kept, lsns.len(), lsns[lsns.len() - 1]));
            }
        }
        for (tli, kept, total, max) in lost {
            let marked = self.lost_marked.entry((group, tli)).or_insert(kept);
            if total > *marked {
                self.lost_acked_writes += (total - *marked) as u64;
                *marked = total;
            }
            let m = format!(
                "S3/S5: {instance} at {upto} does not hold acknowledged writes up to {}/{:X}",
                tli.0, max.0
            );
            let key = format!("{group}/{instance}/{}", tli.0);
            self.violate_once(at, "S3", key, m);
        }
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
        self.check_terms(at, servers);
        self.check_switchover_flapping(at, servers);
        if self.two_node_concession {
            self.concession_ended = None;
        } else if !self.conceded_dual.is_empty()
            || !self.conceded_s8.is_empty()
            || !self.conceded_s7.is_empty()
        {
            self.concession_ended.get_or_insert(at);
        }
        let fence_due = self
            .concession_ended
            .is_some_and(|e| at >= e + self.heal_fence_bound);
        let groups: Vec<GroupId> = self.dual_since_keys(dbs);
        for g in groups {
            let able = dbs.can_acknowledge(g, frozen);
            let dual = able.len() >= 2;
            let judge = match (dual, self.dual_since.get(&g).copied()) {
                (true, None) => {
                    self.dual_since.insert(g, at);
                    true
                }
                // A window opened under the two-node concession is judged once it ends and
                // healing had the time to fence the lower side's primary (§5.4, §4.4).
                (true, Some(_)) => {
                    !self.two_node_concession && fence_due && self.conceded_dual.remove(&g)
                }
                (false, Some(since)) => {
                    self.dual_writable += at - since;
                    self.dual_since.remove(&g);
                    self.conceded_dual.remove(&g);
                    false
                }
                (false, None) => false,
            };
            if judge {
                let agents = able
                    .iter()
                    .all(|i| dbs.get(*i).is_some_and(|d| agents_alive(d.node)));
                if self.sync || agents {
                    let m = format!("S4: {g}: {able:?} can all acknowledge commits");
                    if self.two_node_concession {
                        self.conceded_dual.insert(g);
                        self.concede(at, "S4", m);
                    } else {
                        self.violate(at, "S4", m);
                    }
                }
            }
        }
    }

    /// The operator asked for a switchover now.
    pub fn on_switchover_request(&mut self, at: Instant) {
        self.switchover_requests.push(at);
    }

    /// F (SPEC §4.4, §4.5; nemesis issue 16): the CMS does not start switchovers again and
    /// again. Within any 10 minutes a group begins at most [`FLAP_LIMIT`] switchovers beyond
    /// the operator's requests (of any group) in that span. The restart-count rule of §4.4
    /// fires only for a primary restarted more than 3 times in 10 minutes and must not fire
    /// again for the same restarts after its switchover aborted; before that fix a failover
    /// onto a DN that had crash-restarted, with a standby that did not stream, started and
    /// aborted a switchover every few seconds for ten minutes.
    fn check_switchover_flapping(&mut self, at: Instant, servers: &[ServerView]) {
        let mut fresh = Vec::new();
        for s in servers {
            for (g, t) in &s.obs.switchover_terms {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.switchovers_begun.entry((*g, *t))
                {
                    e.insert(at);
                    fresh.push(*g);
                }
            }
        }
        for g in fresh {
            let from = at.saturating_sub(FLAP_WINDOW);
            let begun = self
                .switchovers_begun
                .iter()
                .filter(|((gg, _), t)| *gg == g && **t >= from)
                .count();
            let asked = self
                .switchover_requests
                .iter()
                .filter(|t| **t >= from)
                .count();
            if begun > asked + FLAP_LIMIT {
                let m = format!(
                    "F: {g} began {begun} switchovers within {} s with {asked} requested \
                     (a switchover started and aborted again and again, SPEC §4.4/§4.5)",
                    FLAP_WINDOW.as_secs()
                );
                self.violate_keyed(at, "F", format!("{g}"), m);
            }
        }
    }

    /// S8 (ours, SPEC §15): `/primary` never answers 200 on two members of a group at once
    /// while their agents run (`writable` lists only running agents' answers); under §5.4's
    /// two-node concession it is reported, not failed.
    /// Also times `primary_http_lost_s`: the first instant after the fault at which no member
    /// of the affected group answers `/primary` with 200.
    pub fn check_primary_answers(&mut self, at: Instant, writable: &[(NodeId, InstanceId)]) {
        let mut by_group: BTreeMap<GroupId, Vec<InstanceId>> = BTreeMap::new();
        for (_, i) in writable {
            let g = self.group_of.get(i).copied().unwrap_or_default();
            by_group.entry(g).or_default().push(*i);
        }
        if !by_group.contains_key(&self.affected_group) {
            self.first("primary_http_lost_s", at);
        }
        let dual: Vec<(GroupId, Vec<InstanceId>)> =
            by_group.into_iter().filter(|(_, v)| v.len() > 1).collect();
        self.conceded_s8
            .retain(|g| dual.iter().any(|(d, _)| d == g));
        let fence_due = self
            .concession_ended
            .is_some_and(|e| at >= e + self.heal_fence_bound);
        for (g, insts) in dual {
            let m = format!("S8: {g}: /primary answers 200 on {insts:?} at once");
            if self.two_node_concession {
                self.conceded_s8.insert(g);
                self.concede(at, "S8", m);
            } else if self.conceded_s8.contains(&g) && !fence_due {
                // Opened in the span: healing fences the lower side within the bound (§5.4).
            } else {
                self.conceded_s8.remove(&g);
                let key = format!("{g}/{insts:?}");
                self.violate_keyed(at, "S8", key, m);
            }
        }
    }

    /// S7's first half (SPEC §14, ours): `with_primary_of` resources now running on two nodes
    /// at once while their agents run, as (key, message, grace). A resource follows its
    /// group's primary, so under §5.4's two-node concession — which trades S4 (two primaries)
    /// for availability — it runs on both sides: reported, not failed, like S8; one that began
    /// in the span is judged once healing had the time to fence the lower side's primary
    /// (`heal_fence_bound`) and that side's agent the `grace` to stop the resource.
    pub(crate) fn check_resources_twice(
        &mut self,
        at: Instant,
        twice: Vec<(String, String, Duration)>,
    ) {
        self.conceded_s7
            .retain(|k| twice.iter().any(|(t, _, _)| t == k));
        for (key, m, grace) in twice {
            let due = self
                .concession_ended
                .is_some_and(|e| at >= e + self.heal_fence_bound + grace);
            if self.two_node_concession {
                self.conceded_s7.insert(key);
                self.concede(at, "S7", m);
            } else if self.conceded_s7.contains(&key) && !due {
                // Began in the span: healing stops the lower side's within the bound.
            } else {
                self.conceded_s7.remove(&key);
                self.violate_keyed(at, "S7", key, m);
            }
        }
    }

    fn dual_since_keys(&self, dbs: &Databases) -> Vec<GroupId> {
        let mut gs: Vec<GroupId> = dbs.instances.values().map(|i| i.group).collect();
        gs.dedup();
        gs
    }

    fn check_leaders(&mut self, at: Instant, servers: &[ServerView]) {
        let holders: Vec<&ServerView> = servers.iter().filter(|s| s.holds_lease()).collect();
        if self.two_node_concession {
            for s in &holders {
                let until = s.obs.lease_until.unwrap_or(Instant::ZERO);
                let key = (s.node, s.incarnation, s.obs.quorum_term);
                let seen = self.span_leases.entry(key).or_default();
                *seen = (*seen).max(until);
            }
        }
        if holders.len() > 1 {
            let nodes: Vec<String> = holders.iter().map(|s| s.node.to_string()).collect();
            let m = format!("S1: leases held at once by {}", nodes.join(", "));
            // SPEC §5.4 trades single leases while both sides reach the gateway; a lease
            // granted in that span runs out after it (at most one lease length), and is
            // reported with it, not failed. Two leases renewed after the span fail.
            let renewed = holders
                .iter()
                .filter(|s| {
                    let key = (s.node, s.incarnation, s.obs.quorum_term);
                    let from_span = self.span_leases.get(&key);
                    from_span.is_none_or(|u| s.obs.lease_until.is_none_or(|l| l > *u))
                })
                .count();
            if self.two_node_concession || renewed <= 1 {
                self.concede(at, "S1", m);
            } else {
                self.violate(at, "S1", m);
            }
        }
        for s in servers.iter().filter(|s| s.obs.leader) {
            let t = s.obs.quorum_term;
            match self.leaders.get(&t) {
                Some(n) if *n != s.node => {
                    let m = format!("S1: {n} and {} both lead {t}", s.node);
                    self.violate(at, "S1", m);
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(t, s.node);
                }
            }
        }
        for s in holders {
            self.max_leader_term = self.max_leader_term.max(s.obs.quorum_term);
            if self
                .leader_term_at_fault
                .is_some_and(|t| s.obs.quorum_term > t)
            {
                self.first("cms_leader_s", at);
            }
        }
    }

    fn check_terms(&mut self, at: Instant, servers: &[ServerView]) {
        for s in servers {
            let seen = self.terms_seen.entry((s.node, s.incarnation)).or_default();
            let mut bad = Vec::new();
            for (g, t) in &s.obs.group_terms {
                if let Some(prev) = seen.insert(*g, *t)
                    && *t < prev
                {
                    bad.push(format!("S2: {} saw {g} go from {prev} back to {t}", s.node));
                }
            }
            for m in bad {
                self.violate(at, "S2", m);
            }
        }
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
        for (_, since) in std::mem::take(&mut self.dual_since) {
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
        out.insert("fault_at_s", fault.map(|f| f.as_secs_f64()));
        for name in [
            "failover_sent_s",
            "writable_again_s",
            "restart_sent_s",
            "build_sent_s",
            "read_only_on_s",
            "read_only_off_s",
            "cms_leader_s",
            "self_fenced_s",
            "primary_http_lost_s",
        ] {
            out.insert(name, self.firsts.get(name).and_then(|t| rel(*t)));
        }
        out.insert(
            "agent_last_report_s",
            self.silent_agent_last_report(heartbeat_timeout, end)
                .and_then(rel),
        );
        out.insert(
            "dual_writable_ms",
            Some(self.dual_writable.as_secs_f64() * 1000.0),
        );
        out.insert("lost_acked_writes", Some(self.lost_acked_writes as f64));
        out.insert(
            "switchovers_sent",
            fault.map(|_| self.switchover_terms.len() as f64),
        );
        out.insert(
            "switchovers_begun",
            fault.map(|f| {
                self.switchovers_begun
                    .iter()
                    .filter(|((g, _), t)| *g == self.affected_group && **t >= f)
                    .count() as f64
            }),
        );
        out.insert(
            "unwritable_max_s",
            fault.map(|_| self.unwritable_max.as_secs_f64()),
        );
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
#[path = "check_tests.rs"]
mod tests;
