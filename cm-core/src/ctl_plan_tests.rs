use super::*;
use crate::ctl::{CmsRow, DnRow, GroupStatus, Refusal};
use crate::flags::FlagSet;
use crate::ids::{GroupId, Position, QuorumTerm, Term};

fn config() -> ClusterConfig {
    ClusterConfig::from_toml_str(crate::config::EXAMPLE_CONFIG).unwrap()
}

fn ok_status(n: u32) -> (NodeId, Result<MonitorReply, String>) {
    (
        NodeId(n),
        Ok(MonitorReply::Status {
            node: NodeId(n),
            agent_running: true,
            flags: FlagSet::default(),
            agent_error: None,
        }),
    )
}

fn status(state: ClusterHealth, role_of_6002: DnRole, db_state: DbState) -> Box<ClusterStatus> {
    let row = |i: u32, role, state| DnRow {
        node: NodeId(i - 6000),
        node_name: format!("n{}", i - 6000),
        address: "127.0.0.1".into(),
        instance: InstanceId(i),
        data_dir: "/d".into(),
        port: 5432,
        static_primary: i == 6001,
        install_primary: i == 6001,
        role,
        state,
        term: Term(1),
        position: Position::default(),
        lsn: "0/00000000".into(),
        lag_bytes: None,
        read_only: false,
        not_streaming_ms: None,
        last_build: BuildOutcome::default(),
    };
    Box::new(ClusterStatus {
        cluster: "demo".into(),
        quorum_term: QuorumTerm(1),
        cms: vec![CmsRow {
            node: NodeId(1),
            name: "n1".into(),
            address: "127.0.0.1".into(),
            role: crate::ctl::CmsRole::Primary,
        }],
        state,
        balanced: true,
        paused: false,
        history: Vec::new(),
        groups: vec![GroupStatus {
            group: GroupId(1),
            term: Term(1),
            members: vec![
                row(6001, DnRole::Primary, DbState::Normal),
                row(6002, role_of_6002, db_state),
                row(6003, DnRole::Standby, DbState::Normal),
            ],
            switchover: None,
            last_switchover: None,
            commits_acknowledged: true,
        }],
        resources: Vec::new(),
    })
}

#[test]
fn start_checks_every_monitor_then_removes_flags_then_tells_the_leader_then_polls() {
    let mut p = Plan::new(
        &config(),
        Operation::StartCluster {
            timeout: Duration::from_secs(300),
        },
    )
    .unwrap();
    let all = vec![NodeId(1), NodeId(2), NodeId(3)];
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Monitors {
            nodes: all.clone(),
            req: MonitorRequest::Status
        }
    );
    assert_eq!(
        p.next(StepResult::Monitors(vec![
            ok_status(1),
            ok_status(2),
            ok_status(3)
        ])),
        Step::Monitors {
            nodes: all,
            req: MonitorRequest::RemoveAllManualStart
        }
    );
    let done = |n| (NodeId(n), Ok(MonitorReply::Done));
    assert_eq!(
        p.next(StepResult::Monitors(vec![done(1), done(2), done(3)])),
        Step::Leader(CtlRequest::ClusterStarting { timeout_s: 300 })
    );
    assert_eq!(
        p.next(StepResult::Leader(Err("connection refused".into()))),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    // No leader yet: keep polling; the first poll a leader answers repeats ClusterStarting.
    assert_eq!(
        p.next(StepResult::Status {
            status: Err("no leader".into()),
            elapsed: Duration::from_secs(1)
        }),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    assert_eq!(
        p.next(StepResult::Status {
            status: Ok(status(
                ClusterHealth::Unavailable,
                DnRole::Pending,
                DbState::Starting
            )),
            elapsed: Duration::from_secs(2),
        }),
        Step::Leader(CtlRequest::ClusterStarting { timeout_s: 300 })
    );
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Accepted))),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    assert_eq!(
        p.next(StepResult::Status {
            status: Ok(status(
                ClusterHealth::Degraded,
                DnRole::Standby,
                DbState::Starting
            )),
            elapsed: Duration::from_secs(5),
        }),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    assert!(matches!(
        p.next(StepResult::Status {
            status: Ok(status(
                ClusterHealth::Normal,
                DnRole::Standby,
                DbState::Normal
            )),
            elapsed: Duration::from_secs(6),
        }),
        Step::Done(_)
    ));
}

