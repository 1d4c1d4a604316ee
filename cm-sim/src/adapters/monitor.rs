//! The simulated driver of om_monitor: samples the node's cm_agent process and flag files,
//! starts and kills the agent, serves the control port over the simulated network.

use std::collections::BTreeMap;

use cm_core::dn::ProcState;
use cm_core::io::{Machine, NetCommand, NetEvent};
use cm_core::monitor::{AgentProcess, Monitor, MonitorCommand, MonitorInput, Pid, StartKind};
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_core::time::WallMillis;
use cm_core::{ClientId, Instant, OpId, QuorumTerm};

use crate::daemon::{EnvOp, Obs, SimDaemon, SimInput, Spawn};

/// An agent sample being assembled from a process sample and a flag read.
#[derive(Default)]
struct Sample {
    agent: Option<Option<(ProcState, u64, Option<u64>)>>,
    flags: Option<cm_core::flags::FlagSet>,
}

/// om_monitor behind the simulator's vocabulary.
pub struct MonitorAdapter {
    monitor: Monitor,
    me: Endpoint,
    incarnation: u64,
    next_op: u64,
    sample: Option<(OpId, Sample)>,
    clients: BTreeMap<ClientId, (Endpoint, u64)>,
}

impl MonitorAdapter {
    /// Builds the monitor of a node.
    pub fn new(s: &Spawn<'_>) -> Self {
        Self {
            monitor: Monitor::new(s.config, s.node, s.seed, s.restored.clone()),
            me: Endpoint::monitor(s.node),
            incarnation: s.incarnation,
            next_op: 1 << 40,
            sample: None,
            clients: BTreeMap::new(),
        }
    }

    fn step(&mut self, now: Instant, input: MonitorInput, out: &mut Vec<EnvOp>) {
        let mut queue = vec![input];
        while let Some(i) = queue.pop() {
            for c in self.monitor.step(now, i) {
                // Flag files are written synchronously by the driver: complete them at once.
                if let Some(done) = self.command(c, out) {
                    queue.push(done);
                }
            }
        }
    }

    fn command(&mut self, c: MonitorCommand, out: &mut Vec<EnvOp>) -> Option<MonitorInput> {
        let done = |op| Some(MonitorInput::FlagOpCompleted { op, result: Ok(()) });
        match c {
            MonitorCommand::SampleAgent => {
                let op = OpId(self.next_op);
                self.next_op += 1;
                self.sample = Some((op, Sample::default()));
                out.push(EnvOp::SampleProcess {
                    op,
                    role: Role::Agent,
                });
                out.push(EnvOp::ReadFlags { op: Some(op) });
                None
            }
            MonitorCommand::StartAgent { kind } => {
                let normal = kind == StartKind::Normal;
                out.push(EnvOp::StartProcess {
                    role: Role::Agent,
                    normal,
                });
                None
            }
            MonitorCommand::KillAgent { pid } => {
                let pid = Some(u64::from(pid.0));
                out.push(EnvOp::KillProcess {
                    role: Role::Agent,
                    pid,
                });
                None
            }
            MonitorCommand::RaiseAlarm(a) => {
                out.push(EnvOp::Alarm(a));
                None
            }
            MonitorCommand::WriteFlag { op, flag, mode } => {
                out.push(EnvOp::WriteFlag { flag, mode });
                done(op)
            }
            MonitorCommand::RemoveFlag { op, flag } => {
                out.push(EnvOp::RemoveFlag { flag });
                done(op)
            }
            MonitorCommand::RemoveAllManualStart { op } => {
                out.push(EnvOp::RemoveAllManualStart);
                done(op)
            }
            MonitorCommand::Reply { client, reply } => {
                if let Some((peer, id)) = self.clients.remove(&client) {
                    let envelope = Envelope {
                        from: self.me,
                        to: peer,
                        quorum_term: QuorumTerm(0),
                        msg: Msg::MonitorReply { id, reply },
                    };
                    out.push(EnvOp::Net(NetCommand::Send { envelope }));
                }
                None
            }
        }
    }

    /// Feeds the assembled sample once both halves arrived.
    fn sample_input(&mut self) -> Option<MonitorInput> {
        let (_, s) = self.sample.as_ref()?;
        let (agent, flags) = (s.agent?, s.flags.clone()?);
        self.sample = None;
        let processes = agent
            .map(|(state, pid, parent)| AgentProcess {
                pid: Pid(u32::try_from(pid).unwrap_or(u32::MAX)),
                state,
                started_by_me: parent == Some(self.incarnation),
            })
            .into_iter()
            .collect();
        Some(MonitorInput::AgentSampled {
            processes,
            flags,
            binary_executable: true,
            config_readable: true,
        })
    }
}

impl SimDaemon for MonitorAdapter {
    fn handle(&mut self, now: Instant, _wall: WallMillis, input: SimInput) -> Vec<EnvOp> {
        let mut out = Vec::new();
        let input = match input {
            SimInput::Tick => Some(MonitorInput::Tick),
            SimInput::ProcessSampled {
                op,
                role: Role::Agent,
                state,
            } => {
                if let Some((o, s)) = self.sample.as_mut().filter(|(o, _)| *o == op) {
                    let _ = o;
                    s.agent = Some(state);
                }
                self.sample_input()
            }
            SimInput::Flags {
                op: Some(op),
                flags,
            } => {
                if let Some((_, s)) = self.sample.as_mut().filter(|(o, _)| *o == op) {
                    s.flags = Some(flags);
                }
                self.sample_input()
            }
            SimInput::ChildExited {
                role: Role::Agent,
                abnormal,
            } => Some(MonitorInput::AgentExited { abnormal }),
            SimInput::Net(NetEvent::FrameReceived { peer, envelope }) => match envelope.msg {
                Msg::MonitorRequest { id, req } => {
                    let client = ClientId(self.next_op);
                    self.next_op += 1;
                    self.clients.insert(client, (peer, id));
                    Some(MonitorInput::CtlRequest {
                        client,
                        from: peer,
                        req,
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(i) = input {
            self.step(now, i, &mut out);
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.monitor.next_deadline()
    }

    fn observe(&self) -> Obs {
        Obs::None
    }

    fn dump(&self) -> String {
        let s = self.monitor.status();
        format!(
            "monitor agent_running={} attempts={} hung={} last_exit_abnormal={}",
            s.agent_running, s.start_attempts, s.hung_checks, s.last_exit_abnormal
        )
    }
}
