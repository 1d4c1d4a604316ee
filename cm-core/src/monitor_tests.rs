use proptest::prelude::*;

use super::*;
use crate::dn::StopMode;

const CONFIG: &str = crate::config::ONE_NODE_CONFIG;

const ME: NodeId = NodeId(1);
/// cm_ctl, as the transport names a client that presented the operator certificate.
const CTL: Endpoint = Endpoint {
    node: NodeId(0),
    role: Role::Ctl,
};

fn monitor() -> Monitor {
    let cfg = ClusterConfig::from_toml_str(CONFIG).expect("valid config");
    Monitor::new(&cfg, ME, 7, None)
}

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn mine(pid: u32, state: ProcState) -> AgentProcess {
    AgentProcess {
        pid: Pid(pid),
        state,
        started_by_me: true,
    }
}

fn manual_stop() -> FlagSet {
    FlagSet {
        cluster_manual_start: Some(StopMode::Fast),
        ..FlagSet::default()
    }
}

fn sample(processes: Vec<AgentProcess>, flags: FlagSet) -> MonitorInput {
    MonitorInput::AgentSampled {
        processes,
        flags,
        binary_executable: true,
        config_readable: true,
    }
}

fn start(kind: StartKind) -> Vec<MonitorCommand> {
    vec![MonitorCommand::StartAgent { kind }]
}

#[test]
fn check_is_a_deadline_every_second_and_early_ticks_are_no_ops() {
    let mut m = monitor();
    assert_eq!(m.next_deadline(), Some(at(0)));
    assert_eq!(
        m.step(at(0), MonitorInput::Tick),
        vec![MonitorCommand::SampleAgent]
    );
    assert_eq!(m.next_deadline(), Some(at(1)));
    assert_eq!(
        m.step(Instant::from_millis(999), MonitorInput::Tick),
        vec![]
    );
    assert_eq!(
        m.step(at(1), MonitorInput::Tick),
        vec![MonitorCommand::SampleAgent]
    );
}

#[test]
fn absent_agent_is_started_abnormal() {
    let mut m = monitor();
    assert_eq!(
        m.step(at(0), sample(vec![], FlagSet::default())),
        start(StartKind::Abnormal)
    );
}

#[test]
fn running_agent_is_left_alone() {
    let mut m = monitor();
    assert_eq!(
        m.step(
            at(0),
            sample(vec![mine(10, ProcState::Running)], FlagSet::default())
        ),
        vec![]
    );
    assert!(m.status().agent_running);
}

#[test]
fn foreign_agent_of_this_node_is_killed_and_ours_started() {
    let mut m = monitor();
    let stray = AgentProcess {
        pid: Pid(77),
        state: ProcState::Running,
        started_by_me: false,
    };
    assert_eq!(
        m.step(at(0), sample(vec![stray], FlagSet::default())),
        vec![
            MonitorCommand::KillAgent { pid: Pid(77) },
            MonitorCommand::StartAgent {
                kind: StartKind::Abnormal
            },
        ]
    );
}

#[test]
fn agent_stopped_for_three_consecutive_checks_is_killed_then_restarted() {
    let mut m = monitor();
    let t = || sample(vec![mine(10, ProcState::Stopped)], FlagSet::default());
    assert_eq!(m.step(at(0), t()), vec![]);
    assert_eq!(m.step(at(1), t()), vec![]);
    assert_eq!(
        m.step(at(2), t()),
        vec![MonitorCommand::KillAgent { pid: Pid(10) }]
    );
    assert_eq!(
        m.step(at(2), MonitorInput::AgentExited { abnormal: true }),
        vec![]
    );
    assert_eq!(
        m.step(at(3), sample(vec![], FlagSet::default())),
        start(StartKind::Abnormal)
    );
}

#[test]
fn state_t_count_resets_when_the_agent_runs_again() {
    let mut m = monitor();
    let s = |st| sample(vec![mine(10, st)], FlagSet::default());
    assert_eq!(m.step(at(0), s(ProcState::Stopped)), vec![]);
    assert_eq!(m.step(at(1), s(ProcState::Stopped)), vec![]);
    assert_eq!(m.step(at(2), s(ProcState::Running)), vec![]);
    assert_eq!(m.step(at(3), s(ProcState::Stopped)), vec![]);
    assert_eq!(m.step(at(4), s(ProcState::Stopped)), vec![]);
    assert_eq!(m.status().hung_checks, 2);
}

#[test]
fn d_and_z_states_are_not_hangs_for_the_monitor() {
    let mut m = monitor();
    for (i, st) in [
        ProcState::DiskSleep,
        ProcState::Zombie,
        ProcState::DiskSleep,
    ]
    .into_iter()
    .enumerate()
    {
        let cmds = m.step(at(i as u64), sample(vec![mine(10, st)], FlagSet::default()));
        assert_eq!(cmds, vec![]);
    }
}

