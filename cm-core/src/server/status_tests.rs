//! `cm_ctl query` data.

use crate::ctl::ClusterHealth;
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
    h.reports(vec![dn(2).primary(1), dn(1), dn(3)]);
    let s = status(&h);
    assert_eq!(s.state, ClusterHealth::Normal);
    assert!(!s.balanced);
}
