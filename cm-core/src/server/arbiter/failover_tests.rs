//! The failover flow of §4.2, asserted command by command.

use crate::dn::LockState;
use crate::history::PromotionReason;
use crate::ids::{InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, Rb, cmds, command, dn};
use crate::server::leader::LeaderOutput;
use crate::state::Change;

const LOCK1: CmsCommand = CmsCommand::Lock1;

fn promote(to: u32, expected: u64) -> Change {
    Change::Promote {
        group: G,
        expected_term: Term(expected),
        static_primary: InstanceId(6000 + to),
        reason: if expected == 0 {
            PromotionReason::Start
        } else {
            PromotionReason::Failover
        },
    }
}

fn promotes(h: &H) -> Vec<Change> {
    h.queued()
        .into_iter()
        .filter(|c| matches!(c, Change::Promote { .. }))
        .collect()
}

/// One second, then one report per member: 6001 down (agent alive), the others as given.
fn round(h: &mut H, others: &[Rb]) -> Vec<LeaderOutput> {
    h.advance_ms(1000);
    let mut out = h.report(dn(1).down());
    for r in others {
        out.extend(h.report(r.clone()));
    }
    out
}

/// A healthy group whose primary process then dies: Lock1 goes to every standby at once.
fn primary_killed(n: u32) -> H {
    let mut h = H::new(n as usize);
    assert_eq!(h.healthy_round(n), vec![]);
    let standbys: Vec<Rb> = (2..=n).map(dn).collect();
    let out = round(&mut h, &standbys);
    let expected: Vec<LeaderOutput> = (2..=n).map(|i| command(i, 1, LOCK1)).collect();
    assert_eq!(out, expected);
    h
}

/// Members `locked` report Prohibit after applying their Lock1; the rest keep streaming.
fn lock_round(h: &mut H, n: u32, locked: &[u32]) -> Vec<LeaderOutput> {
    let rs: Vec<Rb> = (2..=n)
        .map(|i| {
            if locked.contains(&i) {
                h.locked(i)
            } else {
                dn(i)
            }
        })
        .collect();
    round(h, &rs)
}

#[test]
fn one_primary_two_standbys_needs_both_standbys_locked() {
    let mut h = primary_killed(3);
    for _ in 0..10 {
        lock_round(&mut h, 3, &[2]);
    }
    assert_eq!(promotes(&h), vec![]);
    lock_round(&mut h, 3, &[2, 3]);
    assert_eq!(promotes(&h), vec![promote(2, 1)]);
}

#[test]
fn one_primary_three_standbys_needs_two_locked() {
    let mut h = primary_killed(4);
    for _ in 0..10 {
        lock_round(&mut h, 4, &[2]);
    }
    assert_eq!(promotes(&h), vec![]);
    lock_round(&mut h, 4, &[2, 3]);
    assert_eq!(promotes(&h), vec![promote(2, 1)]);
}

#[test]
fn one_primary_four_standbys_needs_three_locked() {
    let mut h = primary_killed(5);
    for _ in 0..10 {
        lock_round(&mut h, 5, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![]);
    lock_round(&mut h, 5, &[2, 3, 4]);
    assert_eq!(promotes(&h), vec![promote(2, 1)]);
}

#[test]
fn lock1_quorum_override_replaces_q() {
    let mut cfg = crate::server::harness::cluster(&[("AZ1", 1)], &["AZ1"; 5], Default::default());
    cfg.params.test.lock1_quorum_override = 1;
    let mut h = H::with(cfg);
    h.healthy_round(5);
    round(&mut h, &[dn(2), dn(3), dn(4), dn(5)]);
    for _ in 0..6 {
        lock_round(&mut h, 5, &[2]);
    }
    assert_eq!(promotes(&h), vec![promote(2, 1)]);
}

/// Rounds after the kill at which the Promote appears: (round, first report of the round).
fn rounds_until_promote(restarted_lsn: u64) -> (usize, Vec<Change>) {
    let mut h = primary_killed(3);
    // The old primary comes back pending and is locked like the others.
    h.advance_ms(1000);
    assert_eq!(
        cmds(&h.report(dn(1).pending().pos(1, restarted_lsn))),
        vec![(6001, LOCK1)]
    );
    h.report(dn(2).prohibit(1));
    h.report(dn(3).prohibit(1));
    for r in 3..=10 {
        h.advance_ms(1000);
        h.report(dn(1).pending().pos(1, restarted_lsn).prohibit(1));
        let p = promotes(&h);
        if !p.is_empty() {
            return (r, p);
        }
        h.report(dn(2).prohibit(1));
        h.report(dn(3).prohibit(1));
    }
    panic!("no promotion");
}

#[test]
fn restarted_static_primary_wins_after_five_rounds() {
    assert_eq!(rounds_until_promote(100), (5, vec![promote(1, 1)]));
}

#[test]
fn another_candidate_waits_six_rounds() {
    // The restarted old primary lost WAL: 6002 holds the maximum and waits 6 rounds.
    assert_eq!(rounds_until_promote(90), (6, vec![promote(2, 1)]));
}

#[test]
fn a_non_static_candidate_waits_the_start_delay_while_the_cluster_starts() {
    let mut h = primary_killed(3);
    let until = h.wall.saturating_add(core::time::Duration::from_secs(1000));
    h.state.state_mut().starting_until = Some(until);
    // The kill round counted 1; 178 more reach 179 rounds, one short of the delay.
    for _ in 0..178 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![]);
    lock_round(&mut h, 3, &[2, 3]);
    assert_eq!(promotes(&h), vec![starting(promote(2, 1))]);
}

