//! All quorum arithmetic, in one place (SPEC.md §4.1, §4.2, §5.1, §5.4, §8).
//!
//! The CMS quorum, the arbiter and the agent each count "enough" of something; they must count
//! it the same way, so every such count is a function here, with a table test:
//! * CMS weights and majorities (§5.1, §5.4): every CMS weighs 1, except with exactly two CMS
//!   nodes, where the first in config order (W2) weighs 2 and is a quorum alone; non-voters
//!   weigh nothing; a set is a quorum when its weight is more than half the voters' total.
//! * Two-node mode with `cms_enable_failover_on2nodes` (§5.4): when W2's weight counts
//!   ([`w2_weight_until`]), from when a node may lead alone through the gateway rule
//!   ([`lead_alone_from`]), which sets are quorums then ([`two_node_quorum`]), and the disjoint
//!   (by parity) terms the two nodes campaign for ([`two_node_campaign_term`]), and the
//!   group terms their proposals move to ([`next_group_term`]), disjoint by the same parity.
//! * Term confirmations (§4.1): an agent sums the weights the repliers report (0 for a
//!   non-voter) and needs more than half of [`total_weight`] of the configured CMS nodes.
//! * The second minority-demotion rule (§5.3, ours): how many of the D DN-hosting nodes' agents
//!   a leader must hear ([`dn_agent_majority`]) and when it is cut from them
//!   ([`cut_from_dn_agents`]).
//! * The Lock1 quorum q = ⌊(n+1)/2⌋ of a group of n valid members (§4.2), and the
//!   streaming-quorum exception of §8 built on it.

use core::time::Duration;
use std::collections::BTreeSet;

use crate::ids::{NodeId, QuorumTerm, Term};
use crate::time::{Instant, scale_down, scale_up};

/// How long a gateway probe may take (the probe's own time limit, cm_server's executor):
/// §5.4's "gateway probe bound".
pub const GATEWAY_PROBE_BOUND: Duration = Duration::from_secs(2);

/// The weight of the CMS at position `index` (config order) among `cms_count` CMS nodes.
pub fn cms_weight(index: usize, cms_count: usize) -> u32 {
    if cms_count == 2 && index == 0 { 2 } else { 1 }
}

/// The total weight of `cms_count` configured CMS nodes (all of them voters).
pub fn total_weight(cms_count: usize) -> u32 {
    (0..cms_count).map(|i| cms_weight(i, cms_count)).sum()
}

/// Whether `got` is more than half of `total` (and `total` is not zero).
pub fn is_majority(got: u32, total: u32) -> bool {
    total > 0 && u64::from(got) * 2 > u64::from(total)
}

/// The weight of `set` among the voters of `members` (config order, minus `non_voters`),
/// against the total weight of those voters.
pub fn voter_weights(
    members: &[NodeId],
    non_voters: &BTreeSet<NodeId>,
    set: &BTreeSet<NodeId>,
) -> (u32, u32) {
    let mut got = 0;
    let mut total = 0;
    for (i, n) in members.iter().enumerate() {
        if non_voters.contains(n) {
            continue;
        }
        let w = cms_weight(i, members.len());
        total += w;
        if set.contains(n) {
            got += w;
        }
    }
    (got, total)
}

/// Whether `set` is a quorum of the voters of `members`.
pub fn is_voter_quorum(
    members: &[NodeId],
    non_voters: &BTreeSet<NodeId>,
    set: &BTreeSet<NodeId>,
) -> bool {
    let (got, total) = voter_weights(members, non_voters, set);
    is_majority(got, total)
}

/// Whether the weights reported by the distinct CMS nodes that confirmed a term (§4.1) make a
/// quorum of the `cms_count` configured CMS nodes. Non-voters report 0. The total counts every
/// configured node, so a confirming set is also a majority of any voter subset.
pub fn confirmation_is_quorum(weights: impl IntoIterator<Item = u32>, cms_count: usize) -> bool {
    let got = weights.into_iter().fold(0u32, u32::saturating_add);
    is_majority(got, total_weight(cms_count))
}

/// Two-node mode with `cms_enable_failover_on2nodes` (§5.4): until when (on W2's clock) the
/// weight of W2 counts after it last heard its peer at `peer_heard_at`:
/// `cms_network_isolation_timeout × (1 − ρ)/(1 + ρ)` later.
pub fn w2_weight_until(peer_heard_at: Instant, isolation: Duration, rho: f64) -> Instant {
    peer_heard_at + scale_down(isolation, (1.0 - rho) / (1.0 + rho))
}

