use crate::agent::testkit::*;
use crate::codec::decode_persisted;

fn only_kills(cmds: &[AgentCommand]) -> Vec<AgentCommand> {
    cmds.iter()
        .filter(|c| {
            matches!(
                c,
                AgentCommand::RunDnAction {
                    action: DnAction::Kill,
                    ..
                }
            )
        })
        .cloned()
        .collect()
}

fn phony_probe(cmds: &[AgentCommand]) -> Option<(OpId, Duration)> {
    cmds.iter().find_map(|c| match c {
        AgentCommand::ProbePhonyDead {
            op,
            connect_timeout,
            ..
        } => Some((*op, *connect_timeout)),
        _ => None,
    })
}

/// Sets the DN's sampled processes and lets the phony-dead check run at `now`.
fn phony_round(a: &mut Agent, now: Instant, procs: Vec<ProcState>) -> Vec<AgentCommand> {
    a.insts.get_mut(&DN).expect("dn").processes = procs;
    tick(a, now)
}

fn hits(a: &Agent) -> u32 {
    a.insts[&DN].phony_hits
}

#[test]
fn phony_dead_d_and_z_states_are_hits() {
    let mut a = boot(DnRole::Standby);
    phony_round(&mut a, ms(10_000), vec![ProcState::DiskSleep]);
    phony_round(&mut a, ms(20_000), vec![ProcState::Zombie]);
    assert_eq!(hits(&a), 2);
    assert_eq!(a.insts[&DN].report(ms(20_000)).phony_dead_hits, 2);
}

#[test]
fn phony_dead_t_state_is_a_hit_and_the_next_check_waits_36_s() {
    let mut a = boot(DnRole::Standby);
    phony_round(&mut a, ms(10_000), vec![ProcState::Stopped]);
    assert_eq!((hits(&a), a.insts[&DN].next_phony), (1, ms(46_000)));
    phony_round(&mut a, ms(45_999), vec![ProcState::Stopped]);
    assert_eq!(hits(&a), 1);
    phony_round(&mut a, ms(46_000), vec![ProcState::Stopped]);
    assert_eq!(hits(&a), 2);
}

#[test]
fn phony_dead_probe_failure_is_a_hit_only_when_the_wal_is_older_than_the_interval() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    let cmds = phony_round(&mut a, ms(10_000), vec![ProcState::Running]);
    let (op, timeout) = phony_probe(&cmds).expect("probe");
    assert_eq!(timeout, Duration::from_secs(5), "min(5 s, interval)");
    let failed = |op, age| AgentInput::PhonyDeadProbed {
        op,
        instance: DN,
        outcome: PhonyProbe::Failed {
            newest_wal_age: Some(Duration::from_secs(age)),
        },
    };
    assert_eq!(a.step(ms(12_000), failed(op, 11)), vec![]);
    assert_eq!(hits(&a), 1);
    let (op, _) =
        phony_probe(&phony_round(&mut a, ms(20_000), vec![ProcState::Running])).expect("probe");
    a.step(ms(22_000), failed(op, 3));
    assert_eq!(
        hits(&a),
        0,
        "WAL still written: not hung, and the count resets"
    );
}

#[test]
fn phony_dead_too_many_clients_is_not_a_hit() {
    let mut a = boot(DnRole::Primary);
    a.insts.get_mut(&DN).expect("dn").phony_hits = 3;
    let (op, _) =
        phony_probe(&phony_round(&mut a, ms(10_000), vec![ProcState::Running])).expect("probe");
    let busy = AgentInput::PhonyDeadProbed {
        op,
        instance: DN,
        outcome: PhonyProbe::TooManyClients,
    };
    a.step(ms(11_000), busy);
    assert_eq!(hits(&a), 0);
}

