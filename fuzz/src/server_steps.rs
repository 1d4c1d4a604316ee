//! The `server_steps` target: a cm_server (`Server` = quorum + leader) fed an arbitrary
//! sequence of inputs decoded from the fuzz bytes: ticks, write completions, quorum messages of
//! any kind and term from its peers, agent reports, term checks, cm_ctl requests, connection
//! events, wall-clock readings and fence results. Half of the inputs run on a single-CMS
//! cluster, so the leader paths are reached without winning an election.

use cm_core::config::ClusterConfig;
use cm_core::ctl::CtlRequest;
use cm_core::dn::{DbState, DnReport, DnRole, History, LockState};
use cm_core::ids::{
    CmdSeq, CmdStamp, GroupId, InstanceId, LogIndex, NodeId, Position, QuorumTerm, ReportSeq, Term,
    WriteToken,
};
use cm_core::io::{Machine, NetEvent, WriteCompleted};
use cm_core::msg::{AgentReport, Endpoint, Envelope, Msg, Role};
use cm_core::params::ParamSide;
use cm_core::server::quorum::QuorumMsg;
use cm_core::server::{Server, ServerCommand, ServerInput};
use cm_core::time::{Instant, WallMillis};

use crate::bytes::{Bytes, push_bounded};

fn single_cms() -> &'static ClusterConfig {
    static CONFIG: std::sync::OnceLock<ClusterConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = crate::SAMPLE_CONFIG.replacen("cms_port = 17101\n", "", 3);
        let text = text.replacen(
            "monitor_port = 17001\n",
            "monitor_port = 17001\ncms_port = 17101\n",
            1,
        );
        ClusterConfig::from_toml_str(&text).expect("single-CMS sample config")
    })
}

fn quorum_msg(b: &mut Bytes<'_>) -> QuorumMsg {
    let t = QuorumTerm(u64::from(b.small(6)));
    let i = LogIndex(u64::from(b.small(8)));
    match b.below(8) {
        0 => QuorumMsg::PreVote {
            term: t,
            last_term: t,
            last_index: i,
        },
        1 => QuorumMsg::PreVoteReply {
            term: t,
            granted: b.bool(),
        },
        2 => QuorumMsg::Vote {
            last_term: t,
            last_index: i,
        },
        3 => QuorumMsg::VoteReply { granted: b.bool() },
        4 => QuorumMsg::Append {
            prev_index: i,
            prev_term: t,
            entries: Vec::new(),
            commit: LogIndex(u64::from(b.small(8))),
            round: u64::from(b.u8()),
        },
        5 => QuorumMsg::AppendReply {
            success: b.bool(),
            match_index: i,
            round: u64::from(b.u8()),
        },
        6 => QuorumMsg::Hello {
            nonce: u64::from(b.u8()),
            rejoining: b.bool(),
        },
        _ => QuorumMsg::HelloReply {
            nonce: u64::from(b.u8()),
            counted: b.bool(),
            last_index: i,
        },
    }
}

fn dn_report(b: &mut Bytes<'_>, instance: InstanceId) -> DnReport {
    let mut d = DnReport::down(instance);
    d.role = [
        DnRole::Primary,
        DnRole::Standby,
        DnRole::Pending,
        DnRole::Unknown,
        DnRole::Down,
    ][b.below(5)];
    d.db_state = [
        DbState::Normal,
        DbState::Unknown,
        DbState::Starting,
        DbState::NeedRepair,
    ][b.below(4)];
    d.term = Term(u64::from(b.small(5)));
    d.position = Position::new(u32::from(b.small(3)) + 1, u64::from(b.u8()) * 1000);
    d.history = History::root(d.position.timeline);
    d.lock = [LockState::None, LockState::Prohibit, LockState::Unknown][b.below(3)];
    d.last_applied = CmdStamp {
        quorum_term: QuorumTerm(u64::from(b.small(4))),
        seq: CmdSeq(u64::from(b.small(20))),
    };
    d.phony_dead_hits = u32::from(b.small(7));
    d.data_disk_pct = b.small(100);
    d.read_only = b.bool();
    d
}