#[test]
fn start_refuses_when_a_monitor_is_unreachable() {
    let mut p = Plan::new(
        &config(),
        Operation::StartCluster {
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    let step = p.next(StepResult::Monitors(vec![
        ok_status(1),
        (NodeId(2), Err("connection refused".into())),
        ok_status(3),
    ]));
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(msg.contains("node 2"), "{msg}");
}

#[test]
fn start_times_out_with_the_cluster_state() {
    let mut p = Plan::new(
        &config(),
        Operation::StartCluster {
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Monitors(vec![
        ok_status(1),
        ok_status(2),
        ok_status(3),
    ]));
    let done = |n| (NodeId(n), Ok(MonitorReply::Done));
    p.next(StepResult::Monitors(vec![done(1), done(2), done(3)]));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    let step = p.next(StepResult::Status {
        status: Ok(status(
            ClusterHealth::Unavailable,
            DnRole::Down,
            DbState::Unknown,
        )),
        elapsed: Duration::from_secs(5),
    });
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(msg.contains("Unavailable"), "{msg}");
}

#[test]
fn stop_tells_the_leader_first_then_flags_every_node_then_waits_for_agents_to_exit() {
    let mut p = Plan::new(
        &config(),
        Operation::StopCluster {
            mode: StopMode::Immediate,
            timeout: Duration::from_secs(60),
        },
    )
    .unwrap();
    let all = vec![NodeId(1), NodeId(2), NodeId(3)];
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Monitors {
            nodes: all.clone(),
            req: MonitorRequest::Status
        }
    );
    assert_eq!(
        p.next(StepResult::Monitors(vec![ok_status(1), ok_status(2)])),
        Step::Leader(CtlRequest::ClusterStopping)
    );
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Accepted))),
        Step::Monitors {
            nodes: all.clone(),
            req: MonitorRequest::WriteFlag {
                flag: Flag::ClusterManualStart,
                mode: StopMode::Immediate
            }
        }
    );
    let done = |n| (NodeId(n), Ok(MonitorReply::Done));
    assert_eq!(
        p.next(StepResult::Monitors(vec![done(1), done(2), done(3)])),
        Step::Monitors {
            nodes: all,
            req: MonitorRequest::Status
        }
    );
    assert_eq!(p.waiting_on(), None);
    assert_eq!(
        p.next(StepResult::Monitors(vec![ok_status(1)])),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    assert_eq!(
        p.waiting_on().as_deref(),
        Some("waiting for cm_agent to stop the instances and exit on node 1")
    );
    let stopped = |n| {
        (
            NodeId(n),
            Ok(MonitorReply::Status {
                node: NodeId(n),
                agent_running: false,
                flags: FlagSet::default(),
                agent_error: None,
            }),
        )
    };
    p.next(StepResult::Status {
        status: Err("no leader".into()),
        elapsed: Duration::from_secs(2),
    });
    assert!(matches!(
        p.next(StepResult::Monitors(vec![
            stopped(1),
            stopped(2),
            stopped(3)
        ])),
        Step::Done(_)
    ));
}

#[test]
fn stopping_one_instance_writes_its_flag_on_its_node_only() {
    let mut p = Plan::new(
        &config(),
        Operation::StopInstance {
            node: NodeId(2),
            instance: Some(InstanceId(6002)),
            mode: StopMode::Fast,
            timeout: Duration::from_secs(30),
        },
    )
    .unwrap();
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Monitors {
            nodes: vec![NodeId(2)],
            req: MonitorRequest::WriteFlag {
                flag: Flag::InstanceManualStart(InstanceId(6002)),
                mode: StopMode::Fast
            }
        }
    );
    p.next(StepResult::Monitors(vec![(
        NodeId(2),
        Ok(MonitorReply::Done),
    )]));
    assert!(matches!(
        p.next(StepResult::Status {
            status: Ok(status(
                ClusterHealth::Degraded,
                DnRole::Down,
                DbState::ManuallyStopped
            )),
            elapsed: Duration::from_secs(1),
        }),
        Step::Done(_)
    ));
}

#[test]
fn unknown_nodes_and_instances_are_refused_up_front() {
    let c = config();
    let op = |node, instance: Option<u32>| Operation::StartInstance {
        node: NodeId(node),
        instance: instance.map(InstanceId),
        timeout: Duration::from_secs(1),
    };
    assert!(Plan::new(&c, op(9, None)).unwrap_err().contains("node 9"));
    assert!(
        Plan::new(&c, op(1, Some(6002)))
            .unwrap_err()
            .contains("6002")
    );
}

#[test]
fn leader_requests_report_refusals_and_unreachable_leaders() {
    let mut p = Plan::new(&config(), Operation::Leader(CtlRequest::Pause)).unwrap();
    assert_eq!(p.next(StepResult::Begin), Step::Leader(CtlRequest::Pause));
    let step = p.next(StepResult::Leader(Ok(CtlReply::Refused(Refusal::Busy(
        "switchover".into(),
    )))));
    assert!(matches!(step, Step::Failed(m) if m.contains("switchover")));
    let mut p = Plan::new(&config(), Operation::Leader(CtlRequest::Resume)).unwrap();
    p.next(StepResult::Begin);
    let step = p.next(StepResult::Leader(Err("timeout".into())));
    assert!(matches!(step, Step::Failed(m) if m.contains("can't reach")));
}

