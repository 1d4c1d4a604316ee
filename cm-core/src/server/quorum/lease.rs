//! The leader's lease and the reasons a leader steps down (SPEC.md §5.1–§5.4).
//!
//! * **Lease (§5.2).** Each heartbeat round records its send time. When a quorum (the leader
//!   included) has acknowledged a round, the lease runs until that send time plus
//!   `min_election_timeout × (1 − ρ)/(1 + ρ)`. Why it is safe: every acknowledging voter got the
//!   round after it was sent and then refuses votes for `min_election_timeout` on its own clock;
//!   with rates within 1 ± ρ the lease ends (in real time) no later than the earliest of those
//!   refusals ends, and any new leader needs the vote of one of them. A voter that restarts
//!   forgets, hence the start-up hold-off of `max_election_timeout × (1 + ρ)/(1 − ρ)`.
//! * **Check-quorum.** A leader whose newest quorum-acknowledged round was sent more than the
//!   minimum election timeout ago steps down.
//! * **Minority demotion (§5.3).** With ≥ 3 CMS nodes, a leader connected to no agent, or only
//!   to its own node's, for [`DEMOTE_AFTER`] steps down and does not campaign until it sees two
//!   agents or [`DEMOTE_AFTER`] passes.
//! * **Cut from the DN agents (§5.3, second rule)**, see `cut.rs`.
//! * **A stuck store (ours).** A leader whose oldest store write has not completed for
//!   `instance_heartbeat_timeout` no longer counts itself in its heartbeat rounds: it cannot
//!   append durably, so it cannot commit a decision unless its followers alone are a quorum,
//!   and if they are not, check-quorum steps it down and a leader with a working disk takes
//!   over (swarm seed 494: a leader whose disk hung for 44 s kept its lease with one follower
//!   and held a failover back until the hang ended). A store that merely stalls for less than a
//!   DN's report deadline costs nothing.
//! * **Two-node mode (§5.4)**, see the module documentation of `quorum`.

use core::time::Duration;

use super::{Quorum, QuorumOutput, Role};
use crate::ids::NodeId;
use crate::quorum_math;
use crate::time::Instant;

/// CM's `cmserver_demote_delay_on_conn_less`: how long a leader may see at most one agent, and
/// how long it then stays out of elections.
pub(super) const DEMOTE_AFTER: Duration = Duration::from_secs(10);

impl Quorum {
    pub(super) fn leader_tick(&mut self, now: Instant) {
        let Some(lead) = self.lead.as_ref() else {
            return;
        };
        if now >= lead.quorum_heard_at + self.check_quorum_timeout() {
            tracing::warn!(node = %self.node, term = %self.term, "check-quorum: no quorum heard");
            return self.step_down(now);
        }
        let few_for_long = self
            .few_agents_since
            .is_some_and(|since| now >= since + DEMOTE_AFTER);
        if self.minority_demotion_applies() && few_for_long {
            tracing::warn!(node = %self.node, "minority demotion: at most one agent connected");
            self.demoted_until = Some(now + DEMOTE_AFTER);
            return self.step_down(now);
        }
        if self.check_cut(now) {
            return;
        }
        if self.isolated && !self.alone_is_quorum(now) {
            tracing::warn!(node = %self.node, "two-node mode: not a quorum alone");
            return self.step_down(now);
        }
        if self.lead.as_ref().is_some_and(|l| now >= l.heartbeat_at) {
            self.broadcast(now);
        }
    }

    /// Whether this node's oldest store write is older than `instance_heartbeat_timeout`.
    pub(super) fn store_stuck(&self, now: Instant) -> bool {
        self.writes
            .front()
            .is_some_and(|w| now >= w.since + self.params.instance_heartbeat_timeout())
    }

    /// How long a leader may go without a quorum-acknowledged round.
    pub(super) fn check_quorum_timeout(&self) -> Duration {
        self.params.election_timeout_min()
    }

