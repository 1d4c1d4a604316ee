//! All quorum arithmetic, in one place (SPEC.md §4.1, §4.2, §5.1, §5.4, §8).
//!
//! The CMS quorum, the arbiter and the agent each count "enough" of something; they must count
//! it the same way, so every such count is a function here, with a table test:
//! * CMS weights and majorities (§5.1, §5.4): every CMS weighs 1, except with exactly two CMS
//!   nodes, where the first in config order (W2) weighs 2 and is a quorum alone; non-voters
//!   weigh nothing; a set is a quorum when its weight is more than half the voters' total.
//! * The gateway rule (§5.4): a node isolated from its peer in two-node mode with
//!   `cms_enable_failover_on2nodes`, whose gateway probe answered, is a quorum alone.
//! * Term confirmations (§4.1): an agent sums the weights the repliers report (0 for a
//!   non-voter) and needs more than half of [`total_weight`] of the configured CMS nodes.
//! * The Lock1 quorum q = ⌊(n+1)/2⌋ of a group of n valid members (§4.2), and the
//!   streaming-quorum exception of §8 built on it.

use std::collections::BTreeSet;

use crate::ids::NodeId;

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

/// The gateway rule of §5.4: an isolated node whose gateway probe answered is a quorum alone
/// (for sets that contain it).
pub fn gateway_quorum(
    isolated: bool,
    gateways_reachable: Option<bool>,
    contains_self: bool,
) -> bool {
    isolated && gateways_reachable == Some(true) && contains_self
}

/// Whether the weights reported by the distinct CMS nodes that confirmed a term (§4.1) make a
/// quorum of the `cms_count` configured CMS nodes. Non-voters report 0. The total counts every
/// configured node, so a confirming set is also a majority of any voter subset.
pub fn confirmation_is_quorum(weights: impl IntoIterator<Item = u32>, cms_count: usize) -> bool {
    let got = weights.into_iter().fold(0u32, u32::saturating_add);
    is_majority(got, total_weight(cms_count))
}

/// The Lock1 quorum q = ⌊(n+1)/2⌋ over the n valid members of a group (§4.2).
/// `override_q` (`test_lock1_quorum_override`, test-only) replaces it when non-zero.
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
