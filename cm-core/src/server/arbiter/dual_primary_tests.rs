//! Dual primaries (§4.4).

use core::time::Duration;

use crate::ids::{GroupId, InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, cmds, command, dn};
use crate::server::leader::LeaderOutput;
use crate::state::{Change, PendingSwitchover};
use crate::time::WallMillis;

#[test]
fn a_primary_below_the_groups_term_is_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(2);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![dn(2).primary(2), dn(3)]);
    let out = h.report(dn(1).primary(1));
    assert_eq!(out, vec![command(1, 1, CmsCommand::Restart)]);
}

/// Two-node healing (§5.4): this leader committed group term 10 (its side promoted 6002 at 10)
/// and 6001, promoted at 11 by the other side while both led alone, reports as primary. The
/// group's term is the higher one: 6002 is restarted at once, before any merge commits
/// (before the fix neither was, and both kept accepting writes: swarm seed 285).
#[test]
fn a_primary_below_another_live_primarys_term_is_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(10);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![dn(2).primary(10), dn(3)]);
    let out = h.report(dn(1).primary(11));
    // No valid primary until the merge makes 6001 static at term 11: the standby is locked.
    let lock = command(3, 2, CmsCommand::Lock1);
    assert_eq!(out, vec![command(2, 1, CmsCommand::Restart), lock]);
}

#[test]
fn primaries_tied_at_the_highest_term_are_all_restarted() {
    let mut h = H::new(3);
    h.report(dn(1).primary(1));
    let out = h.report(dn(2).primary(1));
    assert_eq!(
        out,
        vec![
            LeaderOutput::Alarm(Alarm::DoublePrimary { group: G }),
            command(1, 1, CmsCommand::Restart),
            command(2, 1, CmsCommand::Restart),
        ]
    );
}

#[test]
fn the_demoting_primary_of_a_switchover_is_not_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(2);
    h.group_mut().switchover = Some(PendingSwitchover {
        target: InstanceId(6002),
        from: InstanceId(6001),
        term: Term(2),
        fast: false,
        deadline: WallMillis(u64::MAX),
    });
    let out = h.report(dn(1).primary(1));
    assert!(!cmds(&out).contains(&(6001, CmsCommand::Restart)));
}

fn begin_target(h: &H) -> Option<InstanceId> {
    h.queued().into_iter().find_map(|c| match c {
        Change::BeginSwitchover {
            group: GroupId(1),
            switchover,
            ..
        } => Some(switchover.target),
        _ => None,
    })
}

#[test]
fn a_primary_restarted_more_than_3_times_in_10_minutes_or_8_in_an_hour_is_switched_over() {
    for (r10, r1h, wanted) in [(3, 8, false), (4, 4, true), (3, 9, true)] {
        let mut h = H::new(3);
        h.reports(vec![
            dn(2).upstream(1, 100),
            dn(3).upstream(1, 100).pos(1, 90),
        ]);
        h.report(dn(1).primary(1).restarts(r10, r1h));
        let want = wanted.then_some(InstanceId(6002));
        assert_eq!(begin_target(&h), want, "restarts {r10}/10min {r1h}/1h");
    }
}

/// Nemesis on real PostgreSQL (issue 16): the restart-count switchover chose any
/// Standby/Normal member, one whose receiver was down included; it could not reach the old
/// primary's final position, the switchover aborted, and the rule fired again at once. The
/// target must stream from the primary: 6002 (first in config order at the same position)
/// has no receiver, 6003 streams.
#[test]
fn the_restart_rule_switches_over_only_to_a_standby_streaming_from_the_primary() {
    let mut h = H::new(3);
    h.reports(vec![dn(2), dn(3).upstream(1, 100)]);
    h.report(dn(1).primary(1).restarts(4, 4));
    assert_eq!(begin_target(&h), Some(InstanceId(6003)));
}

/// Nor to a standby whose data disk is over the read-only threshold (85 %): the disk rule of
/// §7.2 would switch the primary straight back (swarm seed 290).
#[test]
fn the_restart_rule_does_not_switch_over_to_a_standby_over_the_disk_threshold() {
    let mut h = H::new(3);
    h.reports(vec![
        dn(2).upstream(1, 100).disk(85),
        dn(3).upstream(1, 100).disk(84),
    ]);
    h.report(dn(1).primary(1).restarts(4, 4));
    assert_eq!(begin_target(&h), Some(InstanceId(6003)));
}

/// Nor to a standby restarted as often itself (over either limit): the rule would switch it
/// straight back (nemesis seed 2, issue 16: 45 switchovers in 65 s between two DNs both
/// restarted by earlier faults). With every standby over a limit, no switchover at all.
#[test]
fn the_restart_rule_does_not_switch_over_to_a_standby_restarted_as_often() {
    for (r2, r3, want) in [
        ((4, 4), (3, 8), Some(6003)),
        ((3, 9), (0, 0), Some(6003)),
        ((3, 8), (4, 4), Some(6002)),
        ((4, 4), (3, 9), None),
    ] {
        let mut h = H::new(3);
        h.reports(vec![
            dn(2).upstream(1, 100).restarts(r2.0, r2.1),
            dn(3).upstream(1, 100).restarts(r3.0, r3.1),
        ]);
        h.report(dn(1).primary(1).restarts(4, 4));
        assert_eq!(
            begin_target(&h),
            want.map(InstanceId),
            "standby restarts {r2:?} and {r3:?}"
        );
    }
}

