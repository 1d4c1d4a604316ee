use super::Gate;
use crate::agent::testkit::*;
use crate::resource::{ResourceReport, ResourceState, ScriptExit, ScriptVerb};

const RES: InstanceId = InstanceId(9001);

/// `ONE_DN` plus a fixed resource `app` with instance 9001 on node 1 and 9002 on node 2;
/// `extra` lines are added to the resource table.
fn res_config(extra: &str) -> String {
    format!(
        "{ONE_DN}\n[[resource]]\nname = \"app\"\nscript = \"/opt/app.sh\"\n\
         instances = [{{ node = 1, id = 9001 }}, {{ node = 2, id = 9002 }}]\n{extra}\n"
    )
}

/// A booted standby agent with the resource; its first `-check` (issued at 0) is in flight.
fn booted(extra: &str) -> Agent {
    let a = Agent::new(&config(&res_config(extra)), ME, 1, None).unwrap();
    let a = boot_with(a, DnRole::Standby);
    assert_eq!(
        in_flight(&a),
        Some(ScriptVerb::Check),
        "the first check runs at 0"
    );
    a
}

fn in_flight(a: &Agent) -> Option<ScriptVerb> {
    a.res[0].in_flight.map(|(_, v)| v)
}

/// The script runs among `cmds`, as (verb, timeout).
fn scripts(cmds: &[AgentCommand]) -> Vec<ScriptVerb> {
    cmds.iter()
        .filter_map(|c| match c {
            AgentCommand::RunScript { instance, verb, .. } if *instance == RES => Some(*verb),
            _ => None,
        })
        .collect()
}

/// Completes the run in flight with `exit` at `now`.
fn finish(a: &mut Agent, now: Instant, exit: ScriptExit) -> Vec<AgentCommand> {
    let (op, _) = a.res[0].in_flight.expect("a script in flight");
    a.step(
        now,
        AgentInput::ScriptCompleted {
            op,
            instance: RES,
            exit,
        },
    )
}

/// Completes the run in flight with an exit code.
fn code(a: &mut Agent, now: Instant, c: i32) -> Vec<AgentCommand> {
    finish(a, now, ScriptExit::Code(c))
}

fn flags_with(ids: &[InstanceId], cluster: bool) -> AgentInput {
    let mut f = FlagSet::default();
    for id in ids {
        f.instance_manual_start.insert(*id, StopMode::Fast);
    }
    if cluster {
        f.cluster_manual_start = Some(StopMode::Fast);
    }
    AgentInput::FlagsObserved(f)
}

fn state(a: &Agent) -> ResourceState {
    a.status().resources[0].state
}

#[test]
fn the_first_check_adopts_an_instance_that_is_online() {
    let mut a = booted("");
    assert_eq!(state(&a), ResourceState::Unknown);
    let cmds = code(&mut a, ms(30), 0);
    assert!(
        scripts(&cmds).is_empty(),
        "no -start for a running resource: {cmds:?}"
    );
    assert_eq!(state(&a), ResourceState::Online);
    // The cadence: the next check at 1 s (the first ran at 0).
    assert!(scripts(&tick(&mut a, ms(999))).is_empty());
    assert_eq!(scripts(&tick(&mut a, ms(1000))), vec![ScriptVerb::Check]);
}

#[test]
fn the_first_check_comes_before_any_start() {
    // Offline at the first check: started only restart_delay (1 s) after that check.
    let mut a = booted("");
    assert!(scripts(&code(&mut a, ms(40), 1)).is_empty());
    assert_eq!(state(&a), ResourceState::Offline);
    assert!(a.resource_deadline().unwrap() <= ms(1000));
    assert_eq!(scripts(&tick(&mut a, ms(1000))), vec![ScriptVerb::Check]);
    assert!(
        scripts(&code(&mut a, ms(1020), 1)).is_empty(),
        "1.02 s < 0.04 + 1 s? no: "
    );
}