#[test]
fn manual_start_flag_blocks_restart_after_a_clean_exit() {
    let mut m = monitor();
    m.step(
        at(0),
        sample(vec![mine(10, ProcState::Running)], manual_stop()),
    );
    m.step(at(1), MonitorInput::AgentExited { abnormal: false });
    assert_eq!(m.step(at(1), sample(vec![], manual_stop())), vec![]);
    assert_eq!(m.step(at(2), sample(vec![], manual_stop())), vec![]);
    assert_eq!(
        m.status().start_attempts,
        0,
        "no attempts counted while stopped"
    );
}

#[test]
fn interrupted_stop_is_retried_three_times_then_given_up() {
    let mut m = monitor();
    m.step(
        at(0),
        sample(vec![mine(10, ProcState::Running)], manual_stop()),
    );
    m.step(at(0), MonitorInput::AgentExited { abnormal: true });
    for s in 1..=3 {
        assert_eq!(
            m.step(at(s), sample(vec![], manual_stop())),
            start(StartKind::Abnormal),
            "retry {s}"
        );
        m.step(at(s), MonitorInput::AgentExited { abnormal: true });
    }
    assert_eq!(m.step(at(4), sample(vec![], manual_stop())), vec![]);
    assert_eq!(m.status().interrupted_stop_restarts, 3);
}

#[test]
fn start_right_after_manual_start_disappeared_is_normal() {
    let mut m = monitor();
    m.step(at(0), MonitorInput::AgentExited { abnormal: false });
    assert_eq!(m.step(at(0), sample(vec![], manual_stop())), vec![]);
    assert_eq!(
        m.step(at(1), sample(vec![], FlagSet::default())),
        start(StartKind::Normal)
    );
    // The next start (no flag at the previous check either) is abnormal again.
    assert_eq!(
        m.step(at(2), sample(vec![], FlagSet::default())),
        start(StartKind::Abnormal)
    );
}

#[test]
fn dilatation_flag_blocks_starts() {
    let mut m = monitor();
    let flags = FlagSet {
        dilatation: true,
        ..FlagSet::default()
    };
    assert_eq!(m.step(at(0), sample(vec![], flags)), vec![]);
}

#[test]
fn unusable_binary_or_config_blocks_starts() {
    let mut m = monitor();
    let input = |b, c| MonitorInput::AgentSampled {
        processes: vec![],
        flags: FlagSet::default(),
        binary_executable: b,
        config_readable: c,
    };
    assert_eq!(m.step(at(0), input(false, true)), vec![]);
    assert_eq!(m.step(at(1), input(true, false)), vec![]);
}

#[test]
fn abnormal_cma_alarm_after_three_attempts_without_an_agent_once() {
    let mut m = monitor();
    let none = || sample(vec![], FlagSet::default());
    assert_eq!(m.step(at(0), none()), start(StartKind::Abnormal));
    assert_eq!(m.step(at(1), none()), start(StartKind::Abnormal));
    assert_eq!(
        m.step(at(2), none()),
        vec![
            MonitorCommand::RaiseAlarm(Alarm::AbnormalCmaProcess { node: ME }),
            MonitorCommand::StartAgent {
                kind: StartKind::Abnormal
            },
        ]
    );
    assert_eq!(m.step(at(3), none()), start(StartKind::Abnormal));
    // An agent seen running ends the episode; a later outage can alarm again.
    m.step(
        at(4),
        sample(vec![mine(3, ProcState::Running)], FlagSet::default()),
    );
    assert_eq!(m.status().start_attempts, 0);
}

#[test]
fn ctl_status_is_answered_at_once_from_the_last_sample() {
    let mut m = monitor();
    m.step(
        at(0),
        sample(vec![mine(10, ProcState::Running)], manual_stop()),
    );
    assert_eq!(
        m.step(
            at(0),
            MonitorInput::CtlRequest {
                client: ClientId(5),
                from: CTL,
                req: MonitorRequest::Status
            }
        ),
        vec![MonitorCommand::Reply {
            client: ClientId(5),
            reply: MonitorReply::Status {
                node: ME,
                agent_running: true,
                flags: manual_stop(),
                agent_error: None,
            }
        }]
    );
}