#[test]
fn start_times_out_when_no_leader_ever_accepts_cluster_starting() {
    let mut p = Plan::new(
        &config(),
        Operation::StartCluster {
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Monitors(vec![
        ok_status(1),
        ok_status(2),
        ok_status(3),
    ]));
    let done = |n| (NodeId(n), Ok(MonitorReply::Done));
    p.next(StepResult::Monitors(vec![done(1), done(2), done(3)]));
    p.next(StepResult::Leader(Err("refused".into())));
    let step = p.next(StepResult::Status {
        status: Err("no leader".into()),
        elapsed: Duration::from_secs(5),
    });
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(msg.contains("within 5 s"), "{msg}");
}

/// A status of group 1 (term 1, 6001 primary) with a switchover to 6002 pending or ended.
fn with_switchover(
    role_of_6001: DnRole,
    pending: bool,
    ended: Option<(u64, SwitchoverResult)>,
) -> Box<ClusterStatus> {
    let mut s = status(ClusterHealth::Degraded, DnRole::Standby, DbState::Normal);
    let g = &mut s.groups[0];
    g.members[0].role = role_of_6001;
    if pending {
        g.switchover = Some(crate::state::PendingSwitchover {
            target: InstanceId(6002),
            from: InstanceId(6001),
            term: Term(2),
            fast: false,
            deadline: crate::time::WallMillis(0),
        });
    }
    g.last_switchover = ended.map(|(term, result)| crate::state::SwitchoverEnd {
        target: InstanceId(6002),
        from: InstanceId(6001),
        term: Term(term),
        result,
    });
    s
}

fn switchover_plan(wait: Option<Duration>) -> Plan {
    let op = Operation::Switchover {
        instance: InstanceId(6002),
        fast: false,
        wait,
    };
    let mut p = Plan::new(&config(), op).unwrap();
    assert_eq!(p.next(StepResult::Begin), Step::Leader(CtlRequest::Query));
    let before = status(ClusterHealth::Normal, DnRole::Standby, DbState::Normal);
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Status(before)))),
        Step::Leader(CtlRequest::Switchover {
            instance: InstanceId(6002),
            fast: false
        })
    );
    p
}

fn polled(p: &mut Plan, s: Box<ClusterStatus>, secs: u64) -> Step {
    p.next(StepResult::Status {
        status: Ok(s),
        elapsed: Duration::from_secs(secs),
    })
}

const POLL: Step = Step::PollStatus {
    after: POLL_INTERVAL,
};

/// SPEC §4.5: `cm_ctl switchover` waits for the outcome, saying what it waits for, and fails
/// when the switchover is aborted (issue 17 item 1: it said `done` at once).
#[test]
fn switchover_waits_with_progress_and_fails_when_aborted() {
    use SwitchoverResult::Aborted;
    let mut p = switchover_plan(Some(Duration::from_secs(120)));
    assert_eq!(p.next(StepResult::Leader(Ok(CtlReply::Accepted))), POLL);
    assert_eq!(
        polled(&mut p, with_switchover(DnRole::Primary, true, None), 1),
        POLL
    );
    assert_eq!(
        p.waiting_for(),
        Some("waiting for the old primary 6001 to shut down; term 2")
    );
    assert_eq!(
        polled(&mut p, with_switchover(DnRole::Pending, true, None), 2),
        POLL
    );
    // The position as PostgreSQL prints an LSN (what `query -v` shows), not `tli/lsn`.
    assert_eq!(
        p.waiting_for(),
        Some(
            "waiting for 6002 to reach the old primary's final position \
             (at LSN 0/00000000, timeline 0); term 2"
        )
    );
    let step = polled(
        &mut p,
        with_switchover(DnRole::Pending, false, Some((2, Aborted))),
        3,
    );
    assert!(
        matches!(&step, Step::Failed(m) if m.starts_with("switchover aborted: 6002 could not take over")),
        "{step:?}"
    );
}

#[test]
fn switchover_is_done_once_its_target_was_promoted_and_not_before() {
    use SwitchoverResult::{Promoted, TimedOut};
    let mut p = switchover_plan(Some(Duration::from_secs(120)));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    // An earlier switchover to the same target (term 1, not above the term before the request)
    // is not this one's outcome.
    assert_eq!(
        polled(
            &mut p,
            with_switchover(DnRole::Primary, false, Some((1, Promoted))),
            1
        ),
        POLL
    );
    assert_eq!(
        polled(
            &mut p,
            with_switchover(DnRole::Standby, false, Some((2, Promoted))),
            2
        ),
        Step::Done("switchover done: 6002 is the primary of group 1 (term 2)".into())
    );
    let mut p = switchover_plan(Some(Duration::from_secs(120)));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    let step = polled(
        &mut p,
        with_switchover(DnRole::Primary, false, Some((2, TimedOut))),
        130,
    );
    assert!(
        matches!(&step, Step::Failed(m) if m.contains("timed out")),
        "{step:?}"
    );
}

