//! Switchover (§4.5, §9).

use core::time::Duration;

use crate::ctl::{CtlReply, CtlRequest, Refusal, SwitchoverRefused, SwitchoverStarted};
use crate::dn::History;
use crate::dn::{DbState, ProcState};
use crate::history::PromotionReason;
use crate::ids::{InstanceId, Lsn, Term, Timeline};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, cmds, command, dn, reply};
use crate::server::leader::LeaderOutput;
use crate::state::{Change, SwitchoverResult};

fn sw(i: u32) -> CtlRequest {
    CtlRequest::Switchover {
        instance: InstanceId(6000 + i),
        fast: false,
    }
}

fn ends(h: &H) -> Vec<Change> {
    h.queued()
        .into_iter()
        .filter(|c| matches!(c, Change::EndSwitchover { .. }))
        .collect()
}

#[test]
fn switchover_demotes_waits_for_catch_up_then_promotes_with_the_new_term() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert_eq!(h.ctl(7, sw(2)), vec![]);
    assert_eq!(
        h.commit(),
        vec![
            reply(7, CtlReply::Accepted),
            command(1, 1, CmsCommand::Demote)
        ]
    );
    assert_eq!(h.group().term, Term(2));
    // The old primary is down; its final position is 200. The target is not there yet.
    h.advance_ms(1000);
    assert_eq!(cmds(&h.report(dn(1).pending().pos(1, 200))), vec![]);
    assert_eq!(cmds(&h.report(dn(2).pos(1, 150))), vec![]);
    assert_eq!(
        h.report(dn(2).pos(1, 200)),
        vec![command(2, 1, CmsCommand::Switchover { term: Term(2) })]
    );
    h.advance_ms(1000);
    let h2 = History::root(Timeline(1)).branch(Lsn(200), Timeline(2));
    h.report(dn(2).primary(2).pos(2, 10).hist(h2));
    assert_eq!(
        ends(&h),
        vec![Change::EndSwitchover {
            group: G,
            term: Term(2),
            promoted: true
        }]
    );
    let out = h.commit();
    assert_eq!(h.group().static_primary, InstanceId(6002));
    // The old primary follows the new one, and so does the other standby (§4.2 "Then"): its
    // upstream was the old primary, on timeline 1 below the fork, so Lock2.
    assert_eq!(
        cmds(&out),
        vec![
            (
                6001,
                CmsCommand::NotifyStandby {
                    primary: InstanceId(6002)
                }
            ),
            (
                6003,
                CmsCommand::Lock2 {
                    primary: InstanceId(6002)
                }
            )
        ]
    );
}

#[test]
fn switchover_is_refused_while_paused_or_while_another_is_pending() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.state.state_mut().paused = true;
    assert_eq!(
        h.ctl(1, sw(2)),
        vec![reply(1, CtlReply::Refused(Refusal::Paused))]
    );
    h.state.state_mut().paused = false;
    assert_eq!(h.ctl(2, sw(2)), vec![]);
    let out = h.ctl(3, sw(3));
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Busy(_)),
            ..
        }]
    ));
}

#[test]
fn switchover_to_an_unhealthy_member_is_refused() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.report(dn(3).pending());
    let out = h.ctl(1, sw(3));
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Invalid(_)),
            ..
        }]
    ));
    let out = h.ctl(1, sw(1));
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Invalid(_)),
            ..
        }]
    ));
}

/// A switchover to the current primary names it as such, not as an unhealthy standby.
#[test]
fn switchover_to_the_current_primary_says_it_is_already_primary() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert_eq!(
        h.ctl(1, sw(1)),
        vec![reply(
            1,
            CtlReply::Refused(Refusal::Invalid(
                "instance 6001 is already the primary of group1: nothing to switch over".into()
            ))
        )]
    );
}

