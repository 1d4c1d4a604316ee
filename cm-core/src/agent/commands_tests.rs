use crate::agent::testkit::*;
use crate::codec::encode_persisted;
use crate::dn::BuildOutcome;
use crate::ids::GroupId;

fn stamp(q: u64, s: u64) -> CmdStamp {
    CmdStamp {
        quorum_term: QuorumTerm(q),
        seq: CmdSeq(s),
    }
}

/// The agent's store after `boot(DnRole::Standby)` (whose answered report was sent at 0 ms).
fn persisted(qterm: u64, term: u64, applied: CmdStamp) -> Vec<u8> {
    let mut p = Persisted {
        highest_quorum_term: QuorumTerm(qterm),
        contact: Some(ms(0)),
        ..Persisted::default()
    };
    p.instances.insert(
        DN,
        PersistedInstance {
            term: Term(term),
            last_applied: applied,
            role: Some(DnRole::Standby),
        },
    );
    encode_persisted(&p).expect("encode")
}

/// Feeds a command, completes its write, returns the commands of the completion.
fn apply(a: &mut Agent, now: Instant, seq: u64, cmd: CmsCommand) -> Vec<AgentCommand> {
    let cmds = a.step(now, command(CMS[0], 1, seq, cmd));
    a.step(now, write_ok(persist_token(&cmds)))
}

#[test]
fn command_from_a_cms_that_is_not_the_leader_is_rejected() {
    let mut a = boot(DnRole::Standby);
    assert_eq!(
        a.step(ms(10), command(CMS[1], 1, 1, CmsCommand::Lock1)),
        vec![]
    );
}

#[test]
fn command_below_the_highest_quorum_term_seen_is_rejected() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), leader_reply(CMS[1], 2, 1, false));
    a.step(ms(10), write_ok(persist_token(&cmds)));
    // CMS 2 leads in term 2, but this command carries term 1 (sent before it learned of 2).
    assert_eq!(
        a.step(ms(20), command(CMS[1], 1, 7, CmsCommand::Lock1)),
        vec![]
    );
}

#[test]
fn command_is_persisted_before_it_runs() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), command(CMS[0], 1, 1, CmsCommand::Lock1));
    let token = persist_token(&cmds);
    assert_eq!(
        cmds,
        vec![AgentCommand::PersistState(PersistState {
            token,
            bytes: persisted(1, 0, stamp(1, 1)),
        })]
    );
    let cmds = a.step(ms(20), write_ok(token));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::Lock1)]);
}

#[test]
fn only_newer_stamps_apply_and_a_new_leader_may_restart_its_sequence() {
    let mut a = boot(DnRole::Standby);
    apply(&mut a, ms(10), 5, CmsCommand::Lock1);
    assert_eq!(
        a.step(ms(20), command(CMS[0], 1, 5, CmsCommand::Lock1)),
        vec![]
    );
    assert_eq!(
        a.step(ms(20), command(CMS[0], 1, 4, CmsCommand::Lock1)),
        vec![]
    );
    let cmds = a.step(ms(30), leader_reply(CMS[1], 2, 1, false));
    a.step(ms(30), write_ok(persist_token(&cmds)));
    let cmds = a.step(ms(40), command(CMS[1], 2, 1, CmsCommand::Lock1));
    assert_eq!(cmds.len(), 1);
    assert!(matches!(cmds[0], AgentCommand::PersistState(_)));
}

#[test]
fn last_applied_is_reported_once_durable() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), command(CMS[0], 1, 3, CmsCommand::Lock1));
    assert_eq!(
        a.insts[&DN].report(ms(10)).last_applied,
        CmdStamp::default()
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    assert_eq!(a.insts[&DN].report(ms(20)).last_applied, stamp(1, 3));
    let sent = reports(&tick(&mut a, ms(1000)));
    assert!(
        sent.iter()
            .all(|(_, r)| r.dns[0].last_applied == stamp(1, 3))
    );
}

