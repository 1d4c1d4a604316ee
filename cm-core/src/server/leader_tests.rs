//! cm_ctl requests, leadership changes and command sequencing.

use crate::ctl::{CtlReply, CtlRequest, Refusal};
use crate::ids::{InstanceId, NodeId, QuorumTerm};
use crate::msg::CmsCommand;
use crate::params::ParamSide;
use crate::server::harness::{CommittedRef, H, command, dn, reply};
use crate::server::leader::LeaderOutput;
use crate::state::Change;

#[test]
fn pause_and_resume_reply_once_committed() {
    let mut h = H::new(3);
    assert_eq!(h.ctl(1, CtlRequest::Pause), vec![]);
    // Stamped with the leader's wall clock (two-node healing keeps the newer request, §5.4).
    let at = h.wall;
    assert_eq!(h.queued(), vec![Change::SetPausedAt { paused: true, at }]);
    assert_eq!(h.commit(), vec![reply(1, CtlReply::Accepted)]);
    assert!(h.state.state_mut().paused);
    h.ctl(2, CtlRequest::Resume);
    assert_eq!(h.commit(), vec![reply(2, CtlReply::Accepted)]);
    assert!(!h.state.state_mut().paused);
    assert_eq!(h.state.state_mut().paused_at, Some(h.wall));
}

#[test]
fn a_dropped_proposal_is_refused_as_not_leader() {
    let mut h = H::new(3);
    h.ctl(1, CtlRequest::ClusterStopping);
    h.state.drop_all();
    let outcomes = crate::state::ReplicatedState::take_outcomes(&mut h.state);
    let out = h.leader.on_outcomes(h.now, h.wall, outcomes, &mut h.state);
    assert_eq!(
        out,
        vec![reply(
            1,
            CtlReply::Refused(Refusal::NotLeader { leader: None })
        )]
    );
}

#[test]
fn set_param_is_validated_then_committed_and_takes_effect() {
    let mut h = H::new(3);
    let set = |name: &str, value: &str, side| CtlRequest::SetParam {
        side,
        name: name.into(),
        value: value.into(),
    };
    let out = h.ctl(1, set("wait_static_primary_times", "3", ParamSide::Server));
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Invalid(_)),
            ..
        }]
    ));
    let out = h.ctl(
        1,
        set("agent_phony_dead_check_interval", "5", ParamSide::Server),
    );
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Invalid(_)),
            ..
        }]
    ));
    assert_eq!(
        h.ctl(
            2,
            set("cluster_starting_aribt_delay", "30", ParamSide::Server)
        ),
        vec![]
    );
    assert_eq!(
        h.queued(),
        vec![Change::SetParam {
            name: "cluster_starting_arbit_delay".into(),
            value: "30".into()
        }]
    );
    assert_eq!(h.commit(), vec![reply(2, CtlReply::Accepted)]);
    h.tick();
    assert_eq!(h.leader.params().cluster_starting_arbit_delay, 30);
    let out = h.ctl(3, CtlRequest::ListParams);
    let LeaderOutput::Reply {
        reply: CtlReply::Params(list),
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert!(list.contains(&(
        "cluster_starting_arbit_delay".into(),
        ParamSide::Server,
        "30".into()
    )));
}

#[test]
fn cluster_starting_and_stopping_commit_their_flags() {
    let mut h = H::new(3);
    h.ctl(1, CtlRequest::ClusterStarting { timeout_s: 300 });
    let until = h.wall.saturating_add(core::time::Duration::from_secs(300));
    assert_eq!(
        h.queued(),
        vec![Change::SetStopping(false), Change::SetStarting(Some(until))]
    );
    assert_eq!(h.commit(), vec![reply(1, CtlReply::Accepted)]);
    h.ctl(2, CtlRequest::ClusterStopping);
    assert_eq!(
        h.queued(),
        vec![Change::SetStarting(None), Change::SetStopping(true)]
    );
}

#[test]
fn build_goes_to_a_standby_from_the_primary() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert_eq!(
        h.ctl(
            5,
            CtlRequest::Build {
                instance: InstanceId(6003),
                full: false,
            }
        ),
        vec![
            command(
                3,
                1,
                CmsCommand::Build {
                    source: InstanceId(6001),
                    full: false,
                }
            ),
            reply(5, CtlReply::Accepted)
        ]
    );
    let out = h.ctl(
        6,
        CtlRequest::Build {
            instance: InstanceId(6001),
            full: false,
        },
    );
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Refused(Refusal::Invalid(_)),
            ..
        }]
    ));
}

