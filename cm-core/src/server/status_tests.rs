//! `cm_ctl query` data.

use crate::ctl::ClusterHealth;
use crate::dn::{DbState, DnRole};
use crate::ids::{InstanceId, QuorumTerm};
use crate::server::harness::{H, dn};

fn status(h: &H) -> crate::ctl::ClusterStatus {
    h.leader
        .status(&h.state.state_mut_ref(), Vec::new(), QuorumTerm(1))
}

trait Peek {
    fn state_mut_ref(&self) -> crate::state::ClusterState;
}

impl Peek for crate::state::InMemoryState {
    fn state_mut_ref(&self) -> crate::state::ClusterState {
        crate::state::ReplicatedState::committed(self).clone()
    }
}

#[test]
fn a_healthy_group_is_normal_and_balanced() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let s = status(&h);
    assert_eq!(s.state, ClusterHealth::Normal);
    assert!(s.balanced);
    let g = &s.groups[0];
    assert!(g.members[0].static_primary && !g.members[1].static_primary);
    assert_eq!(g.members[0].node_name, "n1");
}

#[test]
fn a_missing_standby_degrades_and_a_missing_primary_makes_unavailable() {
    let mut h = H::new(3);
    h.reports(vec![dn(1).primary(1), dn(2)]);
    assert_eq!(status(&h).state, ClusterHealth::Degraded);
    h.reports(vec![dn(1).down(), dn(3)]);
    assert_eq!(status(&h).state, ClusterHealth::Unavailable);
}

#[test]
fn a_primary_other_than_the_install_time_one_is_unbalanced() {
    let mut h = H::new(3);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![
        dn(2).primary(1),
        dn(1).upstream(2, 100),
        dn(3).upstream(2, 100),
    ]);
    let s = status(&h);
    assert_eq!(s.state, ClusterHealth::Normal);
    assert!(!s.balanced);
}

/// Issue 18, defect 3: a standby that does not stream from the primary shows in `query` with
/// how long, the cluster is Degraded, and with `ANY 1` over 1P2S the group still acknowledges
/// commits through the other standby — until that one stops streaming too.
#[test]
fn a_standby_that_does_not_stream_degrades_and_shows_whether_commits_are_acknowledged() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let s = status(&h);
    assert_eq!(s.groups[0].members[1].not_streaming_ms, None);
    assert!(s.groups[0].commits_acknowledged);
    // 6002 loses its stream (no receiver), 6003 still streams.
    h.advance_ms(1000);
    h.reports(vec![dn(1).primary(1), dn(2), dn(3).upstream(1, 100)]);
    h.advance_ms(1500);
    h.reports(vec![dn(1).primary(1), dn(2), dn(3).upstream(1, 100)]);
    let s = status(&h);
    assert_eq!(s.state, ClusterHealth::Degraded);
    assert_eq!(s.groups[0].members[1].not_streaming_ms, Some(1500));
    assert_eq!(s.groups[0].members[2].not_streaming_ms, None);
    assert!(s.groups[0].commits_acknowledged, "ANY 1: 6003 acknowledges");
    // 6003 stops too: no commit can be acknowledged.
    h.advance_ms(1000);
    h.reports(vec![dn(1).primary(1), dn(2), dn(3)]);
    let s = status(&h);
    assert_eq!(s.groups[0].members[2].not_streaming_ms, Some(0));
    assert!(!s.groups[0].commits_acknowledged);
    assert_eq!(s.state, ClusterHealth::Degraded);
}
#[test]
fn a_read_only_primary_degrades_the_cluster() {
    let mut h = H::new(3);
    h.reports(vec![dn(1).primary(1).ro(true), dn(2), dn(3)]);
    let s = status(&h);
    assert!(s.groups[0].members[0].read_only);
    assert_eq!(s.state, ClusterHealth::Degraded);
}

#[test]
fn a_member_not_heard_from_shows_unknown_state_not_its_last_report() {
    let mut h = H::new(3);
    h.reports(vec![dn(1).primary(1), dn(2), dn(3)]);
    // Only 6001 and 6002 keep reporting for 7 s (instance_heartbeat_timeout 6 s).
    for _ in 0..7 {
        h.advance_ms(1000);
        h.reports(vec![dn(1).primary(1), dn(2)]);
    }
    let s = status(&h);
    let third = &s.groups[0].members[2];
    assert_eq!(
        (third.role, third.state),
        (DnRole::Unknown, DbState::Unknown)
    );
    assert_eq!(s.state, ClusterHealth::Degraded);
}

#[test]
fn standbys_carry_their_lag_behind_the_primary_and_the_lsn_text() {
    let mut h = H::new(3);
    h.reports(vec![
        dn(1).primary(1).pos(1, 0x1_0000_2000),
        dn(2).pos(1, 0x1_0000_1000),
        dn(3).pos(2, 0x1_0000_1000),
    ]);
    let m = &status(&h).groups[0].members;
    assert_eq!(m[0].lag_bytes, None);
    assert_eq!(m[1].lag_bytes, Some(0x1000));
    // Another timeline: no meaningful lag.
    assert_eq!(m[2].lag_bytes, None);
    assert_eq!(m[0].lsn, "1/00002000");
}

#[test]
fn the_p_letter_is_the_install_time_primary_not_the_moved_static_primary() {
    let mut h = H::new(3);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![dn(2).primary(1), dn(1), dn(3)]);
    let m = &status(&h).groups[0].members;
    assert!(m[0].install_primary && !m[0].static_primary);
    assert!(!m[1].install_primary && m[1].static_primary);
}

/// Issue 17 item 1: the outcome of a DN's last Build, as its agent reported it, shows in its
/// row (what `cm_ctl build` waits for); a DN with no build reported shows none.
#[test]
fn a_dns_last_build_outcome_is_copied_from_its_report() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let mut built = dn(2).upstream(1, 100);
    built.0.last_build = crate::dn::BuildOutcome {
        count: 2,
        error: Some("pg_rewind: could not connect".into()),
        ..Default::default()
    };
    h.reports(vec![dn(1).primary(1), built, dn(3).upstream(1, 100)]);
    let s = status(&h);
    assert_eq!(
        s.groups[0].members[1].last_build,
        crate::dn::BuildOutcome {
            count: 2,
            error: Some("pg_rewind: could not connect".into()),
            ..Default::default()
        }
    );
    assert_eq!(s.groups[0].members[2].last_build.count, 0);
}