#[test]
fn failed_write_runs_nothing_and_the_resend_is_accepted() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), command(CMS[0], 1, 3, CmsCommand::Lock1));
    let failed = AgentInput::WriteCompleted(WriteCompleted {
        token: persist_token(&cmds),
        result: Err("ENOSPC".into()),
    });
    assert_eq!(a.step(ms(20), failed), vec![]);
    assert_eq!(
        a.insts[&DN].report(ms(20)).last_applied,
        CmdStamp::default()
    );
    let cmds = a.step(ms(30), command(CMS[0], 1, 3, CmsCommand::Lock1));
    assert!(matches!(cmds.as_slice(), [AgentCommand::PersistState(_)]));
}

#[test]
fn commands_map_to_their_dn_actions() {
    let p = InstanceId(6002);
    let table = [
        (CmsCommand::Lock1, DnAction::Lock1),
        (
            CmsCommand::Lock2 { primary: p },
            DnAction::Lock2 { primary: p },
        ),
        (
            CmsCommand::Unlock { primary: p },
            DnAction::Unlock { primary: p },
        ),
        (
            CmsCommand::NotifyStandby { primary: p },
            DnAction::NotifyStandby { primary: p },
        ),
        (
            CmsCommand::Build {
                source: p,
                full: false,
            },
            DnAction::Build {
                source: p,
                full: false,
            },
        ),
        (
            CmsCommand::Build {
                source: p,
                full: true,
            },
            DnAction::Build {
                source: p,
                full: true,
            },
        ),
        (
            CmsCommand::SetReadOnly { on: true },
            DnAction::SetReadOnly { on: true },
        ),
        (
            CmsCommand::SetSyncStandbys {
                k: 1,
                members: vec![DN, p],
            },
            DnAction::SetSyncStandbys {
                k: 1,
                members: vec![DN, p],
            },
        ),
        (CmsCommand::Demote, DnAction::Demote),
        (CmsCommand::Restart, DnAction::Kill),
    ];
    for (seq, (cmd, action)) in table.into_iter().enumerate() {
        let mut a = boot(DnRole::Standby);
        let cmds = apply(&mut a, ms(10), seq as u64 + 1, cmd.clone());
        assert_eq!(cmds, vec![run(action_op(&cmds), action)], "{cmd:?}");
    }
}

#[test]
fn failover_persists_the_term_then_checks_every_cms_then_promotes_on_a_majority() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(
        ms(10),
        command(
            CMS[0],
            1,
            1,
            CmsCommand::Failover {
                term: Term(4),
                reason: PromotionReason::Failover,
            },
        ),
    );
    assert_eq!(
        cmds,
        vec![AgentCommand::PersistState(PersistState {
            token: persist_token(&cmds),
            bytes: persisted(1, 4, stamp(1, 1)),
        })]
    );
    let cmds = a.step(ms(20), write_ok(persist_token(&cmds)));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    let check = |n| {
        to_cms(
            &a,
            n,
            Msg::GroupTermCheck {
                nonce,
                group: GroupId(1),
            },
        )
    };
    assert_eq!(cmds, vec![check(CMS[0]), check(CMS[1]), check(CMS[2])]);
    assert_eq!(a.insts[&DN].report(ms(20)).term, Term(4));
    let reply = |n, h| {
        from_cms(
            n,
            1,
            Msg::TermCheckReply {
                nonce,
                highest: QuorumTerm(h),
                weight: 1,
            },
        )
    };
    assert_eq!(a.step(ms(30), reply(CMS[2], 1)), vec![]);
    let cmds = a.step(ms(40), reply(CMS[1], 0));
    assert_eq!(
        cmds,
        vec![run(action_op(&cmds), DnAction::Promote { term: Term(4) })]
    );
    // A late third answer promotes nothing more.
    assert_eq!(a.step(ms(50), reply(CMS[0], 1)), vec![]);
}