    /// Records that `from` acknowledged `round` (any reply of the current term does).
    pub(super) fn ack_round(&mut self, now: Instant, from: NodeId, round: u64) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if let Some(r) = lead.rounds.get_mut(&round) {
            r.acks.insert(from);
            self.check_round(now, round);
        }
    }

    /// Extends the lease when `round` has a quorum of acknowledgements.
    pub(super) fn check_round(&mut self, _now: Instant, round: u64) {
        let lease = self.params.leader_lease();
        let Some((sent_at, acks)) = self
            .lead
            .as_ref()
            .and_then(|l| l.rounds.get(&round))
            .map(|r| (r.sent_at, r.acks.clone()))
        else {
            return;
        };
        if !self.is_quorum(&acks) {
            return;
        }
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let until = sent_at + lease;
        lead.lease_until = Some(lead.lease_until.map_or(until, |u| u.max(until)));
        lead.quorum_heard_at = lead.quorum_heard_at.max(sent_at);
        lead.rounds.retain(|r, _| *r > round);
    }

    pub(super) fn on_agents_connected(&mut self, now: Instant, count: usize, includes_local: bool) {
        let few = count == 0 || (count == 1 && includes_local);
        if few {
            self.few_agents_since.get_or_insert(now);
        } else {
            self.few_agents_since = None;
        }
        if count >= 2 {
            self.demoted_until = None;
        }
    }

    pub(super) fn minority_demotion_applies(&self) -> bool {
        self.members.len() >= 3
    }

    /// Two-node mode with `cms_enable_failover_on2nodes`.
    pub(super) fn two_node_failover(&self) -> bool {
        self.members.len() == 2 && self.params.cms_enable_failover_on2nodes
    }

    /// Any message from a peer ends an isolation. W1 leading alone drops its lease then: it
    /// was granted by the gateway rule, which no longer applies, and W2's weight counts again
    /// (§5.4: the leases overlap only while both sides reach the gateway).
    pub(super) fn note_peer(&mut self, now: Instant, _from: NodeId) {
        self.peer_heard_at = now;
        self.peer_heard_since_start = true;
        self.gateway_ok_sent_at = None;
        if self.isolated {
            self.isolated = false;
            self.gateways = None;
            if !self.is_w2()
                && let Some(lead) = self.lead.as_mut()
            {
                lead.lease_until = None;
            }
        }
    }

    /// This node is W2 (the first of two CMS nodes, weight 2).
    pub(super) fn is_w2(&self) -> bool {
        self.members.len() == 2 && self.members.first() == Some(&self.node)
    }

    /// Two-node mode with failover (§5.4): whether W2's weight counts now — it heard its peer
    /// within `cms_network_isolation_timeout × (1 − ρ)/(1 + ρ)`, or a gateway probe sent after
    /// that instant answered (not heard since this process started: only a gateway answer).
    /// Without the failover rule, always.
    pub(super) fn w2_weight_counts(&self, now: Instant) -> bool {
        if !self.two_node_failover() {
            return true;
        }
        if !self.peer_heard_since_start {
            // Not heard since this process started: the peer may have been silent for long
            // and lead alone by now (its start instant stands in for W1's own wait, not here).
            return self.gateway_ok_sent_at.is_some();
        }
        let until = quorum_math::w2_weight_until(
            self.peer_heard_at,
            self.params.cms_network_isolation_timeout(),
            self.params.max_clock_drift,
        );
        now < until || self.gateway_ok_sent_at.is_some_and(|s| s >= until)
    }

    /// From when this node may lead alone through the gateway rule (§5.4).
    fn lead_alone_from(&self) -> Instant {
        quorum_math::lead_alone_from(
            self.peer_heard_at,
            self.params.cms_network_isolation_timeout(),
            self.params.leader_lease(),
            self.params.max_clock_drift,
        )
    }

    /// Two-node mode with failover: whether this node is a quorum alone now — W2 while its
    /// weight counts, W1 once its peer has been silent past [`Self::lead_alone_from`] and a
    /// gateway probe sent after that instant answered.
    pub(super) fn alone_is_quorum(&self, now: Instant) -> bool {
        if self.is_w2() {
            return self.w2_weight_counts(now);
        }
        let from = self.lead_alone_from();
        now >= from && self.gateway_ok_sent_at.is_some_and(|s| s >= from)
    }

    /// Starts isolation handling once the peer has been silent long enough, and probes the
    /// gateways while isolated: at once, every maximum election timeout, and exactly when the
    /// node may lead alone (a probe must be sent after that instant to count).
    pub(super) fn check_two_node(&mut self, now: Instant) {
        if !self.two_node_failover() {
            return;
        }
        let start = quorum_math::w2_weight_until(
            self.peer_heard_at,
            self.params.cms_network_isolation_timeout(),
            self.params.max_clock_drift,
        );
        if !self.isolated && now >= start {
            tracing::warn!(node = %self.node, "two-node mode: peer CMS lost");
            self.isolated = true;
            self.gateways = None;
            self.probe_at = now;
        }
        if self.isolated && now >= self.probe_at {
            self.out.push(QuorumOutput::ProbeGateways);
            if self.probes_out.len() >= MAX_PROBES_OUT {
                self.probes_out.pop_front();
            }
            self.probes_out.push_back(now);
            let mut next = now + self.params.election_timeout_max();
            let alone = self.lead_alone_from();
            if !self.is_w2() && now < alone {
                next = next.min(alone);
            }
            self.probe_at = next;
        }
    }

    pub(super) fn on_gateways_probed(&mut self, now: Instant, reachable: bool) {
        // Answers are matched to the oldest probe outstanding: its send time is the earliest
        // this answer can be about (the safe side for "a probe sent after").
        let Some(sent_at) = self.probes_out.pop_front() else {
            return;
        };
        if !self.isolated || sent_at < self.peer_heard_at {
            return;
        }
        self.gateways = Some(reachable);
        if reachable {
            self.gateway_ok_sent_at =
                Some(self.gateway_ok_sent_at.map_or(sent_at, |s| s.max(sent_at)));
        } else {
            self.gateway_ok_sent_at = None;
            if self.role == Role::Leader && !self.alone_is_quorum(now) {
                self.step_down(now);
            }
        }
    }

    /// Whether the two-node rule lets this node campaign now.
    pub(super) fn two_node_may_lead(&self, now: Instant) -> bool {
        !self.isolated || self.alone_is_quorum(now)
    }
}

/// Gateway probes outstanding at most (older ones are forgotten).
const MAX_PROBES_OUT: usize = 8;

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