/// Once `Switchover{term}` is out, only the timeout (and ordinary failover) applies (§4.5).
/// Once `Switchover{term}` is sent only ordinary failover applies (§4.5): a target that dies
/// while promoting ends the request at once (before: only at the 120 s timeout, and the group
/// was not arbitrated meanwhile — swarm seed 20), with no abort (the old primary gets no term).
#[test]
fn a_switchover_whose_target_dies_after_switchover_was_sent_ends_at_once() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(1000);
    h.report(dn(1).pending().pos(1, 200));
    assert_eq!(
        h.report(dn(2).pos(1, 200)),
        vec![command(2, 1, CmsCommand::Switchover { term: Term(2) })]
    );
    h.advance_ms(500);
    h.report(dn(2).pos(1, 200));
    assert_eq!(ends(&h), vec![], "still promoting");
    h.report(dn(2).down());
    let end = Change::EndSwitchover {
        group: G,
        term: Term(2),
        promoted: false,
    };
    assert_eq!(h.queued(), vec![end]);
}

/// The same when the target's agent falls silent (half of `instance_heartbeat_timeout`, 3 s)
/// after the Switchover went out.
#[test]
fn a_switchover_whose_target_falls_silent_after_switchover_was_sent_ends() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(1000);
    h.report(dn(1).pending().pos(1, 200));
    h.report(dn(2).pos(1, 200));
    h.advance_ms(2999);
    h.tick();
    assert_eq!(ends(&h), vec![]);
    h.advance_ms(1);
    h.tick();
    assert_eq!(
        ends(&h),
        vec![Change::EndSwitchover {
            group: G,
            term: Term(2),
            promoted: false
        }]
    );
    let _ = Duration::ZERO;
}

/// Swarm seed 1078: the target turned zombie (Z) just after the report the leader read, the
/// Switchover went out, its promotion failed ("does not respond"), and the group waited for
/// the 120 s timeout — with no arbitration — although the target reported its processes
/// zombies at once (and, once they ran again, stayed a standby that nothing would promote).
/// Once `Switchover{term}` is out only ordinary failover applies (§4.5): the request ends.
#[test]
fn a_switchover_whose_target_turns_zombie_after_switchover_was_sent_ends_at_once() {
    for state in [ProcState::Zombie, ProcState::Stopped, ProcState::DiskSleep] {
        let mut h = H::new(3);
        h.healthy_round(3);
        h.ctl(7, sw(2));
        h.commit();
        h.advance_ms(1000);
        h.report(dn(1).pending().pos(1, 200));
        assert_eq!(
            h.report(dn(2).pos(1, 200)),
            vec![command(2, 1, CmsCommand::Switchover { term: Term(2) })]
        );
        h.advance_ms(600);
        h.report(dn(2).pos(1, 200).procs(ProcState::Running));
        assert_eq!(ends(&h), vec![], "still promoting");
        h.report(dn(2).pos(1, 200).procs(state).db(DbState::Unknown));
        assert_eq!(
            ends(&h),
            vec![Change::EndSwitchover {
                group: G,
                term: Term(2),
                promoted: false
            }],
            "{state:?}"
        );
    }
}

/// As for an unanswered Failover (§4.2, `promotion_in_progress`): a target that still reports
/// a standby, not promoting, `instance_heartbeat_timeout` (6 s) after the Switchover went out
/// did not promote (its promotion failed, seed 1078 once its processes ran again); the
/// request ends and ordinary failover applies. Promoting holds it.
#[test]
fn a_switchover_whose_target_does_not_promote_ends_after_the_heartbeat_timeout() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(1000);
    h.report(dn(1).pending().pos(1, 200));
    assert_eq!(
        h.report(dn(2).pos(1, 200)),
        vec![command(2, 1, CmsCommand::Switchover { term: Term(2) })]
    );
    for _ in 0..5 {
        h.advance_ms(1000);
        h.report(dn(1).pending().pos(1, 200));
        h.report(dn(2).pos(1, 200));
        assert_eq!(ends(&h), vec![]);
    }
    h.advance_ms(999);
    h.report(dn(2).pos(1, 200).db(DbState::Promoting));
    h.advance_ms(1);
    h.report(dn(2).pos(1, 200).db(DbState::Promoting));
    assert_eq!(ends(&h), vec![], "promoting");
    h.advance_ms(500);
    h.report(dn(2).pos(1, 200));
    assert_eq!(
        ends(&h),
        vec![Change::EndSwitchover {
            group: G,
            term: Term(2),
            promoted: false
        }]
    );
}