#[test]
fn a_killed_resource_is_restarted_restart_delay_after_the_check_that_saw_it_offline() {
    let mut a = booted("");
    code(&mut a, ms(10), 0);
    tick(&mut a, ms(1000));
    // Offline seen at 1.050 s: the restart is due at 2.050 s exactly.
    assert!(scripts(&code(&mut a, ms(1050), 1)).is_empty());
    assert_eq!(a.resource_deadline(), Some(ms(2000)));
    assert_eq!(scripts(&tick(&mut a, ms(2000))), vec![ScriptVerb::Check]);
    assert!(scripts(&code(&mut a, ms(2010), 1)).is_empty());
    assert_eq!(a.resource_deadline(), Some(ms(2050)));
    assert!(scripts(&tick(&mut a, ms(2049))).is_empty());
    assert_eq!(scripts(&tick(&mut a, ms(2050))), vec![ScriptVerb::Start]);
    // After the start a check runs at once.
    assert_eq!(scripts(&code(&mut a, ms(2300), 0)), vec![]);
    assert_eq!(scripts(&tick(&mut a, ms(2300))), vec![ScriptVerb::Check]);
    code(&mut a, ms(2310), 0);
    assert_eq!(state(&a), ResourceState::Online);
    assert_eq!(a.res[0].restarts, 1);
}

#[test]
fn restarts_are_spaced_by_restart_period() {
    let mut a = booted("restart_delay = 0\nrestart_period = 5");
    // Offline at 0.01 s with no delay: started at once.
    assert_eq!(scripts(&code(&mut a, ms(10), 1)), vec![ScriptVerb::Start]);
    code(&mut a, ms(100), 0);
    assert_eq!(scripts(&tick(&mut a, ms(100))), vec![ScriptVerb::Check]);
    // Still offline at 0.2 s: the next start waits until 0.01 + 5 s.
    assert!(scripts(&code(&mut a, ms(200), 1)).is_empty());
    assert_eq!(a.res[0].restart_at, Some(ms(5010)));
    let mut t = 1000;
    while t < 5010 {
        let cmds = tick(&mut a, ms(t));
        assert!(
            !scripts(&cmds).contains(&ScriptVerb::Start),
            "start at {t} ms"
        );
        if in_flight(&a).is_some() {
            assert!(scripts(&code(&mut a, ms(t + 5), 1)).is_empty());
        }
        t += 1000;
    }
    assert_eq!(scripts(&tick(&mut a, ms(5010))), vec![ScriptVerb::Start]);
}

/// Drives offline checks and restarts until `restarts` restarts happened; returns the time.
fn spend(a: &mut Agent, mut t: u64, restarts: u32) -> u64 {
    while a.res[0].restarts < restarts {
        tick(a, ms(t));
        if in_flight(a).is_some() {
            let v = in_flight(a).unwrap();
            code(a, ms(t + 1), if v == ScriptVerb::Check { 1 } else { 0 });
        }
        t += 100;
    }
    t
}

#[test]
fn a_spent_budget_writes_the_manual_stop_and_alarms_once() {
    let mut a = booted("restart_times = 2\nrestart_delay = 0\nrestart_period = 0");
    let t = spend(&mut a, 0, 2);
    // The next offline check: no third start, the flag and an alarm instead.
    let mut cmds = Vec::new();
    let mut now = t;
    while !cmds
        .iter()
        .any(|c| matches!(c, AgentCommand::WriteFlag { .. }))
    {
        now += 100;
        tick(&mut a, ms(now));
        if in_flight(&a) == Some(ScriptVerb::Check) {
            cmds = code(&mut a, ms(now + 1), 1);
            assert!(!scripts(&cmds).contains(&ScriptVerb::Start), "{cmds:?}");
        } else if in_flight(&a).is_some() {
            code(&mut a, ms(now + 1), 0);
        }
        assert!(now < t + 10_000, "no manual stop");
    }
    assert!(cmds.contains(&AgentCommand::WriteFlag {
        flag: Flag::InstanceManualStart(RES)
    }));
    assert!(cmds.contains(&AgentCommand::RaiseAlarm(
        Alarm::ResourceRestartBudgetSpent {
            instance: RES,
            resource: "app".into(),
        }
    )));
    // Before the flag is seen, a further offline check neither starts nor writes again.
    tick(&mut a, ms(now + 2000));
    let again = code(&mut a, ms(now + 2001), 1);
    assert!(
        scripts(&again).is_empty()
            && !again.iter().any(|c| matches!(
                c,
                AgentCommand::WriteFlag { .. } | AgentCommand::RaiseAlarm(_)
            )),
        "{again:?}"
    );
    // Once the flag is read: Stopped by intent.
    a.step(ms(now + 2100), flags_with(&[RES], false));
    assert_eq!(state(&a), ResourceState::Stopped);
    // `cm_ctl start -I 9001` removes the flag: a fresh budget, started again.
    a.step(
        ms(now + 2200),
        AgentInput::FlagsObserved(FlagSet::default()),
    );
    tick(&mut a, ms(now + 3000));
    let cmds = code(&mut a, ms(now + 3001), 1);
    assert_eq!(scripts(&cmds), vec![ScriptVerb::Start]);
}