#[test]
fn failover_is_abandoned_when_a_cms_knows_a_higher_quorum_term() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(
        ms(10),
        command(CMS[0], 1, 1, CmsCommand::Switchover { term: Term(2) }),
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    let reply = |n, h| {
        from_cms(
            n,
            1,
            Msg::TermCheckReply {
                nonce,
                highest: QuorumTerm(h),
                weight: 1,
            },
        )
    };
    a.step(ms(30), reply(CMS[0], 1));
    let cmds = a.step(ms(40), reply(CMS[1], 2));
    // No promotion; only the higher term is recorded.
    assert!(
        cmds.iter()
            .all(|c| matches!(c, AgentCommand::PersistState(_))),
        "{cmds:?}"
    );
    assert_eq!(a.step(ms(50), reply(CMS[2], 1)), vec![]);
    assert!(a.insts[&DN].term_check.is_none());
}

#[test]
fn failover_to_a_term_below_the_dns_term_does_not_promote() {
    let a = Agent::new(&config(ONE_DN), ME, 0, Some(persisted(1, 5, stamp(1, 1)))).expect("agent");
    let mut a = boot_with(a, DnRole::Standby);
    let cmds = apply(
        &mut a,
        ms(10),
        2,
        CmsCommand::Failover {
            term: Term(4),
            reason: PromotionReason::Failover,
        },
    );
    assert_eq!(cmds, vec![]);
    assert_eq!(a.insts[&DN].term, Term(5), "a DN term never decreases");
    assert_eq!(a.insts[&DN].applied, stamp(1, 2));
}

#[test]
fn term_check_without_a_majority_is_abandoned_after_agent_heartbeat_timeout() {
    let mut a = boot(DnRole::Standby);
    apply(
        &mut a,
        ms(10),
        1,
        CmsCommand::Failover {
            term: Term(1),
            reason: PromotionReason::Failover,
        },
    );
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    assert_eq!(a.next_deadline().map(|d| d <= ms(8010)), Some(true));
    tick(&mut a, ms(8010));
    assert!(a.insts[&DN].term_check.is_none());
    let reply = |n| {
        from_cms(
            n,
            1,
            Msg::TermCheckReply {
                nonce,
                highest: QuorumTerm(1),
                weight: 1,
            },
        )
    };
    a.step(ms(8020), reply(CMS[0]));
    assert_eq!(a.step(ms(8030), reply(CMS[1])), vec![]);
}

#[test]
fn restart_kills_then_starts_pending_once_no_process_remains() {
    let mut a = boot(DnRole::Primary);
    let cmds = apply(&mut a, ms(10), 1, CmsCommand::Restart);
    let kill = action_op(&cmds);
    assert_eq!(cmds, vec![run(kill, DnAction::Kill)]);
    assert_eq!(a.step(ms(20), done(kill)), vec![]);
    let cmds = tick(&mut a, ms(1000));
    let cmds = a.step(ms(1010), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

#[test]
fn prohibit_reached_after_lock1_is_reported_at_once() {
    let mut a = boot(DnRole::Standby);
    apply(&mut a, ms(10), 1, CmsCommand::Lock1);
    let cmds = tick(&mut a, ms(1000));
    let q = query_op(&cmds, DN);
    let locked = DnStatus {
        lock: LockState::Prohibit,
        ..status(DnRole::Standby)
    };
    let cmds = a.step(ms(1300), queried(q, Ok(locked)));
    let sent = reports(&cmds);
    assert_eq!(sent.len(), 3, "{cmds:?}");
    assert_eq!(sent[0].1.dns[0].lock, LockState::Prohibit);
    // Reached once: the next status round does not report out of turn.
    let cmds = tick(&mut a, ms(2000));
    let q = query_op(&cmds, DN);
    let again = DnStatus {
        lock: LockState::Prohibit,
        ..status(DnRole::Standby)
    };
    assert_eq!(reports(&a.step(ms(2100), queried(q, Ok(again)))), vec![]);
}

#[test]
fn promotion_done_and_read_only_set_are_reported_at_once() {
    let mut a = boot(DnRole::Standby);
    apply(&mut a, ms(10), 1, CmsCommand::SetReadOnly { on: true });
    let cmds = tick(&mut a, ms(1000));
    let ro = DnStatus {
        read_only: true,
        ..status(DnRole::Standby)
    };
    assert_eq!(
        reports(&a.step(ms(1100), queried(query_op(&cmds, DN), Ok(ro)))).len(),
        3
    );
    a.insts.get_mut(&DN).expect("dn").watch.primary = true;
    let cmds = tick(&mut a, ms(2000));
    let cmds = a.step(
        ms(2100),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Primary))),
    );
    assert_eq!(reports(&cmds).len(), 3);
}