#[test]
fn ctl_flag_requests_become_flag_ops_answered_on_completion() {
    let mut m = monitor();
    let req = |client, req| MonitorInput::CtlRequest {
        client: ClientId(client),
        from: CTL,
        req,
    };
    let flag = Flag::InstanceManualStart(crate::ids::InstanceId(6001));
    assert_eq!(
        m.step(
            at(0),
            req(
                1,
                MonitorRequest::WriteFlag {
                    flag,
                    mode: StopMode::Immediate
                }
            )
        ),
        vec![MonitorCommand::WriteFlag {
            op: OpId(1),
            flag,
            mode: StopMode::Immediate
        }]
    );
    assert_eq!(
        m.step(at(0), req(2, MonitorRequest::RemoveFlag { flag })),
        vec![MonitorCommand::RemoveFlag { op: OpId(2), flag }]
    );
    assert_eq!(
        m.step(at(0), req(3, MonitorRequest::RemoveAllManualStart)),
        vec![MonitorCommand::RemoveAllManualStart { op: OpId(3) }]
    );
    assert_eq!(
        m.step(
            at(1),
            MonitorInput::FlagOpCompleted {
                op: OpId(2),
                result: Err("EACCES".into())
            }
        ),
        vec![MonitorCommand::Reply {
            client: ClientId(2),
            reply: MonitorReply::Failed("EACCES".into())
        }]
    );
    assert_eq!(
        m.step(
            at(1),
            MonitorInput::FlagOpCompleted {
                op: OpId(1),
                result: Ok(())
            }
        ),
        vec![MonitorCommand::Reply {
            client: ClientId(1),
            reply: MonitorReply::Done
        }]
    );
    // A completion nobody waits for (duplicate or unknown) is ignored.
    assert_eq!(
        m.step(
            at(1),
            MonitorInput::FlagOpCompleted {
                op: OpId(1),
                result: Ok(())
            }
        ),
        vec![]
    );
}

#[test]
fn control_requests_from_components_are_refused_and_counted() {
    let mut m = monitor();
    let flag = Flag::InstanceManualStart(crate::ids::InstanceId(6001));
    let requests = [
        MonitorRequest::Status,
        MonitorRequest::WriteFlag {
            flag,
            mode: StopMode::Fast,
        },
        MonitorRequest::RemoveFlag { flag },
        MonitorRequest::RemoveAllManualStart,
    ];
    let components = [
        Endpoint::agent(NodeId(1)),
        Endpoint::server(NodeId(2)),
        Endpoint::monitor(NodeId(1)),
    ];
    let mut client = 0;
    for from in components {
        for req in requests.clone() {
            client += 1;
            // No flag operation, no status: only the refusal, naming the sender.
            assert_eq!(
                m.step(
                    at(0),
                    MonitorInput::CtlRequest {
                        client: ClientId(client),
                        from,
                        req
                    }
                ),
                vec![MonitorCommand::Reply {
                    client: ClientId(client),
                    reply: MonitorReply::Failed(format!(
                        "control requests are accepted only from cm_ctl (the operator \
                         certificate), not from {from}"
                    ))
                }]
            );
            assert_eq!(m.status().refused_control_requests, client);
        }
    }
    assert_eq!(m.status().refused_control_requests, 12);
    // cm_ctl is still served, the op ids untouched by the refusals, and nothing more counted.
    assert_eq!(
        m.step(
            at(0),
            MonitorInput::CtlRequest {
                client: ClientId(99),
                from: CTL,
                req: MonitorRequest::RemoveFlag { flag }
            }
        ),
        vec![MonitorCommand::RemoveFlag { op: OpId(1), flag }]
    );
    assert_eq!(m.status().refused_control_requests, 12);
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_is_refused() {
    let mut m = monitor();
    m.step(at(2), MonitorInput::Tick);
    m.step(at(1), MonitorInput::Tick);
}

/// Every combination of the six facts of SPEC.md §2, as a literal table:
/// binary executable, config readable, dilatation flag, cluster_manual_start, last exit
/// abnormal, retries < 3 → S = start, B/C/D/M/R = refused (binary, config, dilatation,
/// manually stopped, retries exhausted).
#[rustfmt::skip]
const START_TABLE: [&str; 64] = [
    "000000 B", "000001 B", "000010 B", "000011 B", "000100 B", "000101 B", "000110 B", "000111 B",
    "001000 B", "001001 B", "001010 B", "001011 B", "001100 B", "001101 B", "001110 B", "001111 B",
    "010000 B", "010001 B", "010010 B", "010011 B", "010100 B", "010101 B", "010110 B", "010111 B",
    "011000 B", "011001 B", "011010 B", "011011 B", "011100 B", "011101 B", "011110 B", "011111 B",
    "100000 C", "100001 C", "100010 C", "100011 C", "100100 C", "100101 C", "100110 C", "100111 C",
    "101000 C", "101001 C", "101010 C", "101011 C", "101100 C", "101101 C", "101110 C", "101111 C",
    "110000 S", "110001 S", "110010 S", "110011 S", "110100 M", "110101 M", "110110 R", "110111 S",
    "111000 D", "111001 D", "111010 D", "111011 D", "111100 D", "111101 D", "111110 D", "111111 D",
];

#[test]
fn start_check_table_covers_every_combination() {
    let mut seen = std::collections::BTreeSet::new();
    for row in START_TABLE {
        let (bits, want) = row.split_once(' ').expect("row");
        let b: Vec<bool> = bits.chars().map(|c| c == '1').collect();
        assert!(seen.insert(bits), "duplicate row {bits}");
        let facts = StartFacts {
            binary_executable: b[0],
            config_readable: b[1],
            dilatation: b[2],
            cluster_manual_start: b[3],
            last_exit_abnormal: b[4],
            interrupted_stop_restarts: if b[5] { 2 } else { 3 },
        };
        let expected = match want {
            "S" => StartDecision::Start,
            "B" => StartDecision::Refuse(StartRefusal::BinaryNotExecutable),
            "C" => StartDecision::Refuse(StartRefusal::ConfigUnreadable),
            "D" => StartDecision::Refuse(StartRefusal::Dilatation),
            "M" => StartDecision::Refuse(StartRefusal::ManuallyStopped),
            "R" => StartDecision::Refuse(StartRefusal::RetriesExhausted),
            other => panic!("bad expectation {other}"),
        };
        assert_eq!(start_check(&facts), expected, "row {bits}");
    }
    assert_eq!(seen.len(), 64);
}

fn facts() -> impl Strategy<Value = StartFacts> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u32..10,
    )
        .prop_map(|(b, c, d, m, a, r)| StartFacts {
            binary_executable: b,
            config_readable: c,
            dilatation: d,
            cluster_manual_start: m,
            last_exit_abnormal: a,
            interrupted_stop_restarts: r,
        })
}

