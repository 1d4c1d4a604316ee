//! Member bookkeeping (§4.2): lock confirmation by command stamps, rounds.

use crate::dn::LockState;
use crate::ids::{AzName, InstanceId, NodeId, Term};
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::server::harness::{G, H, dn};
use crate::server::outbox::Outbox;
use crate::time::Instant;

use super::Member;

fn member() -> (Member, Outbox, Params) {
    let mut out = Outbox::default();
    out.start_term(crate::ids::QuorumTerm(1));
    let m = Member::new(
        InstanceId(6002),
        NodeId(2),
        AzName::from("AZ1"),
        1,
        Instant::ZERO,
    );
    (m, out, Params::defaults())
}

#[test]
fn locked_needs_prohibit_reported_after_the_latest_lock1() {
    let (mut m, mut out, p) = member();
    let now = Instant::from_secs(1);
    m.report = Some(dn(2).prohibit(0).0);
    m.receipt = now;
    assert!(!m.is_locked(now, &p), "no Lock1 sent yet");
    m.send(&mut out, now, CmsCommand::Lock1); // seq 1
    assert!(!m.is_locked(now, &p), "Prohibit predates the Lock1");
    m.report = Some(dn(2).prohibit(1).0);
    assert!(m.is_locked(now, &p));
    m.report = Some(dn(2).applied(1).lock(LockState::None).0);
    assert!(!m.is_locked(now, &p), "applied but not Prohibit");
}

#[test]
fn a_member_sent_unlock_or_lock2_since_the_latest_lock1_is_not_locked() {
    for release in [
        CmsCommand::Unlock {
            primary: InstanceId(6001),
        },
        CmsCommand::Lock2 {
            primary: InstanceId(6001),
        },
    ] {
        let (mut m, mut out, p) = member();
        let now = Instant::from_secs(1);
        m.receipt = now;
        m.send(&mut out, now, CmsCommand::Lock1); // seq 1
        m.send(&mut out, now, release.clone()); // seq 2
        m.report = Some(dn(2).prohibit(1).0);
        assert!(!m.is_locked(now, &p));
        m.send(&mut out, now, CmsCommand::Lock1); // seq 3
        assert!(!m.is_locked(now, &p), "Prohibit from before the new Lock1");
        m.report = Some(dn(2).prohibit(3).0);
        assert!(m.is_locked(now, &p));
    }
}

#[test]
fn a_member_sent_ten_failovers_is_not_locked() {
    let (mut m, mut out, p) = member();
    let now = Instant::from_secs(1);
    m.receipt = now;
    m.send(&mut out, now, CmsCommand::Lock1);
    m.report = Some(dn(2).prohibit(1).0);
    m.failovers_sent = 9;
    assert!(m.is_locked(now, &p));
    m.failovers_sent = 10;
    assert!(!m.is_locked(now, &p));
}

#[test]
fn a_timed_out_member_is_not_locked() {
    let (mut m, mut out, p) = member();
    let now = Instant::from_secs(1);
    m.receipt = now;
    m.send(&mut out, now, CmsCommand::Lock1);
    m.report = Some(dn(2).prohibit(1).0);
    assert!(!m.is_locked(Instant::from_secs(4), &p));
}

#[test]
fn rounds_count_per_report_and_reset_while_the_group_has_a_valid_primary() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert!(h.leader.groups()[&G].members.iter().all(|m| m.rounds == 0));
    h.advance_ms(1000);
    h.reports(vec![dn(1).down(), dn(2), dn(3), dn(2)]);
    let rounds: Vec<u64> = h.leader.groups()[&G]
        .members
        .iter()
        .map(|m| m.rounds)
        .collect();
    assert_eq!(rounds, vec![1, 2, 1]);
    h.reports(vec![dn(1).primary(1)]);
    assert!(h.leader.groups()[&G].members.iter().all(|m| m.rounds == 0));
}

#[test]
#[should_panic(expected = "one Failover/Switchover per term")]
fn a_second_promotion_for_one_term_panics() {
    let mut h = H::new(3);
    let _ = &mut h;
    let mut arb = h.leader.groups()[&G].clone();
    arb.note_promotion(Term(2));
    arb.note_promotion(Term(2));
}

/// `reset` (a new leadership) keeps a committed, unanswered promotion's member as possibly
/// primary, and sets no `awaiting` wait (the code used to set it and clear it two lines later,
/// against its comment).
#[test]
fn reset_keeps_an_unanswered_promotion_possible_without_an_awaiting_wait() {
    let h = H::new(3);
    let mut g = h.group().clone();
    g.term = Term(2);
    g.static_primary = InstanceId(6002);
    let mut arb = super::GroupArbiter::new(&h.cfg, &h.cfg.groups[0], Instant::ZERO);
    arb.awaiting = Some((Term(1), InstanceId(6001), Instant::ZERO));
    arb.reset(Instant::from_secs(5), Some(&g));
    assert_eq!(arb.awaiting, None);
    let i = arb.index_of(InstanceId(6002)).unwrap();
    assert_eq!(arb.members[i].promotion.map(|(t, _)| t), Some(Term(2)));
    assert!(arb.members[i].may_be_primary(InstanceId(6002)));
    assert_eq!(G, h.cfg.groups[0].id);
}