#[test]
fn phony_dead_pending_dn_is_not_probed() {
    let mut a = boot(DnRole::Pending);
    a.insts.get_mut(&DN).expect("dn").phony_hits = 2;
    let cmds = phony_round(&mut a, ms(10_000), vec![ProcState::Running]);
    assert_eq!(phony_probe(&cmds), None);
    assert_eq!(hits(&a), 0);
}

#[test]
fn phony_dead_hits_reset_while_paused() {
    let mut a = boot(DnRole::Standby);
    phony_round(&mut a, ms(10_000), vec![ProcState::DiskSleep]);
    a.step(ms(10_001), leader_reply(CMS[0], 1, a.cms.report_seq, true));
    // Keep contact fresh so the pause holds.
    let cmds = tick(&mut a, ms(10_002));
    let _ = cmds;
    a.cms.answered_send = Some(ms(19_000));
    phony_round(&mut a, ms(20_000), vec![ProcState::DiskSleep]);
    assert_eq!(hits(&a), 0);
}

#[test]
fn three_failed_disk_probes_make_the_dn_disk_damaged_and_kill_a_primary() {
    let mut a = boot(DnRole::Primary);
    let fail = |a: &mut Agent, now| {
        let op = a.insts[&DN].disk_probe.expect("probe outstanding").0;
        a.step(
            now,
            AgentInput::DiskProbed {
                op,
                instance: DN,
                result: Err("EIO".into()),
                elapsed: Duration::ZERO,
            },
        )
    };
    tick(&mut a, ms(1000));
    assert_eq!(fail(&mut a, ms(1001)), vec![]);
    tick(&mut a, ms(2000));
    assert_eq!(fail(&mut a, ms(2001)), vec![]);
    tick(&mut a, ms(3000));
    let cmds = fail(&mut a, ms(3001));
    assert_eq!(
        cmds,
        vec![
            AgentCommand::RaiseAlarm(Alarm::DiskDamaged { instance: DN }),
            run(action_op(&cmds), DnAction::Kill),
        ]
    );
    assert!(a.insts[&DN].report(ms(3001)).disk_damaged);
}

#[test]
fn hung_disk_probe_counts_as_failed_and_success_resets_the_count() {
    let mut a = boot(DnRole::Standby);
    let mut p = a.params.clone();
    p.disk_check_timeout = 2000;
    a.step(ms(0), AgentInput::ParamsReloaded(p));
    tick(&mut a, ms(1000)); // probe issued, deadline 3 s
    tick(&mut a, ms(3000));
    assert_eq!(a.insts[&DN].disk_failures, 1);
    // A slow but finished probe (> timeout) also fails.
    tick(&mut a, ms(4000));
    let op = a.insts[&DN].disk_probe.expect("probe").0;
    let slow = Duration::from_millis(2500);
    a.step(
        ms(4500),
        AgentInput::DiskProbed {
            op,
            instance: DN,
            result: Ok(()),
            elapsed: slow,
        },
    );
    assert_eq!(a.insts[&DN].disk_failures, 2);
    tick(&mut a, ms(5000));
    let op = a.insts[&DN].disk_probe.expect("probe").0;
    a.step(
        ms(5100),
        AgentInput::DiskProbed {
            op,
            instance: DN,
            result: Ok(()),
            elapsed: Duration::from_millis(5),
        },
    );
    assert_eq!(a.insts[&DN].disk_failures, 0);
}

#[test]
fn isolated_primary_is_killed_only_once_cms_contact_has_lapsed() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    let probe = |cmds: &[AgentCommand]| {
        op_of(cmds, |c| match c {
            AgentCommand::ProbePeers { op, .. } => Some(*op),
            _ => None,
        })
    };
    let unreachable = |op| AgentInput::PeersProbed {
        op,
        instance: DN,
        reachable: false,
    };
    let op = probe(&tick(&mut a, ms(1000)));
    assert_eq!(
        a.step(ms(1100), unreachable(op)),
        vec![],
        "the CMS still answers: it decides"
    );
    let op = probe(&tick(&mut a, ms(6000)));
    let cmds = a.step(ms(6100), unreachable(op));
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::Kill)]);
}

