//! Executing what daemons order ([`EnvOp`]) against the world's models.

use core::time::Duration;

use cm_core::dn::{DnAction, DnRole};
use cm_core::flags::Flag;
use cm_core::io::{NetCommand, NetEvent};
use cm_core::msg::{Endpoint, Role};

use crate::daemon::{EnvOp, SimInput};
use crate::world::{Event, World};

impl World {
    fn reply(&mut self, to: Endpoint, inc: u64, after: Duration, input: SimInput) {
        self.queue
            .push_after(after, Event::Input { to, inc, input });
    }

    /// Executes one order of daemon `ep` (incarnation `inc`).
    pub(crate) fn exec(&mut self, ep: Endpoint, inc: u64, op: EnvOp) {
        let now = self.now();
        let fast = Duration::from_millis(1);
        match op {
            EnvOp::Net(cmd) => self.exec_net(ep, inc, cmd),
            EnvOp::Persist(p) => {
                let nominal = self
                    .rng
                    .duration_between(Duration::from_millis(1), Duration::from_millis(4));
                if let Some(h) = self.hosts.get_mut(&ep.node) {
                    let at = h.disk.begin_write(ep.role, p.token, p.bytes, now, nominal);
                    self.queue.push(
                        at,
                        Event::PersistDone {
                            to: ep,
                            inc,
                            token: p.token,
                        },
                    );
                }
            }
            EnvOp::RunDn {
                op,
                instance,
                action,
                self_fence,
            } => {
                self.run_dn(ep, inc, op, instance, action, self_fence);
            }
            EnvOp::QueryDn { op, instance } => {
                let frozen = !self.host_runs(ep.node);
                let (after, result) = self.dbs.query(now, instance, frozen, &mut self.rng);
                self.reply(
                    ep,
                    inc,
                    after,
                    SimInput::DnStatus {
                        op,
                        instance,
                        result,
                    },
                );
            }
            EnvOp::SampleProcesses { op, instance } => {
                let states = self.dbs.processes(instance);
                self.reply(
                    ep,
                    inc,
                    fast,
                    SimInput::Processes {
                        op,
                        instance,
                        states,
                    },
                );
            }
            EnvOp::SampleDisk { op, instance } => {
                let (pct, at) = match self.hosts.get(&ep.node) {
                    Some(h) => (h.disk.usage_pct(now), h.disk.completes_at(now, fast)),
                    None => return,
                };
                let p = pct.round() as u8;
                let input = SimInput::DiskUsage {
                    op,
                    instance,
                    data_pct: p,
                    log_pct: p,
                };
                self.queue.push(at, Event::Input { to: ep, inc, input });
            }
            EnvOp::ProbeDisk { op, instance } => {
                let Some(h) = self.hosts.get(&ep.node) else {
                    return;
                };
                let at = h.disk.completes_at(now, Duration::from_millis(2));
                let ok = h.disk.probe() == crate::disk::ProbeOutcome::Ok;
                let input = SimInput::DiskProbe {
                    op,
                    instance,
                    ok,
                    elapsed: at - now,
                };
                self.queue.push(at, Event::Input { to: ep, inc, input });
            }
            EnvOp::ProbePeers {
                op,
                instance,
                connect_timeout,
            } => {
                let reachable = self.peer_reachability(instance);
                let all = reachable.iter().all(|(_, r)| *r);
                let after = if all {
                    Duration::from_millis(3)
                } else {
                    3 * connect_timeout
                };
                self.reply(
                    ep,
                    inc,
                    after,
                    SimInput::Peers {
                        op,
                        instance,
                        reachable,
                    },
                );
            }
            EnvOp::WalAge { op, instance } => {
                let age = self
                    .dbs
                    .get(instance)
                    .map_or(Duration::MAX, |i| now - i.last_wal_change);
                self.reply(ep, inc, fast, SimInput::WalAge { op, instance, age });
            }
            EnvOp::ReadFlags { op } => {
                let flags = self
                    .hosts
                    .get(&ep.node)
                    .map(|h| h.flags.clone())
                    .unwrap_or_default();
                self.reply(ep, inc, fast, SimInput::Flags { op, flags });
            }
            EnvOp::ProbePhonyDead {
                op,
                instance,
                connect_timeout,
            } => {
                let frozen = !self.host_runs(ep.node);
                let (after, result) = self.dbs.query(now, instance, frozen, &mut self.rng);
                let answered = result.is_ok();
                let after = if answered {
                    after
                } else {
                    after.min(connect_timeout)
                };
                let newest_wal_age = (!answered)
                    .then(|| {
                        self.dbs
                            .get(instance)
                            .map(|i| now + after - i.last_wal_change)
                    })
                    .flatten();
                let input = SimInput::PhonyProbe {
                    op,
                    instance,
                    answered,
                    newest_wal_age,
                };
                self.reply(ep, inc, after, input);
            }
            EnvOp::SampleSystem => {
                let input = SimInput::System {
                    cpu_pct: 20,
                    mem_pct: 40,
                    io_pct: 10,
                };
                self.reply(ep, inc, fast, input);
            }
            EnvOp::WriteFlag { flag, mode } => self.write_flag(ep, flag, Some(mode)),
            EnvOp::RemoveFlag { flag } => self.write_flag(ep, flag, None),
            EnvOp::RemoveAllManualStart => {
                if let Some(h) = self.hosts.get_mut(&ep.node) {
                    h.flags.cluster_manual_start = None;
                    h.flags.instance_manual_start.clear();
                }
                self.note(format!("{ep} removed every manual-start flag"));
            }
            EnvOp::StartProcess { role, normal } => {
                let boot = self.hosts.get(&ep.node).map_or(0, |h| h.boot);
                let after = self
                    .rng
                    .duration_between(Duration::from_millis(100), Duration::from_millis(300));
                self.queue.push_after(
                    after,
                    Event::Spawn {
                        node: ep.node,
                        role,
                        normal,
                        boot,
                        parent: Some(inc),
                    },
                );
            }
            EnvOp::KillProcess { role, pid } => {
                let target = Endpoint {
                    node: ep.node,
                    role,
                };
                if pid.is_none() || self.inc_of(target) == pid {
                    self.kill_proc(target, Duration::from_millis(1));
                }
            }
            EnvOp::SampleProcess { op, role } => {
                let state = self
                    .hosts
                    .get(&ep.node)
                    .and_then(|h| h.procs.get(&role))
                    .map(|p| {
                        let st = if p.stopped {
                            cm_core::dn::ProcState::Stopped
                        } else {
                            cm_core::dn::ProcState::Running
                        };
                        (st, p.inc, p.parent)
                    });
                self.reply(ep, inc, fast, SimInput::ProcessSampled { op, role, state });
            }
            EnvOp::Exit => {
                self.exiting = Some(ep);
                self.kill_proc(ep, Duration::from_millis(1));
                self.exiting = None;
            }
            EnvOp::FenceNode { group, node } => {
                self.note(format!("{ep} fence command powers {node} off"));
                self.crash_host(node);
                let input = SimInput::FenceDone {
                    group,
                    success: true,
                };
                self.reply(ep, inc, Duration::from_secs(1), input);
            }
            EnvOp::ProbeGateways => {
                let nodes: Vec<cm_core::NodeId> = self.hosts.keys().copied().collect();
                let reachable = self.net.gateway_reachable(ep.node, &nodes);
                self.reply(
                    ep,
                    inc,
                    Duration::from_millis(100),
                    SimInput::Gateways { reachable },
                );
            }
            EnvOp::Alarm(a) => self.note(format!("{ep} alarm {a:?}")),
            EnvOp::RunScript {
                op,
                instance,
                verb,
                timeout,
            } => {
                let (after, exit) = self.run_resource_script(ep.node, instance, verb, timeout);
                self.note(format!(
                    "{ep} resource {instance} {} -> {exit:?}",
                    verb.arg()
                ));
                let done = SimInput::ScriptDone { op, instance, exit };
                self.reply(ep, inc, after, done);
            }
        }
    }

