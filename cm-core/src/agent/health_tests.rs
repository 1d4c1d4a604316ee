use crate::agent::testkit::*;
use crate::codec::encode_persisted;
use crate::ids::GroupId;
use crate::msg::GroupView;

const TERM: Term = Term(3);

fn kills(cmds: &[AgentCommand]) -> usize {
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
        .count()
}

/// A booted agent whose DN 6001 runs as `role` with durable CM term 3 (boot's leader answer at
/// 0 ms carried no group view).
fn booted(role: DnRole) -> Agent {
    let mut store = Persisted::default();
    store.instances.insert(
        DN,
        PersistedInstance {
            term: TERM,
            ..PersistedInstance::default()
        },
    );
    let bytes = encode_persisted(&store).expect("encode");
    boot_with(
        Agent::new(&config(ONE_DN), ME, 1, Some(bytes)).expect("agent"),
        role,
    )
}

fn view(primary: u32, term: u64) -> GroupView {
    GroupView {
        group: GroupId(1),
        primary: InstanceId(primary),
        term: Term(term),
        primary_position: None,
    }
}

/// The agent sends a report at `sent`; the leader `cms` (quorum term `qterm`) answers it at
/// `answered` with `groups`. Returns the report's sequence number.
fn report_at(a: &mut Agent, sent: Instant) -> u64 {
    let mut out = Vec::new();
    a.send_report(sent, &mut out);
    assert!(!reports(&out).is_empty(), "a report went out at {sent}");
    a.cms.report_seq
}

fn answer(a: &mut Agent, at: Instant, cms: NodeId, qterm: u64, seq: u64, groups: Vec<GroupView>) {
    let reply = Msg::ReportReply(ReportReply {
        seq: ReportSeq(seq),
        answer: ReportAnswer::Leader {
            paused: false,
            stopping: false,
            groups,
            resources: Vec::new(),
        },
    });
    a.step(at, from_cms(cms, qterm, reply));
}

/// Answers every status query and process sample of `cmds` with a running DN in `status`.
fn feed(a: &mut Agent, now: Instant, cmds: &[AgentCommand], s: &DnStatus) {
    for c in cmds {
        match c {
            AgentCommand::SampleProcesses { op, .. } => {
                a.step(now, sampled(*op, vec![ProcState::Running]));
            }
            AgentCommand::QueryDnStatus { op, .. } => {
                a.step(now, queried(*op, Ok(s.clone())));
            }
            _ => {}
        }
    }
}

/// §15: the report sent at 1 s and answered naming 6001 at its term keeps `/primary` 200 until
/// 1 s + (6 s − 2 × 1 s) = 5 s exclusive; the self-fence (counted from the same send time) kills
/// the DN at 7 s — 2 s (two report intervals) after `/primary` turned 503.
#[test]
fn primary_turns_503_two_report_intervals_before_the_self_fence() {
    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1010), CMS[0], 1, seq, vec![view(6001, 3)]);
    assert_eq!(a.primary(DN, ms(1010)), Ok(()));
    assert_eq!(a.primary(DN, ms(4999)), Ok(()));
    assert_eq!(
        a.primary(DN, ms(5000)),
        Err(NotWritable::LeaseExpired {
            sent_ago: Duration::from_secs(4),
            window: Duration::from_secs(4),
        })
    );
    assert_eq!(a.write_lease(DN, ms(5000)), a.primary(DN, ms(5000)));
    // The self-fence, driven by ticks every 100 ms (no standby streams: the status stays the
    // boot one, with no downstreams).
    let mut first_kill = None;
    for t in (1100..=8000).step_by(100) {
        let cmds = tick(&mut a, ms(t));
        if kills(&cmds) > 0 {
            first_kill = Some(t);
            break;
        }
        // `/primary` holds while no fence is near and never once the kill is 2 s away.
        assert_eq!(a.primary(DN, ms(t)).is_ok(), t < 5000, "at {t} ms");
    }
    assert_eq!(first_kill, Some(7000));
    assert!(a.primary(DN, ms(7000)).is_err());
}

