//! Helpers shared by the quorum's unit and simulation tests.

use std::collections::BTreeSet;

use super::log::Log;
use super::{Membership, Quorum, QuorumInput, QuorumMsg, QuorumOutput, Stored};
use crate::codec;
use crate::config::{ClusterConfig, GroupConfig, MemberConfig, NodeConfig};
use crate::ids::{GroupId, InstanceId, LogIndex, NodeId, QuorumTerm, WriteToken};
use crate::io::WriteCompleted;
use crate::params::Params;
use crate::state::ClusterState;
use crate::time::Instant;

/// A cluster of `n` nodes, all running a CMS, with one DN group.
pub(super) fn config(n: u32) -> ClusterConfig {
    config_with(n, Params::defaults())
}

pub(super) fn config_with(n: u32, params: Params) -> ClusterConfig {
    let nodes = (1..=n)
        .map(|i| NodeConfig {
            id: NodeId(i),
            name: format!("n{i}"),
            address: "127.0.0.1".into(),
            az: "AZ1".into(),
            state_dir: format!("/tmp/n{i}"),
            monitor_port: 17000 + i as u16,
            cms_port: Some(17100 + i as u16),
            cms_http_port: None,
            rest_port: None,
        })
        .collect();
    ClusterConfig {
        name: "t".into(),
        security: Default::default(),
        azs: Vec::new(),
        nodes,
        groups: vec![GroupConfig {
            id: GroupId(1),
            members: vec![MemberConfig {
                instance: InstanceId(6001),
                node: NodeId(1),
                data_dir: "/d".into(),
                port: 5432,
            }],
        }],
        database: Default::default(),
        params,
        event_triggers: Default::default(),
        resources: Vec::new(),
    }
}

/// The store of a bootstrapped voter that has seen nothing yet.
pub(super) fn fresh_store(config: &ClusterConfig) -> Vec<u8> {
    codec::encode_persisted(&Stored {
        term: QuorumTerm(0),
        voted_for: None,
        membership: Membership::Voter,
        log: Log::new(ClusterState::initial(config)),
        counted: BTreeSet::new(),
    })
    .unwrap()
}

pub(super) fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

pub(super) fn n(i: u32) -> NodeId {
    NodeId(i)
}

pub(super) fn t(i: u64) -> QuorumTerm {
    QuorumTerm(i)
}

pub(super) fn idx(i: u64) -> LogIndex {
    LogIndex(i)
}

pub(super) fn message(from: u32, term: u64, msg: QuorumMsg) -> QuorumInput {
    QuorumInput::Message {
        from: NodeId(from),
        term: QuorumTerm(term),
        msg,
    }
}

pub(super) fn done(token: WriteToken) -> QuorumInput {
    QuorumInput::WriteCompleted(WriteCompleted {
        token,
        result: Ok(()),
    })
}

/// An output with the persisted bytes decoded, so tests can compare whole lists.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Out {
    Persist {
        token: u64,
        term: u64,
        voted_for: Option<u32>,
        last_index: u64,
    },
    Send(u32, u64, QuorumMsg),
    BecameLeader(u64),
    SteppedDown(u64),
    ProbeGateways,
}

/// `out` in a comparable form. The §5.3 views (`AgentView`, a side channel beside acks and
/// pre-votes) are left out; `cut_tests.rs` checks them with [`views_sent`].
pub(super) fn norm(out: Vec<QuorumOutput>) -> Vec<Out> {
    out.into_iter()
        .filter(|o| {
            !matches!(
                o,
                QuorumOutput::Send {
                    msg: QuorumMsg::AgentView { .. },
                    ..
                }
            )
        })
        .map(|o| match o {
            QuorumOutput::Persist(p) => {
                let s: Stored = codec::decode_persisted(&p.bytes).unwrap();
                Out::Persist {
                    token: p.token.0,
                    term: s.term.0,
                    voted_for: s.voted_for.map(|v| v.0),
                    last_index: s.log.last_index().0,
                }
            }
            QuorumOutput::Send { to, term, msg } => Out::Send(to.0, term.0, msg),
            QuorumOutput::BecameLeader { term } => Out::BecameLeader(term.0),
            QuorumOutput::SteppedDown { term } => Out::SteppedDown(term.0),
            QuorumOutput::ProbeGateways => Out::ProbeGateways,
        })
        .collect()
}

/// The token of the last `Persist` in `out`.
pub(super) fn last_token(out: &[QuorumOutput]) -> Option<WriteToken> {
    out.iter().rev().find_map(|o| match o {
        QuorumOutput::Persist(p) => Some(p.token),
        _ => None,
    })
}

/// A voter of an `n`-node cluster, started (first tick) at `at`.
pub(super) fn started(cfg: &ClusterConfig, node: u32, at: Instant) -> Quorum {
    let mut q = Quorum::new(cfg, NodeId(node), u64::from(node), Some(fresh_store(cfg))).unwrap();
    assert!(q.step(at, QuorumInput::Tick).is_empty());
    q
}

/// Node 1 of `cfg`, made leader of term 1 with node 2's vote (and every other node counted
/// once, as their acknowledgements are); every write completed and the
/// first round (sent at the returned instant) acknowledged by every other node.
pub(super) fn leader(cfg: &ClusterConfig) -> (Quorum, Instant) {
    let mut q = started(cfg, 1, ms(0));
    let now = (Instant::ZERO + q.params.startup_vote_holdoff()).max(q.election_at);
    let _ = q.step(now, QuorumInput::Tick);
    assert_eq!(q.role, super::Role::PreCandidate);
    let granted = QuorumMsg::PreVoteReply {
        term: t(1),
        granted: true,
    };
    let out = q.step(now, message(2, 0, granted));
    let _ = q.step(now, done(last_token(&out).unwrap()));
    let out = q.step(now, message(2, 1, QuorumMsg::VoteReply { granted: true }));
    // Node 2's first counted vote: `counted` is written before the vote counts.
    assert_eq!(q.role, super::Role::Candidate);
    let out = q.step(now, done(last_token(&out).unwrap()));
    assert_eq!(q.role, super::Role::Leader);
    let _ = q.step(now, done(last_token(&out).unwrap()));
    let others: BTreeSet<u32> = (2..=cfg.cms_nodes().len() as u32).collect();
    for o in others {
        let ack = QuorumMsg::AppendReply {
            success: true,
            match_index: idx(1),
            round: 1,
        };
        let out = q.step(now, message(o, 1, ack));
        if let Some(token) = last_token(&out) {
            let _ = q.step(now, done(token));
        }
    }
    assert_eq!(q.commit, idx(1));
    assert!(q.holds_lease(now));
    (q, now)
}

/// The §5.3 views in `out`: (to, count).
pub(super) fn views_sent(out: &[QuorumOutput]) -> Vec<(u32, u32)> {
    out.iter()
        .filter_map(|o| match o {
            QuorumOutput::Send {
                to,
                msg: QuorumMsg::AgentView { dn_agents },
                ..
            } => Some((to.0, *dn_agents)),
            _ => None,
        })
        .collect()
}