#[test]
fn switchover_gives_up_waiting_after_its_timeout_and_no_wait_returns_once_accepted() {
    let mut p = switchover_plan(Some(Duration::from_secs(120)));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    assert_eq!(
        polled(&mut p, with_switchover(DnRole::Primary, true, None), 119),
        POLL
    );
    let step = polled(&mut p, with_switchover(DnRole::Primary, true, None), 120);
    assert!(
        matches!(&step, Step::Failed(m) if m.starts_with("switchover not finished within 120 s (waiting for the old primary 6001")),
        "{step:?}"
    );
    let mut p = switchover_plan(None);
    assert!(matches!(
        p.next(StepResult::Leader(Ok(CtlReply::Accepted))),
        Step::Done(_)
    ));
    let mut p = switchover_plan(None);
    let refused = CtlReply::Refused(Refusal::Busy("group1 is already changing primary".into()));
    assert!(matches!(
        p.next(StepResult::Leader(Ok(refused))),
        Step::Failed(_)
    ));
}

#[test]
fn progress_names_what_is_missing() {
    assert!(waiting_for(&Err("connection refused".into())).starts_with("no cm_server leader yet"),);
    let mut s = status(ClusterHealth::Degraded, DnRole::Standby, DbState::Building);
    assert_eq!(waiting_for(&Ok(s.clone())), "building 6002");
    s.groups[0].members[1].state = DbState::CatchUp;
    // Plain words as `cm_ctl query` prints them, not Rust's debug names.
    assert_eq!(waiting_for(&Ok(s.clone())), "6002 Standby Catchup");
    s.groups[0].members[1].state = DbState::NeedRepair;
    assert_eq!(waiting_for(&Ok(s.clone())), "6002 Standby Need repair");
    s.groups[0].members[1].state = DbState::CatchUp;
    // No primary: the unheard members are named, or else the arbitration is waiting for Lock1.
    s.groups[0].members[0].role = DnRole::Unknown;
    s.groups[0].members[1].role = DnRole::Unknown;
    assert_eq!(
        waiting_for(&Ok(s.clone())),
        "group 1: no primary yet, waiting for DN 6001, 6002 to report"
    );
    for m in &mut s.groups[0].members {
        (m.role, m.state) = (DnRole::Standby, DbState::Normal);
    }
    assert_eq!(
        waiting_for(&Ok(s)),
        "group 1: no primary yet (arbitration: Lock1 quorum not reached)"
    );
    let healthy = status(ClusterHealth::Normal, DnRole::Standby, DbState::Normal);
    assert_eq!(waiting_for(&Ok(healthy)), "");
}

/// health() also requires every standby to stream and the group's commits to be acknowledged:
/// a Degraded start names those too instead of printing no reason.
#[test]
fn progress_names_a_standby_not_streaming_and_unacknowledged_commits() {
    let mut s = status(ClusterHealth::Degraded, DnRole::Standby, DbState::Normal);
    s.groups[0].members[2].not_streaming_ms = Some(12_400);
    s.groups[0].commits_acknowledged = false;
    assert_eq!(
        waiting_for(&Ok(s)),
        "6003 not streaming for 12 s; group 1: commits not acknowledged"
    );
}