proptest! {
    #[test]
    fn start_check_never_starts_an_unusable_or_stopped_agent(f in facts()) {
        if start_check(&f) == StartDecision::Start {
            prop_assert!(f.binary_executable && f.config_readable && !f.dilatation);
            if f.cluster_manual_start {
                prop_assert!(f.last_exit_abnormal && f.interrupted_stop_restarts < 3);
            }
        }
    }

    #[test]
    fn start_check_is_monotone_in_retries(f in facts()) {
        // More retries used never turns a refusal into a start.
        let more = StartFacts { interrupted_stop_restarts: f.interrupted_stop_restarts + 1, ..f };
        if start_check(&f) != StartDecision::Start {
            prop_assert_ne!(start_check(&more), StartDecision::Start);
        }
    }

    #[test]
    fn monitor_never_starts_while_a_clean_stop_or_dilatation_holds(
        steps in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 1..40)
    ) {
        let mut m = monitor();
        for (i, (manual, dil, running, exit_abnormal)) in steps.into_iter().enumerate() {
            let now = Instant::from_secs(i as u64);
            m.step(now, MonitorInput::AgentExited { abnormal: exit_abnormal });
            let flags = FlagSet {
                cluster_manual_start: manual.then_some(StopMode::Fast),
                dilatation: dil,
                ..FlagSet::default()
            };
            let procs = if running { vec![mine(9, ProcState::Running)] } else { vec![] };
            let cmds = m.step(now, sample(procs, flags));
            let started = cmds.iter().any(|c| matches!(c, MonitorCommand::StartAgent { .. }));
            if started {
                prop_assert!(!running && !dil);
                prop_assert!(!manual || exit_abnormal);
            }
        }
    }
}

#[test]
fn restarts_of_a_crash_looping_agent_back_off() {
    let due: Vec<u32> = (1..=200).filter(|&a| restart_due(a)).collect();
    assert_eq!(due, vec![1, 2, 3, 5, 9, 17, 33, 65, 125, 185]);
}

#[test]
fn an_agent_that_exits_at_once_is_restarted_less_and_less_often() {
    let mut m = monitor();
    let mut starts = Vec::new();
    for s in 0..40 {
        let cmds = m.step(at(s), sample(vec![], FlagSet::default()));
        if cmds
            .iter()
            .any(|c| matches!(c, MonitorCommand::StartAgent { .. }))
        {
            starts.push(s);
            // It dies before the next check.
            m.step(at(s), MonitorInput::AgentExited { abnormal: true });
        }
    }
    assert_eq!(starts, vec![0, 1, 2, 4, 8, 16, 32]);
    // Once it runs, the count resets and a later crash is restarted at once again.
    m.step(
        at(40),
        sample(vec![mine(10, ProcState::Running)], FlagSet::default()),
    );
    m.step(at(41), MonitorInput::AgentExited { abnormal: true });
    assert_eq!(
        m.step(at(42), sample(vec![], FlagSet::default())),
        start(StartKind::Abnormal)
    );
}