#[test]
fn group_without_peers_skips_the_peer_check() {
    let text = two_dn_config();
    let a = Agent::new(&config(&text), ME, 0, None).expect("agent");
    let mut a = boot_with(a, DnRole::Primary);
    let probed: Vec<InstanceId> = tick(&mut a, ms(1000))
        .iter()
        .filter_map(|c| match c {
            AgentCommand::ProbePeers { instance, .. } => Some(*instance),
            _ => None,
        })
        .collect();
    assert_eq!(probed, vec![DN]);
}

#[test]
fn primary_self_fences_at_the_timeout_from_the_send_time_of_its_newest_answered_report() {
    let mut a = boot(DnRole::Primary);
    tick(&mut a, ms(1000)); // report sent at 1 s
    let seq = a.cms.report_seq;
    a.step(ms(1900), leader_reply(CMS[0], 1, seq, false)); // answered late: still timed from 1 s
    for t in (2000..7000).step_by(200) {
        let cmds = tick(&mut a, ms(t));
        assert_eq!(only_kills(&cmds), vec![], "at {t} ms");
    }
    let cmds = tick(&mut a, ms(7000));
    assert_eq!(only_kills(&cmds).len(), 1);
}

#[test]
fn self_fence_waits_for_the_exact_deadline() {
    let mut a = boot(DnRole::Primary);
    a.cms.answered_send = Some(ms(0));
    // Only the self-fence deadline is left between the loops' turns.
    let mut out = Vec::new();
    a.self_fence_check(ms(5999), &mut out);
    assert_eq!(out, vec![]);
    a.self_fence_check(ms(6000), &mut out);
    assert_eq!(out, vec![run(action_op(&out), DnAction::Kill)]);
}

#[test]
fn fresh_streaming_standby_outside_any_lock1_quorum_prevents_the_self_fence() {
    // n = 3, q = 2: more than n − 1 − q = 0 fresh rows protect.
    let cases = [
        (vec![(6002, 500)], true),
        (vec![(6002, 2500)], false), // stale reply
        (vec![(9999, 100)], false),  // not a member
        (vec![(6001, 100)], false),  // itself
        (vec![(6002, 100), (6003, 100)], true),
    ];
    for (rows, protected) in cases {
        let mut a = boot(DnRole::Primary);
        let s = primary_with(&rows);
        a.insts.get_mut(&DN).expect("dn").status = Some(s);
        a.insts.get_mut(&DN).expect("dn").status_at = ms(6000);
        let mut out = Vec::new();
        a.self_fence_check(ms(6000), &mut out);
        assert_eq!(out.is_empty(), protected, "rows {rows:?}");
    }
}

#[test]
fn streaming_rows_age_with_the_sample() {
    let mut a = boot(DnRole::Primary);
    a.insts.get_mut(&DN).expect("dn").status = Some(primary_with(&[(6002, 500)]));
    a.insts.get_mut(&DN).expect("dn").status_at = ms(4000);
    let mut out = Vec::new();
    a.self_fence_check(ms(6000), &mut out); // 0.5 s + 2 s since the sample: stale
    assert_eq!(out, vec![run(action_op(&out), DnAction::Kill)]);
}

#[test]
fn self_fence_is_off_when_disabled() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    let mut out = Vec::new();
    a.self_fence_check(ms(7000), &mut out);
    assert_eq!(out, vec![]);
}

#[test]
fn system_usage_above_threshold_raises_an_alarm_on_each_crossing_only() {
    let mut a = boot(DnRole::Standby);
    let s = |c| AgentInput::SystemSampled {
        cpu_pct: c,
        mem_pct: 50,
        io_pct: 90,
    };
    let alarm = AgentCommand::RaiseAlarm(Alarm::Environment {
        resource: "cpu".into(),
        usage_pct: 95,
    });
    assert_eq!(a.step(ms(1000), s(95)), vec![alarm.clone()]);
    assert_eq!(a.step(ms(2000), s(95)), vec![]);
    assert_eq!(a.step(ms(3000), s(90)), vec![], "90 is not above 90");
    assert_eq!(a.step(ms(4000), s(95)), vec![alarm]);
}

