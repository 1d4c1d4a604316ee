//! `agent_steps`: fuzz bytes → a sequence of cm_agent inputs (answers to what it asked, frames
//! from the CMS nodes, flags, time), with the start rules of SPEC.md §1–3 checked after every
//! step: no DN start under a manual-start flag or while paused without `cluster_manual_starting`,
//! never two starts in flight for a DN or two cm_server actions at once, no cm_server start
//! under `cluster_manual_start`, nothing after `Exit`, deadlines never in the past.

use std::collections::{BTreeMap, BTreeSet};

use cm_core::Instant;
use cm_core::agent::{Agent, AgentCommand, AgentInput, PhonyProbe};
use cm_core::dn::{ActionError, StopMode};
use cm_core::dn::{DbState, DnAction, DnRole, DnStatus, Downstream, History, LockState, ProcState};
use cm_core::flags::{Flag, FlagSet};
use cm_core::history::PromotionReason;
use cm_core::ids::{
    CmdSeq, InstanceId, Lsn, NodeId, OpId, Position, QuorumTerm, ReportSeq, Term, Timeline,
    WriteToken,
};
use cm_core::io::{Machine, NetCommand, NetEvent, WriteCompleted};
use cm_core::msg::{
    CmsCommand, Endpoint, Envelope, Msg, ReportAnswer, ReportReply, SequencedCommand,
};
use cm_core::params::Params;

use crate::bytes::{Bytes, push_bounded};

const ME: NodeId = NodeId(1);
const DN: InstanceId = InstanceId(6001);
const PEER: InstanceId = InstanceId(6002);
/// How many outstanding requests of each kind the harness remembers to answer.
const KEPT: usize = 16;

/// What the agent asked for and has not been answered, plus the facts the rules depend on.
struct Driver {
    samples: Vec<OpId>,
    queries: Vec<OpId>,
    phony: Vec<OpId>,
    disk_samples: Vec<OpId>,
    disk_probes: Vec<OpId>,
    peers: Vec<OpId>,
    cms_samples: Vec<OpId>,
    actions: Vec<OpId>,
    starts: BTreeMap<InstanceId, Vec<OpId>>,
    /// Local cm_server actions in flight, and whether each is a start.
    cms_actions: Vec<(OpId, bool)>,
    tokens: Vec<WriteToken>,
    nonces: Vec<u64>,
    report_seqs: Vec<ReportSeq>,
    issued: BTreeSet<OpId>,
    flags: Option<FlagSet>,
    promoted: BTreeMap<InstanceId, Term>,
    exited: bool,
    /// The config's parameters (reloads toggle the self-fence).
    params: Params,
}

fn procs(b: &mut Bytes) -> Vec<ProcState> {
    let n = b.small(2);
    (0..n)
        .map(|_| match b.small(3) {
            0 => ProcState::Running,
            1 => ProcState::Stopped,
            2 => ProcState::DiskSleep,
            _ => ProcState::Zombie,
        })
        .collect()
}

fn cms_node(b: &mut Bytes) -> NodeId {
    NodeId(1 + u32::from(b.small(2)))
}

fn status(b: &mut Bytes) -> Result<DnStatus, String> {
    let bits = b.u8();
    if bits & 0x80 != 0 {
        return Err("connect timeout".into());
    }
    let role = match bits % 5 {
        0 => DnRole::Primary,
        1 => DnRole::Standby,
        2 => DnRole::Pending,
        3 => DnRole::Unknown,
        _ => DnRole::Down,
    };
    let lock = match (bits >> 3) % 4 {
        0 => LockState::None,
        1 => LockState::Prohibit,
        2 => LockState::Specified(PEER),
        _ => LockState::Unknown,
    };
    let downstreams = (0..b.small(2))
        .map(|_| Downstream {
            instance: [PEER, InstanceId(6003), InstanceId(9999), DN][b.below(4)],
            reply_age: b.delta(),
        })
        .collect();
    Ok(DnStatus {
        role,
        db_state: DbState::Normal,
        position: Position::new(1, u64::from(b.u8()) * 100),
        history: History::root(Timeline(1)),
        lock,
        upstream: None,
        downstreams,
        read_only: bits & 0x40 != 0,
        receiver_error: (b.small(1) == 1).then(|| "could not connect to the primary".into()),
        // From bits already drawn, so the corpus keeps its meaning.
        replay: (role == DnRole::Standby).then(|| Lsn(u64::from(bits) * 50)),
    })
}