    fn write_flag(&mut self, ep: Endpoint, flag: Flag, mode: Option<cm_core::dn::StopMode>) {
        let Some(h) = self.hosts.get_mut(&ep.node) else {
            return;
        };
        let f = &mut h.flags;
        match (flag, mode) {
            (Flag::ClusterManualStart, m) => f.cluster_manual_start = m,
            (Flag::InstanceManualStart(i), Some(m)) => {
                f.instance_manual_start.insert(i, m);
            }
            (Flag::InstanceManualStart(i), None) => {
                f.instance_manual_start.remove(&i);
            }
            (Flag::ClusterManualStarting, m) => f.cluster_manual_starting = m.is_some(),
            (Flag::DilatationStatus, m) => f.dilatation = m.is_some(),
        }
        let verb = if mode.is_some() { "wrote" } else { "removed" };
        self.note(format!("{ep} {verb} {}", flag.file_name()));
    }

    fn peer_reachability(&self, instance: cm_core::InstanceId) -> Vec<(cm_core::InstanceId, bool)> {
        let Some(me) = self.dbs.get(instance) else {
            return Vec::new();
        };
        self.dbs
            .group_members(me.group)
            .filter(|p| p.id != instance)
            .map(|p| {
                let ok = p.running && self.host_runs(p.node) && self.net.link_up(me.node, p.node);
                (p.id, ok)
            })
            .collect()
    }

