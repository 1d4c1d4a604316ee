use crate::agent::testkit::*;

/// Runs a 1 s turn at `now` and answers the local CMS sample; returns the answer's commands.
fn cms_round(a: &mut Agent, now: Instant, processes: Vec<ProcState>) -> Vec<AgentCommand> {
    let cmds = tick(a, now);
    a.step(now, cms_sampled(cms_sample_op(&cmds), processes))
}

fn cms_op(cmds: &[AgentCommand]) -> OpId {
    op_of(cmds, |c| match c {
        AgentCommand::StartCms { op }
        | AgentCommand::StopCms { op }
        | AgentCommand::KillCms { op } => Some(*op),
        _ => None,
    })
}

fn cms_done(op: OpId) -> AgentInput {
    AgentInput::CmsActionCompleted { op, result: Ok(()) }
}

/// `ONE_DN` with node 1 running no cm_server.
fn no_local_cms() -> Agent {
    let text = ONE_DN.replacen("cms_port = 17101\n", "", 1);
    Agent::new(&config(&text), ME, 0, None).expect("agent")
}

#[test]
fn local_cms_is_sampled_every_second_after_the_flags() {
    let mut a = boot(DnRole::Standby);
    let cmds = tick(&mut a, ms(1000));
    let i = cmds.iter().position(|c| *c == AgentCommand::ReadFlags);
    assert_eq!(
        cmds.get(i.expect("flags read") + 1),
        Some(&AgentCommand::SampleCms {
            op: cms_sample_op(&cmds)
        })
    );
    assert_eq!(
        tick(&mut a, ms(1500))
            .iter()
            .filter(|c| matches!(c, AgentCommand::SampleCms { .. }))
            .count(),
        0
    );
}

#[test]
fn absent_local_cms_is_restarted() {
    let mut a = boot(DnRole::Standby);
    let cmds = cms_round(&mut a, ms(1000), vec![]);
    assert_eq!(cmds, vec![AgentCommand::StartCms { op: cms_op(&cmds) }]);
}

#[test]
fn pause_does_not_hold_back_a_cms_restart() {
    let mut a = boot(DnRole::Standby);
    tick(&mut a, ms(1000));
    a.step(ms(1100), leader_reply(CMS[0], 1, a.cms.report_seq, true));
    assert!(a.status().paused);
    let cmds = cms_round(&mut a, ms(2000), vec![]);
    assert_eq!(cmds, vec![AgentCommand::StartCms { op: cms_op(&cmds) }]);
}

#[test]
fn running_local_cms_is_left_alone_and_reported() {
    let mut a = boot(DnRole::Standby);
    assert_eq!(
        cms_round(&mut a, ms(1000), vec![ProcState::Running]),
        vec![]
    );
    let sent = reports(&tick(&mut a, ms(2000)));
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|(_, r)| r.cms_process == Some(ProcState::Running))
    );
}

#[test]
fn absent_local_cms_is_reported_none() {
    let mut a = boot(DnRole::Standby);
    cms_round(&mut a, ms(1000), vec![]);
    let sent = reports(&tick(&mut a, ms(2000)));
    assert_eq!(sent[0].1.cms_process, None);
}

#[test]
fn hung_local_cms_in_d_or_z_is_reported_not_killed() {
    for state in [ProcState::DiskSleep, ProcState::Zombie] {
        let mut a = boot(DnRole::Standby);
        for t in [1000, 2000, 3000, 4000] {
            let procs = vec![ProcState::Running, state];
            assert_eq!(cms_round(&mut a, ms(t), procs), vec![], "{state:?}");
        }
        let sent = reports(&tick(&mut a, ms(5000)));
        assert_eq!(sent[0].1.cms_process, Some(state));
    }
}

#[test]
fn local_cms_in_state_t_for_three_consecutive_samples_is_killed_then_restarted() {
    let mut a = boot(DnRole::Standby);
    let t = || vec![ProcState::Stopped];
    assert_eq!(cms_round(&mut a, ms(1000), t()), vec![]);
    assert_eq!(cms_round(&mut a, ms(2000), t()), vec![]);
    let cmds = cms_round(&mut a, ms(3000), t());
    let kill = cms_op(&cmds);
    assert_eq!(cmds, vec![AgentCommand::KillCms { op: kill }]);
    assert_eq!(
        cms_round(&mut a, ms(4000), t()),
        vec![],
        "no second action while the kill is in flight"
    );
    a.step(ms(4100), cms_done(kill));
    let cmds = cms_round(&mut a, ms(5000), vec![]);
    assert_eq!(cmds, vec![AgentCommand::StartCms { op: cms_op(&cmds) }]);
}

#[test]
fn t_count_of_the_local_cms_resets_when_it_runs_again() {
    let mut a = boot(DnRole::Standby);
    cms_round(&mut a, ms(1000), vec![ProcState::Stopped]);
    cms_round(&mut a, ms(2000), vec![ProcState::Stopped]);
    cms_round(&mut a, ms(3000), vec![ProcState::Running]);
    assert_eq!(
        cms_round(&mut a, ms(4000), vec![ProcState::Stopped]),
        vec![]
    );
    assert_eq!(
        cms_round(&mut a, ms(5000), vec![ProcState::Stopped]),
        vec![]
    );
    assert_eq!(a.status().local_cms.map(|c| c.hung_samples), Some(2));
}

