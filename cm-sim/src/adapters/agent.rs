//! The simulated driver of cm_agent: the world's samples, probes and DN actions in, the agent's
//! commands out — the same mapping cm-io's agent loop does against /proc, statvfs and the
//! database driver.

use cm_core::Instant;
use cm_core::agent::{Agent, AgentCommand, AgentInput, PhonyProbe};
use cm_core::io::Machine;
use cm_core::monitor::StartKind;
use cm_core::time::WallMillis;

use crate::daemon::{EnvOp, Obs, SimDaemon, SimInput, Spawn};

/// cm_agent behind the simulator's vocabulary.
pub struct AgentAdapter {
    agent: Agent,
}

impl AgentAdapter {
    /// Builds the agent; `None` when its store does not decode (it refuses to start, as the
    /// real daemon does, and the monitor keeps trying).
    pub fn new(s: &Spawn<'_>) -> Option<Self> {
        let kind = if s.normal_start {
            StartKind::Normal
        } else {
            StartKind::Abnormal
        };
        let agent = Agent::new(s.config, s.node, s.seed, s.restored.clone()).ok()?;
        Some(Self {
            agent: agent.with_start_kind(kind),
        })
    }
}

fn input_of(input: SimInput) -> Option<AgentInput> {
    Some(match input {
        SimInput::Tick => AgentInput::Tick,
        SimInput::Net(ev) => AgentInput::Net(ev),
        SimInput::WriteDone(w) => AgentInput::WriteCompleted(w),
        SimInput::DnDone {
            op,
            instance,
            result,
        } => AgentInput::ActionCompleted {
            op,
            instance,
            result,
        },
        SimInput::DnStatus {
            op,
            instance,
            result,
        } => AgentInput::DnStatusQueried {
            op,
            instance,
            result,
        },
        SimInput::Processes {
            op,
            instance,
            states,
        } => AgentInput::ProcessesSampled {
            op,
            instance,
            processes: states,
        },
        SimInput::DiskUsage {
            op,
            instance,
            data_pct,
            log_pct,
        } => AgentInput::DiskSampled {
            op,
            instance,
            data_pct,
            log_pct,
        },
        SimInput::DiskProbe {
            op,
            instance,
            ok,
            elapsed,
        } => AgentInput::DiskProbed {
            op,
            instance,
            result: if ok {
                Ok(())
            } else {
                Err("I/O error on the probe file".into())
            },
            elapsed,
        },
        SimInput::Peers {
            op,
            instance,
            reachable,
        } => AgentInput::PeersProbed {
            op,
            instance,
            reachable: reachable.iter().any(|(_, r)| *r),
        },
        SimInput::PhonyProbe {
            op,
            instance,
            answered,
            newest_wal_age,
        } => AgentInput::PhonyDeadProbed {
            op,
            instance,
            outcome: if answered {
                PhonyProbe::Answered
            } else {
                PhonyProbe::Failed { newest_wal_age }
            },
        },
        SimInput::Flags { flags, .. } => AgentInput::FlagsObserved(flags),
        SimInput::System {
            cpu_pct,
            mem_pct,
            io_pct,
        } => AgentInput::SystemSampled {
            cpu_pct,
            mem_pct,
            io_pct,
        },
        SimInput::WalAge { .. }
        | SimInput::ProcessSampled { .. }
        | SimInput::ChildExited { .. }
        | SimInput::FenceDone { .. }
        | SimInput::Gateways { .. } => {
            return None;
        }
    })
}

fn op_of(c: AgentCommand) -> EnvOp {
    match c {
        AgentCommand::Net(n) => EnvOp::Net(n),
        AgentCommand::SampleProcesses { op, instance } => EnvOp::SampleProcesses { op, instance },
        AgentCommand::QueryDnStatus { op, instance } => EnvOp::QueryDn { op, instance },
        AgentCommand::ProbePhonyDead {
            op,
            instance,
            connect_timeout,
        } => EnvOp::ProbePhonyDead {
            op,
            instance,
            connect_timeout,
        },
        AgentCommand::SampleDisk { op, instance } => EnvOp::SampleDisk { op, instance },
        AgentCommand::ProbeDisk { op, instance, .. } => EnvOp::ProbeDisk { op, instance },
        AgentCommand::ProbePeers { op, instance } => EnvOp::ProbePeers { op, instance },
        AgentCommand::ReadFlags => EnvOp::ReadFlags { op: None },
        AgentCommand::SampleSystem => EnvOp::SampleSystem,
        AgentCommand::RunDnAction {
            op,
            instance,
            action,
        } => EnvOp::RunDn {
            op,
            instance,
            action,
            self_fence: false,
        },
        AgentCommand::PersistState(p) => EnvOp::Persist(p),
        AgentCommand::RemoveFlag { flag } => EnvOp::RemoveFlag { flag },
        AgentCommand::RaiseAlarm(a) => EnvOp::Alarm(a),
        AgentCommand::Exit => EnvOp::Exit,
    }
}

impl SimDaemon for AgentAdapter {
    fn handle(&mut self, now: Instant, _wall: WallMillis, input: SimInput) -> Vec<EnvOp> {
        match input_of(input) {
            Some(i) => self.agent.step(now, i).into_iter().map(op_of).collect(),
            None => Vec::new(),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.agent.next_deadline()
    }

    fn observe(&self) -> Obs {
        Obs::None
    }

    fn dump(&self) -> String {
        let s = self.agent.status();
        let insts: Vec<String> = s
            .instances
            .iter()
            .map(|i| format!("{}:{:?}/{}/{}", i.instance, i.role, i.term, i.last_applied))
            .collect();
        format!(
            "agent leader={:?} paused={} qterm={} connected={:?} [{}]",
            s.leader,
            s.paused,
            s.highest_quorum_term,
            s.connected,
            insts.join(" ")
        )
    }
}
