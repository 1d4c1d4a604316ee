use super::*;
use crate::config::EXAMPLE_CONFIG as THREE_NODES;
use crate::dn::DnReport;
use crate::ids::{QuorumTerm, ReportSeq};

fn config(cms_nodes: usize) -> ClusterConfig {
    let mut text = THREE_NODES.to_owned();
    // Keep `cms_port` on the first `cms_nodes` nodes only.
    for _ in cms_nodes..3 {
        let last = text.rfind("cms_port = 17101\n").unwrap();
        text.replace_range(last..last + "cms_port = 17101\n".len(), "");
    }
    ClusterConfig::from_toml_str(&text).unwrap()
}

fn report(seq: u64) -> AgentReport {
    AgentReport {
        seq: ReportSeq(seq),
        dns: vec![DnReport::down(InstanceId(6001))],
        cms_process: None,
        normal_start: false,
        resources: Vec::new(),
    }
}

fn frame(from: Endpoint, to: NodeId, msg: Msg) -> ServerInput {
    ServerInput::Net(NetEvent::FrameReceived {
        peer: from,
        envelope: Envelope {
            from,
            to: Endpoint::server(to),
            quorum_term: QuorumTerm(0),
            msg,
        },
    })
}

/// Runs a single-CMS server until it arbitrates, completing every write at once.
fn elected_single(now: &mut Instant) -> Server {
    let cfg = config(1);
    let mut s = Server::new(&cfg, NodeId(1), 7, None).unwrap();
    let mut pending = vec![ServerInput::WallClock(WallMillis(1_000_000))];
    for _ in 0..100 {
        let input = pending.pop().unwrap_or(ServerInput::Tick);
        for c in s.step(*now, input) {
            if let ServerCommand::Persist(p) = c {
                pending.push(ServerInput::WriteCompleted(WriteCompleted {
                    token: p.token,
                    result: Ok(()),
                }));
            }
        }
        // Once every write is done: the leader's no-op is then committed (§15 views need it).
        if s.status().arbitrating && pending.is_empty() {
            return s;
        }
        if pending.is_empty() {
            *now = s.next_deadline().unwrap().max(*now);
        }
    }
    panic!("a single CMS did not elect itself: {:?}", s.status());
}

