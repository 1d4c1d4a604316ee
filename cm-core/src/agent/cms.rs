//! CMS contact (SPEC.md §3): a connection to every CMS node, reports to all of them, the
//! leader learned from `Leader` replies, pause learned from the leader, and the send time of
//! the newest answered report that times the self-fence (§8).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::commands::TermAnswer;
use super::{Agent, AgentCommand, ResInst};
use crate::ctl::{CtlReply, CtlRequest};
use crate::ids::{NodeId, QuorumTerm, ReportSeq};
use crate::io::{NetCommand, NetEvent};
use crate::msg::{AgentReport, Endpoint, Envelope, Msg, ReportAnswer, Role};
use crate::time::Instant;

/// How many sent reports are remembered to match replies to their send times.
const SENT_REPORTS_KEPT: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum ConnState {
    Down,
    Connecting,
    Up,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Conn {
    state: ConnState,
    /// When the current attempt started, or when the connection last heard anything.
    last_heard: Instant,
}

/// The agent's view of the CMS nodes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Contact {
    conns: BTreeMap<NodeId, Conn>,
    /// The CMS whose latest reply was `Leader`.
    pub(super) leader: Option<NodeId>,
    /// `paused` of the latest `Leader` reply.
    pub(super) leader_paused: bool,
    /// Send time of the newest report a leader answered.
    pub(super) answered_send: Option<Instant>,
    pub(super) report_seq: u64,
    sent: BTreeMap<ReportSeq, Instant>,
}

impl Contact {
    pub(super) fn new(cms: &[NodeId]) -> Self {
        let conns = cms
            .iter()
            .map(|&n| {
                (
                    n,
                    Conn {
                        state: ConnState::Down,
                        last_heard: Instant::ZERO,
                    },
                )
            })
            .collect();
        Self {
            conns,
            leader: None,
            leader_paused: false,
            answered_send: None,
            report_seq: 0,
            sent: BTreeMap::new(),
        }
    }

    pub(super) fn connected(&self) -> Vec<NodeId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.state == ConnState::Up)
            .map(|(&n, _)| n)
            .collect()
    }
}