fn aborts(h: &H) -> Vec<Change> {
    h.queued()
        .into_iter()
        .filter(|c| matches!(c, Change::AbortSwitchover { .. }))
        .collect()
}

const ABORT_2: Change = Change::AbortSwitchover {
    group: G,
    term: Term(2),
};

/// Issue 11 defect 4: the target's process stopped before it reached the old primary's final
/// position: abort at once, and promote the old primary at the abort's fresh term as soon as
/// its agent reports it running again.
#[test]
fn a_switchover_whose_target_stopped_is_aborted_and_the_old_primary_promoted_again() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(300);
    // The old primary is down (its agent restarts it pending); the target's DN is gone.
    assert_eq!(cmds(&h.report(dn(1).down().pos(1, 200))), vec![]);
    assert_eq!(aborts(&h), vec![]);
    assert_eq!(cmds(&h.report(dn(2).down().pos(1, 150))), vec![]);
    assert_eq!(aborts(&h), vec![ABORT_2]);
    // Committed while the old primary is still down: nothing to promote yet.
    assert_eq!(cmds(&h.commit()), vec![]);
    let g = h.group().clone();
    assert_eq!(
        (g.term, g.static_primary, g.switchover),
        (Term(3), InstanceId(6001), None)
    );
    assert_eq!(
        g.last_switchover.map(|e| e.result),
        Some(SwitchoverResult::Aborted)
    );
    h.advance_ms(400);
    let out = h.report(dn(1).pending().pos(1, 200));
    assert_eq!(
        cmds(&out),
        vec![(
            6001,
            CmsCommand::Failover {
                term: Term(3),
                reason: PromotionReason::Switchover
            }
        )]
    );
    // Restoring the old primary after an abort is no failover: no Failover alarm.
    assert!(
        !out.iter()
            .any(|o| matches!(o, LeaderOutput::Alarm(Alarm::Failover { .. }))),
        "{out:?}"
    );
    // Promoted at that term: the group is whole again without a further term.
    h.advance_ms(300);
    let h2 = History::root(Timeline(1)).branch(Lsn(200), Timeline(2));
    h.report(dn(1).primary(3).pos(2, 10).hist(h2));
    // Only records: the timeline, and the promotion history entry, as a switchover (§15).
    assert!(h.queued().iter().all(|c| match c {
        Change::RecordTimeline { .. } => true,
        Change::RecordPromotion(p) =>
            (p.term, p.instance, p.reason)
                == (Term(3), InstanceId(6001), PromotionReason::Switchover),
        _ => false,
    }));
    assert_eq!(h.group().term, Term(3));
}

/// A target whose process was restarted comes back pending: nothing points it at a primary
/// during the switchover, so it cannot catch up; abort at its first pending report.
#[test]
fn a_switchover_whose_target_came_back_pending_is_aborted_at_once() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(300);
    h.report(dn(1).pending().pos(1, 200));
    h.report(dn(2).pos(1, 150));
    assert_eq!(aborts(&h), vec![]);
    h.advance_ms(700);
    h.report(dn(2).pending().pos(1, 150));
    assert_eq!(aborts(&h), vec![ABORT_2]);
}

/// The target's agent falls silent (half of `instance_heartbeat_timeout`, the usual "silent")
/// before the target reached the final position: abort at exactly that instant.
#[test]
fn a_switchover_whose_target_agent_falls_silent_is_aborted_at_once() {
    let mut h = H::new(3);
    h.healthy_round(3); // t = 100 s: the target's last report
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(500);
    h.report(dn(1).pending().pos(1, 200));
    h.advance_ms(2499);
    h.report(dn(1).pending().pos(1, 200));
    assert_eq!(aborts(&h), vec![]);
    h.advance_ms(1);
    h.report(dn(1).pending().pos(1, 200));
    assert_eq!(aborts(&h), vec![ABORT_2]);
    assert_eq!(
        cmds(&h.commit()),
        vec![(
            6001,
            CmsCommand::Failover {
                term: Term(3),
                reason: PromotionReason::Switchover
            }
        )]
    );
}