fn command(b: &mut Bytes) -> CmsCommand {
    let term = Term(u64::from(b.small(7)));
    match b.small(10) {
        0 => CmsCommand::Lock1,
        1 => CmsCommand::Lock2 { primary: PEER },
        2 => CmsCommand::Unlock { primary: PEER },
        3 => CmsCommand::Failover {
            term,
            // From the term already drawn, so the corpus keeps its meaning.
            reason: if term.0 <= 1 {
                PromotionReason::Start
            } else {
                PromotionReason::Failover
            },
        },
        4 => CmsCommand::Switchover { term },
        5 => CmsCommand::Demote,
        6 => CmsCommand::NotifyStandby { primary: PEER },
        7 => CmsCommand::Restart,
        8 => CmsCommand::Build {
            source: PEER,
            full: false,
        },
        9 => CmsCommand::SetReadOnly { on: b.bool() },
        _ => CmsCommand::SetSyncStandbys {
            k: 1,
            members: vec![DN, PEER, InstanceId(6003)],
        },
    }
}

fn frame(from: NodeId, qterm: u8, msg: Msg) -> AgentInput {
    AgentInput::Net(NetEvent::FrameReceived {
        peer: Endpoint::server(from),
        envelope: Envelope {
            from: Endpoint::server(from),
            to: Endpoint::agent(ME),
            quorum_term: QuorumTerm(u64::from(qterm)),
            msg,
        },
    })
}

fn op_or_stale(b: &mut Bytes, ops: &[OpId]) -> OpId {
    b.pick(ops).unwrap_or_else(|| OpId(u64::from(b.u8())))
}

fn result(b: &mut Bytes) -> Result<(), String> {
    if b.u8().is_multiple_of(4) {
        Err("failed".into())
    } else {
        Ok(())
    }
}

impl Driver {
    fn new(params: Params) -> Self {
        Self {
            samples: Vec::new(),
            queries: Vec::new(),
            phony: Vec::new(),
            disk_samples: Vec::new(),
            disk_probes: Vec::new(),
            peers: Vec::new(),
            cms_samples: Vec::new(),
            actions: Vec::new(),
            starts: BTreeMap::new(),
            cms_actions: Vec::new(),
            tokens: Vec::new(),
            nonces: Vec::new(),
            report_seqs: Vec::new(),
            issued: BTreeSet::new(),
            flags: None,
            promoted: BTreeMap::new(),
            exited: false,
            params,
        }
    }

    /// Decodes one step; `None` once the input is exhausted.
    fn next_input(&self, b: &mut Bytes, now: &mut Instant) -> Option<AgentInput> {
        let kind = b.byte()?;
        Some(match kind % 19 {
            0 => {
                *now += b.delta();
                AgentInput::Tick
            }
            1 => {
                let peer = Endpoint::server(cms_node(b));
                AgentInput::Net(match b.small(2) {
                    0 => NetEvent::Connected { peer },
                    1 => NetEvent::ConnectFailed { peer },
                    _ => NetEvent::Closed { peer },
                })
            }
            2 | 3 => {
                let from = cms_node(b);
                let qterm = b.small(4);
                let seq = b
                    .pick(&self.report_seqs)
                    .unwrap_or_else(|| ReportSeq(u64::from(b.u8())));
                let answer = if kind % 19 == 2 {
                    ReportAnswer::Leader {
                        paused: b.bool(),
                        stopping: b.bool(),
                        groups: Vec::new(),
                        resources: Vec::new(),
                    }
                } else {
                    ReportAnswer::NotLeader {
                        leader: Some(cms_node(b)),
                    }
                };
                frame(from, qterm, Msg::ReportReply(ReportReply { seq, answer }))
            }
            4 => {
                let from = cms_node(b);
                let qterm = b.small(4);
                let instance = if b.small(7) == 0 { PEER } else { DN };
                let seq = CmdSeq(u64::from(b.small(15)));
                let cmd = command(b);
                frame(
                    from,
                    qterm,
                    Msg::Command(SequencedCommand { instance, seq, cmd }),
                )
            }
            5 => {
                let from = cms_node(b);
                let nonce = b.pick(&self.nonces).unwrap_or_else(|| u64::from(b.u8()));
                let highest = QuorumTerm(u64::from(b.small(4)));
                frame(
                    from,
                    b.small(4),
                    Msg::TermCheckReply {
                        nonce,
                        highest,
                        weight: u32::from(b.small(4)),
                    },
                )
            }
            _ => self.answer(kind % 19, b),
        })
    }

