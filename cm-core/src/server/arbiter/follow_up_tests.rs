//! Follow-ups once a valid primary exists (§4.2 "Then").

use crate::dn::{DbState, History, LockState};
use crate::ids::{InstanceId, Lsn, Term, Timeline};
use crate::msg::CmsCommand;
use crate::server::harness::{H, cmds, dn};

/// 6002 was promoted at term 2 onto timeline 2, forking timeline 1 at LSN 100.
fn promoted() -> (H, History) {
    let mut h = H::new(3);
    h.group_mut().term = Term(2);
    h.group_mut().static_primary = InstanceId(6002);
    let h2 = History::root(Timeline(1)).branch(Lsn(100), Timeline(2));
    (h, h2)
}

const P: InstanceId = InstanceId(6002);

#[test]
fn a_locked_new_primary_is_unlocked() {
    let (mut h, h2) = promoted();
    let out = h.report(
        dn(2)
            .primary(2)
            .pos(2, 10)
            .hist(h2)
            .lock(LockState::Prohibit),
    );
    assert_eq!(cmds(&out), vec![(6002, CmsCommand::Unlock { primary: P })]);
}

#[test]
fn standbys_off_the_timeline_get_lock2_on_it_unlock_and_pending_get_notify() {
    let (mut h, h2) = promoted();
    h.report(dn(2).primary(2).pos(2, 10).hist(h2.clone()));
    let out = h.reports(vec![
        dn(3).pos(1, 100).lock(LockState::Prohibit),
        dn(1).pending().pos(1, 90),
    ]);
    assert_eq!(
        cmds(&out),
        vec![
            (6003, CmsCommand::Lock2 { primary: P }),
            (6001, CmsCommand::NotifyStandby { primary: P }),
        ]
    );
    // Once on timeline 2, the Lock2'd standby is released to normal following.
    h.advance_ms(1000);
    let out = h.report(dn(3).pos(2, 5).hist(h2).lock(LockState::Specified(P)));
    assert_eq!(cmds(&out), vec![(6003, CmsCommand::Unlock { primary: P })]);
}

#[test]
fn a_diverged_standby_is_built_one_at_a_time_in_small_groups() {
    let (mut h, h2) = promoted();
    h.report(dn(2).primary(2).pos(2, 10).hist(h2));
    // Both hold WAL on timeline 1 past the fork at 100: diverged.
    let out = h.reports(vec![dn(1).pos(1, 120), dn(3).pos(1, 130)]);
    assert_eq!(cmds(&out), vec![(6001, CmsCommand::Build { source: P })]);
    h.advance_ms(1000);
    let out = h.reports(vec![
        dn(1).pos(1, 120).db(DbState::Building),
        dn(3).pos(1, 130),
    ]);
    assert_eq!(cmds(&out), vec![], "one build at a time");
    h.advance_ms(1000);
    let out = h.reports(vec![dn(1).pos(2, 10).applied(1), dn(3).pos(1, 130)]);
    assert_eq!(cmds(&out), vec![(6003, CmsCommand::Build { source: P })]);
}

#[test]
fn follow_ups_are_not_repeated_within_the_resend_interval() {
    let (mut h, h2) = promoted();
    let p = dn(2).primary(2).pos(2, 10).hist(h2);
    h.report(p.clone());
    assert_eq!(cmds(&h.report(dn(1).pending())).len(), 1);
    h.advance_ms(2999);
    h.report(p.clone());
    assert_eq!(cmds(&h.report(dn(1).pending())), vec![]);
    h.advance_ms(1);
    assert_eq!(
        cmds(&h.reports(vec![p, dn(1).pending()])),
        vec![(6001, CmsCommand::NotifyStandby { primary: P })]
    );
}

#[test]
fn a_following_standby_with_a_stale_upstream_is_repointed_to_the_primary() {
    // Seed 26 of the swarm: a standby follows normally (lock None) but its upstream setting
    // is an old primary, so it streams from no one. Not diverged: it must be re-pointed.
    let (mut h, h2) = promoted();
    h.report(dn(2).primary(2).pos(2, 10).hist(h2.clone()));
    let out = h.reports(vec![
        dn(3).pos(1, 90),                                // on the history, off the timeline
        dn(1).pos(2, 5).hist(h2.clone()).upstream(3, 0), // streams from a non-primary
    ]);
    assert_eq!(
        cmds(&out),
        vec![
            (6003, CmsCommand::Lock2 { primary: P }),
            (6001, CmsCommand::Unlock { primary: P }),
        ]
    );
    // Applied but not streaming yet (the receiver connects later): not re-sent, even after
    // the resend interval.
    h.advance_ms(5000);
    let out = h.reports(vec![
        dn(2).primary(2).pos(2, 10).hist(h2.clone()),
        dn(3).pos(1, 90).lock(LockState::Specified(P)).applied(1),
        dn(1).pos(2, 5).hist(h2.clone()).applied(2),
    ]);
    assert_eq!(cmds(&out), vec![]);
    // Unapplied (the command was lost): re-sent after the resend interval.
    let (mut h, _) = promoted();
    h.report(dn(2).primary(2).pos(2, 10).hist(h2.clone()));
    assert_eq!(cmds(&h.report(dn(1).pos(2, 5).hist(h2.clone()))).len(), 1);
    h.advance_ms(3000);
    h.report(dn(2).primary(2).pos(2, 10).hist(h2.clone()));
    assert_eq!(
        cmds(&h.report(dn(1).pos(2, 5).hist(h2))),
        vec![(6001, CmsCommand::Unlock { primary: P })]
    );
}

#[test]
fn a_standby_streaming_from_the_primary_gets_nothing() {
    let (mut h, h2) = promoted();
    h.report(dn(2).primary(2).pos(2, 10).hist(h2.clone()));
    let out = h.report(dn(1).pos(2, 5).hist(h2).upstream(2, 10));
    assert_eq!(cmds(&out), vec![]);
}

#[test]
fn an_applied_repoint_that_never_streams_is_sent_again_after_the_heartbeat_timeout() {
    // Swarm seeds 7506, 8885: the standby was hung (state Z/D) when Lock2 arrived; its agent
    // made the command durable (applied) but the DN never took it, so it kept no upstream and
    // lock None. Trusting "applied" forever left it not streaming for good.
    let (mut h, h2) = promoted();
    let p = dn(2).primary(2).pos(2, 10).hist(h2);
    let hung = dn(3).pos(1, 90).applied(1); // applied, lock None, no stream
    let out = h.reports(vec![p.clone(), dn(3).pos(1, 90)]);
    assert_eq!(cmds(&out), vec![(6003, CmsCommand::Lock2 { primary: P })]);
    h.advance_ms(3000);
    assert_eq!(cmds(&h.reports(vec![p.clone(), hung.clone()])), vec![]);
    h.advance_ms(2999);
    assert_eq!(cmds(&h.reports(vec![p.clone(), hung.clone()])), vec![]);
    h.advance_ms(1);
    assert_eq!(
        cmds(&h.reports(vec![p, hung])),
        vec![(6003, CmsCommand::Lock2 { primary: P })]
    );
}