/// A cold start whose first Failover never took effect (on real PostgreSQL under load the
/// agent could not confirm its term, and the leader decided again at the next term) is still
/// the group's start: the history's first row said "failover" before.
#[test]
fn a_start_promotion_that_never_took_effect_is_still_the_start() {
    let mut h = primary_killed(3);
    h.group_mut().term_reason = Some(PromotionReason::Start);
    assert_eq!(promoted(&mut h), vec![starting(promote(2, 1))]);
}

/// Once the start's promotion took effect (its timeline recorded), the next one is a failover.
#[test]
fn once_the_start_took_effect_the_next_promotion_is_a_failover() {
    let mut h = primary_killed(3);
    h.group_mut().term_reason = Some(PromotionReason::Start);
    h.group_mut()
        .timelines
        .insert(Term(1), crate::dn::History::root(crate::ids::Timeline(1)));
    assert_eq!(promoted(&mut h), vec![promote(2, 1)]);
}

/// Lock rounds with both standbys locked until the leader promotes (at most 20).
fn promoted(h: &mut H) -> Vec<Change> {
    for _ in 0..20 {
        lock_round(h, 3, &[2, 3]);
        if !promotes(h).is_empty() {
            break;
        }
    }
    promotes(h)
}

/// `p` as decided while `cm_ctl start` is in effect.
fn starting(p: Change) -> Change {
    match p {
        Change::Promote {
            group,
            expected_term,
            static_primary,
            ..
        } => Change::Promote {
            group,
            expected_term,
            static_primary,
            reason: PromotionReason::Start,
        },
        other => other,
    }
}

#[test]
fn failover_is_sent_only_once_the_promote_committed() {
    let mut h = primary_killed(3);
    let mut out = Vec::new();
    for _ in 0..6 {
        out.extend(lock_round(&mut h, 3, &[2, 3]));
    }
    assert_eq!(promotes(&h), vec![promote(2, 1)]);
    assert_eq!(cmds(&out), vec![], "nothing is sent before the commit");
    let out = h.commit();
    assert_eq!(
        out,
        vec![
            command(
                2,
                2,
                CmsCommand::Failover {
                    term: Term(2),
                    reason: PromotionReason::Failover
                }
            ),
            LeaderOutput::Alarm(Alarm::Failover {
                group: G,
                instance: InstanceId(6002)
            }),
        ]
    );
    assert_eq!(h.group().term, Term(2));
    assert_eq!(h.group().static_primary, InstanceId(6002));
}

/// After `cm_ctl stop` and `start` the first promotion is at term 2 or more: while the start is
/// in effect it is the cluster starting, not a failover, so no Failover alarm.
#[test]
fn a_promotion_while_the_cluster_starts_raises_no_failover_alarm() {
    let mut h = primary_killed(3);
    let until = h.wall.saturating_add(core::time::Duration::from_secs(1000));
    h.state.state_mut().starting_until = Some(until);
    for _ in 0..179 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![starting(promote(2, 1))]);
    // Term 2 (the old rule alarmed on any term above 1); the agent is told it is a start, so
    // its on_failover trigger does not fire either.
    let out = h.commit();
    assert_eq!(
        out,
        vec![command(
            2,
            2,
            CmsCommand::Failover {
                term: Term(2),
                reason: PromotionReason::Start
            }
        )]
    );
    assert_eq!(h.group().term_reason, Some(PromotionReason::Start));
}

