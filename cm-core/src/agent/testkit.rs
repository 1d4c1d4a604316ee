//! Test helpers shared by the agent's handler tests: a small cluster, envelopes, statuses, and
//! a `boot` that brings an agent to a known steady state.

pub(super) use core::time::Duration;

pub(super) use super::*;
pub(super) use crate::dn::{DbState, Downstream, History, LockState, StopMode};
pub(super) use crate::history::PromotionReason;
pub(super) use crate::ids::{CmdSeq, Position, ReportSeq, Timeline};
pub(super) use crate::msg::{
    AgentReport, CmsCommand, Envelope, Msg, ReportAnswer, ReportReply, SequencedCommand,
};

/// Three nodes, each running a CMS; group 1 = 6001 (node 1), 6002 (node 2), 6003 (node 3).
pub(super) const ONE_DN: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "10.0.0.1"
az = "AZ1"
state_dir = "/s/n1"
monitor_port = 17001
cms_port = 17101
[[node]]
id = 2
name = "n2"
address = "10.0.0.2"
az = "AZ1"
state_dir = "/s/n2"
monitor_port = 17001
cms_port = 17101
[[node]]
id = 3
name = "n3"
address = "10.0.0.3"
az = "AZ1"
state_dir = "/s/n3"
monitor_port = 17001
cms_port = 17101
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d/6001"
port = 5432
[[group.member]]
instance = 6002
node = 2
data_dir = "/d/6002"
port = 5432
[[group.member]]
instance = 6003
node = 3
data_dir = "/d/6003"
port = 5432
[params]
# Disk probes left unanswered by a test must not turn into hung probes: tests of the disk rule
# lower it again.
disk_check_timeout = 3600000
"#;

/// `ONE_DN` plus a single-member group 2 whose DN 7001 also lives on node 1.
pub(super) fn two_dn_config() -> String {
    format!(
        "{ONE_DN}\n[[group]]\nid = 2\n[[group.member]]\ninstance = 7001\nnode = 1\n\
         data_dir = \"/d/7001\"\nport = 5433\n"
    )
}

pub(super) const ME: NodeId = NodeId(1);
pub(super) const DN: InstanceId = InstanceId(6001);
pub(super) const DN2: InstanceId = InstanceId(7001);
pub(super) const CMS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

pub(super) fn config(text: &str) -> ClusterConfig {
    ClusterConfig::from_toml_str(text).expect("valid test config")
}

pub(super) fn agent() -> Agent {
    Agent::new(&config(ONE_DN), ME, 1, None).expect("agent")
}

pub(super) fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

/// An envelope from a CMS to this agent.
pub(super) fn from_cms(cms: NodeId, qterm: u64, msg: Msg) -> AgentInput {
    AgentInput::Net(NetEvent::FrameReceived {
        peer: Endpoint::server(cms),
        envelope: Envelope {
            from: Endpoint::server(cms),
            to: Endpoint::agent(ME),
            quorum_term: QuorumTerm(qterm),
            msg,
        },
    })
}

pub(super) fn leader_reply(cms: NodeId, qterm: u64, seq: u64, paused: bool) -> AgentInput {
    from_cms(
        cms,
        qterm,
        Msg::ReportReply(ReportReply {
            seq: ReportSeq(seq),
            answer: ReportAnswer::Leader {
                paused,
                stopping: false,
                groups: Vec::new(),
                resources: Vec::new(),
            },
        }),
    )
}

pub(super) fn command(cms: NodeId, qterm: u64, seq: u64, cmd: CmsCommand) -> AgentInput {
    from_cms(
        cms,
        qterm,
        Msg::Command(SequencedCommand {
            instance: DN,
            seq: CmdSeq(seq),
            cmd,
        }),
    )
}

/// An envelope the agent sends to a CMS.
pub(super) fn to_cms(agent: &Agent, cms: NodeId, msg: Msg) -> AgentCommand {
    AgentCommand::Net(NetCommand::Send {
        envelope: Envelope {
            from: Endpoint::agent(ME),
            to: Endpoint::server(cms),
            quorum_term: agent.highest_qterm,
            msg,
        },
    })
}

pub(super) fn status(role: DnRole) -> DnStatus {
    DnStatus {
        role,
        db_state: DbState::Normal,
        position: Position::new(1, 100),
        history: History::root(Timeline(1)),
        lock: LockState::None,
        upstream: None,
        downstreams: Vec::new(),
        read_only: false,
        receiver_error: None,
        replay: None,
    }
}

pub(super) fn primary_with(downstreams: &[(u32, u64)]) -> DnStatus {
    DnStatus {
        downstreams: downstreams
            .iter()
            .map(|&(i, age_ms)| Downstream {
                instance: InstanceId(i),
                reply_age: Duration::from_millis(age_ms),
            })
            .collect(),
        ..status(DnRole::Primary)
    }
}

/// The op of the first command matching `pick`.
pub(super) fn op_of(cmds: &[AgentCommand], pick: impl Fn(&AgentCommand) -> Option<OpId>) -> OpId {
    cmds.iter()
        .find_map(pick)
        .unwrap_or_else(|| panic!("no such command in {cmds:#?}"))
}

