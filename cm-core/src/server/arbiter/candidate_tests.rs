use super::*;
use crate::ids::{Lsn, Timeline};

fn az(s: &str) -> AzName {
    AzName::from(s)
}

#[test]
fn lock1_quorum_is_half_of_n_rounded_up() {
    // (n, q): 1P1S, 1P2S needs both standbys, 1P3S two, 1P4S three.
    for (n, q) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)] {
        assert_eq!(lock1_quorum(n, 0), q, "n = {n}");
    }
}

#[test]
fn lock1_quorum_override_replaces_q() {
    assert_eq!(lock1_quorum(5, 1), 1);
    assert_eq!(lock1_quorum(3, 3), 3);
}

#[test]
fn candidate_is_the_static_primary_when_it_is_at_the_maximum() {
    let (a1, a2) = (az("AZ1"), az("AZ2"));
    let h = History::root(Timeline(1));
    let l = [
        Locked {
            instance: InstanceId(2),
            az: &a2,
            az_priority: 0,
            position: Position::new(1, 50),
            history: &h,
        },
        Locked {
            instance: InstanceId(1),
            az: &a1,
            az_priority: 1,
            position: Position::new(1, 50),
            history: &h,
        },
    ];
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(1)));
}

#[test]
fn candidate_must_hold_the_maximum_position() {
    let a1 = az("AZ1");
    let h = History::root(Timeline(1));
    let l = [
        Locked {
            instance: InstanceId(1),
            az: &a1,
            az_priority: 1,
            position: Position::new(1, 40),
            history: &h,
        },
        Locked {
            instance: InstanceId(2),
            az: &a1,
            az_priority: 1,
            position: Position::new(1, 50),
            history: &h,
        },
    ];
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(2)));
}

#[test]
fn candidate_prefers_the_static_primarys_az_then_the_lowest_priority_then_config_order() {
    let (a1, a2, a3) = (az("AZ1"), az("AZ2"), az("AZ3"));
    let h = History::root(Timeline(1));
    let p = Position::new(1, 10);
    let mk = |i, a, pr| Locked {
        instance: InstanceId(i),
        az: a,
        az_priority: pr,
        position: p,
        history: &h,
    };
    // Static primary (1, AZ1) is not locked: the AZ1 member wins over a better-priority AZ.
    let l = [mk(3, &a3, 0), mk(2, &a1, 5)];
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(2)));
    // Nobody in AZ1: lowest priority.
    let l = [mk(3, &a3, 2), mk(4, &a2, 1), mk(5, &a2, 1)];
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(4)));
    // Tie on priority: config order.
    let l = [mk(5, &a2, 1), mk(4, &a3, 1)];
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(5)));
}

#[test]
fn a_newer_timeline_beats_a_longer_diverged_old_one() {
    let a1 = az("AZ1");
    let h1 = History::root(Timeline(1));
    let h2 = h1.branch(Lsn(100), Timeline(2));
    let l = [
        // Diverged: 150 on timeline 1 is past the fork at 100.
        Locked {
            instance: InstanceId(1),
            az: &a1,
            az_priority: 0,
            position: Position::new(1, 150),
            history: &h1,
        },
        Locked {
            instance: InstanceId(2),
            az: &a1,
            az_priority: 0,
            position: Position::new(2, 120),
            history: &h2,
        },
    ];
    assert!(is_max_along_history(&l[1], &l));
    assert!(!is_max_along_history(&l[0], &l));
    assert_eq!(select(&l, InstanceId(1), Some(&a1)), Some(InstanceId(2)));
}

#[test]
fn no_locked_standby_means_no_candidate() {
    assert_eq!(select(&[], InstanceId(1), None), None);
}
