//! The promotion history (§15) as the leader records it: once, when the promoted member reports
//! Primary at the committed term on its new timeline, with the reason committed with the term
//! (else read from the state).

use crate::dn::{DbState, History};
use crate::history::{Promotion, PromotionReason};
use crate::ids::{InstanceId, Lsn, Term, Timeline};
use crate::server::harness::{G, H, dn};
use crate::state::{Change, Conflict, OutcomeError};
use crate::time::WallMillis;

fn recorded(h: &H) -> Vec<Promotion> {
    h.queued()
        .into_iter()
        .filter_map(|c| match c {
            Change::RecordPromotion(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// 6001 primary at term 1 until `at_ms` past the start, then killed; 6002 promoted at term 2.
fn failed_over(set_up: impl FnOnce(&mut H)) -> H {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.commit();
    set_up(&mut h);
    h.group_mut().term = Term(2);
    h.group_mut().static_primary = InstanceId(6002);
    h
}

fn promoted_report() -> crate::server::harness::Rb {
    let hist = History::root(Timeline(1)).branch(Lsn(100), Timeline(2));
    dn(2).primary(2).pos(2, 10).hist(hist)
}

#[test]
fn the_first_primary_is_recorded_as_start_when_it_reports_primary_at_the_term() {
    let mut h = H::new(3);
    let wall = h.wall;
    h.healthy_round(3);
    assert_eq!(
        recorded(&h),
        vec![Promotion {
            group: G,
            term: Term(1),
            instance: InstanceId(6001),
            previous: None,
            reason: PromotionReason::Start,
            timeline: Timeline(1),
            wall_ms: wall,
        }]
    );
    h.commit();
    // Committed: later reports of the same term propose nothing more.
    h.advance_ms(1000);
    h.healthy_round(3);
    assert_eq!(recorded(&h), vec![]);
    assert_eq!(h.state.state_mut().promotions.len(), 1);
}

#[test]
fn a_failover_is_recorded_only_once_the_promoted_member_reports_primary_at_the_new_term() {
    let mut h = failed_over(|_| {});
    h.advance_ms(1000);
    // Not yet promoted (still a standby, the term not reached): nothing recorded.
    h.report(dn(2).pos(1, 100));
    assert_eq!(recorded(&h), vec![]);
    h.advance_ms(500);
    h.report(promoted_report());
    assert_eq!(
        recorded(&h),
        vec![Promotion {
            group: G,
            term: Term(2),
            instance: InstanceId(6002),
            previous: Some(InstanceId(6001)),
            reason: PromotionReason::Failover,
            timeline: Timeline(2),
            wall_ms: WallMillis(1_001_500),
        }]
    );
    // Proposed once while in flight.
    h.advance_ms(100);
    h.report(promoted_report());
    assert_eq!(recorded(&h).len(), 1);
}

#[test]
fn a_hung_old_primary_makes_the_reason_phony_dead() {
    let mut h = failed_over(|h| {
        let until = h.wall.saturating_add(core::time::Duration::from_secs(600));
        h.group_mut()
            .phony_dead_cooldown
            .insert(InstanceId(6001), until);
    });
    h.advance_ms(1000);
    h.report(promoted_report());
    assert_eq!(
        recorded(&h).iter().map(|p| p.reason).collect::<Vec<_>>(),
        vec![PromotionReason::PhonyDead]
    );
}

#[test]
fn a_damaged_disk_on_the_old_primary_makes_the_reason_disk() {
    let mut h = failed_over(|h| {
        h.report(dn(1).primary(1).db(DbState::DiskDamaged));
    });
    h.advance_ms(1000);
    h.report(promoted_report());
    assert_eq!(
        recorded(&h).iter().map(|p| p.reason).collect::<Vec<_>>(),
        vec![PromotionReason::Disk]
    );
}

/// The reason is the deciding leader's, committed with the term: a leader that sees nothing
/// of the old primary's disk (it took over after the decision) records the disk failover the
/// deciding one saw.
#[test]
fn the_reason_committed_with_the_term_is_recorded_whoever_records_it() {
    let mut h = failed_over(|h| h.group_mut().term_reason = Some(PromotionReason::Disk));
    h.advance_ms(1000);
    h.report(promoted_report());
    assert_eq!(
        recorded(&h).iter().map(|p| p.reason).collect::<Vec<_>>(),
        vec![PromotionReason::Disk]
    );
}

#[test]
fn a_refused_record_is_proposed_again_only_if_still_missing() {
    let mut h = failed_over(|_| {});
    h.advance_ms(1000);
    h.report(promoted_report());
    // Another leader's identical record committed first: ours is refused and not retried.
    let first = recorded(&h).remove(0);
    h.state.state_mut().promotions.record(first);
    h.state.commit_all();
    let outcomes = crate::state::ReplicatedState::take_outcomes(&mut h.state);
    let refusal = outcomes
        .iter()
        .find(|o| matches!(o.change, Change::RecordPromotion(_)))
        .map(|o| o.result.clone());
    assert_eq!(
        refusal,
        Some(Err(OutcomeError::Conflict(Conflict::AlreadyRecorded)))
    );
    h.leader.on_outcomes(h.now, h.wall, outcomes, &mut h.state);
    h.advance_ms(1000);
    h.report(promoted_report());
    assert_eq!(recorded(&h), vec![]);
    assert_eq!(
        h.state.state_mut().promotions.last_of(G).map(|p| p.term),
        Some(Term(2))
    );
}

/// Whatever the term number (after `cm_ctl stop`/`start`, or two-node terms), a promotion with
/// no primary before it, recorded or heard of, is the group's start.
#[test]
fn a_first_primary_at_a_later_term_is_a_start() {
    let mut h = H::new(3);
    h.group_mut().term = Term(5);
    h.reports(vec![
        dn(1).primary(5),
        dn(2).upstream(1, 100),
        dn(3).upstream(1, 100),
    ]);
    assert_eq!(
        recorded(&h)
            .iter()
            .map(|p| (p.term, p.previous, p.reason))
            .collect::<Vec<_>>(),
        vec![(Term(5), None, PromotionReason::Start)]
    );
}

#[test]
fn of_two_live_primaries_at_one_term_only_the_static_primary_is_recorded() {
    let mut h = failed_over(|_| {});
    h.advance_ms(1000);
    // 6003 also says Primary at term 2 on a timeline of its own: not the group's promotion.
    let hist = History::root(Timeline(1)).branch(Lsn(100), Timeline(3));
    h.report(dn(3).primary(2).pos(3, 10).hist(hist));
    assert_eq!(recorded(&h), vec![]);
    h.advance_ms(100);
    h.report(promoted_report());
    assert_eq!(
        recorded(&h)
            .iter()
            .map(|p| (p.instance, p.term))
            .collect::<Vec<_>>(),
        vec![(InstanceId(6002), Term(2))]
    );
}