    /// Kinds 6–18: answers to what the agent asked, flags, system samples, reloads.
    fn answer(&self, kind: u8, b: &mut Bytes) -> AgentInput {
        match kind {
            6 => AgentInput::ProcessesSampled {
                op: op_or_stale(b, &self.samples),
                instance: if b.small(7) == 0 { PEER } else { DN },
                processes: procs(b),
            },
            7 => AgentInput::DnStatusQueried {
                op: op_or_stale(b, &self.queries),
                instance: DN,
                result: status(b),
            },
            8 => AgentInput::PhonyDeadProbed {
                op: op_or_stale(b, &self.phony),
                instance: DN,
                outcome: match b.small(2) {
                    0 => PhonyProbe::Answered,
                    1 => PhonyProbe::TooManyClients,
                    _ => PhonyProbe::Failed {
                        newest_wal_age: b.bool().then(|| b.delta()),
                    },
                },
            },
            9 => AgentInput::DiskSampled {
                op: op_or_stale(b, &self.disk_samples),
                instance: DN,
                data_pct: b.small(100),
                log_pct: b.small(100),
            },
            10 => AgentInput::DiskProbed {
                op: op_or_stale(b, &self.disk_probes),
                instance: DN,
                result: result(b),
                elapsed: b.delta(),
            },
            11 => AgentInput::PeersProbed {
                op: op_or_stale(b, &self.peers),
                instance: DN,
                reachable: b.bool(),
            },
            12 => {
                let bits = b.u8();
                let mut f = FlagSet {
                    cluster_manual_start: (bits & 1 != 0).then_some(StopMode::Fast),
                    cluster_manual_starting: bits & 2 != 0,
                    dilatation: bits & 4 != 0,
                    ..FlagSet::default()
                };
                if bits & 8 != 0 {
                    f.instance_manual_start.insert(DN, StopMode::Immediate);
                }
                AgentInput::FlagsObserved(f)
            }
            13 => AgentInput::SystemSampled {
                cpu_pct: b.small(100),
                mem_pct: b.small(100),
                io_pct: b.small(100),
            },
            14 => AgentInput::ActionCompleted {
                op: op_or_stale(b, &self.actions),
                instance: DN,
                result: match result(b) {
                    Err(e) if b.bool() => Err(ActionError::HalfRewound(e)),
                    r => r.map_err(ActionError::Failed),
                },
            },
            15 => AgentInput::WriteCompleted(WriteCompleted {
                token: b
                    .pick(&self.tokens)
                    .unwrap_or_else(|| WriteToken(u64::from(b.u8()))),
                result: result(b),
            }),
            16 => AgentInput::CmsSampled {
                op: op_or_stale(b, &self.cms_samples),
                processes: procs(b),
            },
            17 => {
                let ops: Vec<OpId> = self.cms_actions.iter().map(|(o, _)| *o).collect();
                AgentInput::CmsActionCompleted {
                    op: op_or_stale(b, &ops),
                    result: result(b),
                }
            }
            _ => {
                let mut p = self.params.clone();
                p.enable_self_fence = b.bool();
                AgentInput::ParamsReloaded(p)
            }
        }
    }

    /// What completes before the step: answered actions leave the in-flight sets.
    fn before(&mut self, input: &AgentInput) {
        match input {
            AgentInput::ActionCompleted { op, .. } => {
                self.actions.retain(|o| o != op);
                for s in self.starts.values_mut() {
                    s.retain(|o| o != op);
                }
            }
            AgentInput::CmsActionCompleted { op, .. } => self.cms_actions.retain(|(o, _)| o != op),
            AgentInput::WriteCompleted(w) => self.tokens.retain(|t| *t != w.token),
            AgentInput::FlagsObserved(f) => self.flags = Some(f.clone()),
            _ => {}
        }
    }

    /// Checks one step's commands against the rules and records what the agent asked.
    fn check(&mut self, agent: &Agent, cmds: &[AgentCommand]) {
        if self.exited {
            assert!(cmds.is_empty(), "commands after Exit: {cmds:?}");
            return;
        }
        let paused = agent.status().paused;
        for (i, c) in cmds.iter().enumerate() {
            if let Some(op) = op_of(c) {
                assert!(self.issued.insert(op), "op {op:?} issued twice");
            }
            match c {
                AgentCommand::RunDnAction {
                    op,
                    instance,
                    action,
                } => {
                    self.check_action(*op, *instance, action, paused);
                }
                AgentCommand::StartCms { op }
                | AgentCommand::StopCms { op }
                | AgentCommand::KillCms { op } => {
                    assert!(
                        self.cms_actions.is_empty(),
                        "two cm_server actions in flight: {c:?}"
                    );
                    let start = matches!(c, AgentCommand::StartCms { .. });
                    if start {
                        let stopping = self
                            .flags
                            .as_ref()
                            .map(|f| f.cluster_manual_start.is_some());
                        assert_eq!(
                            stopping,
                            Some(false),
                            "cm_server start with flags {:?}",
                            self.flags
                        );
                    }
                    self.cms_actions.push((*op, start));
                }
                AgentCommand::RemoveFlag {
                    flag: Flag::ClusterManualStarting,
                } => {
                    if let Some(f) = self.flags.as_mut() {
                        f.cluster_manual_starting = false;
                    }
                }
                AgentCommand::Exit => {
                    assert_eq!(i + 1, cmds.len(), "Exit is the last command");
                    self.exited = true;
                }
                _ => self.record(c),
            }
        }
    }