#[test]
fn a_refused_promote_sends_nothing() {
    let mut h = primary_killed(3);
    for _ in 0..6 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    // Someone else moved the term first: the compare-and-set fails.
    h.group_mut().term = Term(7);
    let out = h.commit();
    assert_eq!(cmds(&out), vec![]);
    assert_eq!(h.group().term, Term(7));
}

#[test]
fn every_resend_commits_a_fresh_term() {
    let mut h = primary_killed(3);
    for _ in 0..6 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(
        cmds(&h.commit()),
        vec![(
            6002,
            CmsCommand::Failover {
                term: Term(2),
                reason: PromotionReason::Failover
            }
        )]
    );
    // 6002 never promotes: once instance_heartbeat_timeout (6 s) passed since the send (the
    // 5-round wait of the static primary is shorter), a fresh term.
    for _ in 0..5 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![], "it could still be promoting");
    {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![promote(2, 2)]);
    assert_eq!(
        cmds(&h.commit()),
        vec![(
            6002,
            CmsCommand::Failover {
                term: Term(3),
                reason: PromotionReason::Failover
            }
        )]
    );
}

#[test]
fn a_member_sent_ten_failovers_is_no_candidate() {
    let mut h = primary_killed(4);
    let mut sent = 0;
    let mut restart = None;
    // 6002 gets a Failover after 6 rounds, then every 6 s: ten by round 60. It never answers,
    // so before 6003 may take over, 6002 — which may have promoted unseen — is fenced.
    for _ in 0..90 {
        let mut out = lock_round(&mut h, 4, &[2, 3, 4]);
        out.extend(h.commit());
        for o in &out {
            if let LeaderOutput::Command { cmd, .. } = o
                && cmd.instance == InstanceId(6002)
            {
                match cmd.cmd {
                    CmsCommand::Failover { .. } => sent += 1,
                    CmsCommand::Restart => restart = Some(cmd.seq.0),
                    _ => {}
                }
            }
        }
        if restart.is_some() {
            break;
        }
    }
    assert_eq!(sent, 10);
    let restart = restart.expect("6002 is fenced before another member is promoted");
    assert_eq!(promotes(&h), vec![]);
    let arb = &h.leader.groups()[&G];
    assert_eq!(arb.member(InstanceId(6002)).unwrap().failovers_sent, 10);
    assert_eq!(arb.member(InstanceId(6003)).unwrap().failovers_sent, 0);
    // 6002 comes back pending after the Restart: resolved, and 6003 takes over.
    let rs = [dn(2).pending().applied(restart), h.locked(3), h.locked(4)];
    round(&mut h, &rs);
    let mut to_6003 = 0;
    for _ in 0..20 {
        lock_round(&mut h, 4, &[2, 3, 4]);
        to_6003 += cmds(&h.commit())
            .iter()
            .filter(|(i, c)| *i == 6003 && matches!(c, CmsCommand::Failover { .. }))
            .count();
    }
    assert!(
        to_6003 > 0,
        "the next candidate is promoted once 6002 is fenced"
    );
}

/// §6/§8 "fencing comes first": a Failover target that stopped promoting without ever
/// reporting Primary (a DN that hung mid-promotion) may be primary unseen; another member is
/// promoted only after it is fenced. (Swarm seed 6261: the target hung in state Z right after
/// its Failover, the next member was promoted 6 s later, and the first resumed as a primary.)
#[test]
fn an_unresolved_failover_target_is_fenced_before_another_member_is_promoted() {
    let mut h = primary_killed(4);
    let mut failover = None;
    for _ in 0..10 {
        lock_round(&mut h, 4, &[2, 3, 4]);
        if let Some(t) = cmds(&h.commit())
            .into_iter()
            .find_map(|(i, c)| matches!(c, CmsCommand::Failover { .. }).then_some(i))
        {
            failover = Some(t);
            break;
        }
    }
    assert_eq!(failover, Some(6002));
    // 6002 hangs: its agent reports its last known role with an unknown status.
    let mut restarted = None;
    for _ in 0..10 {
        let rs = [
            dn(2)
                .db(crate::dn::DbState::Unknown)
                .lock(LockState::Unknown),
            h.locked(3),
            h.locked(4),
        ];
        let out = round(&mut h, &rs);
        let mut out = cmds(&out);
        out.extend(cmds(&h.commit()));
        assert!(
            !out.iter()
                .any(|(i, c)| *i == 6003 && matches!(c, CmsCommand::Failover { .. })),
            "6003 promoted while 6002 may be primary: {out:?}"
        );
        if out.contains(&(6002, CmsCommand::Restart)) {
            restarted = Some(h.now);
            break;
        }
    }
    assert!(restarted.is_some(), "6002 is fenced");
}