#[test]
fn a_manual_stop_not_seen_is_written_again_without_a_second_alarm() {
    let mut a = booted("restart_times = 0\nrestart_delay = 0\nrestart_period = 0");
    // No restart allowed: the first offline check (at 0.01 s) writes the flag and alarms.
    let cmds = code(&mut a, ms(10), 1);
    assert!(cmds.contains(&AgentCommand::WriteFlag {
        flag: Flag::InstanceManualStart(RES)
    }));
    let alarmed = |c: &[AgentCommand]| c.iter().any(|c| matches!(c, AgentCommand::RaiseAlarm(_)));
    assert!(alarmed(&cmds));
    // The write failed: the flag never shows. Checks until 5.01 s write nothing.
    for t in (1000..5000).step_by(1000) {
        tick(&mut a, ms(t));
        let again = code(&mut a, ms(t + 1), 1);
        assert!(
            !again
                .iter()
                .any(|c| matches!(c, AgentCommand::WriteFlag { .. })),
            "at {t}: {again:?}"
        );
    }
    // The check at 5.01 s (5 s after the write): written again, no second alarm, no start.
    tick(&mut a, ms(5000));
    let again = code(&mut a, ms(5010), 1);
    assert!(again.contains(&AgentCommand::WriteFlag {
        flag: Flag::InstanceManualStart(RES)
    }));
    assert!(!alarmed(&again));
    assert!(scripts(&again).is_empty());
}

#[test]
fn five_online_checks_in_a_row_reset_the_restart_counter() {
    for (onlines, reset) in [(4, false), (5, true)] {
        let mut a = booted("restart_times = 1\nrestart_delay = 0\nrestart_period = 0");
        let mut t = spend(&mut a, 0, 1);
        // Online `onlines` times in a row.
        for _ in 0..onlines {
            t += 1000;
            tick(&mut a, ms(t));
            if in_flight(&a) != Some(ScriptVerb::Check) {
                code(&mut a, ms(t), 0);
                tick(&mut a, ms(t));
            }
            code(&mut a, ms(t + 1), 0);
        }
        assert_eq!(a.res[0].restarts, u32::from(!reset), "{onlines} onlines");
        t += 1000;
        tick(&mut a, ms(t));
        let cmds = code(&mut a, ms(t + 1), 1);
        assert_eq!(
            scripts(&cmds) == vec![ScriptVerb::Start],
            reset,
            "{onlines} onlines: {cmds:?}"
        );
    }
}

#[test]
fn abnormal_for_abnormal_timeout_is_cleaned_then_restarted() {
    let mut a = booted("abnormal_timeout = 3");
    // Abnormal first at 0.02 s.
    assert!(scripts(&code(&mut a, ms(20), 3)).is_empty());
    assert_eq!(state(&a), ResourceState::Abnormal);
    for t in [1000, 2000, 3000] {
        tick(&mut a, ms(t));
        assert!(
            scripts(&code(&mut a, ms(t + 10), 3)).is_empty(),
            "clean at {t}"
        );
    }
    tick(&mut a, ms(4000));
    // 4.01 s ≥ 0.02 + 3 s: -clean.
    assert_eq!(scripts(&code(&mut a, ms(4010), 3)), vec![ScriptVerb::Clean]);
    // Cleaned at 4.1 s: offline now, restarted restart_delay later.
    assert!(scripts(&code(&mut a, ms(4100), 0)).is_empty());
    assert_eq!(state(&a), ResourceState::Offline);
    assert_eq!(a.res[0].restart_at, Some(ms(5100)));
}