#[test]
fn start_timeout_says_what_was_missing() {
    let mut p = Plan::new(
        &config(),
        Operation::StartCluster {
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Monitors(vec![
        ok_status(1),
        ok_status(2),
        ok_status(3),
    ]));
    let done = |n| (NodeId(n), Ok(MonitorReply::Done));
    p.next(StepResult::Monitors(vec![done(1), done(2), done(3)]));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    let step = p.next(StepResult::Status {
        status: Ok(status(
            ClusterHealth::Degraded,
            DnRole::Standby,
            DbState::Building,
        )),
        elapsed: Duration::from_secs(5),
    });
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(msg.contains("Degraded: building 6002"), "{msg}");
}

#[test]
fn stop_with_every_node_down_does_not_claim_nodes_are_stopping() {
    let mut p = Plan::new(
        &config(),
        Operation::StopCluster {
            mode: StopMode::Fast,
            timeout: Duration::from_secs(60),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    let down = |n| {
        (
            NodeId(n),
            Err::<MonitorReply, String>("connection refused".into()),
        )
    };
    // The monitors are asked before the leader: with none answering, the leader is never told
    // "stopping" (which would halt arbitration) and nothing claims nodes are stopping.
    let step = p.next(StepResult::Monitors(vec![down(1), down(2), down(3)]));
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(!msg.contains("are stopping"), "{msg}");
    assert!(msg.contains("nothing was stopped"), "{msg}");
}

#[test]
fn stop_whose_flags_all_fail_after_the_leader_was_told_says_how_to_resume() {
    let mut p = Plan::new(
        &config(),
        Operation::StopCluster {
            mode: StopMode::Fast,
            timeout: Duration::from_secs(60),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Monitors(vec![ok_status(1)]));
    p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    let down = |n| (NodeId(n), Err::<MonitorReply, String>("refused".into()));
    let step = p.next(StepResult::Monitors(vec![down(1), down(2), down(3)]));
    let Step::Failed(msg) = step else {
        panic!("{step:?}")
    };
    assert!(msg.contains("run cm_ctl start"), "{msg}");
}

#[test]
fn a_stopped_cluster_is_explained_from_the_monitors_not_as_a_connection_error() {
    let flagged = |n| {
        let flags = FlagSet {
            cluster_manual_start: Some(StopMode::Fast),
            ..FlagSet::default()
        };
        (
            NodeId(n),
            Ok(MonitorReply::Status {
                node: NodeId(n),
                agent_running: false,
                flags,
                agent_error: None,
            }),
        )
    };
    let msg = explain_no_leader(&[flagged(1), flagged(2), flagged(3)]).unwrap();
    assert_eq!(
        msg,
        "the cluster is stopped (`cm_ctl stop` left its stop flag on node 1, 2, 3); start it \
         with `cm_ctl start`"
    );
    let down = (NodeId(3), Err::<MonitorReply, String>("refused".into()));
    let msg = explain_no_leader(&[flagged(1), flagged(2), down.clone()]).unwrap();
    assert!(msg.contains("om_monitor did not answer on node 3"), "{msg}");
    let no_agent = (
        NodeId(2),
        Ok(MonitorReply::Status {
            node: NodeId(2),
            agent_running: false,
            flags: FlagSet::default(),
            agent_error: None,
        }),
    );
    let msg = explain_no_leader(&[ok_status(1), no_agent]).unwrap();
    assert!(msg.contains("no cm_agent runs on node 2"), "{msg}");
    assert!(msg.contains("cm_agent runs on node 1"), "{msg}");
    assert_eq!(explain_no_leader(&[down]), None);
}

#[test]
fn node_problems_name_a_failing_agent_and_its_error() {
    let failing = (
        NodeId(3),
        Ok(MonitorReply::Status {
            node: NodeId(3),
            agent_running: false,
            flags: FlagSet::default(),
            agent_error: Some("cluster.toml:4: unknown key `nme`".into()),
        }),
    );
    assert_eq!(
        node_problems(&[ok_status(1), failing.clone()]),
        vec!["node 3: cm_agent is not running; it exits with: cluster.toml:4: unknown key `nme`"]
    );
    assert_eq!(
        node_problems(&[ok_status(1), ok_status(2)]),
        Vec::<String>::new()
    );
    let msg = explain_no_leader(&[failing]).unwrap();
    assert!(
        msg.contains("no cm_agent runs on node 3 (it exits with: cluster.toml:4"),
        "{msg}"
    );
}

fn build_plan() -> Plan {
    build_plan_of(false)
}

/// The status with 6002's last build outcome set: `count` builds finished, the last failed
/// with `error` (`None`: it succeeded).
fn build_status(
    role: DnRole,
    state: DbState,
    count: u64,
    error: Option<&str>,
) -> Box<ClusterStatus> {
    let mut s = status(ClusterHealth::Degraded, role, state);
    s.groups[0].members[1].last_build = BuildOutcome {
        count,
        error: error.map(str::to_owned),
        pending: false,
        half_rewound: false,
        agent_incarnation: Some(AGENT_STARTED_MS),
    };
    s
}

/// When 6002's agent started, in the status before the build request.
const AGENT_STARTED_MS: u64 = 1_000;

/// 6002's build outcome as reported by its agent started at `started_ms`.
fn agent_build(count: u64, pending: bool, started_ms: u64) -> Box<ClusterStatus> {
    let mut s = build_status(DnRole::Standby, DbState::Building, count, None);
    let b = &mut s.groups[0].members[1].last_build;
    b.pending = pending;
    b.agent_incarnation = Some(started_ms);
    s
}

/// Issue 17: an agent that restarts mid-build lost the build (the leader sends a Build once);
/// `cm_ctl build` says so at the restarted agent's first report instead of waiting out `-t`.
#[test]
fn a_build_lost_to_an_agent_restart_fails_at_once() {
    let mut p = build_plan();
    assert_eq!(
        polled(&mut p, agent_build(3, true, AGENT_STARTED_MS), 1),
        POLL
    );
    let step = polled(&mut p, agent_build(0, false, 90_000), 5);
    assert!(
        matches!(&step, Step::Failed(m) if m.starts_with("the build of 6002 was lost: its cm_agent restarted")),
        "{step:?}"
    );
}

/// A restarted agent that has a build to run (or finished one) is followed to its outcome: its
/// count starts again at 0, so any build it finished is the one waited for.
#[test]
fn a_restarted_agents_own_build_is_followed_to_its_outcome() {
    let mut p = build_plan();
    assert_eq!(polled(&mut p, agent_build(0, true, 90_000), 5), POLL);
    assert_eq!(
        polled(&mut p, agent_build(1, false, 90_000), 9),
        Step::Done("build of 6002 done".into())
    );
    // The same agent with its count not above the one before: still waiting, pending or not.
    let mut p = build_plan();
    assert_eq!(
        polled(&mut p, agent_build(3, false, AGENT_STARTED_MS), 2),
        POLL
    );
}

/// A build plan of 6002, past the leader's acceptance; the request carries `full`. Before the
/// request, 6002's agent had finished 3 builds, the last one failed ("old failure").
fn build_plan_of(full: bool) -> Plan {
    let mut p = Plan::new(
        &config(),
        Operation::Build {
            instance: InstanceId(6002),
            full,
            timeout: Duration::from_secs(60),
        },
    )
    .unwrap();
    assert_eq!(p.next(StepResult::Begin), Step::Leader(CtlRequest::Query));
    let before = build_status(DnRole::Standby, DbState::Normal, 3, Some("old failure"));
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Status(before)))),
        Step::Leader(CtlRequest::Build {
            instance: InstanceId(6002),
            full,
        })
    );
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Accepted))),
        Step::PollStatus {
            after: POLL_INTERVAL
        }
    );
    p
}

