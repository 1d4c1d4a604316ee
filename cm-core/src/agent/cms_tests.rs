use crate::agent::testkit::*;

fn net_only(cmds: &[AgentCommand]) -> Vec<AgentCommand> {
    cmds.iter()
        .filter(|c| {
            matches!(
                c,
                AgentCommand::Net(NetCommand::Connect { .. } | NetCommand::Disconnect { .. })
            )
        })
        .cloned()
        .collect()
}

fn connect(n: u32) -> AgentCommand {
    AgentCommand::Net(NetCommand::Connect {
        peer: Endpoint::server(NodeId(n)),
    })
}

fn disconnect(n: u32) -> AgentCommand {
    AgentCommand::Net(NetCommand::Disconnect {
        peer: Endpoint::server(NodeId(n)),
    })
}

#[test]
fn failed_connection_is_retried_on_the_next_200ms_turn() {
    let mut a = agent();
    tick(&mut a, ms(0));
    let failed = AgentInput::Net(NetEvent::ConnectFailed {
        peer: Endpoint::server(NodeId(2)),
    });
    assert_eq!(a.step(ms(50), failed), vec![]);
    assert_eq!(tick(&mut a, ms(200)), vec![connect(2)]);
}

#[test]
fn silent_connection_is_closed_and_reopened_after_agent_heartbeat_timeout() {
    let mut a = boot(DnRole::Standby);
    // CMS 1 keeps talking; 2 and 3 say nothing after connecting at 0. The 200 ms loop last ran
    // at 7999 (not yet 8 s); its next turn at 8199 reopens both.
    a.step(ms(7000), leader_reply(CMS[0], 1, 1, false));
    assert_eq!(net_only(&tick(&mut a, ms(7999))), vec![]);
    assert_eq!(
        net_only(&tick(&mut a, ms(8199))),
        vec![disconnect(2), connect(2), disconnect(3), connect(3)]
    );
}

#[test]
fn report_goes_to_every_connected_cms_each_report_interval() {
    let mut a = boot(DnRole::Standby);
    let cmds = tick(&mut a, ms(1000));
    let seq = a.cms.report_seq;
    let mut dn = a.insts[&DN].report(ms(1000));
    // The incarnation the agent was made with (the test kit's 1): `cm_ctl build` tells from a
    // new value that the agent restarted (issue 17).
    dn.last_build.agent_incarnation = Some(1);
    let report = AgentReport {
        seq: ReportSeq(seq),
        dns: vec![dn],
        cms_process: Some(ProcState::Running),
        normal_start: false,
        resources: Vec::new(),
    };
    let send = |n| to_cms(&a, n, Msg::AgentReport(report.clone()));
    assert_eq!(
        cmds,
        vec![
            AgentCommand::ReadFlags,
            AgentCommand::SampleCms {
                op: cms_sample_op(&cmds)
            },
            AgentCommand::SampleProcesses {
                op: sample_op(&cmds, DN),
                instance: DN
            },
            AgentCommand::QueryDnStatus {
                op: query_op(&cmds, DN),
                instance: DN
            },
            send(NodeId(1)),
            send(NodeId(2)),
            send(NodeId(3)),
            AgentCommand::SampleDisk {
                op: OpId(query_op(&cmds, DN).0 + 1),
                instance: DN
            },
            AgentCommand::ProbeDisk {
                op: OpId(query_op(&cmds, DN).0 + 2),
                instance: DN,
                timeout: Duration::from_secs(3600)
            },
            AgentCommand::SampleSystem,
        ]
    );
    assert_eq!(report.dns[0].role, DnRole::Standby);
}

#[test]
fn reports_are_withheld_until_every_dn_was_sampled() {
    let mut a = agent();
    tick(&mut a, ms(0));
    for n in CMS {
        a.step(
            ms(0),
            AgentInput::Net(NetEvent::Connected {
                peer: Endpoint::server(n),
            }),
        );
    }
    assert_eq!(reports(&tick(&mut a, ms(1000))), vec![]);
}

#[test]
fn only_a_leader_reply_makes_a_leader_and_its_not_leader_reply_unmakes_it() {
    let mut a = boot(DnRole::Standby);
    let not_leader = |n| {
        from_cms(
            n,
            1,
            Msg::ReportReply(ReportReply {
                seq: ReportSeq(1),
                answer: ReportAnswer::NotLeader {
                    leader: Some(CMS[0]),
                },
            }),
        )
    };
    assert_eq!(a.step(ms(10), not_leader(CMS[1])), vec![]);
    assert_eq!(a.status().leader, Some(CMS[0]));
    assert_eq!(a.step(ms(20), not_leader(CMS[0])), vec![]);
    assert_eq!(a.status().leader, None);
}

#[test]
fn leader_reply_of_a_deposed_quorum_term_is_ignored_and_a_higher_term_is_persisted() {
    let mut a = boot(DnRole::Standby);
    let cmds = a.step(ms(10), leader_reply(CMS[1], 2, 1, false));
    let token = persist_token(&cmds);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(a.status().leader, Some(CMS[1]));
    assert_eq!(a.step(ms(20), leader_reply(CMS[0], 1, 1, false)), vec![]);
    assert_eq!(a.status().leader, Some(CMS[1]));
    assert_eq!(a.step(ms(30), write_ok(token)), vec![]);
    assert_eq!(a.durable_qterm, QuorumTerm(2));
}

#[test]
fn pause_is_learned_from_the_leader_and_lapses_with_cms_contact() {
    let mut a = boot(DnRole::Standby);
    let cmds = tick(&mut a, ms(1000));
    assert!(!reports(&cmds).is_empty());
    a.step(ms(1100), leader_reply(CMS[0], 1, a.cms.report_seq, true));
    assert!(a.status().paused);
    // Contact lapses agent_self_fence_timeout (6 s) after the send time (1 s) of that report.
    a.step(ms(6999), AgentInput::FlagsObserved(FlagSet::default()));
    assert!(a.status().paused);
    a.step(ms(7000), AgentInput::FlagsObserved(FlagSet::default()));
    assert!(!a.status().paused);
}

#[test]
fn frame_whose_envelope_does_not_match_the_connection_is_dropped() {
    let mut a = boot(DnRole::Standby);
    let mut input = leader_reply(CMS[1], 1, 1, false);
    if let AgentInput::Net(NetEvent::FrameReceived { peer, .. }) = &mut input {
        *peer = Endpoint::server(CMS[2]);
    }
    assert_eq!(a.step(ms(10), input), vec![]);
    assert_eq!(a.status().leader, Some(CMS[0]));
}