#[test]
fn a_manual_stop_runs_stop_then_clean_after_time_out() {
    let mut a = booted("time_out = 4");
    code(&mut a, ms(10), 0);
    // The flag appears at 0.5 s: the check runs at once (not at 1 s) and says online.
    a.step(ms(500), flags_with(&[RES], false));
    assert_eq!(a.resource_deadline(), Some(ms(500)));
    assert_eq!(scripts(&tick(&mut a, ms(500))), vec![ScriptVerb::Check]);
    assert_eq!(scripts(&code(&mut a, ms(510), 0)), vec![ScriptVerb::Stop]);
    code(&mut a, ms(600), 0);
    // Still online within time_out of the -stop (sent at 0.51 s): wait.
    tick(&mut a, ms(600));
    assert!(scripts(&code(&mut a, ms(610), 0)).is_empty());
    tick(&mut a, ms(4500));
    assert!(
        scripts(&code(&mut a, ms(4505), 0)).is_empty(),
        "4.505 < 0.51 + 4"
    );
    tick(&mut a, ms(5500));
    assert_eq!(scripts(&code(&mut a, ms(5510), 0)), vec![ScriptVerb::Clean]);
    code(&mut a, ms(5600), 0);
    tick(&mut a, ms(5600));
    code(&mut a, ms(5610), 1);
    assert_eq!(state(&a), ResourceState::Stopped);
    // Never started while the flag exists.
    for t in (6600..20_000).step_by(1000) {
        tick(&mut a, ms(t));
        assert!(scripts(&code(&mut a, ms(t + 1), 1)).is_empty());
    }
}

#[test]
fn a_cluster_stop_stops_resources_too() {
    let mut a = booted("");
    code(&mut a, ms(10), 0);
    a.step(ms(300), flags_with(&[], true));
    tick(&mut a, ms(300));
    assert_eq!(scripts(&code(&mut a, ms(310), 0)), vec![ScriptVerb::Stop]);
    assert!(!a.resources_down());
    code(&mut a, ms(400), 0);
    tick(&mut a, ms(400));
    code(&mut a, ms(410), 1);
    assert_eq!(state(&a), ResourceState::Stopped);
    assert!(a.resources_down());
}

#[test]
fn nothing_is_started_while_paused() {
    let mut a = booted("");
    let seq = a.cms.report_seq;
    a.step(ms(5), leader_reply(CMS[0], 1, seq, true));
    assert!(a.paused(ms(5)));
    // Offline, paused: never started, reported Offline (pause is not intent), not stopped.
    for t in [10, 1010, 2010, 3010] {
        tick(&mut a, ms(t));
        if in_flight(&a).is_some() {
            assert!(scripts(&code(&mut a, ms(t + 1), 1)).is_empty(), "at {t}");
        }
    }
    assert_eq!(state(&a), ResourceState::Offline);
    // Online while paused: not stopped either.
    tick(&mut a, ms(4010));
    assert!(scripts(&code(&mut a, ms(4011), 0)).is_empty());
}

#[test]
fn unknown_codes_and_killed_checks_restart_nothing() {
    let mut a = booted("");
    let mut t = 10;
    for exit in [
        ScriptExit::Code(2),
        ScriptExit::Code(77),
        ScriptExit::Killed,
        ScriptExit::Failed("exec format error".into()),
    ] {
        assert!(scripts(&finish(&mut a, ms(t), exit.clone())).is_empty());
        assert_eq!(state(&a), ResourceState::Unknown, "{exit:?}");
        t += 1000;
        tick(&mut a, ms(t));
    }
}

#[test]
fn a_stale_completion_is_ignored() {
    let mut a = booted("");
    let (op, _) = a.res[0].in_flight.unwrap();
    let stale = AgentInput::ScriptCompleted {
        op: OpId(op.0 + 1000),
        instance: RES,
        exit: ScriptExit::Code(1),
    };
    assert!(a.step(ms(10), stale).is_empty());
    assert_eq!(in_flight(&a), Some(ScriptVerb::Check));
    assert_eq!(state(&a), ResourceState::Unknown);
}

#[test]
fn reports_carry_the_resource_states() {
    let mut a = booted("");
    code(&mut a, ms(10), 0);
    let mut out = Vec::new();
    a.send_report(ms(20), &mut out);
    let reps = reports(&out);
    assert_eq!(reps.len(), 3);
    assert_eq!(
        reps[0].1.resources,
        vec![ResourceReport {
            instance: RES,
            state: ResourceState::Online
        }]
    );
}

#[test]
fn only_this_nodes_instances_are_supervised() {
    let a = booted("");
    let ids: Vec<InstanceId> = a.status().resources.iter().map(|r| r.instance).collect();
    assert_eq!(ids, vec![RES]);
}

