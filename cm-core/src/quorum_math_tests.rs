use core::time::Duration;
use std::collections::BTreeSet;

use super::*;
use crate::time::Instant;

fn nodes(ids: &[u32]) -> BTreeSet<NodeId> {
    ids.iter().map(|i| NodeId(*i)).collect()
}

#[test]
fn weights_table() {
    // (cms_count, weights by position, total)
    let table: &[(usize, &[u32], u32)] = &[
        (1, &[1], 1),
        (2, &[2, 1], 3),
        (3, &[1, 1, 1], 3),
        (4, &[1, 1, 1, 1], 4),
        (5, &[1, 1, 1, 1, 1], 5),
    ];
    for (count, weights, total) in table {
        let got: Vec<u32> = (0..*count).map(|i| cms_weight(i, *count)).collect();
        assert_eq!(&got[..], *weights, "cms_count = {count}");
        assert_eq!(total_weight(*count), *total, "cms_count = {count}");
    }
}

#[test]
fn majority_table() {
    let table = [
        (0, 0, false),
        (1, 1, true),
        (1, 2, false),
        (2, 3, true),
        (1, 3, false),
        (2, 4, false),
        (3, 4, true),
        (3, 5, true),
        (2, 5, false),
    ];
    for (got, total, want) in table {
        assert_eq!(is_majority(got, total), want, "{got} of {total}");
    }
}

#[test]
fn voter_quorum_table() {
    let m3 = [NodeId(1), NodeId(2), NodeId(3)];
    let m2 = [NodeId(1), NodeId(2)];
    let m5 = [NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)];
    // (members, non-voters, set, quorum?)
    type Row<'a> = (&'a [NodeId], &'a [u32], &'a [u32], bool);
    let table: &[Row<'_>] = &[
        (&m3, &[], &[1, 2], true),
        (&m3, &[], &[3], false),
        // A non-voter neither counts nor enlarges the total.
        (&m3, &[3], &[1, 3], false),
        (&m3, &[3], &[1, 2], true),
        (&m3, &[3], &[3], false),
        // Two-node mode: the first weighs 2 (alone a quorum), the second 1.
        (&m2, &[], &[1], true),
        (&m2, &[], &[2], false),
        (&m2, &[], &[1, 2], true),
        (&m5, &[], &[1, 2], false),
        (&m5, &[], &[3, 4, 5], true),
        (&m5, &[4, 5], &[1, 2], true),
        (&m5, &[1, 2, 3, 4, 5], &[1, 2, 3], false),
    ];
    for (members, non_voters, set, want) in table {
        assert_eq!(
            is_voter_quorum(members, &nodes(non_voters), &nodes(set)),
            *want,
            "members {members:?}, non-voters {non_voters:?}, set {set:?}"
        );
    }
    assert_eq!(voter_weights(&m2, &nodes(&[]), &nodes(&[1])), (2, 3));
    assert_eq!(voter_weights(&m3, &nodes(&[2]), &nodes(&[1, 2])), (1, 2));
}

#[test]
fn confirmation_table() {
    // (reported weights, cms_count, quorum?)
    let table: &[(&[u32], usize, bool)] = &[
        (&[1], 1, true),
        (&[0], 1, false),
        // Two-node mode: W2 alone (weight 2 of 3) confirms; W1 alone does not; a node leading
        // alone through the gateway reports the whole weight.
        (&[2], 2, true),
        (&[1], 2, false),
        (&[3], 2, true),
        (&[2, 1], 2, true),
        // Three CMS: a non-voter's reply (0) never makes up a majority; `len()/2+1` would.
        (&[1, 0], 3, false),
        (&[1, 1], 3, true),
        (&[1, 1, 0], 3, true),
        (&[1, 1], 5, false),
        (&[1, 1, 1], 5, true),
        (&[1, 1, 0, 0], 5, false),
    ];
    for (weights, count, want) in table {
        assert_eq!(
            confirmation_is_quorum(weights.iter().copied(), *count),
            *want,
            "weights {weights:?} of {count} CMS"
        );
    }
}

#[test]
fn lock1_quorum_table() {
    for (n, q) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)] {
        assert_eq!(lock1_quorum(n, 0), q, "n = {n}");
    }
    assert_eq!(lock1_quorum(5, 1), 1);
    assert_eq!(lock1_quorum(3, 3), 3);
}

#[test]
fn streaming_exception_table() {
    // (fresh streaming members, group size, blocks Lock1?): more than n − 1 − q.
    let table = [
        (0, 1, true),
        (0, 2, false),
        (1, 2, true),
        (0, 3, false),
        (1, 3, true),
        (1, 4, false),
        (2, 4, true),
        (1, 5, false),
        (2, 5, true),
    ];
    for (fresh, n, want) in table {
        assert_eq!(
            streaming_blocks_lock1(fresh, n),
            want,
            "{fresh} fresh of {n}"
        );
    }
}