/// While no standby streams from the primary, the rule starts nothing; it starts the
/// switchover at the first report that shows one streaming.
#[test]
fn no_restart_switchover_while_no_standby_streams_from_the_primary() {
    let mut h = H::new(3);
    // 6002's receiver is down; 6003's points at the primary but it neither is caught up nor
    // advances (a receiver dying over a bad record).
    h.reports(vec![dn(2), dn(3).upstream(1, 100).pos(1, 90)]);
    h.report(dn(1).primary(1).restarts(4, 4));
    assert_eq!(begin_target(&h), None);
    h.advance_ms(1000);
    h.report(dn(1).primary(1).restarts(4, 4));
    h.report(dn(2));
    assert_eq!(begin_target(&h), None);
    h.report(dn(3).upstream(1, 100).pos(1, 100));
    assert_eq!(begin_target(&h), Some(InstanceId(6003)));
}

/// Drives a restart-count switchover of 6001 (restarted 4 times in 10 minutes, as its
/// reports keep saying) to 6002 into an abort — the target's process stops before it reached
/// the old primary's final position — and the old primary's promotion again at term 3.
/// `restarts` are the old primary's counts (10 minutes, 1 hour). Returns when the abort
/// committed.
fn aborted_restart_switchover(h: &mut H, restarts: (u32, u32)) -> crate::time::Instant {
    let (r10, r1h) = restarts;
    h.healthy_round(3);
    h.report(dn(1).primary(1).restarts(r10, r1h));
    assert_eq!(begin_target(h), Some(InstanceId(6002)));
    h.commit();
    h.advance_ms(300);
    h.report(dn(1).down().pos(1, 200).restarts(r10, r1h));
    h.report(dn(2).down().pos(1, 150));
    assert!(
        h.queued()
            .iter()
            .any(|c| matches!(c, Change::AbortSwitchover { .. }))
    );
    h.commit();
    let aborted = h.now;
    h.advance_ms(400);
    let out = h.report(dn(1).pending().pos(1, 200).restarts(r10, r1h));
    assert_eq!(
        cmds(&out),
        vec![(
            6001,
            CmsCommand::Failover {
                term: Term(3),
                reason: crate::history::PromotionReason::Switchover
            }
        )]
    );
    h.commit();
    aborted
}

/// One round of the promoted-again old primary (timeline 2 from LSN 200) with both standbys
/// streaming from it; `restarts` as its report says.
fn round_after_abort(h: &mut H, restarts: (u32, u32)) {
    let h2 = crate::dn::History::root(crate::ids::Timeline(1))
        .branch(crate::ids::Lsn(200), crate::ids::Timeline(2));
    h.report(
        dn(1)
            .primary(3)
            .pos(2, 10)
            .hist(h2.clone())
            .restarts(restarts.0, restarts.1),
    );
    h.report(dn(2).pos(2, 10).hist(h2.clone()).upstream(1, 100));
    h.report(dn(3).pos(2, 10).hist(h2).upstream(1, 100));
    h.commit();
}

/// After an aborted restart-count switchover the same restarts start no other (before: it
/// started again at once, 40–50 times in a row on real PostgreSQL). The 10-minute count may
/// start one again only once its window no longer reaches back before the abort: exactly
/// 600 s after the abort committed, with every standby streaming the whole time.
#[test]
fn after_an_aborted_restart_switchover_the_same_restarts_start_none_until_their_window_passed() {
    let mut h = H::new(3);
    let aborted = aborted_restart_switchover(&mut h, (4, 4));
    while h.now.saturating_since(aborted) < Duration::from_millis(599_999) {
        let step = Duration::from_millis(599_999) - h.now.saturating_since(aborted);
        h.advance_ms(step.as_millis().min(1000) as u64);
        round_after_abort(&mut h, (4, 4));
        assert_eq!(
            begin_target(&h),
            None,
            "{:?} after the abort",
            h.now.saturating_since(aborted)
        );
    }
    h.advance_ms(1);
    round_after_abort(&mut h, (4, 4));
    assert_eq!(h.now.saturating_since(aborted), Duration::from_secs(600));
    // Committed by the round: a new switchover began (to the first streaming standby).
    assert!(
        h.group().switchover.is_some(),
        "a restart-count switchover 600 s after the abort"
    );
}

/// New restarts after the abort count: a switchover starts again as soon as a count exceeds
/// the one at the abort (4 in 10 minutes, 8 in an hour) by more than its limit — those
/// restarts must be newer than the abort — and not before.
#[test]
fn after_an_aborted_restart_switchover_only_new_restarts_start_another() {
    for (restarts, wanted) in [
        ((7, 8), false),
        ((8, 8), true),
        ((4, 16), false),
        ((4, 17), true),
    ] {
        let mut h = H::new(3);
        aborted_restart_switchover(&mut h, (4, 8));
        h.advance_ms(1000);
        round_after_abort(&mut h, restarts);
        assert_eq!(
            h.group().switchover.is_some(),
            wanted,
            "restarts {restarts:?} after an abort at (4, 8)"
        );
    }
}