/// §15: an ordinary CMS leader change — the last answer of the old leader for the report sent
/// at 1 s, the first of the new one for the report sent at 6.2 s (5.2 s later) — keeps
/// `/primary` 200 throughout, because a standby streams from the primary (§8's exception), and
/// the agent does not fence. Without that stream it turns 503 at 5 s.
#[test]
fn primary_stays_200_across_a_leader_change_of_5_2_s_while_a_standby_streams() {
    for streaming in [true, false] {
        let mut a = booted(DnRole::Primary);
        let seq = report_at(&mut a, ms(1000));
        answer(&mut a, ms(1010), CMS[0], 1, seq, vec![view(6001, 3)]);
        let s = if streaming {
            primary_with(&[(6002, 100)])
        } else {
            status(DnRole::Primary)
        };
        let mut first_503 = None;
        for t in (1100..6200).step_by(100) {
            let cmds = tick(&mut a, ms(t));
            assert_eq!(kills(&cmds), 0, "no fence at {t} ms");
            feed(&mut a, ms(t), &cmds, &s);
            if first_503.is_none() && a.primary(DN, ms(t)).is_err() {
                first_503 = Some(t);
            }
        }
        let seq = report_at(&mut a, ms(6200));
        answer(&mut a, ms(6210), CMS[1], 2, seq, vec![view(6001, 3)]);
        assert_eq!(a.cms.leader, Some(CMS[1]));
        if streaming {
            assert_eq!(first_503, None);
            assert_eq!(a.primary(DN, ms(6210)), Ok(()));
        } else {
            assert_eq!(first_503, Some(5000));
            // The new leader's answer restores it.
            assert_eq!(a.primary(DN, ms(6210)), Ok(()));
        }
    }
}

/// Swarm seed 1575 (S8): a whole host frozen for 50 s; at the thaw the agent got the answer of
/// a status query sent before the freeze, whose streaming row was fresh when it was read. A
/// sample is as old as its query: the answer neither keeps `/primary` 200 nor holds off the
/// self-fence (§8's exception needs a fresh sample), so the old primary, failed over meanwhile,
/// does not answer 200 beside the new one.
#[test]
fn a_status_answer_delayed_by_a_freeze_is_as_old_as_its_query() {
    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1010), CMS[0], 1, seq, vec![view(6001, 3)]);
    let streaming = primary_with(&[(6002, 100)]);
    let mut query = None;
    for t in (1100..3000).step_by(100) {
        let cmds = tick(&mut a, ms(t));
        query = cmds.iter().find_map(|c| match c {
            AgentCommand::QueryDnStatus { op, .. } => Some((*op, t)),
            _ => None,
        });
        if query.is_some() {
            break;
        }
    }
    let (op, sent) = query.expect("a status query within 2 s");
    // The frozen agent: the answer arrives 50 s after its query.
    let thaw = ms(sent + 50_000);
    a.step(thaw, queried(op, Ok(streaming)));
    assert!(matches!(
        a.primary(DN, thaw),
        Err(NotWritable::LeaseExpired { .. })
    ));
    assert_eq!(kills(&tick(&mut a, thaw)), 1, "self-fenced at the thaw");
}