#[test]
fn unanswered_peer_probe_is_not_repeated_until_its_three_tries_are_over() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    let probes = |cmds: &[AgentCommand]| -> Vec<(OpId, Duration)> {
        cmds.iter()
            .filter_map(|c| match c {
                AgentCommand::ProbePeers {
                    op,
                    connect_timeout,
                    ..
                } => Some((*op, *connect_timeout)),
                _ => None,
            })
            .collect()
    };
    let first = probes(&tick(&mut a, ms(1000)));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, Duration::from_secs(1), "agent_connect_timeout");
    assert_eq!(probes(&tick(&mut a, ms(2000))), vec![]);
    assert_eq!(probes(&tick(&mut a, ms(3000))), vec![]);
    let second = probes(&tick(&mut a, ms(4000)));
    assert_eq!(second.len(), 1, "3 × 1 s later the probe is abandoned");
    // The abandoned probe's late answer is ignored even past the contact lapse.
    let late = AgentInput::PeersProbed {
        op: first[0].0,
        instance: DN,
        reachable: false,
    };
    assert_eq!(a.step(ms(7000), late), vec![]);
}

/// Runs a status round at `now` with `procs` sampled; returns its commands and the DN's
/// phony-dead hits as its report now carries them.
fn reported_hits(a: &mut Agent, now: Instant, procs: Vec<ProcState>) -> (Vec<AgentCommand>, u32) {
    let cmds = tick(a, now);
    let out = a.step(now, sampled(sample_op(&cmds, DN), procs));
    (out, a.insts[&DN].report(now).phony_dead_hits)
}

