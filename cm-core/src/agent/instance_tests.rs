use crate::agent::testkit::*;

/// Runs a status round at `now` and feeds the DN's sample; returns the sample's commands.
fn round(a: &mut Agent, now: Instant, processes: Vec<ProcState>) -> Vec<AgentCommand> {
    let cmds = tick(a, now);
    a.step(now, sampled(sample_op(&cmds, DN), processes))
}

fn flags_with(f: impl FnOnce(&mut FlagSet)) -> AgentInput {
    let mut flags = FlagSet::default();
    f(&mut flags);
    AgentInput::FlagsObserved(flags)
}

#[test]
fn absent_dn_is_started_pending() {
    let mut a = boot(DnRole::Standby);
    let cmds = round(&mut a, ms(1000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

#[test]
fn dn_running_at_agent_start_is_adopted_not_restarted_nor_reported_absent() {
    let mut a = agent();
    let cmds = tick(&mut a, ms(0));
    for n in CMS {
        a.step(
            ms(0),
            AgentInput::Net(NetEvent::Connected {
                peer: Endpoint::server(n),
            }),
        );
    }
    a.step(ms(0), AgentInput::FlagsObserved(FlagSet::default()));
    a.step(
        ms(1),
        cms_sampled(cms_sample_op(&cmds), vec![ProcState::Running]),
    );
    assert_eq!(
        a.step(
            ms(5),
            sampled(sample_op(&cmds, DN), vec![ProcState::Running])
        ),
        vec![]
    );
    a.step(
        ms(6),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Primary))),
    );
    let sent = reports(&tick(&mut a, ms(1000)));
    assert_eq!(sent[0].1.dns[0].role, DnRole::Primary);
    assert_eq!(sent[0].1.dns[0].restarts_1h, 0);
}

#[test]
fn no_start_before_the_flags_are_known() {
    let mut a = agent();
    let cmds = tick(&mut a, ms(0));
    assert_eq!(a.step(ms(5), sampled(sample_op(&cmds, DN), vec![])), vec![]);
}