/// §15: a Lock1, Demote or Restart accepted for the primary makes `/primary` 503 at once (the
/// lease-and-role part still holds: placement moves only with the role); an Unlock releases it.
#[test]
fn primary_is_503_once_lock1_demote_or_restart_is_accepted() {
    for cmd in [CmsCommand::Lock1, CmsCommand::Demote, CmsCommand::Restart] {
        let mut a = booted(DnRole::Primary);
        let seq = report_at(&mut a, ms(1000));
        answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
        assert_eq!(a.primary(DN, ms(1100)), Ok(()));
        a.step(ms(1100), command(CMS[0], 1, 1, cmd.clone()));
        assert_eq!(
            a.primary(DN, ms(1100)),
            Err(NotWritable::SteppingDown),
            "{cmd}"
        );
        if cmd == CmsCommand::Lock1 {
            assert_eq!(a.write_lease(DN, ms(1100)), Ok(()));
            a.step(
                ms(1200),
                command(CMS[0], 1, 2, CmsCommand::Unlock { primary: DN }),
            );
            assert_eq!(a.primary(DN, ms(1200)), Ok(()));
        }
    }
    // A command from a CMS that is not the leader is not accepted and changes nothing.
    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    a.step(ms(1100), command(CMS[1], 1, 1, CmsCommand::Lock1));
    assert_eq!(a.primary(DN, ms(1100)), Ok(()));
}

/// §15: the newest answered report must name this instance the primary at its own term: an
/// answer naming another primary, or an older or newer term, is 503 even with fresh contact.
#[test]
fn primary_is_503_when_the_answer_names_another_primary_or_another_term() {
    let cases = [
        (
            view(6002, 4),
            NotWritable::OtherPrimary {
                primary: InstanceId(6002),
                term: Term(4),
            },
        ),
        (
            view(6001, 2),
            NotWritable::TermMismatch {
                own: TERM,
                group: Term(2),
            },
        ),
        (
            view(6001, 4),
            NotWritable::TermMismatch {
                own: TERM,
                group: Term(4),
            },
        ),
    ];
    for (v, why) in cases {
        let mut a = booted(DnRole::Primary);
        let seq = report_at(&mut a, ms(1000));
        answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
        assert_eq!(a.primary(DN, ms(1500)), Ok(()));
        let seq = report_at(&mut a, ms(2000));
        answer(&mut a, ms(2000), CMS[0], 1, seq, vec![v]);
        assert_eq!(a.primary(DN, ms(2000)), Err(why.clone()));
        assert_eq!(a.write_lease(DN, ms(2000)), Err(why));
    }
}

/// A late answer to an older report does not replace the view of a newer one; an answer that
/// carries no view (a leader that has not committed in its term yet) leaves it as it was.
#[test]
fn the_view_of_the_newest_report_wins() {
    let mut a = booted(DnRole::Primary);
    let old = report_at(&mut a, ms(1000));
    let new = report_at(&mut a, ms(2000));
    answer(&mut a, ms(2000), CMS[0], 1, new, vec![view(6002, 4)]);
    answer(&mut a, ms(2100), CMS[0], 1, old, vec![view(6001, 3)]);
    assert!(matches!(
        a.primary(DN, ms(2100)),
        Err(NotWritable::OtherPrimary { .. })
    ));
    let mut a = booted(DnRole::Primary);
    assert_eq!(a.primary(DN, ms(0)), Err(NotWritable::NoLeaderView));
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    let seq = report_at(&mut a, ms(2000));
    answer(&mut a, ms(2000), CMS[0], 1, seq, Vec::new());
    // Still counted from 1 s, not from 2 s.
    assert_eq!(a.primary(DN, ms(4999)), Ok(()));
    assert!(a.primary(DN, ms(5000)).is_err());
}