mod placement {
    use super::*;
    use crate::codec::encode_persisted;
    use crate::ids::GroupId;
    use crate::msg::{GroupView, PeerResource};

    const TERM: Term = Term(3);

    /// An agent of node 1 whose DN 6001 runs as `role` at term 3, with the `vip` resource
    /// following group 1 (instances 9001, 9002, 9003 on nodes 1, 2, 3); its first check is in
    /// flight.
    fn booted_vip(role: DnRole) -> Agent {
        let text = format!(
            "{ONE_DN}\n[[resource]]\nname = \"vip\"\nscript = \"/opt/vip.sh\"\n\
             instances = [{{ node = 1, id = 9001 }}, {{ node = 2, id = 9002 }}, {{ node = 3, id = 9003 }}]\n\
             placement = {{ with_primary_of = 1 }}\n"
        );
        let mut store = Persisted::default();
        store.instances.insert(
            DN,
            PersistedInstance {
                term: TERM,
                ..PersistedInstance::default()
            },
        );
        let bytes = encode_persisted(&store).unwrap();
        let a = Agent::new(&config(&text), ME, 1, Some(bytes)).unwrap();
        let a = boot_with(a, role);
        assert_eq!(in_flight(&a), Some(ScriptVerb::Check));
        a
    }

    fn peer(id: u32, state: Option<ResourceState>, age_ms: u64) -> PeerResource {
        PeerResource {
            instance: InstanceId(id),
            state,
            age: Duration::from_millis(age_ms),
        }
    }

    /// Sends a report at `sent`; the leader answers at `at` naming 6001 primary at term 3 and
    /// relaying `peers`.
    fn lease(a: &mut Agent, sent: Instant, at: Instant, peers: Vec<PeerResource>) {
        let mut out = Vec::new();
        a.send_report(sent, &mut out);
        let reply = Msg::ReportReply(ReportReply {
            seq: ReportSeq(a.cms.report_seq),
            answer: ReportAnswer::Leader {
                paused: false,
                stopping: false,
                groups: vec![GroupView {
                    group: GroupId(1),
                    primary: DN,
                    term: TERM,
                    primary_position: None,
                }],
                resources: peers,
            },
        });
        a.step(at, from_cms(CMS[0], 1, reply));
    }

    #[test]
    fn a_node_whose_dn_may_not_write_stops_it_and_never_starts_it() {
        let mut a = booted_vip(DnRole::Standby);
        assert_eq!(scripts(&code(&mut a, ms(10), 0)), vec![ScriptVerb::Stop]);
        code(&mut a, ms(100), 0);
        tick(&mut a, ms(100));
        code(&mut a, ms(110), 1);
        assert_eq!(state(&a), ResourceState::Stopped);
        for t in (1100..15_000).step_by(1000) {
            tick(&mut a, ms(t));
            assert!(scripts(&code(&mut a, ms(t + 1), 1)).is_empty(), "at {t}");
        }
    }

    #[test]
    fn the_primarys_node_starts_it_once_the_others_reported_it_stopped() {
        let mut a = booted_vip(DnRole::Primary);
        // No leader view yet at the first check: left alone, nothing starts.
        assert!(scripts(&code(&mut a, ms(10), 1)).is_empty());
        assert_eq!(state(&a), ResourceState::Offline);
        // The answer at 0.5 s names 6001 the primary; both others were reported stopped.
        let stopped = Some(ResourceState::Stopped);
        lease(
            &mut a,
            ms(400),
            ms(500),
            vec![peer(9002, stopped, 300), peer(9003, stopped, 800)],
        );
        assert_eq!(a.resource_deadline(), Some(ms(500)), "look at once");
        assert_eq!(scripts(&tick(&mut a, ms(500))), vec![ScriptVerb::Check]);
        // Offline since 0.01 s: restart_delay (1 s) has passed at 1.01 s.
        assert!(scripts(&code(&mut a, ms(520), 1)).is_empty());
        assert_eq!(a.res[0].restart_at, Some(ms(1010)));
        assert_eq!(scripts(&tick(&mut a, ms(1010))), vec![ScriptVerb::Start]);
    }