fn sends(cmds: &[ServerCommand]) -> Vec<(Endpoint, Msg)> {
    cmds.iter()
        .filter_map(|c| match c {
            ServerCommand::Net(NetCommand::Send { envelope }) => {
                Some((envelope.to, envelope.msg.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn it_dials_every_other_cms_at_start_and_redials_a_failed_peer_after_a_second() {
    let mut s = Server::new(&config(3), NodeId(2), 1, None).unwrap();
    let out = s.step(Instant::ZERO, ServerInput::WallClock(WallMillis(5)));
    let connects: Vec<_> = out
        .iter()
        .filter_map(|c| match c {
            ServerCommand::Net(NetCommand::Connect { peer }) => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(
        connects,
        vec![Endpoint::server(NodeId(1)), Endpoint::server(NodeId(3))]
    );
    let failed = NetEvent::ConnectFailed {
        peer: Endpoint::server(NodeId(3)),
    };
    s.step(Instant::from_millis(10), ServerInput::Net(failed));
    let redial = Instant::from_millis(1010);
    assert!(s.next_deadline().unwrap() <= redial);
    let out = s.step(redial, ServerInput::Tick);
    assert!(out.contains(&ServerCommand::Net(NetCommand::Connect {
        peer: Endpoint::server(NodeId(3))
    })));
}

#[test]
fn a_follower_answers_reports_with_not_leader_and_sends_no_command() {
    let mut s = Server::new(&config(3), NodeId(2), 1, None).unwrap();
    s.step(Instant::ZERO, ServerInput::Tick);
    let out = s.step(
        Instant::from_millis(5),
        frame(
            Endpoint::agent(NodeId(1)),
            NodeId(2),
            Msg::AgentReport(report(4)),
        ),
    );
    assert_eq!(
        sends(&out),
        vec![(
            Endpoint::agent(NodeId(1)),
            Msg::ReportReply(ReportReply {
                seq: ReportSeq(4),
                answer: ReportAnswer::NotLeader { leader: None }
            })
        )]
    );
}

#[test]
fn every_cms_answers_term_checks_with_its_term_and_followers_refuse_ctl() {
    let mut s = Server::new(&config(3), NodeId(2), 1, None).unwrap();
    s.step(Instant::ZERO, ServerInput::Tick);
    let out = s.step(
        Instant::from_millis(1),
        frame(
            Endpoint::agent(NodeId(3)),
            NodeId(2),
            Msg::TermCheck { nonce: 9 },
        ),
    );
    assert_eq!(
        sends(&out),
        vec![(
            Endpoint::agent(NodeId(3)),
            Msg::TermCheckReply {
                nonce: 9,
                highest: QuorumTerm(0),
                // Built with an empty store, it is still joining: not a voter yet.
                weight: 0,
            }
        )]
    );
    let ctl = Endpoint {
        node: NodeId(77),
        role: PeerRole::Ctl,
    };
    let out = s.step(
        Instant::from_millis(2),
        frame(
            ctl,
            NodeId(2),
            Msg::CtlRequest {
                id: 3,
                req: CtlRequest::Pause,
            },
        ),
    );
    assert_eq!(
        sends(&out),
        vec![(
            ctl,
            Msg::CtlReply {
                id: 3,
                reply: CtlReply::Refused(Refusal::NotLeader { leader: None })
            }
        )]
    );
}

#[test]
fn a_single_cms_elects_itself_and_answers_reports_as_leader_before_any_command() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    assert!(s.status().quorum.lease_until.is_some());
    now += Duration::from_millis(10);
    let out = s.step(
        now,
        frame(
            Endpoint::agent(NodeId(2)),
            NodeId(1),
            Msg::AgentReport(report(1)),
        ),
    );
    let sent = sends(&out);
    assert_eq!(
        sent[0],
        (
            Endpoint::agent(NodeId(2)),
            Msg::ReportReply(ReportReply {
                seq: ReportSeq(1),
                answer: ReportAnswer::Leader {
                    paused: false,
                    stopping: false,
                    // §15: node 2 hosts 6002 of group 1, whose primary is the first member at
                    // term 0; no report from 6001 yet, so no position.
                    groups: vec![GroupView {
                        group: GroupId(1),
                        primary: InstanceId(6001),
                        term: crate::ids::Term(0),
                        primary_position: None,
                    }],
                    resources: Vec::new(),
                }
            })
        )
    );
}

/// §15: a leader names no primary until its own term's no-op has committed (its committed
/// state may lag the log until then); its answers still say `Leader` for the self-fence.
#[test]
fn a_leader_names_no_primary_before_it_has_committed_in_its_term() {
    let cfg = config(1);
    let mut s = Server::new(&cfg, NodeId(1), 7, None).unwrap();
    let mut now = Instant::ZERO;
    let mut pending = vec![ServerInput::WallClock(WallMillis(1_000_000))];
    while !s.status().arbitrating {
        let input = pending.pop().unwrap_or(ServerInput::Tick);
        for c in s.step(now, input) {
            if let ServerCommand::Persist(p) = c {
                pending.push(ServerInput::WriteCompleted(WriteCompleted {
                    token: p.token,
                    result: Ok(()),
                }));
            }
        }
        if pending.is_empty() {
            now = s.next_deadline().unwrap().max(now);
        }
    }
    assert!(!pending.is_empty(), "the no-op's write is still pending");
    let views = |s: &mut Server, seq: u64| {
        let out = s.step(
            now,
            frame(
                Endpoint::agent(NodeId(2)),
                NodeId(1),
                Msg::AgentReport(report(seq)),
            ),
        );
        match &sends(&out)[0].1 {
            Msg::ReportReply(ReportReply {
                answer: ReportAnswer::Leader { groups, .. },
                ..
            }) => groups.len(),
            other => panic!("not a Leader answer: {other:?}"),
        }
    };
    assert_eq!(views(&mut s, 1), 0);
    while let Some(w) = pending.pop() {
        s.step(now, w);
    }
    assert_eq!(views(&mut s, 2), 1);
}

/// §15: the leader tells each agent its groups' primary, term, and the primary's newest position
/// with the age of its receipt.
#[test]
fn the_leader_answer_carries_the_primarys_position_and_its_age() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    let mut r = report(1);
    r.dns[0].role = crate::dn::DnRole::Primary;
    r.dns[0].position = crate::ids::Position::new(1, 500);
    s.step(
        now,
        frame(Endpoint::agent(NodeId(1)), NodeId(1), Msg::AgentReport(r)),
    );
    now += Duration::from_millis(300);
    let out = s.step(
        now,
        frame(
            Endpoint::agent(NodeId(2)),
            NodeId(1),
            Msg::AgentReport(report(1)),
        ),
    );
    let Msg::ReportReply(ReportReply {
        answer: ReportAnswer::Leader { groups, .. },
        ..
    }) = &sends(&out)[0].1
    else {
        panic!("no Leader answer in {out:?}");
    };
    assert_eq!(
        groups[0].primary_position,
        Some((
            crate::ids::Position::new(1, 500),
            Duration::from_millis(300)
        ))
    );
}

#[test]
fn the_leader_answers_query_with_its_cms_table_and_commits_pause_before_replying() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    let ctl = Endpoint {
        node: NodeId(50),
        role: PeerRole::Ctl,
    };
    now += Duration::from_millis(1);
    let out = s.step(
        now,
        frame(
            ctl,
            NodeId(1),
            Msg::CtlRequest {
                id: 1,
                req: CtlRequest::Query,
            },
        ),
    );
    let Some((
        _,
        Msg::CtlReply {
            id: 1,
            reply: CtlReply::Status(st),
        },
    )) = sends(&out).into_iter().next()
    else {
        panic!("{out:?}")
    };
    assert_eq!(st.cms.len(), 1);
    assert_eq!(st.cms[0].role, CmsRole::Primary);

    now += Duration::from_millis(1);
    let out = s.step(
        now,
        frame(
            ctl,
            NodeId(1),
            Msg::CtlRequest {
                id: 2,
                req: CtlRequest::Pause,
            },
        ),
    );
    // A single-CMS commit needs the write first: no reply yet, a persist instead.
    assert!(sends(&out).iter().all(|(to, _)| *to != ctl), "{out:?}");
    let token = out
        .iter()
        .find_map(|c| match c {
            ServerCommand::Persist(p) => Some(p.token),
            _ => None,
        })
        .expect("the pause is persisted");
    now += Duration::from_millis(1);
    let out = s.step(
        now,
        ServerInput::WriteCompleted(WriteCompleted {
            token,
            result: Ok(()),
        }),
    );
    assert!(
        sends(&out).contains(&(
            ctl,
            Msg::CtlReply {
                id: 2,
                reply: CtlReply::Accepted
            }
        )),
        "{out:?}"
    );
    assert!(s.quorum().committed().paused);
}

#[test]
fn a_control_request_from_a_node_certificate_is_refused_counted_and_changes_nothing() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    for (i, peer) in [
        Endpoint::agent(NodeId(2)),
        Endpoint::server(NodeId(2)),
        Endpoint::monitor(NodeId(2)),
    ]
    .into_iter()
    .enumerate()
    {
        now += Duration::from_millis(1);
        let id = 10 + i as u64;
        let out = s.step(
            now,
            frame(
                peer,
                NodeId(1),
                Msg::CtlRequest {
                    id,
                    req: CtlRequest::Pause,
                },
            ),
        );
        // Refused at once: nothing is proposed, so nothing is persisted.
        assert!(
            !out.iter().any(|c| matches!(c, ServerCommand::Persist(_))),
            "{out:?}"
        );
        let sent = sends(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        let (to, Msg::CtlReply { id: got, reply }) = &sent[0] else {
            panic!("{out:?}")
        };
        assert_eq!((*to, *got), (peer, id));
        assert!(
            matches!(reply, CtlReply::Refused(Refusal::Invalid(why)) if why.contains("cm_ctl")),
            "{reply:?}"
        );
        assert_eq!(s.ctl_refused_not_operator(), i as u64 + 1);
    }
    assert!(!s.quorum().committed().paused);
}

/// An agent serving `/cluster` (§15) may ask the leader for the read-only status over its own
/// link, and only that: a monitor's or a peer server's Query is still refused.
#[test]
fn an_agent_may_query_the_status_but_other_components_may_not() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    now += Duration::from_millis(1);
    let query = |peer, id| {
        frame(
            peer,
            NodeId(1),
            Msg::CtlRequest {
                id,
                req: CtlRequest::Query,
            },
        )
    };
    let out = s.step(now, query(Endpoint::agent(NodeId(2)), 7));
    let sent = sends(&out);
    assert!(
        matches!(
            &sent[..],
            [(
                _,
                Msg::CtlReply {
                    id: 7,
                    reply: CtlReply::Status(_)
                }
            )]
        ),
        "{out:?}"
    );
    assert_eq!(s.ctl_refused_not_operator(), 0);
    let out = s.step(now, query(Endpoint::monitor(NodeId(2)), 8));
    assert!(
        matches!(
            &sends(&out)[..],
            [(
                _,
                Msg::CtlReply {
                    id: 8,
                    reply: CtlReply::Refused(_)
                }
            )]
        ),
        "{out:?}"
    );
    assert_eq!(s.ctl_refused_not_operator(), 1);
}

/// The fence command carries the *effective* `fence_command` when it is emitted: after
/// `cm_ctl set --param --server -k fence_command=...` committed, the new text (the executor never
/// reads the config file, and there is no second command type that adds it).
#[test]
fn a_fence_command_carries_the_effective_fence_command() {
    let mut now = Instant::ZERO;
    let mut s = elected_single(&mut now);
    let fence = || LeaderOutput::RunFenceCommand {
        group: GroupId(1),
        instance: InstanceId(6001),
        node: NodeId(1),
    };
    let fenced = |s: &mut Server| {
        let mut out = Vec::new();
        s.leader_outputs(vec![fence()], &mut out);
        out
    };
    let before = s.leader().params().fence_command.clone();
    assert_eq!(
        fenced(&mut s),
        vec![ServerCommand::RunFenceCommand {
            group: GroupId(1),
            instance: InstanceId(6001),
            node: NodeId(1),
            command: before.clone(),
        }]
    );
    let ctl = Endpoint {
        node: NodeId(50),
        role: PeerRole::Ctl,
    };
    now += Duration::from_millis(1);
    let set = CtlRequest::SetParam {
        side: crate::params::ParamSide::Server,
        name: "fence_command".into(),
        value: "/usr/local/bin/fence-it".into(),
    };
    let out = s.step(
        now,
        frame(ctl, NodeId(1), Msg::CtlRequest { id: 1, req: set }),
    );
    let token = out
        .iter()
        .find_map(|c| match c {
            ServerCommand::Persist(p) => Some(p.token),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the change is persisted: {out:?}"));
    now += Duration::from_millis(1);
    s.step(
        now,
        ServerInput::WriteCompleted(WriteCompleted {
            token,
            result: Ok(()),
        }),
    );
    now += Duration::from_millis(1);
    s.step(now, ServerInput::Tick);
    assert_ne!(before, "/usr/local/bin/fence-it");
    assert_eq!(
        fenced(&mut s),
        vec![ServerCommand::RunFenceCommand {
            group: GroupId(1),
            instance: InstanceId(6001),
            node: NodeId(1),
            command: "/usr/local/bin/fence-it".into(),
        }]
    );
}

/// Runs `s` from `now` for `span`, ticking at its deadlines; completes its writes (keeping the
/// newest completed store in `disk`) only when `disk_works`. Returns every envelope it sent.
fn run_for(
    s: &mut Server,
    now: &mut Instant,
    span: Duration,
    disk_works: bool,
    disk: &mut Option<Vec<u8>>,
) -> Vec<Envelope> {
    let end = *now + span;
    let mut sent = Vec::new();
    let mut pending: Vec<ServerInput> = Vec::new();
    while *now < end {
        let input = pending.pop().unwrap_or(ServerInput::Tick);
        for c in s.step(*now, input) {
            match c {
                ServerCommand::Persist(p) if disk_works => {
                    *disk = Some(p.bytes.clone());
                    pending.push(ServerInput::WriteCompleted(WriteCompleted {
                        token: p.token,
                        result: Ok(()),
                    }));
                }
                ServerCommand::Net(NetCommand::Send { envelope }) => sent.push(envelope),
                _ => {}
            }
        }
        if pending.is_empty() {
            let next = s.next_deadline().unwrap_or(end).min(end);
            *now = next.max(*now + Duration::from_millis(1));
            // An agent reports every second or so: its answers are what it learns terms from.
            if now.as_nanos() / 1_000_000 % 1000 < 200 {
                pending.push(frame(
                    Endpoint::agent(NodeId(2)),
                    NodeId(1),
                    Msg::AgentReport(report(now.as_nanos() / 1_000_000)),
                ));
                pending.push(frame(
                    Endpoint::agent(NodeId(2)),
                    NodeId(1),
                    Msg::TermCheck { nonce: 1 },
                ));
            }
        }
    }
    sent
}

/// Swarm seed 1093 (`A`, then `L`: no primary for good): the only CMS's disk hung while it
/// led term 3; it stopped counting itself, stepped down and campaigned in memory up to term
/// 15, telling the agents each term in its `NotLeader` answers; it crashed before any of those
/// writes completed, came back with term 3 on disk and led term 4 — and every agent, having
/// seen 15, ignored its answers and commands (SPEC §4.1) for good. A CMS now tells agents
/// only a durable term, so a restarted CMS always leads above what the agents saw.
#[test]
fn a_cms_tells_agents_only_a_term_its_store_holds() {
    let mut now = Instant::ZERO;
    let mut s = Server::new(&config(1), NodeId(1), 7, None).unwrap();
    let mut disk = None;
    let mut seen = run_for(&mut s, &mut now, Duration::from_secs(5), true, &mut disk);
    assert!(s.status().arbitrating, "{:?}", s.status());
    let led = s.status().quorum.term;
    // The disk hangs with a write pending (an operator's pause): the leader stops counting
    // itself, steps down and campaigns again and again, writing nothing.
    let ctl = Endpoint {
        node: NodeId(77),
        role: PeerRole::Ctl,
    };
    let pause = Msg::CtlRequest {
        id: 1,
        req: CtlRequest::Pause,
    };
    for c in s.step(now, frame(ctl, NodeId(1), pause)) {
        if let ServerCommand::Net(NetCommand::Send { envelope }) = c {
            seen.push(envelope);
        }
    }
    seen.extend(run_for(
        &mut s,
        &mut now,
        Duration::from_secs(40),
        false,
        &mut disk,
    ));
    assert!(
        s.status().quorum.term.0 > led.0 + 3,
        "it campaigned in memory: {:?}",
        s.status().quorum
    );
    let told = seen.iter().map(|e| e.quorum_term).max().unwrap();
    let answered_checks: Vec<QuorumTerm> = seen
        .iter()
        .filter_map(|e| match e.msg {
            Msg::TermCheckReply { highest, .. } => Some(highest),
            _ => None,
        })
        .collect();
    assert_eq!(told, led, "agents were told a term not on disk");
    assert!(
        answered_checks.iter().all(|t| *t == led),
        "{answered_checks:?}"
    );
    // Crash and restart on the store as written: it leads above every term the agents saw.
    let mut s = Server::new(&config(1), NodeId(1), 8, disk).unwrap();
    run_for(&mut s, &mut now, Duration::from_secs(5), true, &mut None);
    assert!(s.status().arbitrating, "{:?}", s.status());
    assert!(s.status().quorum.term > told, "{:?} vs {told}", s.status());
}