pub(super) fn sample_op(cmds: &[AgentCommand], inst: InstanceId) -> OpId {
    op_of(cmds, |c| match c {
        AgentCommand::SampleProcesses { op, instance } if *instance == inst => Some(*op),
        _ => None,
    })
}

pub(super) fn query_op(cmds: &[AgentCommand], inst: InstanceId) -> OpId {
    op_of(cmds, |c| match c {
        AgentCommand::QueryDnStatus { op, instance } if *instance == inst => Some(*op),
        _ => None,
    })
}

pub(super) fn cms_sample_op(cmds: &[AgentCommand]) -> OpId {
    op_of(cmds, |c| match c {
        AgentCommand::SampleCms { op } => Some(*op),
        _ => None,
    })
}

pub(super) fn cms_sampled(op: OpId, processes: Vec<ProcState>) -> AgentInput {
    AgentInput::CmsSampled { op, processes }
}

pub(super) fn action_op(cmds: &[AgentCommand]) -> OpId {
    op_of(cmds, |c| match c {
        AgentCommand::RunDnAction { op, .. } => Some(*op),
        _ => None,
    })
}

pub(super) fn persist_token(cmds: &[AgentCommand]) -> WriteToken {
    cmds.iter()
        .find_map(|c| match c {
            AgentCommand::PersistState(p) => Some(p.token),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no PersistState in {cmds:#?}"))
}

pub(super) fn write_ok(token: WriteToken) -> AgentInput {
    AgentInput::WriteCompleted(WriteCompleted {
        token,
        result: Ok(()),
    })
}

pub(super) fn run(op: OpId, action: DnAction) -> AgentCommand {
    AgentCommand::RunDnAction {
        op,
        instance: DN,
        action,
    }
}

pub(super) fn sampled(op: OpId, processes: Vec<ProcState>) -> AgentInput {
    AgentInput::ProcessesSampled {
        op,
        instance: DN,
        processes,
    }
}

pub(super) fn queried(op: OpId, result: Result<DnStatus, String>) -> AgentInput {
    AgentInput::DnStatusQueried {
        op,
        instance: DN,
        result,
    }
}

pub(super) fn done(op: OpId) -> AgentInput {
    AgentInput::ActionCompleted {
        op,
        instance: DN,
        result: Ok(()),
    }
}

pub(super) fn reports(cmds: &[AgentCommand]) -> Vec<(NodeId, AgentReport)> {
    cmds.iter()
        .filter_map(|c| match c {
            AgentCommand::Net(NetCommand::Send { envelope }) => match &envelope.msg {
                Msg::AgentReport(r) => Some((envelope.to.node, r.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Brings a fresh one-DN agent to a steady state at t = 0: connected to every CMS, flags read
/// (none), the local CMS (if any) and DN 6001 sampled running with `role`, and node 1 the
/// leader of quorum term 1
/// (durably recorded). Returns the agent; the next status round is due at 1 s.
pub(super) fn boot(role: DnRole) -> Agent {
    boot_with(agent(), role)
}

pub(super) fn boot_with(mut a: Agent, role: DnRole) -> Agent {
    let now = ms(0);
    let cmds = a.step(now, AgentInput::Tick);
    for c in &cmds {
        if let AgentCommand::ProbeDisk { op, instance, .. } = c {
            let ok = AgentInput::DiskProbed {
                op: *op,
                instance: *instance,
                result: Ok(()),
                elapsed: Duration::ZERO,
            };
            a.step(now, ok);
        }
    }
    for n in CMS {
        a.step(
            now,
            AgentInput::Net(NetEvent::Connected {
                peer: Endpoint::server(n),
            }),
        );
    }
    a.step(now, AgentInput::FlagsObserved(FlagSet::default()));
    if a.local_cms.is_some() {
        a.step(
            now,
            cms_sampled(cms_sample_op(&cmds), vec![ProcState::Running]),
        );
    }
    let ids: Vec<InstanceId> = a.insts.keys().copied().collect();
    for id in ids {
        let s = sample_op(&cmds, id);
        let q = query_op(&cmds, id);
        a.step(
            now,
            AgentInput::ProcessesSampled {
                op: s,
                instance: id,
                processes: vec![ProcState::Running],
            },
        );
        a.step(
            now,
            AgentInput::DnStatusQueried {
                op: q,
                instance: id,
                result: Ok(status(role)),
            },
        );
    }
    // Report #0 was withheld (nothing sampled yet): make the leader answer a report we send now.
    let mut out = Vec::new();
    a.send_report(now, &mut out);
    let seq = a.cms.report_seq;
    let qterm = a.highest_qterm.0.max(1);
    let cmds = a.step(now, leader_reply(CMS[0], qterm, seq, false));
    if cmds
        .iter()
        .any(|c| matches!(c, AgentCommand::PersistState(_)))
    {
        a.step(now, write_ok(persist_token(&cmds)));
    }
    assert_eq!(a.cms.leader, Some(CMS[0]), "boot: node 1 leads");
    a
}

/// One tick at `now`.
pub(super) fn tick(a: &mut Agent, now: Instant) -> Vec<AgentCommand> {
    a.step(now, AgentInput::Tick)
}