fn poll(p: &mut Plan, role: DnRole, state: DbState, secs: u64) -> Step {
    p.next(StepResult::Status {
        status: Ok(status(ClusterHealth::Degraded, role, state)),
        elapsed: Duration::from_secs(secs),
    })
}

fn poll_build(p: &mut Plan, count: u64, error: Option<&str>, secs: u64) -> Step {
    polled(
        p,
        build_status(DnRole::Standby, DbState::Normal, count, error),
        secs,
    )
}

/// `cm_ctl build --full` asks the leader for a full copy (the request carries `full`) and
/// waits for it like any build.
#[test]
fn a_full_build_asks_the_leader_for_a_full_copy() {
    let mut p = build_plan_of(true);
    assert_eq!(poll_build(&mut p, 3, Some("old failure"), 2), POLL);
    assert_eq!(
        poll_build(&mut p, 4, None, 30),
        Step::Done("build of 6002 done".into())
    );
}

/// Issue 17 item 1: the build is done only once the agent reports a build counted above the
/// one seen before the request; a Normal standby with the old count is not done (a failed build
/// restarts the old data as a Normal standby).
#[test]
fn build_waits_for_a_newer_build_result_and_succeeds_on_ok() {
    let mut p = build_plan();
    // The old result (count 3, failed) and a Normal standby: neither done nor failed.
    assert_eq!(poll_build(&mut p, 3, Some("old failure"), 1), POLL);
    assert_eq!(
        polled(
            &mut p,
            build_status(DnRole::Pending, DbState::Building, 3, Some("old failure")),
            2
        ),
        POLL
    );
    assert_eq!(poll_build(&mut p, 3, Some("old failure"), 10), POLL);
    assert_eq!(
        poll_build(&mut p, 4, None, 11),
        Step::Done("build of 6002 done".into())
    );
}

/// Issue 17 item 1: a newer failed build fails the command with the agent's error text, even
/// though the DN is back as a Normal standby on its old data.
#[test]
fn a_failed_build_fails_the_command_with_the_agents_error() {
    let mut p = build_plan();
    assert_eq!(poll_build(&mut p, 3, Some("old failure"), 1), POLL);
    assert_eq!(
        poll_build(&mut p, 4, Some("pg_basebackup: could not connect"), 2),
        Step::Failed("the build of 6002 failed: pg_basebackup: could not connect".into())
    );
}

/// The status before the build cannot be read: the command fails before asking for a build.
#[test]
fn a_build_without_the_status_before_fails() {
    let mut p = Plan::new(
        &config(),
        Operation::Build {
            instance: InstanceId(6002),
            full: false,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    assert_eq!(p.next(StepResult::Begin), Step::Leader(CtlRequest::Query));
    let Step::Failed(msg) = p.next(StepResult::Leader(Err("connection refused".into()))) else {
        panic!("no status, no build")
    };
    assert!(msg.contains("connection refused"), "{msg}");
}

#[test]
fn a_build_refused_or_timed_out_fails() {
    let mut p = Plan::new(
        &config(),
        Operation::Build {
            instance: InstanceId(6002),
            full: false,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Leader(Ok(CtlReply::Status(build_status(
        DnRole::Standby,
        DbState::Normal,
        0,
        None,
    )))));
    assert!(matches!(
        p.next(StepResult::Leader(Ok(CtlReply::Refused(Refusal::Paused)))),
        Step::Failed(_)
    ));
    let mut p = build_plan();
    poll(&mut p, DnRole::Down, DbState::Unknown, 1);
    let Step::Failed(msg) = poll(&mut p, DnRole::Down, DbState::Unknown, 60) else {
        panic!("timeout")
    };
    assert!(msg.contains("did not finish within 60 s"), "{msg}");
    assert!(msg.contains("6002 Down Unknown"), "{msg}");
}

/// A status after a failover to 6002: 6001 (the install-time primary) is a standby and not the
/// static primary; `pending`/`ended` describe the switchover back to 6001.
fn unbalanced(pending: bool, ended: Option<(u64, SwitchoverResult)>) -> Box<ClusterStatus> {
    let mut s = status(ClusterHealth::Normal, DnRole::Primary, DbState::Normal);
    let g = &mut s.groups[0];
    g.members[0].role = DnRole::Standby;
    g.members[0].static_primary = false;
    g.members[1].static_primary = true;
    if pending {
        g.switchover = Some(crate::state::PendingSwitchover {
            target: InstanceId(6001),
            from: InstanceId(6002),
            term: Term(2),
            fast: false,
            deadline: crate::time::WallMillis(0),
        });
        g.members[1].role = DnRole::Primary;
    }
    g.last_switchover = ended.map(|(term, result)| crate::state::SwitchoverEnd {
        target: InstanceId(6001),
        from: InstanceId(6002),
        term: Term(term),
        result,
    });
    s
}

/// `switchover -a` past the leader's acceptance, with the status before showing group 1 off
/// its install-time primary at term 1.
fn switchover_all_plan(wait: Option<Duration>) -> (Plan, Step) {
    let mut p = Plan::new(&config(), Operation::SwitchoverAll { wait }).unwrap();
    assert_eq!(p.next(StepResult::Begin), Step::Leader(CtlRequest::Query));
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Status(unbalanced(
            false, None
        ))))),
        Step::Leader(CtlRequest::SwitchoverAll)
    );
    let step = p.next(StepResult::Leader(Ok(CtlReply::Accepted)));
    (p, step)
}