/// The target runs and reports but does not reach the final position within
/// `instance_heartbeat_timeout` (6 s) after the old primary went down.
#[test]
fn a_switchover_whose_target_does_not_catch_up_in_time_is_aborted() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(200);
    h.report(dn(1).pending().pos(1, 200)); // down seen at 100.2 s
    for _ in 0..5 {
        h.advance_ms(1000);
        h.report(dn(1).pending().pos(1, 200));
        h.report(dn(2).pos(1, 150));
    }
    h.advance_ms(999);
    h.report(dn(2).pos(1, 150));
    assert_eq!(aborts(&h), vec![]);
    h.advance_ms(1);
    h.report(dn(2).pos(1, 150));
    assert_eq!(aborts(&h), vec![ABORT_2]);
}

/// A target that reached the final position in time gets its Switchover, never an abort.
#[test]
fn a_caught_up_target_is_switched_over_not_aborted() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(200);
    h.report(dn(1).pending().pos(1, 200));
    for _ in 0..5 {
        h.advance_ms(1000);
        h.report(dn(1).pending().pos(1, 200));
        h.report(dn(2).pos(1, 150));
    }
    assert_eq!(
        h.report(dn(2).pos(1, 200)),
        vec![command(2, 1, CmsCommand::Switchover { term: Term(2) })]
    );
    for _ in 0..10 {
        h.advance_ms(1000);
        h.report(dn(2).db(DbState::Promoting).pos(1, 200));
    }
    h.report(dn(2).down());
    assert_eq!(aborts(&h), vec![]);
}

/// A switchover inherited from a previous leader is not aborted: that leader may have sent
/// `Switchover{term}` already. With its target down it is ended instead, so that ordinary
/// failover applies (before: only at the 120 s timeout, swarm seed 223).
#[test]
fn an_inherited_switchover_is_not_aborted() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(500);
    h.leader
        .on_elected(h.now, h.wall, crate::ids::QuorumTerm(2), &mut h.state);
    h.report(dn(1).pending().pos(1, 200));
    h.report(dn(2).down());
    h.advance_ms(10_000);
    h.report(dn(1).pending().pos(1, 200));
    h.tick();
    assert_eq!(aborts(&h), vec![]);
    let end = Change::EndSwitchover {
        group: G,
        term: Term(2),
        promoted: false,
    };
    assert_eq!(ends(&h), vec![end]);
}

/// An abort whose old primary does not come back within `instance_heartbeat_timeout` leaves
/// the group to ordinary arbitration (no Failover to a member that is not running).
#[test]
fn an_aborted_switchover_falls_back_to_arbitration_if_the_old_primary_stays_down() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    h.advance_ms(300);
    h.report(dn(1).down().pos(1, 200));
    h.report(dn(2).down());
    h.commit();
    h.advance_ms(2000);
    assert_eq!(cmds(&h.report(dn(1).down().pos(1, 200))), vec![]);
    h.advance_ms(4000);
    let out = cmds(&h.report(dn(1).down().pos(1, 200)));
    assert!(
        !out.iter()
            .any(|(_, c)| matches!(c, CmsCommand::Failover { .. })),
        "{out:?}"
    );
}

#[test]
fn switchover_all_moves_groups_back_to_their_install_time_primary() {
    let mut h = H::new(3);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![
        dn(2).primary(1),
        dn(1).upstream(2, 100),
        dn(3).upstream(2, 100),
    ]);
    assert_eq!(h.ctl(4, CtlRequest::SwitchoverAll), vec![]);
    let begin = h.queued().into_iter().find_map(|c| match c {
        Change::BeginSwitchover { switchover, .. } => Some((switchover.from, switchover.target)),
        _ => None,
    });
    assert_eq!(begin, Some((InstanceId(6002), InstanceId(6001))));
    assert_eq!(
        h.commit(),
        vec![
            reply(
                4,
                CtlReply::SwitchoverAll {
                    started: vec![SwitchoverStarted {
                        group: G,
                        target: InstanceId(6001),
                        term: Term(1),
                    }],
                    refused: vec![],
                }
            ),
            command(2, 1, CmsCommand::Demote)
        ]
    );
}