    #[test]
    fn a_silent_previous_node_is_waited_for_the_hand_over_time() {
        let mut a = booted_vip(DnRole::Primary);
        code(&mut a, ms(10), 1);
        // Node 2 last reported it online; the relay at 0.5 s says that report is 0.2 s old.
        let online = Some(ResourceState::Online);
        let stopped = Some(ResourceState::Stopped);
        lease(
            &mut a,
            ms(400),
            ms(500),
            vec![peer(9002, online, 200), peer(9003, stopped, 0)],
        );
        let wait = a.handover_wait(&a.res[0]);
        let clear = ms(300) + wait;
        // Keep the lease alive with a fresh answer every second; nothing starts before `clear`.
        let mut t = 1000;
        while ms(t) < clear {
            let age = t - 300;
            lease(
                &mut a,
                ms(t),
                ms(t),
                vec![peer(9002, online, age), peer(9003, stopped, 0)],
            );
            let cmds = tick(&mut a, ms(t));
            assert!(
                !scripts(&cmds).contains(&ScriptVerb::Start),
                "start at {t} ms"
            );
            if in_flight(&a) == Some(ScriptVerb::Check) {
                assert!(
                    scripts(&code(&mut a, ms(t), 1)).is_empty(),
                    "start at {t} ms"
                );
            }
            t += 1000;
        }
        let t = clear.since_origin().as_millis() as u64 + 1;
        lease(
            &mut a,
            ms(t),
            ms(t),
            vec![peer(9002, online, t - 300), peer(9003, stopped, 0)],
        );
        let mut cmds = tick(&mut a, ms(t));
        if in_flight(&a) == Some(ScriptVerb::Check) {
            cmds = code(&mut a, ms(t), 1);
        }
        assert_eq!(
            scripts(&cmds),
            vec![ScriptVerb::Start],
            "at the hand-over time {t} ms"
        );
    }

    #[test]
    fn a_start_in_flight_is_reported_unknown_never_offline_or_stopped() {
        let mut a = booted_vip(DnRole::Primary);
        code(&mut a, ms(10), 1);
        let stopped = Some(ResourceState::Stopped);
        lease(
            &mut a,
            ms(400),
            ms(500),
            vec![peer(9002, stopped, 0), peer(9003, stopped, 0)],
        );
        tick(&mut a, ms(500));
        code(&mut a, ms(520), 1);
        assert_eq!(scripts(&tick(&mut a, ms(1010))), vec![ScriptVerb::Start]);
        // The program may come up at the end of the start: not Offline.
        assert_eq!(state(&a), ResourceState::Unknown);
        // The lease (sent at 0.4 s) ends at 0.4 + 4 s: the gate turns to Stop while the slow
        // start still runs; still not Stopped (another node would take it as the hand-over).
        tick(&mut a, ms(4400));
        assert_eq!(a.res[0].gate, Gate::Stop);
        assert_eq!(state(&a), ResourceState::Unknown);
        // The start ends at 9 s; until a check has run it stays Unknown.
        code(&mut a, ms(9000), 0);
        assert_eq!(state(&a), ResourceState::Unknown);
        assert_eq!(scripts(&tick(&mut a, ms(9000))), vec![ScriptVerb::Check]);
        assert_eq!(scripts(&code(&mut a, ms(9010), 0)), vec![ScriptVerb::Stop]);
        assert_eq!(state(&a), ResourceState::Online);
        code(&mut a, ms(9100), 0);
        tick(&mut a, ms(9100));
        code(&mut a, ms(9110), 1);
        assert_eq!(state(&a), ResourceState::Stopped);
    }

    #[test]
    fn a_peer_reported_offline_is_no_hand_over_proof() {
        let mut a = booted_vip(DnRole::Primary);
        code(&mut a, ms(10), 1);
        // Node 2 reported its instance Offline (it may be starting it): wait the hand-over.
        let offline = Some(ResourceState::Offline);
        let stopped = Some(ResourceState::Stopped);
        lease(
            &mut a,
            ms(400),
            ms(500),
            vec![peer(9002, offline, 0), peer(9003, stopped, 0)],
        );
        assert_eq!(a.res[0].gate, Gate::Hold);
        tick(&mut a, ms(1010));
        if in_flight(&a) == Some(ScriptVerb::Check) {
            assert!(scripts(&code(&mut a, ms(1020), 1)).is_empty());
        }
        assert_eq!(a.res[0].restart_at, None);
        // Reported Stopped: the hand-over is clear.
        lease(
            &mut a,
            ms(1500),
            ms(1500),
            vec![peer(9002, stopped, 0), peer(9003, stopped, 0)],
        );
        assert_eq!(a.res[0].gate, Gate::Run);
    }