#[test]
fn a_prohibit_report_from_before_the_latest_lock1_is_not_locked() {
    let mut h = primary_killed(3);
    // Prohibit, but the agent has applied only command 0: the Lock1 (seq 1) is not confirmed.
    for _ in 0..10 {
        let rs = vec![dn(2).lock(LockState::Prohibit), dn(3).prohibit(1)];
        round(&mut h, &rs);
    }
    assert_eq!(promotes(&h), vec![]);
    let arb = &h.leader.groups()[&G];
    assert_eq!(arb.locked_count_at(h.now, h.leader.params()), 1);
}

#[test]
fn no_failover_while_a_heard_from_member_still_says_primary() {
    let mut h = primary_killed(3);
    for _ in 0..10 {
        // A stale primary (term 0 < 1) is being restarted and still reports.
        h.advance_ms(1000);
        h.report(dn(1).primary(0));
        h.report(h.locked(2));
        h.report(h.locked(3));
    }
    assert_eq!(promotes(&h), vec![]);
}

#[test]
fn delay_arbitrate_timeout_holds_a_cross_az_candidate() {
    let mut cfg = crate::server::harness::cluster(
        &[("AZ1", 1), ("AZ2", 2)],
        &["AZ1", "AZ1", "AZ2"],
        Default::default(),
    );
    cfg.params.delay_arbitrate_timeout = 20;
    let mut h = H::with(cfg);
    h.healthy_round(3);
    round(&mut h, &[dn(2), dn(3)]);
    // 6002 (same AZ as the static primary) is behind; 6003 in AZ2 holds the maximum. 6002 is
    // online and locked, so every online member of AZ1 is locked: no delay.
    for _ in 0..6 {
        round(&mut h, &[dn(2).pos(1, 90).prohibit(1), dn(3).prohibit(1)]);
    }
    assert_eq!(promotes(&h), vec![promote(3, 1)]);
}

#[test]
fn delay_arbitrate_timeout_waits_while_an_online_member_of_the_static_az_is_unlocked() {
    let mut cfg = crate::server::harness::cluster(
        &[("AZ1", 1), ("AZ2", 2)],
        &["AZ1", "AZ1", "AZ2", "AZ2"],
        Default::default(),
    );
    cfg.params.delay_arbitrate_timeout = 20;
    let mut h = H::with(cfg);
    h.healthy_round(4);
    round(&mut h, &[dn(2), dn(3), dn(4)]);
    // Rounds reach 20 (= the delay) after 19 more: held; at 21 the delay is over.
    for _ in 0..19 {
        round(&mut h, &[dn(2), dn(3).prohibit(1), dn(4).prohibit(1)]);
    }
    assert_eq!(promotes(&h), vec![]);
    round(&mut h, &[dn(2), dn(3).prohibit(1), dn(4).prohibit(1)]);
    assert_eq!(promotes(&h), vec![promote(3, 1)]);
}

#[test]
fn no_arbitration_while_paused_or_stopping() {
    for pause in [true, false] {
        let mut h = primary_killed(3);
        if pause {
            h.state.state_mut().paused = true;
        } else {
            h.state.state_mut().stopping = true;
        }
        let mut out = Vec::new();
        for _ in 0..10 {
            out.extend(lock_round(&mut h, 3, &[2, 3]));
            out.extend(h.tick());
        }
        assert_eq!(cmds(&out), vec![]);
        assert_eq!(promotes(&h), vec![]);
    }
}

#[path = "failover_props.rs"]
mod props;

/// The primary's node goes silent; the standbys stay locked and report every 200 ms, ticks
/// and commits follow. Returns (ms since the silence, term) of every Failover sent.
fn failovers_after_node_crash(promoting_from_ms: Option<u64>) -> Vec<(u64, Term)> {
    let mut h = primary_killed_silently();
    let mut sent = Vec::new();
    for step in 1..=150u64 {
        h.advance_ms(200);
        let ms = step * 200;
        let mut out = Vec::new();
        for i in [2, 3] {
            let mut r = h.locked(i);
            if i == 2 && promoting_from_ms.is_some_and(|from| ms >= from) && !sent.is_empty() {
                r = r.db(crate::dn::DbState::Promoting);
            }
            out.extend(h.report(r));
        }
        out.extend(h.tick());
        out.extend(h.commit());
        for (_, c) in cmds(&out) {
            if let CmsCommand::Failover { term, .. } = c {
                sent.push((ms, term));
            }
        }
    }
    sent
}