/// `switchover -a` with two groups off their install-time primary, one of which cannot move
/// (its install-time primary is down): the reply, once the other's switchover committed, names
/// the switchover started and the group refused with its reason (it said `Accepted`, and cm_ctl
/// then waited 120 s for the refused group).
#[test]
fn switchover_all_replies_the_switchovers_started_and_the_groups_refused() {
    use crate::config::GroupConfig;
    use crate::ids::GroupId;
    use crate::params::Params;
    use crate::server::harness::cluster;
    let mut cfg = cluster(&[("AZ1", 1)], &["AZ1"; 6], Params::defaults());
    let second = cfg.groups[0].members.split_off(3);
    cfg.groups.push(GroupConfig {
        id: GroupId(2),
        members: second,
    });
    let mut h = H::with(cfg);
    h.group_mut().static_primary = InstanceId(6002);
    h.state
        .state_mut()
        .groups
        .get_mut(&GroupId(2))
        .unwrap()
        .static_primary = InstanceId(6005);
    h.reports(vec![
        dn(2).primary(1),
        dn(1).upstream(2, 100),
        dn(3).upstream(2, 100),
        dn(5).primary(1),
        dn(4).down(),
        dn(6).upstream(5, 100),
    ]);
    assert_eq!(h.ctl(4, CtlRequest::SwitchoverAll), vec![]);
    let out = h.commit();
    assert_eq!(
        out[0],
        reply(
            4,
            CtlReply::SwitchoverAll {
                started: vec![SwitchoverStarted {
                    group: G,
                    target: InstanceId(6001),
                    term: Term(1),
                }],
                refused: vec![SwitchoverRefused {
                    group: GroupId(2),
                    target: InstanceId(6004),
                    refusal: Refusal::Invalid(
                        "instance 6004 is not a healthy standby of group2".into()
                    ),
                }],
            }
        ),
        "{out:?}"
    );
}

/// §4.2/§13 S2: a new leader that inherits a committed switchover cannot know whether its
/// predecessor already sent `Switchover{term}`; it commits a fresh term before sending.
/// (Swarm seeds 3198 and 8031 sent `Switchover{2}` from two leaders.)
#[test]
fn a_new_leader_renews_an_inherited_switchover_term_before_sending_it() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    assert_eq!(h.group().term, Term(2));
    // Re-elected (or replaced) before the Switchover went out — or after: it cannot tell.
    h.advance_ms(500);
    let out = h
        .leader
        .on_elected(h.now, h.wall, crate::ids::QuorumTerm(2), &mut h.state);
    assert_eq!(out, vec![]);
    h.advance_ms(500);
    assert_eq!(cmds(&h.report(dn(1).pending().pos(1, 200))), vec![]);
    assert_eq!(cmds(&h.report(dn(2).pos(1, 200))), vec![]);
    assert_eq!(
        h.queued(),
        vec![Change::RenewSwitchoverTerm {
            group: G,
            expected_term: Term(2)
        }]
    );
    assert_eq!(
        cmds(&h.commit()),
        vec![(6002, CmsCommand::Switchover { term: Term(3) })]
    );
    assert_eq!(h.group().term, Term(3));
    assert_eq!(h.group().switchover.as_ref().map(|s| s.term), Some(Term(3)));
    // The promotion at the renewed term ends the switchover.
    h.advance_ms(1000);
    let h2 = History::root(Timeline(1)).branch(Lsn(200), Timeline(2));
    h.report(dn(2).primary(3).pos(2, 10).hist(h2));
    assert_eq!(
        ends(&h),
        vec![Change::EndSwitchover {
            group: G,
            term: Term(3),
            promoted: true
        }]
    );
}

#[test]
fn renewing_a_switchover_term_is_a_compare_and_set() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(7, sw(2));
    h.commit();
    let mut s = crate::state::ReplicatedState::committed(&h.state).clone();
    let stale = Change::RenewSwitchoverTerm {
        group: G,
        expected_term: Term(1),
    };
    assert!(s.apply(&stale).is_err());
    let renew = Change::RenewSwitchoverTerm {
        group: G,
        expected_term: Term(2),
    };
    assert!(s.apply(&renew).is_ok());
    assert_eq!(s.groups[&G].term, Term(3));
    assert!(
        s.apply(&renew).is_err(),
        "a second renewal of term 2 is refused"
    );
}