/// `cm_ctl build --full`: the leader's Build command carries `full` to the agent.
#[test]
fn a_full_build_is_passed_on_as_full() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert_eq!(
        h.ctl(
            5,
            CtlRequest::Build {
                instance: InstanceId(6002),
                full: true,
            }
        ),
        vec![
            command(
                2,
                1,
                CmsCommand::Build {
                    source: InstanceId(6001),
                    full: true,
                }
            ),
            reply(5, CtlReply::Accepted)
        ]
    );
}

#[test]
fn a_deposed_leader_refuses_and_a_new_term_restarts_command_sequences() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.ctl(
        5,
        CtlRequest::Build {
            instance: InstanceId(6003),
            full: false,
        },
    );
    h.leader.on_deposed();
    assert_eq!(
        h.ctl(1, CtlRequest::Pause),
        vec![reply(
            1,
            CtlReply::Refused(Refusal::NotLeader { leader: None })
        )]
    );
    assert_eq!(h.report(dn(1).down()), vec![]);
    h.advance_ms(1000);
    h.leader
        .on_elected(h.now, h.wall, QuorumTerm(2), &mut h.state);
    h.healthy_round(3);
    let out = h.ctl(
        5,
        CtlRequest::Build {
            instance: InstanceId(6003),
            full: false,
        },
    );
    let LeaderOutput::Command { cmd, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(
        cmd.seq.0, 1,
        "sequence numbers restart under a new quorum term"
    );
}

#[test]
fn query_returns_the_status() {
    let mut h = H::new(3);
    h.healthy_round(3);
    let out = h.ctl(9, CtlRequest::Query);
    assert!(matches!(
        &out[..],
        [LeaderOutput::Reply {
            reply: CtlReply::Status(_),
            ..
        }]
    ));
}

#[test]
fn a_report_older_than_the_newest_from_the_same_agent_is_dropped() {
    use crate::ids::{NodeId, ReportSeq};
    use crate::msg::AgentReport;
    let mut h = H::new(3);
    h.healthy_round(3);
    let send = |h: &mut H, seq: u64, r: crate::server::harness::Rb| {
        let rep = AgentReport {
            seq: ReportSeq(seq),
            dns: vec![r.0],
            cms_process: None,
            normal_start: false,
            resources: Vec::new(),
        };
        h.leader
            .on_report(h.now, h.wall, NodeId(1), &rep, &mut h.state)
    };
    h.advance_ms(100);
    assert_eq!(send(&mut h, 1000, dn(1).primary(1)), vec![]);
    // A delayed frame from before: the primary "down". Acting on it would send Lock1s.
    h.advance_ms(100);
    assert_eq!(send(&mut h, 999, dn(1).down()), vec![]);
    assert_eq!(
        h.leader.groups()[&crate::server::harness::G].members[0]
            .report
            .as_ref()
            .map(|r| r.role),
        Some(crate::dn::DnRole::Primary)
    );
    // A restarted agent counts from 1 again: heard once the resend interval passed.
    h.advance_ms(3000);
    send(&mut h, 1, dn(1).down());
    assert_eq!(
        h.leader.groups()[&crate::server::harness::G].members[0]
            .report
            .as_ref()
            .map(|r| r.role),
        Some(crate::dn::DnRole::Down)
    );
}

/// §5.1, §10: `cms --readd NODE` commits `SetVoter { voter: true }` for a non-voter CMS; a
/// voter, a node without a cm_server or an unknown node is refused with the reason.
#[test]
fn readd_cms_makes_a_non_voter_vote_again_and_refuses_anything_else() {
    let mut h = H::new(3);
    h.state.state_mut().non_voters.insert(NodeId(102));
    assert_eq!(h.ctl(1, CtlRequest::ReaddCms { node: NodeId(102) }), vec![]);
    assert_eq!(
        h.queued(),
        vec![Change::SetVoter {
            node: NodeId(102),
            voter: true
        }]
    );
    assert_eq!(h.commit(), vec![reply(1, CtlReply::Accepted)]);
    assert!(h.state.committed_ref().non_voters.is_empty());
    for (client, node, why) in [
        (2, 102, "is a voter already"),
        (3, 1, "runs no cm_server"),
        (4, 77, "no node 77"),
    ] {
        let out = h.ctl(client, CtlRequest::ReaddCms { node: NodeId(node) });
        let [
            LeaderOutput::Reply {
                reply: CtlReply::Refused(Refusal::Invalid(text)),
                ..
            },
        ] = &out[..]
        else {
            panic!("node {node}: {out:?}");
        };
        assert!(text.contains(why), "node {node}: {text}");
    }
}