    fn run_dn(
        &mut self,
        ep: Endpoint,
        inc: u64,
        op: cm_core::OpId,
        instance: cm_core::InstanceId,
        action: DnAction,
        self_fence: bool,
    ) {
        let now = self.now();
        let kept = self
            .hosts
            .get(&ep.node)
            .and_then(|h| h.flags.keeps_stopped(instance))
            .is_some();
        let starting = self
            .hosts
            .get(&ep.node)
            .is_some_and(|h| h.flags.cluster_manual_starting);
        // S6's "while the cluster is paused" is read at the agent: a pause in force there,
        // learned from a leader and its CMS contact not lapsed. SPEC §2 lets an agent's pause
        // lapse with its contact (a partitioned agent cannot learn a resume), so an agent cut
        // off from the CMS may restart its DNs although the leader's state still says paused.
        let paused = self.agent_paused(ep.node) && !starting;
        self.checker
            .on_dn_action(now, instance, &action, kept, paused);
        if matches!(action, DnAction::Kill) {
            let primary = self
                .dbs
                .get(instance)
                .is_some_and(|i| i.running && i.role == DnRole::Primary);
            let ordered = self.recent_restart_cmd(instance, Duration::from_secs(3));
            if primary && (self_fence || (!ordered && !kept)) {
                self.note(format!("{ep} self-fences {instance}"));
                self.checker.on_self_fence(now);
            }
        }
        self.note(format!("{ep} runs {action:?} on {instance}"));
        let begun = self.dbs.begin(instance, &action, &mut self.rng);
        self.after_db_change();
        match begun {
            Ok(b) => {
                let ev = Event::DnDone {
                    agent: ep,
                    inc,
                    op,
                    instance,
                    action,
                    db_inc: b.incarnation,
                };
                self.queue.push_after(b.after, ev);
            }
            Err(e) => {
                let input = SimInput::DnDone {
                    op,
                    instance,
                    result: Err(e),
                };
                self.reply(ep, inc, Duration::from_millis(1), input);
            }
        }
    }

    fn exec_net(&mut self, ep: Endpoint, inc: u64, cmd: NetCommand) {
        let now = self.now();
        match cmd {
            NetCommand::Connect { peer } => {
                if self.net.conn(ep, peer).is_some() {
                    self.reply(
                        ep,
                        inc,
                        Duration::from_micros(10),
                        SimInput::Net(NetEvent::Connected { peer }),
                    );
                    return;
                }
                let reachable = self.net.endpoints_up(ep, peer)
                    && self.hosts.get(&peer.node).is_some_and(|h| h.up);
                let after = if reachable {
                    let there = self.net.latency(ep.node, peer.node, &mut self.rng);
                    let back = self.net.latency(peer.node, ep.node, &mut self.rng);
                    there + back
                } else {
                    self.net.connect_timeout()
                };
                self.queue.push_after(
                    after,
                    Event::Connect {
                        from: ep,
                        to: peer,
                        inc,
                    },
                );
            }
            NetCommand::Disconnect { peer } => {
                if self.net.close(ep, peer) {
                    let after = self.net.latency(ep.node, peer.node, &mut self.rng);
                    self.notify_closed(peer, ep, after);
                }
            }
            NetCommand::Send { envelope } => {
                let to = envelope.to;
                let Some(conn) = self.net.conn(ep, to) else {
                    return;
                };
                self.checker
                    .on_send(now, ep, &envelope.msg, envelope.quorum_term);
                if let cm_core::msg::Msg::Command(c) = &envelope.msg {
                    self.note(format!(
                        "{ep} -> {to}: {:?} on {} ({})",
                        c.cmd, c.instance, envelope.quorum_term
                    ));
                }
                let times = self.net.plan_frame(now, ep, to, &mut self.rng);
                for at in times {
                    let ev = Event::Frame {
                        from: ep,
                        to,
                        conn,
                        envelope: envelope.clone(),
                    };
                    self.queue.push(at, ev);
                }
            }
        }
    }

    /// Whether a role's process is alive on a node (for the ctl executor).
    pub fn has_proc(&self, node: cm_core::NodeId, role: Role) -> bool {
        self.inc_of(Endpoint { node, role }).is_some()
    }
}