impl Agent {
    /// The 200 ms loop: open missing connections, reopen silent ones.
    pub(super) fn cms_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let timeout = self.params.agent_heartbeat_timeout();
        for (&n, conn) in &mut self.cms.conns {
            let peer = Endpoint::server(n);
            match conn.state {
                ConnState::Down => {}
                ConnState::Connecting | ConnState::Up if now - conn.last_heard >= timeout => {
                    tracing::info!(%peer, "connection silent for agent_heartbeat_timeout: reopening");
                    out.push(AgentCommand::Net(NetCommand::Disconnect { peer }));
                }
                ConnState::Connecting | ConnState::Up => continue,
            }
            conn.state = ConnState::Connecting;
            conn.last_heard = now;
            out.push(AgentCommand::Net(NetCommand::Connect { peer }));
        }
    }

    pub(super) fn on_net(&mut self, now: Instant, ev: NetEvent, out: &mut Vec<AgentCommand>) {
        let (peer, next) = match &ev {
            NetEvent::Connected { peer } => (*peer, Some(ConnState::Up)),
            NetEvent::ConnectFailed { peer } | NetEvent::Closed { peer } => {
                (*peer, Some(ConnState::Down))
            }
            NetEvent::FrameReceived { peer, .. } => (*peer, None),
        };
        if peer.role != Role::Server {
            return;
        }
        let Some(conn) = self.cms.conns.get_mut(&peer.node) else {
            return;
        };
        conn.last_heard = now;
        if let Some(state) = next {
            conn.state = state;
        }
        if let NetEvent::FrameReceived { envelope, .. } = ev {
            if envelope.from != peer || envelope.to != self.me() {
                tracing::warn!(%peer, from = %envelope.from, "misrouted frame dropped");
                return;
            }
            self.on_frame(now, peer.node, envelope, out);
            self.persist_if_needed(out);
        }
    }

    fn on_frame(&mut self, now: Instant, from: NodeId, env: Envelope, out: &mut Vec<AgentCommand>) {
        let qterm = env.quorum_term;
        match env.msg {
            Msg::ReportReply(reply) => match reply.answer {
                ReportAnswer::Leader {
                    paused,
                    groups,
                    resources,
                    ..
                } => {
                    if qterm < self.highest_qterm {
                        tracing::info!(cms = %from, %qterm, "Leader reply from a deposed term ignored");
                        return;
                    }
                    self.cms.leader = Some(from);
                    self.cms.leader_paused = paused;
                    if let Some(&sent) = self.cms.sent.get(&reply.seq) {
                        let newest = self.cms.answered_send.map_or(sent, |t| t.max(sent));
                        self.cms.answered_send = Some(newest);
                        self.note_group_views(now, sent, &groups);
                    }
                    self.note_peer_resources(now, &resources);
                    self.observe_qterm(qterm);
                }
                ReportAnswer::NotLeader { .. } => {
                    if self.cms.leader == Some(from) {
                        self.cms.leader = None;
                    }
                    self.observe_qterm(qterm);
                }
            },
            Msg::Command(cmd) => self.on_command(from, qterm, cmd),
            Msg::CtlReply {
                reply: CtlReply::Status(status),
                ..
            } if self.cms.leader == Some(from) && qterm >= self.highest_qterm => {
                self.cluster = Some((now, Arc::new(*status)));
            }
            Msg::TermCheckReply {
                nonce,
                highest,
                weight,
            } => {
                let answer = TermAnswer {
                    highest,
                    weight,
                    group_term: None,
                };
                self.on_term_check_reply(from, nonce, answer, qterm, out);
            }
            Msg::GroupTermCheckReply {
                nonce,
                highest,
                weight,
                group_term,
            } => {
                let answer = TermAnswer {
                    highest,
                    weight,
                    group_term: Some(group_term),
                };
                self.on_term_check_reply(from, nonce, answer, qterm, out);
            }
            _ => {}
        }
    }

    /// Raises the highest quorum term seen; the rise is persisted by `persist_if_needed`.
    pub(super) fn observe_qterm(&mut self, t: QuorumTerm) {
        self.highest_qterm = self.highest_qterm.max(t);
    }

    /// Sends one report to every connected CMS, once every local DN and the local CMS have
    /// been sampled (a process not yet sampled must be neither reported absent nor restarted:
    /// adoption, §1).
    pub(super) fn send_report(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let cms_sampled = self.local_cms.as_ref().is_none_or(|c| c.sampled());
        if !cms_sampled || !self.insts.values().all(|i| i.sampled) {
            return;
        }
        let connected = self.cms.connected();
        if connected.is_empty() {
            return;
        }
        self.cms.report_seq += 1;
        let seq = ReportSeq(self.cms.report_seq);
        self.cms.sent.insert(seq, now);
        while self.cms.sent.len() > SENT_REPORTS_KEPT {
            self.cms.sent.pop_first();
        }

        let report = AgentReport {
            seq,
            dns: self
                .insts
                .values()
                .map(|i| {
                    let mut r = i.report(now);
                    r.last_build.agent_incarnation = Some(self.incarnation);
                    // Accepted, not yet durable: it runs once written (issue 17).
                    r.last_build.pending |= self.batch.has_build(i.id);
                    r
                })
                .collect(),
            cms_process: self.local_cms.as_ref().and_then(|c| c.reported()),
            normal_start: self.start_kind == crate::monitor::StartKind::Normal,
            resources: self.res.iter().map(ResInst::report).collect(),
        };
        for n in connected {
            out.push(self.envelope(n, Msg::AgentReport(report.clone())));
        }
    }

    /// Once a second, while this node serves HTTP and a leader is connected: ask it for the
    /// cluster status (`/cluster`, `/history`, §15) over the agent's own link.
    pub(super) fn cluster_query(&mut self, out: &mut Vec<AgentCommand>) {
        let Some(leader) = self.cms.leader else {
            return;
        };
        if !self.rest_enabled || !self.cms.connected().contains(&leader) {
            return;
        }
        let id = self.op().0;
        out.push(self.envelope(
            leader,
            Msg::CtlRequest {
                id,
                req: CtlRequest::Query,
            },
        ));
    }

    pub(super) fn envelope(&self, to: NodeId, msg: Msg) -> AgentCommand {
        AgentCommand::Net(NetCommand::Send {
            envelope: Envelope {
                from: self.me(),
                to: Endpoint::server(to),
                quorum_term: self.highest_qterm,
                msg,
            },
        })
    }
}

#[cfg(test)]
#[path = "cms_tests.rs"]
mod tests;