/// Issue 17: `switchover -a` waits like a single switchover (it returned once accepted and
/// refused -t/--no-wait).
#[test]
fn switchover_all_waits_for_every_group_it_moves() {
    use SwitchoverResult::Promoted;
    let (mut p, step) = switchover_all_plan(Some(Duration::from_secs(120)));
    assert_eq!(step, POLL);
    assert_eq!(p.waiting_for(), Some("switchover to 6001 accepted"));
    assert_eq!(polled(&mut p, unbalanced(true, None), 1), POLL);
    assert_eq!(
        p.waiting_for(),
        Some("6001: waiting for the old primary 6002 to shut down; term 2")
    );
    // An older switchover to 6001 (term 1, not above the term before the request) is not it.
    assert_eq!(
        polled(&mut p, unbalanced(false, Some((1, Promoted))), 2),
        POLL
    );
    assert_eq!(
        polled(&mut p, unbalanced(false, Some((2, Promoted))), 3),
        Step::Done("switchover done: 6001 is the primary of group 1 (term 2)".into())
    );
}

#[test]
fn switchover_all_fails_when_a_switchover_is_aborted_or_times_out() {
    use SwitchoverResult::Aborted;
    let (mut p, _) = switchover_all_plan(Some(Duration::from_secs(120)));
    let step = polled(&mut p, unbalanced(false, Some((2, Aborted))), 2);
    assert!(
        matches!(&step, Step::Failed(m) if m.starts_with("switchover aborted: 6001 could not take over")),
        "{step:?}"
    );
    let (mut p, _) = switchover_all_plan(Some(Duration::from_secs(5)));
    assert_eq!(polled(&mut p, unbalanced(true, None), 4), POLL);
    let step = polled(&mut p, unbalanced(true, None), 5);
    assert!(
        matches!(&step, Step::Failed(m) if m.starts_with("switchover not finished within 5 s (6001: waiting for the old primary 6002")),
        "{step:?}"
    );
}

#[test]
fn switchover_all_no_wait_returns_once_accepted_and_a_balanced_cluster_has_nothing_to_do() {
    let (_, step) = switchover_all_plan(None);
    assert_eq!(
        step,
        Step::Done("switchover -a accepted (--no-wait: follow it with `cm_ctl query`)".into())
    );
    let mut p = Plan::new(
        &config(),
        Operation::SwitchoverAll {
            wait: Some(Duration::from_secs(120)),
        },
    )
    .unwrap();
    p.next(StepResult::Begin);
    let balanced = status(ClusterHealth::Normal, DnRole::Standby, DbState::Normal);
    p.next(StepResult::Leader(Ok(CtlReply::Status(balanced))));
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Accepted))),
        Step::Done("nothing to switch: every group's primary is its install-time primary".into())
    );
    let mut p = Plan::new(&config(), Operation::SwitchoverAll { wait: None }).unwrap();
    p.next(StepResult::Begin);
    p.next(StepResult::Leader(Ok(CtlReply::Status(unbalanced(
        false, None,
    )))));
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::Refused(Refusal::Paused)))),
        Step::Failed("refused: the cluster is paused; run `cm_ctl resume` first".into())
    );
}

