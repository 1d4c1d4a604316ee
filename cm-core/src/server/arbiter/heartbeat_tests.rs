//! Heartbeat timeouts (§4.3) and the fencing floor of §8 for a dead node.

use core::time::Duration;

use crate::dn::DnRole;
use crate::ids::{InstanceId, Term};
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::server::harness::{G, H, cmds, dn};
use crate::state::Change;
use crate::time::Instant;

use super::raised_rounds;

#[test]
fn a_silent_member_is_unknown_after_half_the_heartbeat_timeout() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let role = |h: &H| {
        h.leader.groups()[&G]
            .member(InstanceId(6001))
            .unwrap()
            .role(h.now, h.leader.params())
    };
    h.advance_ms(2999);
    assert_eq!(role(&h), DnRole::Primary);
    h.advance_ms(1);
    assert_eq!(role(&h), DnRole::Unknown);
}

#[test]
fn raised_rounds_pass_every_wait() {
    let mut p = Params::defaults();
    assert_eq!(raised_rounds(&p), 181);
    p.delay_arbitrate_timeout = 500;
    assert_eq!(raised_rounds(&p), 501);
}

#[test]
fn fencing_floor_with_defaults_is_seven_point_six_seconds() {
    // 6 s × 1.01/0.99 + 1 s + 0.5 s, rounded up to the nanosecond.
    assert_eq!(
        Params::defaults().fencing_floor(),
        Duration::from_nanos(7_621_212_122)
    );
}

#[test]
fn a_dead_nodes_group_fails_over_after_its_heartbeat_timeout_not_before_the_fencing_floor() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let t0 = h.now;
    let mut lock1_at = None;
    for k in 1..=7u64 {
        h.advance_ms(1000);
        let mut out = h.tick();
        // The standbys' WAL receivers show the dead primary's last message, then time out.
        for i in 2..=3 {
            let r = if lock1_at.is_some() {
                h.locked(i)
            } else if k <= 2 {
                dn(i).upstream(1, 1000 * k)
            } else {
                dn(i)
            };
            out.extend(h.report(r));
        }
        if !cmds(&out).is_empty() {
            assert_eq!(
                cmds(&out),
                vec![(6002, CmsCommand::Lock1), (6003, CmsCommand::Lock1)]
            );
            lock1_at = Some(h.now);
        }
        if k == 6 {
            let arb = &h.leader.groups()[&G];
            assert!(
                arb.members.iter().all(|m| m.rounds >= 181),
                "rounds raised at 6 s"
            );
        }
    }
    assert_eq!(
        lock1_at,
        Some(t0 + Duration::from_secs(3)),
        "Unknown after 3 s"
    );
    assert!(
        !h.queued()
            .iter()
            .any(|c| matches!(c, Change::Promote { .. })),
        "no Failover before the fencing floor"
    );
    let floor = t0 + h.leader.params().fencing_floor();
    assert_eq!(h.leader.next_deadline(), Some(floor));
    h.now = floor - Duration::from_nanos(1);
    h.tick();
    assert!(
        !h.queued()
            .iter()
            .any(|c| matches!(c, Change::Promote { .. }))
    );
    h.now = floor;
    h.tick();
    assert!(h.queued().contains(&Change::Promote {
        group: G,
        expected_term: Term(1),
        static_primary: InstanceId(6002),
        reason: crate::history::PromotionReason::Failover,
    }));
    let _ = Instant::ZERO;
}

#[test]
fn a_new_leader_counts_the_fencing_floor_from_its_election() {
    // Elected at t = 100 s and never hears from 6001 again.
    let mut h = H::new(3);
    let t0 = h.now;
    for _ in 0..7 {
        h.advance_ms(1000);
        h.tick();
        let r2 = if h.lock1_seq(2) > 0 {
            h.locked(2)
        } else {
            dn(2)
        };
        let r3 = if h.lock1_seq(3) > 0 {
            h.locked(3)
        } else {
            dn(3)
        };
        h.reports(vec![r2, r3]);
    }
    assert!(
        !h.queued()
            .iter()
            .any(|c| matches!(c, Change::Promote { .. }))
    );
    h.now = t0 + h.leader.params().fencing_floor();
    h.tick();
    assert!(
        h.queued()
            .iter()
            .any(|c| matches!(c, Change::Promote { .. }))
    );
}