/// Two-node mode with failover (§5.4): from when (on its own clock) a node whose peer was last
/// heard at `peer_heard_at` may lead alone through the gateway rule (and only on a probe sent
/// at or after it): `(cms_network_isolation_timeout + probe bound) × (1 + ρ)/(1 − ρ) + lease`.
/// By then the peer's own weight (which stops at [`w2_weight_until`] on its clock) and the
/// lease it took from it have lapsed, whatever the drift within ρ.
pub fn lead_alone_from(
    peer_heard_at: Instant,
    isolation: Duration,
    lease: Duration,
    rho: f64,
) -> Instant {
    peer_heard_at + scale_up(isolation + GATEWAY_PROBE_BOUND, (1.0 + rho) / (1.0 - rho)) + lease
}

/// Two-node mode with failover (§5.4): whether a set holding W2 and/or W1 is a quorum, given
/// whether W2's weight counts now and whether W1 may lead alone now (each only evaluated by the
/// node itself, for sets that contain it).
pub fn two_node_quorum(has_w2: bool, has_w1: bool, w2_counts: bool, w1_alone: bool) -> bool {
    (has_w2 && (has_w1 || w2_counts)) || (has_w1 && w1_alone)
}

/// Two-node mode with failover (§5.4): the term a candidate at config position `index`
/// campaigns for from `current`: the next term of its own parity (W2 odd, W1 even), so the two
/// nodes never lead the same quorum term, even each alone on its side of a partition.
pub fn two_node_campaign_term(current: QuorumTerm, index: usize) -> QuorumTerm {
    let want = u64::from(index.is_multiple_of(2));
    let next = current.0.saturating_add(1);
    QuorumTerm(if next % 2 == want {
        next
    } else {
        next.saturating_add(1)
    })
}

/// The group term a term-changing change moves a group to from `current` (§4.2, §4.5, §5.4).
/// Normally the next one. In two-node mode with failover (`leader_term` given: the quorum
/// term of the leader that created the entry) the next one of the parity of that quorum term,
/// which is the parity of its node ([`two_node_campaign_term`]: W2 odd, W1 even). So the group
/// terms one side proposes — alone on its side of a partition, or not — are never proposed by
/// the other, and at most one Failover is ever sent per (group, term) (S2), with no
/// coordination between the sides.
pub fn next_group_term(current: Term, leader_term: Option<QuorumTerm>) -> Term {
    let next = current.0.saturating_add(1);
    match leader_term {
        Some(q) if next % 2 != q.0 % 2 => Term(next.saturating_add(1)),
        _ => Term(next),
    }
}

/// §5.3 (ours): of the agents of the `dn_nodes` nodes hosting DNs, ⌊D/2⌋ + 1.
pub fn dn_agent_majority(dn_nodes: usize) -> usize {
    dn_nodes / 2 + 1
}

/// §5.3 (ours): whether a leader hearing `own` of the agents of the `dn_nodes` DN-hosting nodes
/// is cut from them: it hears fewer than [`dn_agent_majority`] AND fewer than the best count a
/// follower reports (`best_follower`; `None` when no follower reported). Equal views never are.
pub fn cut_from_dn_agents(own: usize, dn_nodes: usize, best_follower: Option<usize>) -> bool {
    own < dn_agent_majority(dn_nodes) && best_follower.is_some_and(|b| own < b)
}

/// The Lock1 quorum q = ⌊(n+1)/2⌋ over the n valid members of a group (§4.2).
/// `override_q` (`TestSwitches::lock1_quorum_override`, test-only) replaces it when non-zero.
pub fn lock1_quorum(n: usize, override_q: u64) -> usize {
    if override_q > 0 {
        usize::try_from(override_q).unwrap_or(usize::MAX)
    } else {
        n.div_ceil(2)
    }
}

/// §8's streaming-quorum exception: `fresh` distinct other members streaming from a primary of
/// a group of `n` are more than n − 1 − q, so no Lock1 quorum can form without one of them.
pub fn streaming_blocks_lock1(fresh: usize, n: usize) -> bool {
    let q = lock1_quorum(n, 0);
    fresh + 1 + q > n
}

#[cfg(test)]
#[path = "quorum_math_tests.rs"]
mod tests;