/// The rest of `/primary`: a failed status query and read-only make it 503 while the write
/// lease (placement, §14) holds; a standby, a killed DN and an unknown instance have neither.
#[test]
fn primary_needs_a_good_status_query_and_read_write_but_the_write_lease_does_not() {
    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    let cmds = tick(&mut a, ms(1000));
    a.step(
        ms(1000),
        queried(query_op(&cmds, DN), Err("timeout".into())),
    );
    assert_eq!(a.primary(DN, ms(1100)), Err(NotWritable::StatusQueryFailed));
    assert_eq!(a.write_lease(DN, ms(1100)), Ok(()));
    let cmds = tick(&mut a, ms(2000));
    let ro = DnStatus {
        read_only: true,
        ..status(DnRole::Primary)
    };
    a.step(ms(2000), queried(query_op(&cmds, DN), Ok(ro)));
    assert_eq!(a.primary(DN, ms(2000)), Err(NotWritable::ReadOnly));
    assert_eq!(a.write_lease(DN, ms(2000)), Ok(()));
    assert_eq!(
        a.primary(InstanceId(9999), ms(2000)),
        Err(NotWritable::UnknownInstance)
    );

    let mut a = booted(DnRole::Standby);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    assert_eq!(
        a.write_lease(DN, ms(1000)),
        Err(NotWritable::NotPrimary {
            role: Some(DnRole::Standby)
        })
    );

    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    let mut out = Vec::new();
    a.fence(DN, "test", &mut out);
    assert_eq!(a.write_lease(DN, ms(1000)), Err(NotWritable::NotRunning));
}

/// The streaming exception counts rows by their age at `now`: a sample whose row was 1.5 s old
/// when read protects the lease until it is 2 s old (the reply staleness bound), no longer.
#[test]
fn the_streaming_exception_ages_with_the_sample() {
    let mut a = booted(DnRole::Primary);
    let seq = report_at(&mut a, ms(1000));
    answer(&mut a, ms(1000), CMS[0], 1, seq, vec![view(6001, 3)]);
    let cmds = tick(&mut a, ms(5000));
    a.step(
        ms(5000),
        queried(query_op(&cmds, DN), Ok(primary_with(&[(6002, 1500)]))),
    );
    assert_eq!(a.primary(DN, ms(5499)), Ok(()));
    assert!(matches!(
        a.primary(DN, ms(5500)),
        Err(NotWritable::LeaseExpired { .. })
    ));
}

fn queries(cmds: &[AgentCommand]) -> Vec<NodeId> {
    cmds.iter()
        .filter_map(|c| match c {
            AgentCommand::Net(NetCommand::Send { envelope }) => match &envelope.msg {
                Msg::CtlRequest {
                    req: crate::ctl::CtlRequest::Query,
                    ..
                } => Some(envelope.to.node),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// §15 `/cluster`: an agent whose node has a `rest_port` asks the leader (only) for the cluster
/// status once a second and keeps the leader's answer with its receipt; without a `rest_port`
/// it asks nothing, and a status from a CMS that is not its leader is ignored.
#[test]
fn an_agent_serving_http_asks_its_leader_for_the_cluster_status_each_second() {
    let text = ONE_DN.replacen(
        "cms_port = 17101\n",
        "cms_port = 17101\nrest_port = 8008\n",
        1,
    );
    let mut a = boot_with(
        Agent::new(&config(&text), ME, 1, None).expect("agent"),
        DnRole::Primary,
    );
    assert_eq!(queries(&tick(&mut a, ms(1000))), vec![CMS[0]]);
    assert_eq!(queries(&tick(&mut a, ms(1200))), Vec::<NodeId>::new());
    assert_eq!(queries(&tick(&mut a, ms(2000))), vec![CMS[0]]);
    let status: crate::ctl::ClusterStatus = toml::from_str(
        "cluster = \"t\"\nquorum_term = 1\ncms = []\nstate = \"Normal\"\nbalanced = true\n\
         paused = false\ngroups = []\n",
    )
    .expect("status");
    let reply = |cms: NodeId| {
        from_cms(
            cms,
            1,
            Msg::CtlReply {
                id: 1,
                reply: crate::ctl::CtlReply::Status(Box::new(status.clone())),
            },
        )
    };
    a.step(ms(2100), reply(CMS[1]));
    assert_eq!(a.health().cluster, None);
    a.step(ms(2100), reply(CMS[0]));
    let (at, got) = a.health().cluster.expect("kept");
    assert_eq!((at, &*got), (ms(2100), &status));

    let mut a = booted(DnRole::Primary);
    assert_eq!(queries(&tick(&mut a, ms(1000))), Vec::<NodeId>::new());
}