fn ctl_request(b: &mut Bytes<'_>) -> CtlRequest {
    match b.below(10) {
        0 => CtlRequest::Query,
        1 => CtlRequest::Pause,
        2 => CtlRequest::Resume,
        3 => CtlRequest::Switchover {
            instance: InstanceId(6001 + u32::from(b.small(3))),
            fast: b.bool(),
        },
        4 => CtlRequest::SwitchoverAll,
        5 => CtlRequest::ClusterStarting {
            timeout_s: u32::from(b.u8()),
        },
        6 => CtlRequest::ClusterStopping,
        7 => CtlRequest::SetParam {
            side: ParamSide::Server,
            name: [
                "phony_dead_effective_time",
                "nope",
                "datastorage_threshold_value_check",
            ][b.below(3)]
            .into(),
            value: ["3", "0", "x", "99"][b.below(4)].into(),
        },
        8 => CtlRequest::ReaddCms {
            node: NodeId(1 + u32::from(b.small(3))),
        },
        _ => CtlRequest::Build {
            instance: InstanceId(6001 + u32::from(b.small(3))),
            full: b.small(1) == 1,
        },
    }
}

fn frame(from: Endpoint, to: NodeId, term: QuorumTerm, msg: Msg) -> ServerInput {
    ServerInput::Net(NetEvent::FrameReceived {
        peer: from,
        envelope: Envelope {
            from,
            to: Endpoint::server(to),
            quorum_term: term,
            msg,
        },
    })
}

/// Decodes one input (`None` when the bytes are exhausted).
fn next_input(
    b: &mut Bytes<'_>,
    tokens: &mut Vec<WriteToken>,
    report_seq: &mut u64,
) -> Option<ServerInput> {
    let kind = b.byte()? % 10;
    let me = NodeId(1);
    Some(match kind {
        0 | 1 => ServerInput::Tick,
        2 => {
            let token = b.pick(tokens)?;
            tokens.retain(|t| *t != token);
            let result = if b.small(7) == 0 {
                Err("disk full".into())
            } else {
                Ok(())
            };
            ServerInput::WriteCompleted(WriteCompleted { token, result })
        }
        3 => {
            let from = Endpoint::server(NodeId(2 + u32::from(b.small(1))));
            let term = QuorumTerm(u64::from(b.small(6)));
            frame(from, me, term, Msg::Quorum(quorum_msg(b)))
        }
        4 => {
            let node = NodeId(1 + u32::from(b.small(2)));
            *report_seq += 1;
            let dns = vec![dn_report(b, InstanceId(6000 + node.0))];
            let report = AgentReport {
                seq: ReportSeq(*report_seq),
                dns,
                cms_process: None,
                normal_start: b.bool(),
                resources: Vec::new(),
            };
            frame(
                Endpoint::agent(node),
                me,
                QuorumTerm(0),
                Msg::AgentReport(report),
            )
        }
        5 => frame(
            Endpoint::agent(NodeId(2)),
            me,
            QuorumTerm(0),
            Msg::TermCheck {
                nonce: u64::from(b.u8()),
            },
        ),
        6 => {
            let ctl = Endpoint {
                node: NodeId(900 + u32::from(b.small(3))),
                role: Role::Ctl,
            };
            frame(
                ctl,
                me,
                QuorumTerm(0),
                Msg::CtlRequest {
                    id: u64::from(b.u8()),
                    req: ctl_request(b),
                },
            )
        }
        7 => {
            let peer = if b.bool() {
                Endpoint::server(NodeId(2))
            } else {
                Endpoint::agent(NodeId(3))
            };
            ServerInput::Net(if b.bool() {
                NetEvent::Closed { peer }
            } else {
                NetEvent::ConnectFailed { peer }
            })
        }
        8 => ServerInput::WallClock(WallMillis(1_000_000 + u64::from(b.u8()) * 1000)),
        _ => ServerInput::FenceCommandDone {
            group: GroupId(1),
            success: b.bool(),
        },
    })
}

/// The target.
pub fn server_steps(data: &[u8]) {
    let mut b = Bytes::new(data);
    let Some(first) = b.byte() else { return };
    let config = if first & 1 == 0 {
        single_cms()
    } else {
        crate::sample_config()
    };
    let Ok(mut server) = Server::new(config, NodeId(1), u64::from(first), None) else {
        panic!("node 1 is a CMS of both sample configs");
    };
    let mut now = Instant::ZERO;
    let (mut tokens, mut report_seq) = (Vec::new(), 0u64);
    while let Some(input) = next_input(&mut b, &mut tokens, &mut report_seq) {
        if matches!(input, ServerInput::Tick) {
            now = server.next_deadline().unwrap_or(now).max(now) + b.delta() / 8;
        } else {
            now += b.delta() / 16;
        }
        for c in server.step(now, input) {
            if let ServerCommand::Persist(p) = c {
                push_bounded(&mut tokens, p.token, 32);
            }
        }
        let st = server.status();
        assert!(
            !st.arbitrating || st.quorum.lease_until.is_some_and(|u| u > now),
            "arbitrating without a lease at {now}: {st:?}"
        );
    }
}