    #[test]
    fn adopting_a_with_primary_of_resource_after_an_agent_restart() {
        // A restarted agent: its DN runs as primary, no leader view yet. The first check says
        // online: adopted, not stopped.
        let mut a = booted_vip(DnRole::Primary);
        assert!(scripts(&code(&mut a, ms(10), 0)).is_empty());
        assert_eq!(a.res[0].gate, Gate::Hold);
        assert_eq!(state(&a), ResourceState::Online);
        tick(&mut a, ms(1000));
        assert!(scripts(&code(&mut a, ms(1010), 0)).is_empty());
        // The leader's answer grants the lease: it keeps running, no -start.
        let stopped = Some(ResourceState::Stopped);
        lease(
            &mut a,
            ms(1500),
            ms(1600),
            vec![peer(9002, stopped, 0), peer(9003, stopped, 0)],
        );
        assert_eq!(a.res[0].gate, Gate::Run);
        tick(&mut a, ms(2000));
        assert!(scripts(&code(&mut a, ms(2010), 0)).is_empty());
    }

    #[test]
    fn without_a_view_by_the_lease_window_a_restarted_agent_stops_it() {
        let mut a = booted_vip(DnRole::Primary);
        let end = ms(0) + lease_window(&a.params);
        code(&mut a, ms(10), 0);
        let mut t = 1000;
        while ms(t) < end {
            tick(&mut a, ms(t));
            assert!(scripts(&code(&mut a, ms(t + 1), 0)).is_empty(), "at {t}");
            t += 1000;
        }
        assert_eq!(ms(t), end, "the lease window is whole seconds");
        tick(&mut a, ms(t));
        assert_eq!(scripts(&code(&mut a, ms(t + 1), 0)), vec![ScriptVerb::Stop]);
    }

    #[test]
    fn a_placement_move_while_paused_stops_nothing() {
        let mut a = booted_vip(DnRole::Standby);
        let seq = a.cms.report_seq;
        a.step(ms(5), leader_reply(CMS[0], 1, seq, true));
        assert!(a.paused(ms(5)));
        // Online on a standby's node while paused: left alone (§2: CM stops nothing).
        assert!(scripts(&code(&mut a, ms(10), 0)).is_empty());
        tick(&mut a, ms(1000));
        assert!(scripts(&code(&mut a, ms(1010), 0)).is_empty());
    }

    #[test]
    fn losing_the_write_lease_stops_it_at_once() {
        let mut a = booted_vip(DnRole::Primary);
        code(&mut a, ms(10), 0);
        let stopped = Some(ResourceState::Stopped);
        // Sent at 1 s: the lease holds until 1 s + 6 s − 2 × 1 s = 5 s.
        lease(
            &mut a,
            ms(1000),
            ms(1010),
            vec![peer(9002, stopped, 0), peer(9003, stopped, 0)],
        );
        for t in (1100..5000).step_by(100) {
            let cmds = tick(&mut a, ms(t));
            assert!(!scripts(&cmds).contains(&ScriptVerb::Stop), "stop at {t}");
            if in_flight(&a).is_some() {
                assert!(scripts(&code(&mut a, ms(t), 0)).is_empty(), "at {t}");
            }
        }
        assert_eq!(scripts(&tick(&mut a, ms(5000))), vec![ScriptVerb::Check]);
        assert_eq!(scripts(&code(&mut a, ms(5010), 0)), vec![ScriptVerb::Stop]);
    }
}

mod property {
    use super::*;
    use crate::codec::encode_persisted;
    use crate::ids::GroupId;
    use crate::msg::{GroupView, PeerResource};
    use proptest::prelude::*;

    const VIP: InstanceId = InstanceId(9001);
    const APP: InstanceId = InstanceId(9101);

