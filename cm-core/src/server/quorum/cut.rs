//! The second minority-demotion rule (SPEC.md §5.3, ours): a leader cut from the DN agents.
//!
//! CM's rule (in `lease.rs`) demotes a leader that sees at most its own agent. A leader on a
//! CMS-only node cut from every DN node, but not from its peers or from the agents of other
//! DN-less nodes, sees several agents and keeps a lease it cannot use: no report reaches it, so
//! a primary that dies is never replaced. Hence, with D nodes hosting DNs and at least 2 CMS
//! nodes (a single CMS has no follower to compare with). Two-node setups apply it too, unlike
//! CM's rule, which SPEC §5.3 skips there, to either node. A W1 leader cut from the agents W2
//! hears hands over to W2, which confirms terms alone (swarm seeds 30 and 83: W1 kept a lease
//! it could not use and no group failed over until the cut healed). A W2 leader cut from the
//! agents W1 hears hands over to W1 (swarm seeds 824 and 1284: a restarted or rebuilt standby
//! of a synchronous group got no `Notify standby` or Build, so the group took no writes, until
//! the cut healed). It was once exempt, because every term confirmation (§4.1) needs W2's
//! weight: W1 leading can promote nobody whose agent does not reach W2 — but neither can a W2
//! that no agent reaches, while W1 can still send every command that needs no promotion. (Swarm
//! seed 607 once failed with W2 demoted: W1's disk-rule switchover demoted a primary whose
//! successor could not confirm its term; it passes now. A switchover whose target does not
//! promote ends `instance_heartbeat_timeout` after the send, see `switchover.rs`.) The rule:
//! * every CMS counts the DN-hosting nodes whose agent it heard within
//!   `instance_heartbeat_timeout` (the server machine feeds [`QuorumInput::DnAgentsHeard`]);
//! * followers send that count to their leader in a [`QuorumMsg::AgentView`] with their heartbeat
//!   acknowledgements (when it or the leader changes, and at least every [`VIEW_EVERY`]);
//!   candidates send it before their pre-votes;
//! * a leader that hears fewer than ⌊D/2⌋ + 1 of those agents AND fewer than some follower's
//!   fresh view reports ([`quorum_math::cut_from_dn_agents`]) continuously for [`CUT_AFTER`]
//!   steps down and campaigns again only after [`CUT_AFTER`] — no early release;
//! * while so held down it grants a pre-vote only to a candidate whose fresh view is at least its
//!   own count (a candidate without a fresh view counts as hearing none).
//!
//! Equal views never trigger it: an outage that every CMS sees alike does not make leaders flap.
//!
//! [`QuorumInput::DnAgentsHeard`]: super::QuorumInput::DnAgentsHeard

use core::time::Duration;

use super::{Quorum, QuorumMsg, Role};
use crate::ids::NodeId;
use crate::quorum_math;
use crate::time::Instant;

/// How long a leader may stay cut from the DN agents, and how long it then stays out of
/// elections (§5.3: 10 s, as CM's rule).
pub(super) const CUT_AFTER: Duration = Duration::from_secs(10);
/// A follower resends its unchanged view at least this often.
pub(super) const VIEW_EVERY: Duration = Duration::from_secs(1);
/// A view older than this is ignored (three resend periods).
pub(super) const VIEW_FRESH: Duration = Duration::from_secs(3);

impl Quorum {
    /// Whether the second rule applies: ≥ 2 CMS nodes and at least one DN-hosting node.
    pub(super) fn cut_rule_applies(&self) -> bool {
        self.members.len() >= 2 && self.dn_nodes > 0
    }

    /// The machine's count of DN-hosting agents heard changed.
    pub(super) fn on_dn_agents_heard(&mut self, now: Instant, count: usize) {
        self.dn_heard = count;
        self.update_cut(now);
    }

    /// A peer's view arrived (the term already equals ours).
    pub(super) fn on_agent_view(&mut self, now: Instant, from: NodeId, dn_agents: u32) {
        let count = usize::try_from(dn_agents).unwrap_or(usize::MAX);
        self.views.insert(from, (count, now));
        self.update_cut(now);
    }

    /// The fresh view of `peer` at `now`, if any.
    fn view_of(&self, now: Instant, peer: NodeId) -> Option<usize> {
        self.views
            .get(&peer)
            .filter(|(_, at)| now < *at + VIEW_FRESH)
            .map(|(c, _)| *c)
    }

    /// Starts or ends the leader's "cut" span as the condition changes.
    pub(super) fn update_cut(&mut self, now: Instant) {
        if self.role != Role::Leader || !self.cut_rule_applies() {
            self.cut_since = None;
            return;
        }
        let best = self
            .members
            .iter()
            .filter(|n| **n != self.node)
            .filter_map(|n| self.view_of(now, *n))
            .max();
        if quorum_math::cut_from_dn_agents(self.dn_heard, self.dn_nodes, best) {
            self.cut_since.get_or_insert(now);
        } else {
            self.cut_since = None;
        }
    }

    /// Leader side: steps down once cut for [`CUT_AFTER`]. Returns whether it did.
    pub(super) fn check_cut(&mut self, now: Instant) -> bool {
        self.update_cut(now);
        let Some(since) = self.cut_since else {
            return false;
        };
        if now < since + CUT_AFTER {
            return false;
        }
        tracing::warn!(
            node = %self.node,
            heard = self.dn_heard,
            dn_nodes = self.dn_nodes,
            "minority demotion: cut from the DN agents that followers hear"
        );
        self.cut_held_until = Some(now + CUT_AFTER);
        self.cut_since = None;
        self.step_down(now);
        true
    }

    /// When the leader steps down if nothing changes.
    pub(super) fn cut_deadline(&self) -> Option<Instant> {
        self.cut_since.map(|s| s + CUT_AFTER)
    }

    /// Whether the second rule holds this node out of elections at `now`.
    pub(super) fn cut_held(&self, now: Instant) -> bool {
        self.cut_held_until.is_some_and(|u| now < u)
    }

    /// Pre-vote condition while held down: the candidate hears at least as many DN-hosting
    /// agents as this node (a candidate without a fresh view hears none).
    pub(super) fn cut_allows_pre_vote(&self, now: Instant, candidate: NodeId) -> bool {
        !self.cut_held(now) || self.view_of(now, candidate).unwrap_or(0) >= self.dn_heard
    }

    /// Follower side: sends its view to `leader` with an acknowledgement when it changed, the
    /// leader or term changed, or [`VIEW_EVERY`] passed.
    pub(super) fn send_view_to_leader(&mut self, now: Instant, leader: NodeId) {
        if !self.cut_rule_applies() {
            return;
        }
        let due = match self.view_sent {
            Some((to, term, count, at)) => {
                to != leader
                    || term != self.term
                    || count != self.dn_heard
                    || now >= at + VIEW_EVERY
            }
            None => true,
        };
        if due {
            self.view_sent = Some((leader, self.term, self.dn_heard, now));
            self.send(leader, self.agent_view());
        }
    }

    /// Candidate side: the view sent before each pre-vote.
    pub(super) fn view_before_pre_vote(&mut self, to: NodeId) {
        if self.cut_rule_applies() {
            self.send(to, self.agent_view());
        }
    }

    fn agent_view(&self) -> QuorumMsg {
        QuorumMsg::AgentView {
            dn_agents: u32::try_from(self.dn_heard).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
#[path = "cut_tests.rs"]
mod tests;