#[test]
fn instance_manual_start_flag_stops_only_that_dn_with_its_mode_and_keeps_it_down() {
    let mut a = boot(DnRole::Standby);
    let flags = flags_with(|f| {
        f.instance_manual_start.insert(DN, StopMode::Immediate);
    });
    let cmds = a.step(ms(100), flags);
    let stop = action_op(&cmds);
    assert_eq!(
        cmds,
        vec![run(
            stop,
            DnAction::Stop {
                mode: StopMode::Immediate
            }
        )]
    );
    a.step(ms(200), done(stop));
    assert_eq!(round(&mut a, ms(1000), vec![]), vec![]);
    let r = a.insts[&DN].report(ms(1000));
    assert_eq!(
        (r.role, r.db_state, r.manually_stopped),
        (DnRole::Down, DbState::ManuallyStopped, true)
    );
    assert_eq!(
        round(&mut a, ms(2000), vec![]),
        vec![],
        "never restarted while the flag exists"
    );
    a.step(ms(2100), AgentInput::FlagsObserved(FlagSet::default()));
    let cmds = round(&mut a, ms(3000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

#[test]
fn cluster_manual_start_stops_every_dn_then_the_local_cms_then_exits() {
    let text = two_dn_config();
    let a = Agent::new(&config(&text), ME, 0, None).expect("agent");
    let mut a = boot_with(a, DnRole::Standby);
    let cmds = a.step(
        ms(100),
        flags_with(|f| f.cluster_manual_start = Some(StopMode::Smart)),
    );
    let ops: Vec<OpId> = cmds
        .iter()
        .filter_map(|c| match c {
            AgentCommand::RunDnAction { op, .. } => Some(*op),
            _ => None,
        })
        .collect();
    let stop = |op, instance| AgentCommand::RunDnAction {
        op,
        instance,
        action: DnAction::Stop {
            mode: StopMode::Smart,
        },
    };
    assert_eq!(cmds, vec![stop(ops[0], DN), stop(ops[1], DN2)]);
    for (op, instance) in [(ops[0], DN), (ops[1], DN2)] {
        a.step(
            ms(200),
            AgentInput::ActionCompleted {
                op,
                instance,
                result: Ok(()),
            },
        );
    }
    let cmds = tick(&mut a, ms(1000));
    assert_eq!(
        a.step(ms(1001), sampled(sample_op(&cmds, DN), vec![])),
        vec![]
    );
    let last = a.step(
        ms(1002),
        AgentInput::ProcessesSampled {
            op: sample_op(&cmds, DN2),
            instance: DN2,
            processes: vec![],
        },
    );
    // Every DN is down: a report (the DNs manually stopped), then the local CMS is stopped.
    let cms_stop = op_of(&last, |c| match c {
        AgentCommand::StopCms { op } => Some(*op),
        _ => None,
    });
    assert_eq!(last.last(), Some(&AgentCommand::StopCms { op: cms_stop }));
    let final_reports = reports(&last);
    assert_eq!(final_reports.len(), 3);
    assert!(
        final_reports[0]
            .1
            .dns
            .iter()
            .all(|d| d.db_state == DbState::ManuallyStopped)
    );
    a.step(
        ms(1500),
        AgentInput::CmsActionCompleted {
            op: cms_stop,
            result: Ok(()),
        },
    );
    let cmds = tick(&mut a, ms(2000));
    let exit = a.step(ms(2001), cms_sampled(cms_sample_op(&cmds), vec![]));
    assert_eq!(exit.last(), Some(&AgentCommand::Exit));
    assert_eq!(a.next_deadline(), None);
    assert_eq!(tick(&mut a, ms(5000)), vec![]);
}

#[test]
fn paused_agent_starts_nothing_unless_cluster_manual_starting_which_it_then_removes() {
    let mut a = boot(DnRole::Standby);
    tick(&mut a, ms(1000));
    a.step(ms(1100), leader_reply(CMS[0], 1, a.cms.report_seq, true));
    assert_eq!(round(&mut a, ms(2000), vec![]), vec![]);
    a.step(ms(2100), flags_with(|f| f.cluster_manual_starting = true));
    let cmds = round(&mut a, ms(3000), vec![]);
    let start = action_op(&cmds);
    assert_eq!(cmds, vec![run(start, DnAction::StartPending)]);
    assert_eq!(
        a.step(ms(3500), done(start)),
        vec![AgentCommand::RemoveFlag {
            flag: Flag::ClusterManualStarting
        }]
    );
}

#[test]
fn never_two_starts_in_flight_and_stale_samples_are_ignored() {
    let mut a = boot(DnRole::Standby);
    let cmds = round(&mut a, ms(1000), vec![]);
    let start = action_op(&cmds);
    assert_eq!(
        round(&mut a, ms(2000), vec![]),
        vec![],
        "start still in flight"
    );
    // A sample requested before the start completed, answered after it: stale.
    let cmds = tick(&mut a, ms(3000));
    let early = sample_op(&cmds, DN);
    a.step(ms(3100), done(start));
    assert_eq!(a.step(ms(3200), sampled(early, vec![])), vec![]);
}

#[test]
fn disk_damaged_dn_is_not_restarted() {
    let mut a = boot(DnRole::Standby);
    a.insts.get_mut(&DN).expect("dn").disk_damaged = true;
    assert_eq!(round(&mut a, ms(1000), vec![]), vec![]);
    assert_eq!(a.insts[&DN].report(ms(1000)).db_state, DbState::DiskDamaged);
}

#[test]
fn restarts_are_counted_per_10_minutes_and_per_hour() {
    let mut a = boot(DnRole::Standby);
    let cmds = round(&mut a, ms(1000), vec![]);
    a.step(ms(1500), done(action_op(&cmds)));
    round(&mut a, ms(2000), vec![ProcState::Running]);
    let r = a.insts[&DN].report(ms(2000));
    assert_eq!((r.restarts_10min, r.restarts_1h), (1, 1));
    let r = a.insts[&DN].report(ms(1000 + 600_000));
    assert_eq!((r.restarts_10min, r.restarts_1h), (0, 1));
    let r = a.insts[&DN].report(ms(1000 + 3_600_000));
    assert_eq!((r.restarts_10min, r.restarts_1h), (0, 0));
}

/// Issue 11 defect 5: a switchover's demotion stops the DN on purpose; counted as a restart,
/// a few switchovers made the old primary "restart-looping" and the CMS switched it over again
/// and again (§4.4). A crash after it counts as usual.
#[test]
fn a_demotion_is_not_counted_as_a_restart_but_a_later_crash_is() {
    let mut a = boot(DnRole::Primary);
    let cmds = a.step(ms(10), command(CMS[0], 1, 1, CmsCommand::Demote));
    let cmds = a.step(ms(10), write_ok(persist_token(&cmds)));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::Demote)]);
    a.step(ms(200), done(action_op(&cmds)));
    let cmds = round(&mut a, ms(1000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
    a.step(ms(1500), done(action_op(&cmds)));
    round(&mut a, ms(2000), vec![ProcState::Running]);
    let r = a.insts[&DN].report(ms(2000));
    assert_eq!((r.restarts_10min, r.restarts_1h), (0, 0));
    // The next stop nobody ordered is a crash.
    let cmds = round(&mut a, ms(3000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
    a.step(ms(3500), done(action_op(&cmds)));
    round(&mut a, ms(4000), vec![ProcState::Running]);
    let r = a.insts[&DN].report(ms(4000));
    assert_eq!((r.restarts_10min, r.restarts_1h), (1, 1));
}

/// SPEC §4.5: an agent keeps no switchover state across requests. A Switchover whose term
/// check is still out when the DN process disappears must not promote the restarted DN later.
#[test]
fn a_promotion_waiting_for_its_term_check_is_dropped_when_the_dn_process_is_gone() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(
        ms(10),
        command(CMS[0], 1, 1, CmsCommand::Switchover { term: Term(2) }),
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    round(&mut a, ms(1000), vec![]);
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
    for n in CMS {
        let cmds = a.step(ms(1100), reply(n));
        assert!(
            !cmds.iter().any(|c| matches!(
                c,
                AgentCommand::RunDnAction {
                    action: DnAction::Promote { .. },
                    ..
                }
            )),
            "{cmds:?}"
        );
    }
}

#[test]
fn failed_status_query_keeps_the_last_role_with_unknown_state_and_lock() {
    let mut a = boot(DnRole::Primary);
    let cmds = tick(&mut a, ms(1000));
    a.step(
        ms(1001),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    a.step(
        ms(1002),
        queried(query_op(&cmds, DN), Err("timeout".into())),
    );
    let r = a.insts[&DN].report(ms(1002));
    assert_eq!(
        (r.role, r.db_state, r.lock),
        (DnRole::Primary, DbState::Unknown, LockState::Unknown)
    );
}

#[test]
fn kill_is_reported_stopped_only_when_no_process_or_only_d_state_remains() {
    let mut a = boot(DnRole::Primary);
    let mut out = Vec::new();
    a.fence(DN, "test", &mut out);
    let kill = action_op(&out);
    a.step(ms(10), done(kill));
    let cmds = round(
        &mut a,
        ms(1000),
        vec![ProcState::Running, ProcState::DiskSleep],
    );
    assert_eq!(
        cmds,
        vec![run(action_op(&cmds), DnAction::Kill)],
        "the kill is repeated"
    );
    a.step(ms(1010), done(action_op(&cmds)));
    assert_eq!(
        a.insts[&DN].report(ms(1010)).role,
        DnRole::Unknown,
        "not yet stopped"
    );
    round(&mut a, ms(2000), vec![ProcState::DiskSleep]);
    let r = a.insts[&DN].report(ms(2000));
    assert_eq!(
        (r.role, r.processes),
        (DnRole::Down, vec![ProcState::DiskSleep])
    );
    // No start while a D process remains; once it is gone, restart pending.
    assert_eq!(round(&mut a, ms(3000), vec![ProcState::DiskSleep]), vec![]);
    let cmds = round(&mut a, ms(4000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
}

#[test]
fn kill_that_did_not_take_is_repeated_on_the_next_sample() {
    let mut a = boot(DnRole::Primary);
    let mut out = Vec::new();
    a.fence(DN, "test", &mut out);
    a.step(ms(10), done(action_op(&out)));
    let cmds = round(&mut a, ms(1000), vec![ProcState::Running]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::Kill)]);
}

#[test]
fn start_completing_under_cluster_manual_start_is_not_taken_for_down_until_sampled() {
    let mut a = boot(DnRole::Standby);
    let start = action_op(&round(&mut a, ms(1000), vec![]));
    a.step(
        ms(1100),
        flags_with(|f| f.cluster_manual_start = Some(StopMode::Fast)),
    );
    // The last sample ("absent") predates the start: no report, no CMS stop, no exit.
    assert_eq!(a.step(ms(1200), done(start)), vec![]);
    assert_eq!(round(&mut a, ms(2000), vec![ProcState::Running]), vec![]);
    // It runs: the next flag read stops it.
    let cmds = a.step(
        ms(2001),
        flags_with(|f| f.cluster_manual_start = Some(StopMode::Fast)),
    );
    assert_eq!(
        cmds,
        vec![run(
            action_op(&cmds),
            DnAction::Stop {
                mode: StopMode::Fast
            }
        )]
    );
}

/// Issue 18, defect 4 (and the cause of defect 5): a DN the agent restarted pending that is in
/// crash recovery (every status query fails) is reported Pending/Starting — not with the role
/// it had before its restart — and gets no phony-dead probe or hit until `dn_start_bound`
/// (120 s by default) has passed since the start; after that the old rules apply again.
#[test]
fn a_dn_in_its_start_is_pending_starting_and_not_hung_until_its_start_bound() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    let cmds = round(&mut a, ms(1000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
    let recovering = |a: &mut Agent, t: u64| {
        let cmds = tick(a, ms(t));
        a.step(
            ms(t),
            sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
        );
        a.step(
            ms(t),
            queried(
                query_op(&cmds, DN),
                Err("FATAL: the database system is starting up".into()),
            ),
        );
        cmds.iter()
            .any(|c| matches!(c, AgentCommand::ProbePhonyDead { .. }))
    };
    for s in 2..=120 {
        assert!(
            !recovering(&mut a, s * 1000),
            "no phony-dead probe at {s} s"
        );
        let r = a.insts[&DN].report(ms(s * 1000));
        assert_eq!(
            (r.role, r.db_state, r.phony_dead_hits),
            (DnRole::Pending, DbState::Starting, 0),
            "at {s} s"
        );
    }
    // 1 s + 120 s: the start bound has passed.
    let probed = (121..=131).any(|s| recovering(&mut a, s * 1000));
    assert!(probed, "probed again once the bound passed");
    let r = a.insts[&DN].report(ms(131_000));
    assert_eq!((r.role, r.db_state), (DnRole::Primary, DbState::Unknown));
}

#[test]
fn a_dn_in_its_start_that_answers_is_reported_as_it_answers() {
    let mut a = boot(DnRole::Primary);
    let cmds = round(&mut a, ms(1000), vec![]);
    a.step(ms(1500), done(action_op(&cmds)));
    let cmds = tick(&mut a, ms(2000));
    a.step(
        ms(2000),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    a.step(
        ms(2000),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Pending))),
    );
    assert_eq!(a.insts[&DN].start_until, None);
    let r = a.insts[&DN].report(ms(2000));
    assert_eq!((r.role, r.db_state), (DnRole::Pending, DbState::Normal));
}

/// Review of issue 18 defect 2: a host crash cut a standby's pg_rewind short and left cm-io's
/// marker beside its data; the restarted agent has forgotten that Build, and every start is
/// refused as half-rewound. The refusal is reported as a failed Build naming the marker (once,
/// not once per attempt), so the CMS's rule for a member Down after a failed Build builds it
/// again after `instance_heartbeat_timeout`. (Fails without the fix: the report said no Build
/// ever ran, and the CMS never sent one.) A start that failed otherwise is no Build.
#[test]
fn a_start_refused_as_half_rewound_is_reported_as_a_failed_build_and_the_cms_builds_it() {
    use crate::dn::{ActionError, BuildOutcome};
    use crate::msg::CmsCommand;
    use crate::server::harness::{H, cmds, dn};
    let why = "instance 6001: not started: the data directory /d/dn is half-rewound (a \
               pg_rewind stopped partway; marker /d/dn.cm_rewinding); the next Build copies \
               it in full (cm_ctl build)";
    let mut a = boot(DnRole::Standby);
    // An ordinary start failure is not a Build.
    let cmds1 = round(&mut a, ms(1000), vec![]);
    a.step(
        ms(1100),
        AgentInput::ActionCompleted {
            op: action_op(&cmds1),
            instance: DN,
            result: Err("postgres exited during start".into()),
        },
    );
    assert_eq!(
        a.insts[&DN].report(ms(1200)).last_build,
        BuildOutcome::default()
    );
    for t in [2000, 3000] {
        let c = round(&mut a, ms(t), vec![]);
        assert_eq!(c, vec![run(action_op(&c), DnAction::StartPending)]);
        a.step(
            ms(t + 100),
            AgentInput::ActionCompleted {
                op: action_op(&c),
                instance: DN,
                result: Err(ActionError::HalfRewound(why.into())),
            },
        );
    }
    let last = a.insts[&DN].report(ms(3200)).last_build;
    assert_eq!(
        (last.count, last.error.as_deref()),
        (1, Some(why)),
        "{last:?}"
    );
    assert!(!last.pending);
    assert!(last.half_rewound, "the reason is typed: {last:?}");
    // The CMS, fed this outcome in the report of a Down member, builds it once the heartbeat
    // timeout passed — by a full copy (the driver refuses a rewind of half-rewound data).
    let build = (
        6003,
        CmsCommand::Build {
            source: InstanceId(6001),
            full: true,
        },
    );
    let down = || {
        let mut r = dn(3).down();
        r.0.last_build = last.clone();
        r
    };
    let mut h = H::new(3);
    h.reports(vec![dn(2).upstream(1, 100), dn(1).primary(1)]);
    let out = h.report(down());
    assert!(!cmds(&out).contains(&build), "{out:?}");
    h.advance_ms(6_100);
    let out = h.reports(vec![dn(1).primary(1), dn(2).upstream(1, 100), down()]);
    assert!(cmds(&out).contains(&build), "{out:?}");
}
