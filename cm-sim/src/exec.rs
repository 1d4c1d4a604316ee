//! The simulator's executors: one [`Executor`] per cm-core machine, each the one `match` over
//! that machine's commands on this side (cm-daemons holds the other, against the OS). Every
//! arm carries its command out on the world's models (`world_ops`) and names the completion
//! the machine gets back as the machine's own input.

use core::time::Duration;

use cm_core::Instant;
use cm_core::QuorumTerm;
use cm_core::agent::{AgentCommand, AgentInput, PhonyProbe};
use cm_core::dn::StopMode;
use cm_core::io::{Executor, Flow, NetCommand};
use cm_core::monitor::{AgentProcess, MonitorCommand, MonitorInput, Pid, StartKind};
use cm_core::msg::{Envelope, Msg, Role};
use cm_core::server::{ServerCommand, ServerInput};

use crate::daemon::{Daemon, Delivery};
use crate::world::World;
use crate::world_ops::FAST;

/// Executes the commands of one step of daemon `ep` (incarnation `inc`) on the world.
pub(crate) struct ProcExec<'w, I> {
    /// The world.
    pub(crate) world: &'w mut World,
    ep: cm_core::msg::Endpoint,
    inc: u64,
    /// World operations the commands started (the trace hash counts them).
    pub(crate) actions: u64,
    /// Completions the simulated driver knows at once (a flag file written, cm_server
    /// started or killed): the machine gets them before the delivery ends, the last first.
    pub(crate) immediate: Vec<I>,
}

impl<'w, I> ProcExec<'w, I> {
    /// An executor for daemon `ep`, incarnation `inc`.
    pub(crate) fn new(world: &'w mut World, ep: cm_core::msg::Endpoint, inc: u64) -> Self {
        Self {
            world,
            ep,
            inc,
            actions: 0,
            immediate: Vec::new(),
        }
    }

    /// The daemon gets `input` `after` from now.
    fn answer(&mut self, after: Duration, input: impl Into<Delivery>) {
        self.world.reply(self.ep, self.inc, after, input.into());
    }

    /// The daemon gets `input` at world time `at`.
    fn answer_at(&mut self, at: Instant, input: impl Into<Delivery>) {
        let ev = crate::world::Event::Input {
            to: self.ep,
            inc: self.inc,
            input: input.into(),
        };
        self.world.queue.push(at, ev);
    }
}