#[test]
fn phony_dead_hits_restart_from_zero_for_the_process_started_after_a_restart() {
    let mut a = boot(DnRole::Primary);
    a.params.enable_self_fence = false;
    // Frozen (T): hits at 10 s and 46 s, the next check only at 82 s.
    phony_round(&mut a, ms(10_000), vec![ProcState::Stopped]);
    phony_round(&mut a, ms(46_000), vec![ProcState::Stopped]);
    assert_eq!(hits(&a), 2);
    a.insts.get_mut(&DN).expect("dn").phony_hits = 5;
    let cmds = a.step(ms(47_000), command(CMS[0], 1, 1, CmsCommand::Restart));
    let cmds = a.step(ms(47_000), write_ok(persist_token(&cmds)));
    let kill = action_op(&cmds);
    assert_eq!(cmds, vec![run(kill, DnAction::Kill)]);
    assert_eq!(
        hits(&a),
        0,
        "the killed process's hits are not the instance's any more"
    );
    a.step(ms(47_100), done(kill));
    let (cmds, reported) = reported_hits(&mut a, ms(48_000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
    assert_eq!(reported, 0);
    // The new process runs (and wins its role back) before the old check time: still 0.
    let (cmds, reported) = reported_hits(&mut a, ms(49_000), vec![ProcState::Running]);
    assert_eq!((cmds, reported), (vec![], 0));
}

#[test]
fn phony_dead_hits_restart_from_zero_once_the_process_is_seen_absent() {
    let mut a = boot(DnRole::Standby);
    phony_round(&mut a, ms(10_000), vec![ProcState::DiskSleep]);
    phony_round(&mut a, ms(20_000), vec![ProcState::DiskSleep]);
    assert_eq!(hits(&a), 2);
    // The process dies between checks; the agent starts a new one.
    let (cmds, reported) = reported_hits(&mut a, ms(21_000), vec![]);
    assert_eq!(cmds, vec![run(action_op(&cmds), DnAction::StartPending)]);
    assert_eq!((hits(&a), reported), (0, 0));
}

/// Starts an agent at `now` with its DN running as `role`, cut off from every CMS (no
/// connection, no answered report).
fn start_cut_off(mut a: Agent, now: Instant, role: DnRole) -> Agent {
    let cmds = a.step(now, AgentInput::Tick);
    a.step(now, AgentInput::FlagsObserved(FlagSet::default()));
    let (s, q) = (sample_op(&cmds, DN), query_op(&cmds, DN));
    let running = AgentInput::ProcessesSampled {
        op: s,
        instance: DN,
        processes: vec![ProcState::Running],
    };
    a.step(now, running);
    let status = AgentInput::DnStatusQueried {
        op: q,
        instance: DN,
        result: Ok(status(role)),
    };
    a.step(now, status);
    a
}

/// The first tick (200 ms steps) at which the agent kills its DN, up to `until_ms`.
fn first_kill_ms(a: &mut Agent, from_ms: u64, until_ms: u64) -> Option<u64> {
    (from_ms..=until_ms)
        .step_by(200)
        .find(|&t| !only_kills(&tick(a, ms(t))).is_empty())
}

fn restored(contact: Option<Instant>) -> Agent {
    let store = Persisted {
        contact,
        ..Persisted::default()
    };
    let bytes = crate::codec::encode_persisted(&store).expect("encode");
    Agent::new(&config(ONE_DN), ME, 0, Some(bytes)).expect("agent")
}

/// §8 across an agent restart (swarm seed 8460): the CMS's waits assume the agent of a
/// silent primary fences `agent_self_fence_timeout` after its newest answered report. A
/// restarted agent counts from its predecessor's persisted contact (10 s), not from its own
/// start (15 s), so it fences at 16 s, not 21 s.
#[test]
fn a_restarted_agent_counts_its_self_fence_from_the_persisted_contact() {
    let mut a = start_cut_off(restored(Some(ms(10_000))), ms(15_000), DnRole::Primary);
    assert_eq!(first_kill_ms(&mut a, 15_200, 25_000), Some(16_000));
    // A fresh store has no contact: the start is the base.
    let mut a = start_cut_off(restored(None), ms(15_000), DnRole::Primary);
    assert_eq!(first_kill_ms(&mut a, 15_200, 25_000), Some(21_000));
    // A contact from the future was written before a reboot restarted the clock: ignored.
    let mut a = start_cut_off(restored(Some(ms(90_000))), ms(15_000), DnRole::Primary);
    assert_eq!(first_kill_ms(&mut a, 15_200, 25_000), Some(21_000));
}

/// The contact is written at most once per `CONTACT_PERSIST_STEP`, never ahead of the truth.
#[test]
fn the_answered_send_time_is_persisted_once_a_second_at_most() {
    let mut a = boot(DnRole::Standby); // its report sent at 0 ms was answered and written
    let writes = |cmds: &[AgentCommand]| -> Vec<Option<Instant>> {
        cmds.iter()
            .filter_map(|c| match c {
                AgentCommand::PersistState(p) => {
                    let s: Persisted = decode_persisted(&p.bytes).expect("decode");
                    Some(s.contact)
                }
                _ => None,
            })
            .collect()
    };
    let mut written = Vec::new();
    for t in (200..=2_000).step_by(200) {
        tick(&mut a, ms(t));
        let seq = a.cms.report_seq;
        let cmds = a.step(ms(t + 5), leader_reply(CMS[0], 1, seq, false));
        for w in writes(&cmds) {
            written.push((t, w));
            a.step(ms(t + 6), write_ok(persist_token(&cmds)));
        }
    }
    // Reports go out once per agent_report_interval (1 s): answered at 1 s and 2 s.
    assert_eq!(
        written,
        vec![(1_000, Some(ms(1_000))), (2_000, Some(ms(2_000)))]
    );
}
