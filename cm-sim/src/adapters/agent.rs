//! The simulated driver of cm_agent: the world's samples, probes and DN actions in, the agent's
//! commands out — the same mapping cm-io's agent loop does against /proc, statvfs and the
//! database driver.

use cm_core::Instant;
use cm_core::agent::{Agent, AgentCommand, AgentInput, PhonyProbe};
use cm_core::io::Machine;
use cm_core::monitor::StartKind;
use cm_core::msg::Role;
use cm_core::time::WallMillis;

use crate::daemon::{EnvOp, Obs, SimDaemon, SimInput, Spawn};

/// cm_agent behind the simulator's vocabulary.
pub struct AgentAdapter {
    agent: Agent,
    /// Event triggers the agent ordered (shown in the dump; they touch nothing).
    triggers: u64,
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
            triggers: 0,
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
        SimInput::ProcessSampled {
            op,
            role: Role::Server,
            state,
        } => AgentInput::CmsSampled {
            op,
            processes: state.map(|(st, _, _)| st).into_iter().collect(),
        },
        SimInput::ProcessSampled { .. } => return None,
        SimInput::System {
            cpu_pct,
            mem_pct,
            io_pct,
        } => AgentInput::SystemSampled {
            cpu_pct,
            mem_pct,
            io_pct,
        },
        SimInput::ScriptDone { op, instance, exit } => {
            AgentInput::ScriptCompleted { op, instance, exit }
        }
        SimInput::WalAge { .. }
        | SimInput::ChildExited { .. }
        | SimInput::FenceDone { .. }
        | SimInput::Gateways { .. } => {
            return None;
        }
    })
}

/// One agent order as world orders, plus the completion a synchronous driver feeds back at
/// once: starting, stopping or killing the local cm_server is done when the order is given
/// (the process appears or vanishes; the next `SampleCms` shows which). `None` for an event
/// trigger: the simulated script never finishes and touches nothing — what a script that
/// sleeps forever does to the cluster (§15: it must not delay anything).
fn op_of(c: AgentCommand) -> Option<(EnvOp, Option<AgentInput>)> {
    let done = |op| Some(AgentInput::CmsActionCompleted { op, result: Ok(()) });
    let server = Role::Server;
    let op = match c {
        AgentCommand::SampleCms { op } => EnvOp::SampleProcess { op, role: server },
        AgentCommand::StartCms { op } => {
            let start = EnvOp::StartProcess {
                role: server,
                normal: false,
            };
            return Some((start, done(op)));
        }
        AgentCommand::StopCms { op } | AgentCommand::KillCms { op } => {
            let kill = EnvOp::KillProcess {
                role: server,
                pid: None,
            };
            return Some((kill, done(op)));
        }
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
        AgentCommand::ProbePeers {
            op,
            instance,
            connect_timeout,
        } => EnvOp::ProbePeers {
            op,
            instance,
            connect_timeout,
        },
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
        AgentCommand::WriteFlag { flag } => EnvOp::WriteFlag {
            flag,
            mode: cm_core::dn::StopMode::Fast,
        },
        AgentCommand::RunScript {
            op,
            instance,
            verb,
            timeout,
        } => EnvOp::RunScript {
            op,
            instance,
            verb,
            timeout,
        },
        AgentCommand::Exit => EnvOp::Exit,
        AgentCommand::RunTrigger(_) => return None,
    };
    Some((op, None))
}

impl SimDaemon for AgentAdapter {
    fn handle(&mut self, now: Instant, _wall: WallMillis, input: SimInput) -> Vec<EnvOp> {
        let mut out = Vec::new();
        let mut queue: Vec<AgentInput> = input_of(input).into_iter().collect();
        while let Some(i) = queue.pop() {
            for c in self.agent.step(now, i) {
                self.triggers += u64::from(matches!(c, AgentCommand::RunTrigger(_)));
                if let Some((op, done)) = op_of(c) {
                    out.push(op);
                    queue.extend(done);
                }
            }
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.agent.next_deadline()
    }

    fn observe(&self) -> Obs {
        Obs::Agent {
            paused: self.agent.status().paused,
        }
    }

    fn writable(&self, local_now: Instant) -> Vec<cm_core::InstanceId> {
        self.agent.writable(local_now)
    }

    fn write_leased(&self, local_now: Instant) -> Vec<cm_core::InstanceId> {
        let h = self.agent.health();
        h.instances
            .iter()
            .filter(|i| i.write_lease(&h.params, local_now).is_ok())
            .map(|i| i.instance)
            .collect()
    }

    fn agent_health(&self) -> Option<cm_core::agent::AgentHealth> {
        Some(self.agent.health())
    }

    fn resource_handover_clear(
        &self,
        local_now: Instant,
        instance: cm_core::InstanceId,
    ) -> Option<bool> {
        self.agent.resource_handover_clear(local_now, instance)
    }

    fn dump(&self) -> String {
        let s = self.agent.status();
        let insts: Vec<String> = s
            .instances
            .iter()
            .map(|i| format!("{}:{:?}/{}/{}", i.instance, i.role, i.term, i.last_applied))
            .collect();
        format!(
            "agent leader={:?} paused={} qterm={} connected={:?} [{}] triggers={}",
            s.leader,
            s.paused,
            s.highest_quorum_term,
            s.connected,
            insts.join(" "),
            self.triggers
        )
    }
}