    fn check_action(&mut self, op: OpId, instance: InstanceId, action: &DnAction, paused: bool) {
        push_bounded(&mut self.actions, op, KEPT);
        match action {
            DnAction::StartPending => {
                let flags = self
                    .flags
                    .clone()
                    .expect("a DN started before the flags were read");
                assert!(
                    flags.keeps_stopped(instance).is_none(),
                    "start under a manual-start flag"
                );
                assert!(
                    !paused || flags.cluster_manual_starting,
                    "start while paused"
                );
                assert!(
                    !self.cms_actions.iter().any(|(_, start)| *start),
                    "DN started while the local cm_server start is in flight"
                );
                let s = self.starts.entry(instance).or_default();
                assert!(s.is_empty(), "two starts in flight for {instance}");
                s.push(op);
            }
            DnAction::Promote { term } => {
                let last = self.promoted.insert(instance, *term);
                assert!(last.is_none_or(|t| *term > t), "second promotion to {term}");
            }
            _ => {}
        }
    }

    fn record(&mut self, c: &AgentCommand) {
        let (list, op) = match c {
            AgentCommand::SampleProcesses { op, .. } => (&mut self.samples, *op),
            AgentCommand::QueryDnStatus { op, .. } => (&mut self.queries, *op),
            AgentCommand::ProbePhonyDead { op, .. } => (&mut self.phony, *op),
            AgentCommand::SampleDisk { op, .. } => (&mut self.disk_samples, *op),
            AgentCommand::ProbeDisk { op, .. } => (&mut self.disk_probes, *op),
            AgentCommand::ProbePeers { op, .. } => (&mut self.peers, *op),
            AgentCommand::SampleCms { op } => (&mut self.cms_samples, *op),
            AgentCommand::PersistState(p) => {
                push_bounded(&mut self.tokens, p.token, KEPT);
                return;
            }
            AgentCommand::Net(NetCommand::Send { envelope }) => {
                match &envelope.msg {
                    Msg::TermCheck { nonce } | Msg::GroupTermCheck { nonce, .. } => {
                        push_bounded(&mut self.nonces, *nonce, KEPT);
                    }
                    Msg::AgentReport(r) => push_bounded(&mut self.report_seqs, r.seq, KEPT),
                    _ => {}
                }
                return;
            }
            _ => return,
        };
        push_bounded(list, op, KEPT);
    }
}

fn op_of(c: &AgentCommand) -> Option<OpId> {
    match c {
        AgentCommand::SampleProcesses { op, .. }
        | AgentCommand::QueryDnStatus { op, .. }
        | AgentCommand::ProbePhonyDead { op, .. }
        | AgentCommand::SampleDisk { op, .. }
        | AgentCommand::ProbeDisk { op, .. }
        | AgentCommand::ProbePeers { op, .. }
        | AgentCommand::RunDnAction { op, .. }
        | AgentCommand::SampleCms { op }
        | AgentCommand::StartCms { op }
        | AgentCommand::StopCms { op }
        | AgentCommand::KillCms { op } => Some(*op),
        _ => None,
    }
}

/// Drives an [`Agent`] of node 1 built from [`crate::SAMPLE_CONFIG`] with decoded inputs;
/// panics if a rule is broken.
pub fn agent_steps(data: &[u8]) {
    let cfg = crate::sample_config();
    let mut agent = Agent::new(cfg, ME, 0, None).expect("agent of node 1");
    let mut driver = Driver::new(cfg.params.clone());
    let mut b = Bytes::new(data);
    let mut now = Instant::ZERO;
    let trace = std::env::var_os("CM_FUZZ_TRACE").is_some();
    while let Some(input) = driver.next_input(&mut b, &mut now) {
        driver.before(&input);
        let cmds = agent.step(now, input.clone());
        if trace {
            eprintln!("{now} {input:?}\n    -> {cmds:?}");
        }
        driver.check(&agent, &cmds);
        match agent.next_deadline() {
            Some(d) => assert!(d >= now, "deadline {d} before now {now}"),
            None => assert!(driver.exited, "no deadline while running"),
        }
    }
}
