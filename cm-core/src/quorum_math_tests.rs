use std::collections::BTreeSet;

use super::*;

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
fn gateway_rule_table() {
    let table = [
        (true, Some(true), true, true),
        (true, Some(true), false, false),
        (true, Some(false), true, false),
        (true, None, true, false),
        (false, Some(true), true, false),
    ];
    for (isolated, gw, contains_self, want) in table {
        assert_eq!(
            gateway_quorum(isolated, gw, contains_self),
            want,
            "isolated {isolated}, gateways {gw:?}, self {contains_self}"
        );
    }
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