#[test]
fn no_start_pending_while_a_build_is_in_flight_only_after_it_completes() {
    let mut a = boot(DnRole::Standby);
    let source = InstanceId(6002);
    let cmds = apply(
        &mut a,
        ms(10),
        1,
        CmsCommand::Build {
            source,
            full: false,
        },
    );
    let build = action_op(&cmds);
    assert_eq!(
        cmds,
        vec![run(
            build,
            DnAction::Build {
                source,
                full: false
            }
        )]
    );
    // The Build stopped the DN: a sample sees it absent, but the Build is not done.
    let cmds = tick(&mut a, ms(1000));
    assert_eq!(
        a.step(ms(1010), sampled(sample_op(&cmds, DN), vec![])),
        vec![]
    );
    assert_eq!(a.step(ms(1500), done(build)), vec![]);
    let cmds = tick(&mut a, ms(2000));
    let cmds = a.step(ms(2010), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

#[test]
fn second_dn_action_waits_for_the_one_in_flight_in_order() {
    let mut a = boot(DnRole::Standby);
    let p = InstanceId(6002);
    let cmds = apply(&mut a, ms(10), 1, CmsCommand::Lock1);
    let lock1 = action_op(&cmds);
    assert_eq!(cmds, vec![run(lock1, DnAction::Lock1)]);
    assert_eq!(
        apply(&mut a, ms(20), 2, CmsCommand::Lock2 { primary: p }),
        vec![]
    );
    assert_eq!(
        apply(&mut a, ms(30), 3, CmsCommand::Unlock { primary: p }),
        vec![]
    );
    let cmds = a.step(ms(40), done(lock1));
    let lock2 = action_op(&cmds);
    assert_eq!(cmds, vec![run(lock2, DnAction::Lock2 { primary: p })]);
    let cmds = a.step(ms(50), done(lock2));
    assert_eq!(
        cmds,
        vec![run(action_op(&cmds), DnAction::Unlock { primary: p })]
    );
}

#[test]
fn fencing_kill_preempts_a_build_in_flight_and_the_start_waits_for_both() {
    let mut a = boot(DnRole::Primary);
    let source = InstanceId(6002);
    let build = action_op(&apply(
        &mut a,
        ms(10),
        1,
        CmsCommand::Build {
            source,
            full: false,
        },
    ));
    let cmds = apply(&mut a, ms(20), 2, CmsCommand::Restart);
    let kill = action_op(&cmds);
    assert_eq!(cmds, vec![run(kill, DnAction::Kill)]);
    assert_eq!(a.step(ms(30), done(kill)), vec![]);
    let cmds = tick(&mut a, ms(1000));
    assert_eq!(
        a.step(ms(1010), sampled(sample_op(&cmds, DN), vec![])),
        vec![]
    );
    a.step(ms(1500), done(build));
    let cmds = tick(&mut a, ms(2000));
    let cmds = a.step(ms(2010), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

/// Applies Failover{4} and returns the term-check nonce (one reply still missing).
fn failover_waiting_for_its_term_check(a: &mut Agent) -> u64 {
    let cmds = a.step(
        ms(10),
        command(
            CMS[0],
            1,
            1,
            CmsCommand::Failover {
                term: Term(4),
                reason: PromotionReason::Failover,
            },
        ),
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    let reply = from_cms(
        CMS[2],
        1,
        Msg::TermCheckReply {
            nonce,
            highest: QuorumTerm(1),
            weight: 1,
        },
    );
    assert_eq!(a.step(ms(30), reply), vec![]);
    nonce
}

fn late_majority_reply(a: &mut Agent, nonce: u64) -> Vec<AgentCommand> {
    let reply = from_cms(
        CMS[1],
        1,
        Msg::TermCheckReply {
            nonce,
            highest: QuorumTerm(1),
            weight: 1,
        },
    );
    a.step(ms(9_000), reply)
}

/// The CMS takes a kill (Restart) of a Failover target as proof it did not become primary
/// and promotes another member; a term-check reply arriving afterwards must not promote the
/// restarted DN (review of the "fencing comes first" change).
#[test]
fn a_kill_cancels_a_promotion_waiting_for_its_term_check() {
    let mut a = boot(DnRole::Standby);
    let nonce = failover_waiting_for_its_term_check(&mut a);
    let cmds = a.step(ms(6_000), command(CMS[0], 1, 2, CmsCommand::Restart));
    a.step(ms(6_010), write_ok(persist_token(&cmds)));
    assert!(a.insts[&DN].term_check.is_none());
    assert_eq!(late_majority_reply(&mut a, nonce), vec![]);
}

/// A newer command from the leader (here Lock1) supersedes a promotion still checking its term.
#[test]
fn a_newer_command_cancels_a_promotion_waiting_for_its_term_check() {
    let mut a = boot(DnRole::Standby);
    let nonce = failover_waiting_for_its_term_check(&mut a);
    let cmds = a.step(ms(6_000), command(CMS[0], 1, 2, CmsCommand::Lock1));
    let cmds = a.step(ms(6_010), write_ok(persist_token(&cmds)));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::Lock1)]);
    assert_eq!(late_majority_reply(&mut a, nonce), vec![]);
}

/// A Failover whose term check is waiting, on agent `a`; returns the check's nonce.
fn failover_checking(a: &mut Agent) -> u64 {
    let cmds = a.step(
        ms(10),
        command(
            CMS[0],
            1,
            1,
            CmsCommand::Failover {
                term: Term(4),
                reason: PromotionReason::Failover,
            },
        ),
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    a.insts[&DN].term_check.as_ref().expect("check").nonce
}

fn weighted_reply(nonce: u64, cms: NodeId, weight: u32) -> AgentInput {
    from_cms(
        cms,
        1,
        Msg::TermCheckReply {
            nonce,
            highest: QuorumTerm(1),
            weight,
        },
    )
}

fn promotes(cmds: &[AgentCommand]) -> bool {
    cmds.iter().any(|c| {
        matches!(
            c,
            AgentCommand::RunDnAction {
                action: DnAction::Promote { .. },
                ..
            }
        )
    })
}

/// §4.1: replies from non-voters never count. Two of three CMS answered, but one of them is a
/// non-voter (a CMS that lost its store may have forgotten a higher term): no promotion until
/// a second voter confirms.
#[test]
fn a_non_voters_term_check_reply_does_not_count() {
    let mut a = boot(DnRole::Standby);
    let nonce = failover_checking(&mut a);
    assert_eq!(a.step(ms(30), weighted_reply(nonce, CMS[2], 1)), vec![]);
    assert_eq!(a.step(ms(40), weighted_reply(nonce, CMS[1], 0)), vec![]);
    assert!(a.insts[&DN].term_check.is_some());
    let cmds = a.step(ms(50), weighted_reply(nonce, CMS[0], 1));
    assert_eq!(
        cmds,
        vec![run(action_op(&cmds), DnAction::Promote { term: Term(4) })]
    );
}

/// Two CMS nodes (node 3 runs none): `ONE_DN` without node 3's `cms_port`.
fn two_cms_agent() -> Agent {
    let text = ONE_DN.replacen("cms_port = 17101\n[[group]]", "[[group]]", 1);
    let cfg = config(&text);
    assert_eq!(cfg.cms_nodes(), vec![CMS[0], CMS[1]]);
    boot_with(
        Agent::new(&cfg, ME, 1, None).expect("agent"),
        DnRole::Standby,
    )
}

/// §4.1 with §5.4's weights: the first of two CMS weighs 2 and confirms alone (2 of 3); the
/// second (1 of 3) does not. `len()/2 + 1` replies (2 of 2) never promoted with one side cut.
#[test]
fn two_node_term_check_counts_the_quorums_weights() {
    let mut a = two_cms_agent();
    let nonce = failover_checking(&mut a);
    assert_eq!(a.step(ms(30), weighted_reply(nonce, CMS[1], 1)), vec![]);
    let cmds = a.step(ms(40), weighted_reply(nonce, CMS[0], 2));
    assert!(promotes(&cmds), "{cmds:?}");

    let mut a = two_cms_agent();
    let nonce = failover_checking(&mut a);
    let cmds = a.step(ms(30), weighted_reply(nonce, CMS[0], 2));
    assert!(promotes(&cmds), "W2 alone is a quorum: {cmds:?}");

    // The second node leading alone by the gateway rule reports the whole weight (3).
    let mut a = two_cms_agent();
    let nonce = failover_checking(&mut a);
    let cmds = a.step(ms(30), weighted_reply(nonce, CMS[1], 3));
    assert!(promotes(&cmds), "{cmds:?}");
}

/// Issue 17 item 1: the outcome of each finished Build goes into the DN's report (counter,
/// error text), so `cm_ctl build` can tell a failed build from the old Normal standby; other
/// actions do not count.
#[test]
fn a_finished_build_is_counted_in_the_report_with_its_error() {
    let mut a = boot(DnRole::Standby);
    let source = InstanceId(6002);
    assert_eq!(
        a.insts[&DN].report(ms(0)).last_build,
        BuildOutcome::default()
    );
    let build = |a: &mut Agent, at: u64, seq: u64| {
        let cmds = apply(a, ms(at), seq, CmsCommand::Build { source, full: true });
        action_op(&cmds)
    };
    let op = build(&mut a, 10, 1);
    a.step(
        ms(500),
        AgentInput::ActionCompleted {
            op,
            instance: DN,
            result: Err("pg_basebackup: could not connect".into()),
        },
    );
    assert_eq!(
        a.insts[&DN].report(ms(600)).last_build,
        BuildOutcome {
            count: 1,
            error: Some("pg_basebackup: could not connect".into()),
            ..Default::default()
        }
    );
    // A non-Build action, failed, changes nothing.
    let cmds = apply(&mut a, ms(700), 2, CmsCommand::Lock1);
    a.step(
        ms(800),
        AgentInput::ActionCompleted {
            op: action_op(&cmds),
            instance: DN,
            result: Err("lock failed".into()),
        },
    );
    assert_eq!(a.insts[&DN].report(ms(900)).last_build.count, 1);
    // The next Build succeeds: counted, no error; a long error is bounded.
    let op = build(&mut a, 1000, 3);
    a.step(ms(1500), done(op));
    assert_eq!(
        a.insts[&DN].report(ms(1600)).last_build,
        BuildOutcome {
            count: 2,
            error: None,
            ..Default::default()
        }
    );
    let op = build(&mut a, 2000, 4);
    a.step(
        ms(2500),
        AgentInput::ActionCompleted {
            op,
            instance: DN,
            result: Err("x".repeat(10_000).into()),
        },
    );
    let last = a.insts[&DN].report(ms(2600)).last_build;
    assert_eq!(last.count, 3);
    assert_eq!(last.error.map(|e| e.len()), Some(crate::dn::REASON_MAX_LEN));
}

/// Issue 17: the report says while a Build is queued (behind another action) or running, so
/// `cm_ctl build` can tell a build still to come from one a restarted agent lost.
#[test]
fn a_build_is_reported_pending_while_queued_or_running() {
    let mut a = boot(DnRole::Standby);
    let lock = action_op(&apply(&mut a, ms(10), 1, CmsCommand::Lock1));
    let source = InstanceId(6002);
    let cmds = apply(
        &mut a,
        ms(20),
        2,
        CmsCommand::Build {
            source,
            full: false,
        },
    );
    assert!(
        cmds.iter()
            .all(|c| !matches!(c, AgentCommand::RunDnAction { .. })),
        "{cmds:?}"
    );
    assert!(a.insts[&DN].report(ms(30)).last_build.pending, "queued");
    let cmds = a.step(ms(40), done(lock));
    let build = action_op(&cmds);
    assert!(a.insts[&DN].report(ms(50)).last_build.pending, "running");
    a.step(ms(500), done(build));
    let b = a.insts[&DN].report(ms(600)).last_build;
    assert_eq!((b.pending, b.count), (false, 1));
}

/// Issue 17: a Build the agent rejects (from a CMS it does not take for the leader, from a
/// deposed quorum term) is reported as a failed build with the reason, so `cm_ctl build` fails
/// at once (the leader sends a Build once); other rejected commands are not counted.
#[test]
fn a_rejected_build_is_reported_as_a_failed_build_with_the_reason() {
    let source = InstanceId(6002);
    let build = CmsCommand::Build {
        source,
        full: false,
    };
    let mut a = boot(DnRole::Standby);
    assert_eq!(
        a.step(ms(10), command(CMS[1], 1, 1, CmsCommand::Lock1)),
        vec![]
    );
    assert_eq!(a.insts[&DN].report(ms(11)).last_build.count, 0);
    assert_eq!(a.step(ms(20), command(CMS[1], 1, 2, build.clone())), vec![]);
    let b = a.insts[&DN].report(ms(30)).last_build;
    assert_eq!(b.count, 1);
    assert_eq!(
        b.error.as_deref(),
        Some(
            "the cm_agent refused the Build: it came from the cm_server of node 2, not this agent's leader"
        )
    );

    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), leader_reply(CMS[1], 2, 1, false));
    a.step(ms(10), write_ok(persist_token(&cmds)));
    assert_eq!(a.step(ms(20), command(CMS[1], 1, 7, build)), vec![]);
    let b = a.insts[&DN].report(ms(30)).last_build;
    assert_eq!(
        (b.count, b.error.as_deref()),
        (
            1,
            Some("the cm_agent refused the Build: it came from quorum term 1, below 2")
        )
    );
}

/// Swarm seed 1475 (S3/S5): a Failover read long after it was sent (its host was frozen) while
/// the leader, still at the same quorum term, had resent it with a fresh group term to another
/// member. A CMS whose log holds a newer term for the group stops the promotion; replies that
/// know only older group terms confirm it.
#[test]
fn failover_is_abandoned_when_a_cms_log_holds_a_newer_group_term() {
    for (newer, promoted) in [(5, false), (4, true)] {
        let mut a = boot(DnRole::Standby);
        let nonce = failover_waiting_for_its_term_check(&mut a);
        let reply = |n, group_term| {
            from_cms(
                n,
                1,
                Msg::GroupTermCheckReply {
                    nonce,
                    highest: QuorumTerm(1),
                    weight: 1,
                    group_term: Term(group_term),
                },
            )
        };
        let cmds = a.step(ms(30), reply(CMS[1], newer));
        let promotes = cmds.iter().any(|c| {
            matches!(
                c,
                AgentCommand::RunDnAction {
                    action: DnAction::Promote { .. },
                    ..
                }
            )
        });
        assert_eq!(
            promotes, promoted,
            "group term {newer} against Failover{{4}}"
        );
        assert!(a.insts[&DN].term_check.is_none());
    }
}

/// A term check asks the CMS nodes that have not answered again every 500 ms (before: once,
/// so a lost reply stalled the promotion until the check timed out, and a sent Switchover was
/// never resent: swarm seed 387).
#[test]
fn a_term_check_asks_the_silent_cms_nodes_again() {
    let mut a = boot(DnRole::Standby);
    let nonce = failover_waiting_for_its_term_check(&mut a);
    let check = |a: &Agent, n| {
        to_cms(
            a,
            n,
            Msg::GroupTermCheck {
                nonce,
                group: GroupId(1),
            },
        )
    };
    let asks = |cmds: &[AgentCommand]| {
        cmds.iter()
            .filter(|c| format!("{c:?}").contains("TermCheck"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(asks(&tick(&mut a, ms(519))), vec![]);
    let again = vec![check(&a, CMS[0]), check(&a, CMS[1])];
    assert_eq!(asks(&tick(&mut a, ms(520))), again);
    assert_eq!(asks(&tick(&mut a, ms(1019))), vec![]);
    assert_eq!(asks(&tick(&mut a, ms(1020))), again);
}

/// A deposed leader's resend of a Build the agent already took, or a rejected Build while one
/// is pending, is not recorded as a failed build: it would overwrite the outcome `cm_ctl
/// build` waits for (the refusal was recorded before the duplicate check).
#[test]
fn a_rejected_duplicate_or_a_rejection_while_a_build_is_pending_is_not_recorded() {
    let build = CmsCommand::Build {
        source: InstanceId(6002),
        full: false,
    };
    let mut a = boot(DnRole::Standby);
    // The leader of quorum term 2 sends Build seq 1; it runs.
    let cmds = a.step(ms(10), leader_reply(CMS[0], 2, 1, false));
    a.step(ms(10), write_ok(persist_token(&cmds)));
    let cmds = a.step(ms(20), command(CMS[0], 2, 1, build.clone()));
    let cmds = a.step(ms(20), write_ok(persist_token(&cmds)));
    let op = action_op(&cmds);
    // A deposed leader (quorum term 1) resends its own Build: stale, pending or not.
    a.step(ms(30), command(CMS[0], 1, 9, build.clone()));
    let b = a.insts[&DN].report(ms(40)).last_build;
    assert_eq!((b.count, b.pending), (0, true), "{b:?}");
    // A CMS that is not the leader sends a new Build while this one runs.
    a.step(ms(50), command(CMS[1], 2, 5, build.clone()));
    let b = a.insts[&DN].report(ms(60)).last_build;
    assert_eq!((b.count, b.pending), (0, true), "{b:?}");
    a.step(ms(500), done(op));
    let b = a.insts[&DN].report(ms(600)).last_build;
    assert_eq!((b.count, b.error.as_deref(), b.pending), (1, None, false));
    // The deposed leader's resend after the build finished: still stale, the success stays.
    a.step(ms(700), command(CMS[0], 1, 9, build));
    let b = a.insts[&DN].report(ms(800)).last_build;
    assert_eq!((b.count, b.error.as_deref()), (1, None));
}

/// A Build accepted but not yet durable is reported pending: it runs once its write completes.
#[test]
fn a_build_accepted_but_not_yet_durable_is_reported_pending() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(
        ms(20),
        command(
            CMS[0],
            1,
            1,
            CmsCommand::Build {
                source: InstanceId(6002),
                full: false,
            },
        ),
    );
    assert!(!cmds.is_empty());
    let reports: Vec<_> = tick(&mut a, ms(1000))
        .into_iter()
        .filter_map(|c| match c {
            AgentCommand::Net(NetCommand::Send { envelope }) => match envelope.msg {
                Msg::AgentReport(r) => Some(r),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(!reports.is_empty());
    assert!(
        reports.iter().all(|r| r.dns[0].last_build.pending),
        "{reports:?}"
    );
}