#[test]
fn never_two_cms_starts_in_flight_and_stale_samples_are_ignored() {
    let mut a = boot(DnRole::Standby);
    let start = cms_op(&cms_round(&mut a, ms(1000), vec![]));
    assert_eq!(
        cms_round(&mut a, ms(2000), vec![]),
        vec![],
        "start in flight"
    );
    // Requested before the start completed, answered after it: stale.
    let early = cms_sample_op(&tick(&mut a, ms(3000)));
    a.step(ms(3100), cms_done(start));
    assert_eq!(a.step(ms(3200), cms_sampled(early, vec![])), vec![]);
    // A fresh sample that still finds it absent starts it again.
    let cmds = cms_round(&mut a, ms(4000), vec![]);
    assert_eq!(cmds, vec![AgentCommand::StartCms { op: cms_op(&cmds) }]);
}

#[test]
fn out_of_order_cms_samples_keep_the_newest() {
    let mut a = boot(DnRole::Standby);
    let first = cms_sample_op(&tick(&mut a, ms(1000)));
    let second = cms_sample_op(&tick(&mut a, ms(2000)));
    assert_eq!(
        a.step(ms(2100), cms_sampled(second, vec![ProcState::Running])),
        vec![]
    );
    assert_eq!(a.step(ms(2200), cms_sampled(first, vec![])), vec![]);
    assert_eq!(
        a.status().local_cms.map(|c| c.processes),
        Some(vec![ProcState::Running])
    );
}

#[test]
fn no_cms_start_before_the_flags_are_known() {
    let mut a = agent();
    let cmds = tick(&mut a, ms(0));
    assert_eq!(
        a.step(ms(5), cms_sampled(cms_sample_op(&cmds), vec![])),
        vec![]
    );
}

#[test]
fn local_cms_starts_before_the_local_dns() {
    let mut a = agent();
    let cmds = tick(&mut a, ms(0));
    a.step(ms(1), AgentInput::FlagsObserved(FlagSet::default()));
    // The DN's sample arrives first: it waits for the CMS to be sampled.
    assert_eq!(a.step(ms(2), sampled(sample_op(&cmds, DN), vec![])), vec![]);
    let cms = a.step(ms(3), cms_sampled(cms_sample_op(&cmds), vec![]));
    let start = cms_op(&cms);
    assert_eq!(cms, vec![AgentCommand::StartCms { op: start }]);
    // While the CMS start is in flight the DN still waits.
    let cmds = tick(&mut a, ms(1000));
    assert_eq!(
        a.step(ms(1001), sampled(sample_op(&cmds, DN), vec![])),
        vec![]
    );
    a.step(ms(1500), cms_done(start));
    let cmds = tick(&mut a, ms(2000));
    let dn = a.step(ms(2001), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(dn, vec![run(action_op(&dn), DnAction::StartPending)]);
}

#[test]
fn no_report_before_the_local_cms_is_sampled() {
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
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    assert_eq!(reports(&tick(&mut a, ms(1000))), vec![]);
}

#[test]
fn node_without_a_cms_neither_samples_nor_waits_for_one() {
    let mut a = no_local_cms();
    let cmds = tick(&mut a, ms(0));
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, AgentCommand::SampleCms { .. }))
    );
    a.step(ms(1), AgentInput::FlagsObserved(FlagSet::default()));
    let dn = a.step(ms(2), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(dn, vec![run(action_op(&dn), DnAction::StartPending)]);
    assert_eq!(a.status().local_cms, None);
    // A CMS sample arriving anyway is ignored.
    assert_eq!(a.step(ms(3), cms_sampled(OpId(99), vec![])), vec![]);
}

#[test]
fn cluster_manual_start_stops_the_local_cms_after_the_dns_then_exits() {
    let mut a = boot(DnRole::Standby);
    let flags = AgentInput::FlagsObserved(FlagSet {
        cluster_manual_start: Some(StopMode::Fast),
        ..FlagSet::default()
    });
    let cmds = a.step(ms(100), flags);
    let stop = action_op(&cmds);
    assert_eq!(
        cmds,
        vec![run(
            stop,
            DnAction::Stop {
                mode: StopMode::Fast
            }
        )]
    );
    // The CMS is not restarted nor stopped while a DN is still up.
    assert_eq!(
        cms_round(&mut a, ms(1000), vec![ProcState::Running]),
        vec![]
    );
    a.step(ms(1100), done(stop));
    let cmds = tick(&mut a, ms(2000));
    // The DN is down: a report (DN manually stopped), then the CMS is stopped.
    let after_dn = a.step(ms(2001), sampled(sample_op(&cmds, DN), vec![]));
    let sent = reports(&after_dn);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].1.dns[0].db_state, DbState::ManuallyStopped);
    let cms_stop = cms_op(&after_dn);
    assert_eq!(
        after_dn.last(),
        Some(&AgentCommand::StopCms { op: cms_stop })
    );
    assert_eq!(after_dn.len(), 4);
    // Stop in flight: nothing more, not even a restart of an absent CMS.
    assert_eq!(
        a.step(
            ms(2002),
            cms_sampled(cms_sample_op(&cmds), vec![ProcState::Running])
        ),
        vec![]
    );
    assert_eq!(a.step(ms(2500), cms_done(cms_stop)), vec![]);
    let last = cms_round(&mut a, ms(3000), vec![]);
    assert_eq!(last.last(), Some(&AgentCommand::Exit));
    assert!(
        !last
            .iter()
            .any(|c| matches!(c, AgentCommand::StartCms { .. }))
    );
    assert_eq!(a.next_deadline(), None);
}

#[test]
fn cluster_manual_start_never_starts_an_absent_cms() {
    let mut a = boot(DnRole::Standby);
    a.step(
        ms(100),
        AgentInput::FlagsObserved(FlagSet {
            cluster_manual_start: Some(StopMode::Fast),
            ..FlagSet::default()
        }),
    );
    let cmds = cms_round(&mut a, ms(1000), vec![]);
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, AgentCommand::StartCms { .. })),
        "{cmds:?}"
    );
}
