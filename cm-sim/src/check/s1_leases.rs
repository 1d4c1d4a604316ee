//! S1 (SPEC §13): at most one cm_server holds a lease at any instant, and one quorum term has
//! at most one leader. Under §5.4's two-node concession simultaneous leases are reported, not
//! failed; a lease granted in that span may outlive it by its length but not be renewed.

use std::collections::BTreeMap;

use cm_core::{Instant, NodeId, QuorumTerm};

use super::{Checker, ServerView};

/// What S1 remembers.
#[derive(Debug, Default)]
pub(super) struct S1 {
    /// The leader first seen for each quorum term.
    leaders: BTreeMap<QuorumTerm, NodeId>,
    /// (node, incarnation, quorum term) → the latest lease end (its local clock) it showed
    /// during the two-node concession: a lease granted in the span outlives it by at most its
    /// length.
    span_leases: BTreeMap<(NodeId, u64, QuorumTerm), Instant>,
}

impl Checker {
    /// The highest quorum term a leader was seen in so far.
    pub fn highest_leader_term(&self) -> Option<QuorumTerm> {
        self.s1.leaders.keys().next_back().copied()
    }

    pub(super) fn check_leaders(&mut self, at: Instant, servers: &[ServerView]) {
        let held = servers.iter().filter(|s| s.holds_lease()).count();
        if held > 0 && self.two_node_concession {
            for s in servers.iter().filter(|s| s.holds_lease()) {
                let until = s.obs.lease_until.unwrap_or(Instant::ZERO);
                let key = (s.node, s.incarnation, s.obs.quorum_term);
                let seen = self.s1.span_leases.entry(key).or_default();
                *seen = (*seen).max(until);
            }
        }
        if held > 1 {
            let holders: Vec<&ServerView> = servers.iter().filter(|s| s.holds_lease()).collect();
            let nodes: Vec<String> = holders.iter().map(|s| s.node.to_string()).collect();
            let m = format!("S1: leases held at once by {}", nodes.join(", "));
            // SPEC §5.4 trades single leases while both sides reach the gateway; a lease
            // granted in that span runs out after it (at most one lease length), and is
            // reported with it, not failed. Two leases renewed after the span fail.
            let renewed = holders
                .iter()
                .filter(|s| {
                    let key = (s.node, s.incarnation, s.obs.quorum_term);
                    let from_span = self.s1.span_leases.get(&key);
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
            match self.s1.leaders.get(&t) {
                Some(n) if *n != s.node => {
                    let m = format!("S1: {n} and {} both lead {t}", s.node);
                    self.violate(at, "S1", m);
                }
                Some(_) => {}
                None => {
                    self.s1.leaders.insert(t, s.node);
                }
            }
        }
        if held > 0 {
            for s in servers.iter().filter(|s| s.holds_lease()) {
                self.max_leader_term = self.max_leader_term.max(s.obs.quorum_term);
                if self
                    .leader_term_at_fault
                    .is_some_and(|t| s.obs.quorum_term > t)
                {
                    self.first("cms_leader_s", at);
                }
            }
        }
    }
}