/// §14: `cm_ctl stop|start -I ID` writes or removes the resource instance's flag on its node
/// and waits until the leader shows it Stopped or Online.
#[test]
fn a_resource_instance_is_stopped_and_started_through_its_flag() {
    use crate::ctl::ResourceRow;
    let c = ClusterConfig::from_toml_str(&format!(
        "{}\n[[resource]]\nname = \"app\"\nscript = \"/a.sh\"\ninstances = [{{ node = 2, id = 9002 }}]\n",
        crate::config::EXAMPLE_CONFIG
    ))
    .unwrap();
    let with = |state| {
        let mut s = status(ClusterHealth::Normal, DnRole::Standby, DbState::Normal);
        s.resources = vec![ResourceRow {
            node: NodeId(2),
            name: "app".into(),
            instance: InstanceId(9002),
            state,
        }];
        s
    };
    // The instance must be on the node named.
    let on = |node| Operation::StopInstance {
        node: NodeId(node),
        instance: Some(InstanceId(9002)),
        mode: StopMode::Fast,
        timeout: Duration::from_secs(30),
    };
    assert!(Plan::new(&c, on(1)).unwrap_err().contains("9002"));
    let mut p = Plan::new(&c, on(2)).unwrap();
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Monitors {
            nodes: vec![NodeId(2)],
            req: MonitorRequest::WriteFlag {
                flag: Flag::InstanceManualStart(InstanceId(9002)),
                mode: StopMode::Fast
            }
        }
    );
    p.next(StepResult::Monitors(vec![(
        NodeId(2),
        Ok(MonitorReply::Done),
    )]));
    assert_eq!(polled(&mut p, with(ResourceState::Online), 1), POLL);
    assert!(matches!(
        polled(&mut p, with(ResourceState::Stopped), 2),
        Step::Done(_)
    ));
    let mut p = Plan::new(
        &c,
        Operation::StartInstance {
            node: NodeId(2),
            instance: Some(InstanceId(9002)),
            timeout: Duration::from_secs(30),
        },
    )
    .unwrap();
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Monitors {
            nodes: vec![NodeId(2)],
            req: MonitorRequest::RemoveFlag {
                flag: Flag::InstanceManualStart(InstanceId(9002)),
            }
        }
    );
    p.next(StepResult::Monitors(vec![(
        NodeId(2),
        Ok(MonitorReply::Done),
    )]));
    assert_eq!(polled(&mut p, with(ResourceState::Stopped), 1), POLL);
    assert!(matches!(
        polled(&mut p, with(ResourceState::Online), 2),
        Step::Done(_)
    ));
}

/// `switchover -a` with the leader's reply naming what it started and what it refused: a
/// refusal fails at once with its reason (cm_ctl waited 120 s for a group never switched); the
/// plan waits on exactly the switchovers started, at their terms.
#[test]
fn switchover_all_fails_at_once_on_refusals_and_waits_on_exactly_what_started() {
    use crate::ctl::{SwitchoverRefused, SwitchoverStarted};
    use crate::ids::GroupId;
    let started = vec![SwitchoverStarted {
        group: GroupId(1),
        target: InstanceId(6001),
        term: Term(1),
    }];
    let begin = || {
        let mut p = Plan::new(
            &config(),
            Operation::SwitchoverAll {
                wait: Some(Duration::from_secs(120)),
            },
        )
        .unwrap();
        p.next(StepResult::Begin);
        p.next(StepResult::Leader(Ok(CtlReply::Status(unbalanced(
            false, None,
        )))));
        p
    };
    let mut p = begin();
    let step = p.next(StepResult::Leader(Ok(CtlReply::SwitchoverAll {
        started: started.clone(),
        refused: vec![SwitchoverRefused {
            group: GroupId(2),
            target: InstanceId(6004),
            refusal: Refusal::Invalid("instance 6004 is not a healthy standby of group2".into()),
        }],
    })));
    assert_eq!(
        step,
        Step::Failed(
            "switchover -a refused for group 2 to 6004: invalid request: instance 6004 is not a \
             healthy standby of group2; started, the cm_server goes on with them (follow with \
             `cm_ctl query`): switchover to 6001 (group 1)"
                .into()
        )
    );
    let mut p = begin();
    let step = p.next(StepResult::Leader(Ok(CtlReply::SwitchoverAll {
        started,
        refused: vec![],
    })));
    assert_eq!(step, POLL);
    assert_eq!(
        p.waiting_for(),
        Some("switchover to 6001 (group 1) started")
    );
    assert_eq!(
        polled(
            &mut p,
            unbalanced(false, Some((2, SwitchoverResult::Promoted))),
            3
        ),
        Step::Done("switchover done: 6001 is the primary of group 1 (term 2)".into())
    );
    let mut p = begin();
    let step = p.next(StepResult::Leader(Ok(CtlReply::SwitchoverAll {
        started: vec![],
        refused: vec![],
    })));
    assert_eq!(
        step,
        Step::Done("nothing to switch: every group's primary is its install-time primary".into())
    );
}

/// A plain leader request (the simulator's `switchover -a`) fails on a refused group too.
#[test]
fn a_plain_switchover_all_request_fails_on_a_refused_group() {
    use crate::ctl::SwitchoverRefused;
    let mut p = Plan::new(&config(), Operation::Leader(CtlRequest::SwitchoverAll)).unwrap();
    assert_eq!(
        p.next(StepResult::Begin),
        Step::Leader(CtlRequest::SwitchoverAll)
    );
    assert_eq!(
        p.next(StepResult::Leader(Ok(CtlReply::SwitchoverAll {
            started: vec![],
            refused: vec![SwitchoverRefused {
                group: GroupId(2),
                target: InstanceId(6004),
                refusal: Refusal::Paused,
            }],
        }))),
        Step::Failed("refused: group 2: the cluster is paused; run `cm_ctl resume` first".into())
    );
}