/// A healthy 1P2S group whose primary node then stops reporting: Lock1 once it is Unknown.
fn primary_killed_silently() -> H {
    let mut h = H::new(3);
    assert_eq!(h.healthy_round(3), vec![]);
    h
}

#[test]
fn a_failover_is_not_resent_while_the_member_could_still_be_promoting() {
    // Before: the §4.3 round raise re-armed the wait at once and the next tick resent the
    // Failover ~0.4 s later with a fresh term, while the member was still checking its term.
    let sent = failovers_after_node_crash(None);
    assert!(
        sent.len() >= 2,
        "the member never promotes: resent eventually: {sent:?}"
    );
    for w in sent.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= 6000,
            "resent {gap} ms after the previous Failover: {sent:?}"
        );
        assert!(w[1].1 > w[0].1, "a fresh term per resend: {sent:?}");
    }
    // While it reports Promoting, no resend at all.
    let sent = failovers_after_node_crash(Some(0));
    assert_eq!(sent.len(), 1, "{sent:?}");
}

fn reelect(h: &mut H, qterm: u64) {
    let out = h
        .leader
        .on_elected(h.now, h.wall, crate::ids::QuorumTerm(qterm), &mut h.state);
    assert_eq!(out, vec![]);
}

/// A committed Promote whose member never answered (no timeline recorded for the group's
/// term) may still complete under the next leader: while that member reports Promoting, no
/// other member is promoted and it is not killed.
#[test]
fn a_new_leader_waits_for_an_inherited_promotion_in_progress() {
    let mut h = primary_killed(4);
    h.group_mut().term = Term(2);
    h.group_mut().static_primary = InstanceId(6002);
    reelect(&mut h, 2);
    let mut out = Vec::new();
    for _ in 0..20 {
        let rs = [
            dn(2)
                .db(crate::dn::DbState::Promoting)
                .lock(LockState::Unknown),
            h.locked(3),
            h.locked(4),
        ];
        out.extend(cmds(&round(&mut h, &rs)));
        out.extend(cmds(&h.commit()));
    }
    assert!(
        !out.iter()
            .any(|(_, c)| matches!(c, CmsCommand::Failover { .. } | CmsCommand::Restart)),
        "{out:?}"
    );
    assert_eq!(promotes(&h), vec![]);
}

/// The static primary's agent (fresh store) reports a running DN whose role it never knew:
/// it may be serving, so nobody else is promoted; after `instance_heartbeat_timeout` (6 s)
/// of that it is fenced so the group can move on.
#[test]
fn a_static_primary_of_unknown_role_is_fenced_after_the_heartbeat_timeout() {
    let mut h = H::new(3);
    h.healthy_round(3);
    reelect(&mut h, 2);
    let mut unknown = dn(1);
    unknown.0.role = crate::dn::DnRole::Unknown;
    unknown.0.db_state = crate::dn::DbState::Unknown;
    let mut restart_at = None;
    for s in 1..=8 {
        let rs = [unknown.clone(), dn(2), dn(3)];
        h.advance_ms(1000);
        let mut out = Vec::new();
        for r in rs {
            out.extend(cmds(&h.report(r)));
        }
        if out.contains(&(6001, CmsCommand::Restart)) {
            restart_at = Some(s);
            break;
        }
    }
    // Its first Unknown report arrived at 1 s: fenced 6 s later.
    assert_eq!(restart_at, Some(7));
    assert_eq!(promotes(&h), vec![]);
}

#[test]
fn the_first_promotion_of_a_new_cluster_raises_no_failover_alarm() {
    let mut h = primary_killed(3);
    // As on a new cluster: the group has never had a committed primary (term 0).
    h.group_mut().term = Term(0);
    for _ in 0..6 {
        lock_round(&mut h, 3, &[2, 3]);
    }
    assert_eq!(promotes(&h), vec![promote(2, 0)]);
    let out = h.commit();
    assert_eq!(
        out,
        vec![command(
            2,
            2,
            CmsCommand::Failover {
                term: Term(1),
                reason: PromotionReason::Start
            }
        )]
    );
}