impl Executor<AgentCommand> for ProcExec<'_, AgentInput> {
    fn execute(&mut self, _now: Instant, command: AgentCommand) -> Flow {
        let (ep, inc) = (self.ep, self.inc);
        self.actions += 1;
        match command {
            AgentCommand::Net(c) => self.world.net_command(ep, inc, c),
            AgentCommand::PersistState(p) => self.world.persist(ep, inc, p),
            AgentCommand::SampleProcesses { op, instance } => {
                let processes = self.world.dbs.processes(instance);
                let sampled = AgentInput::ProcessesSampled {
                    op,
                    instance,
                    processes,
                };
                self.answer(FAST, sampled);
            }
            AgentCommand::QueryDnStatus { op, instance } => {
                let (after, result) = self.world.query_dn(ep.node, instance);
                let queried = AgentInput::DnStatusQueried {
                    op,
                    instance,
                    result,
                };
                self.answer(after, queried);
            }
            AgentCommand::ProbePhonyDead {
                op,
                instance,
                connect_timeout,
            } => {
                let (after, answered, newest_wal_age) =
                    self.world
                        .probe_phony_dead(ep.node, instance, connect_timeout);
                let outcome = if answered {
                    PhonyProbe::Answered
                } else {
                    PhonyProbe::Failed { newest_wal_age }
                };
                let probed = AgentInput::PhonyDeadProbed {
                    op,
                    instance,
                    outcome,
                };
                self.answer(after, probed);
            }
            AgentCommand::SampleDisk { op, instance } => {
                let Some((pct, at)) = self.world.sample_disk(ep.node) else {
                    return Flow::Continue;
                };
                let sampled = AgentInput::DiskSampled {
                    op,
                    instance,
                    data_pct: pct,
                    log_pct: pct,
                };
                self.answer_at(at, sampled);
            }
            AgentCommand::ProbeDisk { op, instance, .. } => {
                let Some((at, ok)) = self.world.probe_disk(ep.node) else {
                    return Flow::Continue;
                };
                let now = self.world.now();
                let probed = AgentInput::DiskProbed {
                    op,
                    instance,
                    result: if ok {
                        Ok(())
                    } else {
                        Err("I/O error on the probe file".into())
                    },
                    elapsed: at - now,
                };
                self.answer_at(at, probed);
            }
            AgentCommand::ProbePeers {
                op,
                instance,
                connect_timeout,
            } => {
                let (after, reachable) = self.world.probe_peers(instance, connect_timeout);
                let probed = AgentInput::PeersProbed {
                    op,
                    instance,
                    reachable,
                };
                self.answer(after, probed);
            }
            AgentCommand::ReadFlags => {
                let flags = self.world.flags_of(ep.node);
                self.answer(FAST, AgentInput::FlagsObserved(flags));
            }
            AgentCommand::SampleSystem => {
                let sampled = AgentInput::SystemSampled {
                    cpu_pct: 20,
                    mem_pct: 40,
                    io_pct: 10,
                };
                self.answer(FAST, sampled);
            }
            AgentCommand::RunDnAction {
                op,
                instance,
                action,
            } => self.world.run_dn(ep, inc, op, instance, action),
            AgentCommand::SampleCms { op } => {
                let process = self.world.process_of(ep.node, Role::Server);
                let sampled = AgentInput::CmsSampled {
                    op,
                    processes: process.map(|(st, _, _)| st).into_iter().collect(),
                };
                self.answer(FAST, sampled);
            }
            // Starting, stopping or killing the local cm_server is done when the order is
            // given: the process appears or vanishes, and the next `SampleCms` shows which.
            AgentCommand::StartCms { op } => {
                self.world.start_process(ep, inc, Role::Server, false);
                self.immediate
                    .push(AgentInput::CmsActionCompleted { op, result: Ok(()) });
            }
            AgentCommand::StopCms { op } | AgentCommand::KillCms { op } => {
                self.world.kill_process(ep.node, Role::Server, None);
                self.immediate
                    .push(AgentInput::CmsActionCompleted { op, result: Ok(()) });
            }
            AgentCommand::RemoveFlag { flag } => self.world.write_flag(ep, flag, None),
            AgentCommand::WriteFlag { flag } => {
                self.world.write_flag(ep, flag, Some(StopMode::Fast));
            }
            AgentCommand::RunScript {
                op,
                instance,
                verb,
                timeout,
            } => {
                let (after, exit) = self.world.run_script(ep, instance, verb, timeout);
                self.answer(after, AgentInput::ScriptCompleted { op, instance, exit });
            }
            AgentCommand::RaiseAlarm(a) => self.world.alarm(ep, &a),
            // The simulated event script never finishes and touches nothing — what a script
            // that sleeps forever does to the cluster (§15: it must not delay anything).
            AgentCommand::RunTrigger(_) => {
                self.actions -= 1;
                if let Some(Daemon::Agent { triggers, .. }) = self.world.daemon_mut(ep, inc) {
                    *triggers += 1;
                }
            }
            AgentCommand::Exit => {
                self.world.exit(ep);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

impl Executor<MonitorCommand> for ProcExec<'_, MonitorInput> {
    fn execute(&mut self, _now: Instant, command: MonitorCommand) -> Flow {
        let (ep, inc) = (self.ep, self.inc);
        self.actions += 1;
        match command {
            // Two reads, each done 1 ms later: the process table, then the state directory;
            // the machine gets the sample when the second one is.
            MonitorCommand::SampleAgent => {
                self.actions += 1;
                let agent = self.world.process_of(ep.node, Role::Agent);
                let flags = self.world.flags_of(ep.node);
                let processes = agent
                    .map(|(state, pid, parent)| AgentProcess {
                        pid: Pid(u32::try_from(pid).unwrap_or(u32::MAX)),
                        state,
                        started_by_me: parent == Some(inc),
                    })
                    .into_iter()
                    .collect();
                self.answer(FAST, Delivery::Absorbed);
                let sampled = MonitorInput::AgentSampled {
                    processes,
                    flags,
                    binary_executable: true,
                    config_readable: true,
                };
                self.answer(FAST, sampled);
            }
            MonitorCommand::StartAgent { kind } => {
                let normal = kind == StartKind::Normal;
                self.world.start_process(ep, inc, Role::Agent, normal);
            }
            MonitorCommand::KillAgent { pid } => {
                let pid = Some(u64::from(pid.0));
                self.world.kill_process(ep.node, Role::Agent, pid);
            }
            MonitorCommand::RaiseAlarm(a) => self.world.alarm(ep, &a),
            // Flag files are written synchronously by the driver: complete them at once.
            MonitorCommand::WriteFlag { op, flag, mode } => {
                self.world.write_flag(ep, flag, Some(mode));
                self.immediate
                    .push(MonitorInput::FlagOpCompleted { op, result: Ok(()) });
            }
            MonitorCommand::RemoveFlag { op, flag } => {
                self.world.write_flag(ep, flag, None);
                self.immediate
                    .push(MonitorInput::FlagOpCompleted { op, result: Ok(()) });
            }
            MonitorCommand::RemoveAllManualStart { op } => {
                self.world.remove_all_manual_start(ep);
                self.immediate
                    .push(MonitorInput::FlagOpCompleted { op, result: Ok(()) });
            }
            MonitorCommand::Reply { client, reply } => {
                let waiting = match self.world.daemon_mut(ep, inc) {
                    Some(Daemon::Monitor { port, .. }) => port.take(client),
                    _ => None,
                };
                let Some((peer, id)) = waiting else {
                    self.actions -= 1;
                    return Flow::Continue;
                };
                let envelope = Envelope {
                    from: ep,
                    to: peer,
                    quorum_term: QuorumTerm(0),
                    msg: Msg::MonitorReply { id, reply },
                };
                self.world
                    .net_command(ep, inc, NetCommand::Send { envelope });
            }
        }
        Flow::Continue
    }
}

impl Executor<ServerCommand> for ProcExec<'_, ServerInput> {
    fn execute(&mut self, _now: Instant, command: ServerCommand) -> Flow {
        let (ep, inc) = (self.ep, self.inc);
        self.actions += 1;
        match command {
            ServerCommand::Net(c) => self.world.net_command(ep, inc, c),
            ServerCommand::Persist(p) => self.world.persist(ep, inc, p),
            ServerCommand::RunFenceCommand { group, node, .. } => {
                let after = self.world.fence_node(ep, node);
                let done = ServerInput::FenceCommandDone {
                    group,
                    success: true,
                };
                self.answer(after, done);
            }
            ServerCommand::ProbeGateways { .. } => {
                let (after, reachable) = self.world.probe_gateways(ep.node);
                self.answer(after, ServerInput::GatewaysProbed { reachable });
            }
            ServerCommand::RaiseAlarm(a) => self.world.alarm(ep, &a),
        }
        Flow::Continue
    }
}