#[test]
fn two_node_time_rules_table() {
    let iso = Duration::from_secs(20);
    let lease = Duration::from_millis(784);
    let heard = Instant::from_secs(100);
    // ρ = 0: exactly the isolation timeout; (20 + 2) s + lease.
    assert_eq!(w2_weight_until(heard, iso, 0.0), Instant::from_secs(120));
    assert_eq!(
        lead_alone_from(heard, iso, lease, 0.0),
        Instant::from_millis(122_784)
    );
    // ρ = 0.01: 20 × 0.99/1.01 = 19.60396… s (rounded down); 22 × 1.01/0.99 = 22.44444… s
    // (rounded up) + lease.
    assert_eq!(
        w2_weight_until(heard, iso, 0.01),
        Instant::from_nanos(119_603_960_396)
    );
    assert_eq!(
        lead_alone_from(heard, iso, lease, 0.01),
        Instant::from_nanos(123_228_444_445)
    );
}

#[test]
fn two_node_quorum_table() {
    // (has W2, has W1, W2's weight counts, W1 may lead alone, quorum?)
    let table = [
        (true, true, false, false, true),
        (true, false, true, false, true),
        (true, false, false, false, false),
        (false, true, false, false, false),
        (false, true, false, true, true),
        (false, true, true, false, false),
    ];
    for (w2, w1, counts, alone, want) in table {
        assert_eq!(
            two_node_quorum(w2, w1, counts, alone),
            want,
            "W2 {w2}, W1 {w1}, counts {counts}, alone {alone}"
        );
    }
}

#[test]
fn two_node_campaign_terms_are_disjoint_by_parity() {
    // (current term, position, term campaigned for): W2 (0) odd, W1 (1) even.
    let table = [
        (0, 0, 1),
        (0, 1, 2),
        (1, 0, 3),
        (1, 1, 2),
        (2, 0, 3),
        (2, 1, 4),
        (7, 1, 8),
    ];
    for (current, index, want) in table {
        assert_eq!(
            two_node_campaign_term(QuorumTerm(current), index),
            QuorumTerm(want),
            "term {current}, position {index}"
        );
    }
}

#[test]
fn group_terms_step_by_one_or_to_the_leaders_parity() {
    // (current group term, leader's quorum term in two-node mode with failover, next)
    let table = [
        (0, None, 1),
        (5, None, 6),
        (0, Some(1), 1),
        (1, Some(1), 3),
        (2, Some(3), 3),
        (0, Some(2), 2),
        (1, Some(2), 2),
        (2, Some(4), 4),
        (7, Some(8), 8),
    ];
    for (current, leader, want) in table {
        assert_eq!(
            next_group_term(Term(current), leader.map(QuorumTerm)),
            Term(want),
            "group term {current}, leader term {leader:?}"
        );
    }
    // The two sides never propose the same group term, whatever each had committed.
    for a in 0..20 {
        for b in 0..20 {
            let w2 = next_group_term(Term(a), Some(QuorumTerm(5)));
            let w1 = next_group_term(Term(b), Some(QuorumTerm(6)));
            assert_ne!(w2, w1, "W2 from {a}, W1 from {b}");
        }
    }
}

#[test]
fn dn_agent_majority_table() {
    // (D, ⌊D/2⌋ + 1)
    let table = [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 3),
        (5, 3),
        (6, 4),
        (7, 4),
    ];
    for (d, want) in table {
        assert_eq!(dn_agent_majority(d), want, "D = {d}");
    }
}

#[test]
fn cut_from_dn_agents_table() {
    // (own, D, best follower, cut)
    let table = [
        (0, 3, Some(3), true),
        (1, 3, Some(3), true),
        (1, 3, Some(2), true),
        (2, 3, Some(3), false), // a majority heard
        (1, 3, Some(1), false), // equal views
        (0, 3, Some(0), false), // an outage seen alike
        (0, 3, None, false),    // no follower reported
        (1, 3, Some(0), false), // followers see fewer
        (2, 4, Some(4), true),  // 2 of 4 is not a majority
        (3, 4, Some(4), false),
        (0, 1, Some(1), true),
        (0, 0, Some(0), false), // no DN node at all
    ];
    for (own, d, best, want) in table {
        assert_eq!(
            cut_from_dn_agents(own, d, best),
            want,
            "own {own}, D {d}, best follower {best:?}"
        );
    }
}