    #[derive(Clone, Debug)]
    enum Ev {
        /// Time passes (ms) and the agent is ticked.
        Advance(u16),
        /// The script in flight of the vip (false) or app (true) ends with this code (5 =
        /// killed).
        Finish(bool, u8),
        /// The flag files now are: vip's flag, app's flag, cluster stop.
        Flags(bool, bool, bool),
        /// A leader answers a report sent now: paused, naming 6001 the primary (else 6002),
        /// and relaying the other vip instances as stopped (else online).
        Leader(bool, bool, bool),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (1u16..1500).prop_map(Ev::Advance),
            4 => (any::<bool>(), 0u8..6).prop_map(|(a, c)| Ev::Finish(a, c)),
            1 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| Ev::Flags(a, b, c)),
            3 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| Ev::Leader(a, b, c)),
        ]
    }

    fn agent() -> Agent {
        let text = format!(
            "{ONE_DN}\n[[resource]]\nname = \"vip\"\nscript = \"/opt/vip.sh\"\n\
             instances = [{{ node = 1, id = 9001 }}, {{ node = 2, id = 9002 }}, {{ node = 3, id = 9003 }}]\n\
             placement = {{ with_primary_of = 1 }}\ntime_out = 2\nrestart_delay = 0\n\
             [[resource]]\nname = \"app\"\nscript = \"/opt/app.sh\"\n\
             instances = [{{ node = 1, id = 9101 }}]\nrestart_delay = 0\nrestart_period = 0\n"
        );
        let mut store = Persisted::default();
        store.instances.insert(
            DN,
            PersistedInstance {
                term: Term(3),
                ..PersistedInstance::default()
            },
        );
        let bytes = encode_persisted(&store).unwrap();
        boot_with(
            Agent::new(&config(&text), ME, 1, Some(bytes)).unwrap(),
            DnRole::Primary,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// §14, S6 for resources and S7 locally: no `-start` while the instance's flag or the
        /// cluster stop flag exists or the cluster is paused, and a with_primary_of instance
        /// never starts while this node's DN may not write.
        #[test]
        fn never_started_by_intent_or_without_the_write_lease(evs in proptest::collection::vec(ev(), 1..120)) {
            let mut a = agent();
            let mut now = 0u64;
            let mut flags = FlagSet::default();
            for e in evs {
                let cmds = match e {
                    Ev::Advance(d) => {
                        now += u64::from(d);
                        tick(&mut a, ms(now))
                    }
                    Ev::Finish(app, c) => {
                        let i = usize::from(app);
                        match a.res[i].in_flight {
                            Some((op, _)) => {
                                let exit = if c == 5 { ScriptExit::Killed } else { ScriptExit::Code(i32::from(c)) };
                                let instance = a.res[i].id;
                                a.step(ms(now), AgentInput::ScriptCompleted { op, instance, exit })
                            }
                            None => Vec::new(),
                        }
                    }
                    Ev::Flags(vip, app, cluster) => {
                        flags = FlagSet::default();
                        if vip { flags.instance_manual_start.insert(VIP, StopMode::Fast); }
                        if app { flags.instance_manual_start.insert(APP, StopMode::Fast); }
                        if cluster { flags.cluster_manual_start = Some(StopMode::Fast); }
                        a.step(ms(now), AgentInput::FlagsObserved(flags.clone()))
                    }
                    Ev::Leader(paused, mine, stopped) => {
                        let mut out = Vec::new();
                        a.send_report(ms(now), &mut out);
                        let st = Some(if stopped { ResourceState::Stopped } else { ResourceState::Online });
                        let reply = Msg::ReportReply(ReportReply {
                            seq: ReportSeq(a.cms.report_seq),
                            answer: ReportAnswer::Leader {
                                paused,
                                stopping: false,
                                groups: vec![GroupView {
                                    group: GroupId(1),
                                    primary: if mine { DN } else { InstanceId(6002) },
                                    term: Term(3),
                                    primary_position: None,
                                }],
                                resources: vec![
                                    PeerResource { instance: InstanceId(9002), state: st, age: Duration::ZERO },
                                    PeerResource { instance: InstanceId(9003), state: st, age: Duration::ZERO },
                                ],
                            },
                        });
                        a.step(ms(now), from_cms(CMS[0], 1, reply))
                    }
                };
                for c in &cmds {
                    let AgentCommand::RunScript { instance, verb: ScriptVerb::Start, .. } = c else {
                        continue;
                    };
                    prop_assert!(flags.cluster_manual_start.is_none(), "started {instance} under cluster stop at {now}");
                    prop_assert!(!flags.instance_manual_start.contains_key(instance), "started {instance} with its flag at {now}");
                    prop_assert!(!a.paused(ms(now)), "started {instance} while paused at {now}");
                    if *instance == VIP {
                        prop_assert!(a.write_lease(DN, ms(now)).is_ok(), "started the vip without the write lease at {now}");
                    }
                }
            }
        }
    }
}
