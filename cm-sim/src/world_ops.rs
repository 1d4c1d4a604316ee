//! What the world's models do when a daemon's command reaches them: the operations
//! `crate::exec`'s executors call. Each names a fact of the world (a disk write, a process
//! start, a DN action, a frame on the wire), never a machine's command; the completion it
//! produces goes back as the daemon's own input ([`Delivery`]).

use core::time::Duration;

use cm_core::agent::AgentInput;
use cm_core::dn::{DnAction, DnRole, DnStatus, ProcState, StopMode};
use cm_core::flags::{Flag, FlagSet};
use cm_core::io::{NetCommand, NetEvent, PersistState};
use cm_core::monitor::MonitorInput;
use cm_core::msg::{Endpoint, Msg, Role};
use cm_core::server::ServerInput;
use cm_core::{InstanceId, NodeId, OpId};

use crate::daemon::{Daemon, Delivery};
use crate::world::{Event, World};

/// How long the quick local reads (/proc, the state directory, a sample) take.
pub(crate) const FAST: Duration = Duration::from_millis(1);

impl World {
    /// Delivers `input` to daemon `to` (incarnation `inc`) `after` from now.
    pub(crate) fn reply(&mut self, to: Endpoint, inc: u64, after: Duration, input: Delivery) {
        self.queue
            .push_after(after, Event::Input { to, inc, input });
    }

    /// A connection event for daemon `to`: its machine's `Net` input for cm_agent and
    /// cm_server; om_monitor's control port turns a request frame into a `CtlRequest` and
    /// takes in everything else.
    pub(crate) fn net_delivery(&mut self, to: Endpoint, inc: u64, ev: NetEvent) -> Delivery {
        match to.role {
            Role::Agent => AgentInput::Net(ev).into(),
            Role::Server => ServerInput::Net(ev).into(),
            Role::Monitor => {
                let NetEvent::FrameReceived { peer, envelope } = ev else {
                    return Delivery::Absorbed;
                };
                let Msg::MonitorRequest { id, req } = envelope.msg else {
                    return Delivery::Absorbed;
                };
                let port = self
                    .hosts
                    .get_mut(&to.node)
                    .and_then(|h| h.procs.get_mut(&to.role))
                    .filter(|p| p.inc == inc)
                    .and_then(|p| match &mut p.daemon {
                        Daemon::Monitor { port, .. } => Some(port),
                        _ => None,
                    });
                let Some(port) = port else {
                    return Delivery::Absorbed;
                };
                let client = port.register(peer, id);
                MonitorInput::CtlRequest {
                    client,
                    from: peer,
                    req,
                }
                .into()
            }
            Role::Ctl => Delivery::Absorbed,
        }
    }

    /// A durable write of daemon `ep`'s state: it completes after the disk's latency.
    pub(crate) fn persist(&mut self, ep: Endpoint, inc: u64, p: PersistState) {
        let now = self.now();
        let nominal = self
            .rng
            .duration_between(Duration::from_millis(1), Duration::from_millis(4));
        if let Some(h) = self.hosts.get_mut(&ep.node) {
            let at = h.disk.begin_write(ep.role, p.token, p.bytes, now, nominal);
            let token = p.token;
            self.queue
                .push(at, Event::PersistDone { to: ep, inc, token });
        }
    }

    /// A status query of a DN from a process of `node`: how long it takes and what it says.
    pub(crate) fn query_dn(
        &mut self,
        node: NodeId,
        instance: InstanceId,
    ) -> (Duration, Result<DnStatus, String>) {
        let frozen = !self.host_runs(node);
        self.dbs.query(self.now(), instance, frozen, &mut self.rng)
    }

    /// A phony-dead probe (a fresh connection running a status query, given up after
    /// `connect_timeout`): when it ends, whether the query answered, and if not the age of
    /// the DN's newest WAL file then.
    pub(crate) fn probe_phony_dead(
        &mut self,
        node: NodeId,
        instance: InstanceId,
        connect_timeout: Duration,
    ) -> (Duration, bool, Option<Duration>) {
        let now = self.now();
        let (after, result) = self.query_dn(node, instance);
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
        (after, answered, newest_wal_age)
    }

    /// Disk usage (percent, rounded) of `node` and when a `statvfs` issued now returns.
    pub(crate) fn sample_disk(&self, node: NodeId) -> Option<(u8, cm_core::Instant)> {
        let now = self.now();
        let h = self.hosts.get(&node)?;
        let pct = h.disk.usage_pct(now).round() as u8;
        Some((pct, h.disk.completes_at(now, FAST)))
    }

    /// A probe write and read on `node`'s disk: when it returns and whether it succeeded.
    pub(crate) fn probe_disk(&self, node: NodeId) -> Option<(cm_core::Instant, bool)> {
        let h = self.hosts.get(&node)?;
        let at = h.disk.completes_at(self.now(), Duration::from_millis(2));
        Some((at, h.disk.probe() == crate::disk::ProbeOutcome::Ok))
    }

    /// TCP connections to the peer DNs of `instance`, 3 tries each: how long until the
    /// answer (an unreachable peer is known after 3 × `connect_timeout`) and whether any
    /// peer answered.
    pub(crate) fn probe_peers(
        &self,
        instance: InstanceId,
        connect_timeout: Duration,
    ) -> (Duration, bool) {
        let reachable = self.peer_reachability(instance);
        let after = if reachable.iter().all(|(_, r)| *r) {
            Duration::from_millis(3)
        } else {
            3 * connect_timeout
        };
        (after, reachable.iter().any(|(_, r)| *r))
    }

    /// The flag files of `node`'s state directory.
    pub(crate) fn flags_of(&self, node: NodeId) -> FlagSet {
        self.hosts
            .get(&node)
            .map(|h| h.flags.clone())
            .unwrap_or_default()
    }

    /// The process of `role` on `node` as /proc shows it: state, pid (the world's
    /// incarnation) and the incarnation that started it (None: the init system).
    pub(crate) fn process_of(
        &self,
        node: NodeId,
        role: Role,
    ) -> Option<(ProcState, u64, Option<u64>)> {
        let p = self.hosts.get(&node)?.procs.get(&role)?;
        let st = if p.stopped {
            ProcState::Stopped
        } else {
            ProcState::Running
        };
        Some((st, p.inc, p.parent))
    }

    /// Daemon `ep` (incarnation `inc`) starts a local daemon of `role`; it appears after a
    /// start-up delay.
    pub(crate) fn start_process(&mut self, ep: Endpoint, inc: u64, role: Role, normal: bool) {
        let boot = self.hosts.get(&ep.node).map_or(0, |h| h.boot);
        let after = self
            .rng
            .duration_between(Duration::from_millis(100), Duration::from_millis(300));
        let ev = Event::Spawn {
            node: ep.node,
            role,
            normal,
            boot,
            parent: Some(inc),
        };
        self.queue.push_after(after, ev);
    }

    /// SIGKILL of the local daemon of `role` on `node` (only the process with this pid, if
    /// given).
    pub(crate) fn kill_process(&mut self, node: NodeId, role: Role, pid: Option<u64>) {
        let target = Endpoint { node, role };
        if pid.is_none() || self.inc_of(target) == pid {
            self.kill_proc(target, FAST);
        }
    }

    /// Daemon `ep` exits on its own.
    pub(crate) fn exit(&mut self, ep: Endpoint) {
        self.exiting = Some(ep);
        self.kill_proc(ep, FAST);
        self.exiting = None;
    }

    /// The fence command of §8: the simulated one powers `node` off (a STONITH) and
    /// succeeds after a second.
    pub(crate) fn fence_node(&mut self, ep: Endpoint, node: NodeId) -> Duration {
        self.note(format!("{ep} fence command powers {node} off"));
        self.crash_host(node);
        Duration::from_secs(1)
    }

    /// Two-node mode: whether `node` reaches the third-party gateways (they answer while it
    /// reaches any other node of the cluster), known after 100 ms.
    pub(crate) fn probe_gateways(&self, node: NodeId) -> (Duration, bool) {
        let nodes: Vec<NodeId> = self.hosts.keys().copied().collect();
        let reachable = self.net.gateway_reachable(node, &nodes);
        (Duration::from_millis(100), reachable)
    }

    /// An alarm, for the timeline.
    pub(crate) fn alarm(&mut self, ep: Endpoint, alarm: &cm_core::io::Alarm) {
        self.note(format!("{ep} alarm {alarm:?}"));
    }

    /// Writes (`mode` Some) or removes a flag file in `ep`'s node's state directory.
    pub(crate) fn write_flag(&mut self, ep: Endpoint, flag: Flag, mode: Option<StopMode>) {
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

    /// Removes `cluster_manual_start` and every `instance_manual_start_*` of `ep`'s node.
    pub(crate) fn remove_all_manual_start(&mut self, ep: Endpoint) {
        if let Some(h) = self.hosts.get_mut(&ep.node) {
            h.flags.cluster_manual_start = None;
            h.flags.instance_manual_start.clear();
        }
        self.note(format!("{ep} removed every manual-start flag"));
    }

    /// Runs resource script `verb` of `instance` on `ep`'s node; returns when it ends and how.
    pub(crate) fn run_script(
        &mut self,
        ep: Endpoint,
        instance: InstanceId,
        verb: cm_core::resource::ScriptVerb,
        timeout: Duration,
    ) -> (Duration, cm_core::resource::ScriptExit) {
        let (after, exit) = self.run_resource_script(ep.node, instance, verb, timeout);
        self.note(format!(
            "{ep} resource {instance} {} -> {exit:?}",
            verb.arg()
        ));
        (after, exit)
    }

    fn peer_reachability(&self, instance: InstanceId) -> Vec<(InstanceId, bool)> {
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

    /// Agent `ep` runs a DN action; it completes as `ActionCompleted` when the database
    /// model says so.
    pub(crate) fn run_dn(
        &mut self,
        ep: Endpoint,
        inc: u64,
        op: OpId,
        instance: InstanceId,
        action: DnAction,
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
            if primary && !ordered && !kept {
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
                let done = AgentInput::ActionCompleted {
                    op,
                    instance,
                    result: Err(e),
                };
                self.reply(ep, inc, FAST, done.into());
            }
        }
    }

    /// A transport order of daemon `ep`: connections and frames over the simulated network.
    pub(crate) fn net_command(&mut self, ep: Endpoint, inc: u64, cmd: NetCommand) {
        let now = self.now();
        match cmd {
            NetCommand::Connect { peer } => {
                if self.net.conn(ep, peer).is_some() {
                    let up = self.net_delivery(ep, inc, NetEvent::Connected { peer });
                    self.reply(ep, inc, Duration::from_micros(10), up);
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
                let ev = Event::Connect {
                    from: ep,
                    to: peer,
                    inc,
                };
                self.queue.push_after(after, ev);
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
                if let Msg::Command(c) = &envelope.msg {
                    self.note(format!(
                        "{ep} -> {to}: {:?} on {} ({})",
                        c.cmd, c.instance, envelope.quorum_term
                    ));
                }
                let times = self.net.plan_frame(now, ep, to, &mut self.rng);
                // A duplicate gets a copy; the last (usually the only) frame takes the
                // envelope itself.
                if let Some((&last, copies)) = times.split_last() {
                    for &at in copies {
                        let envelope = envelope.clone();
                        let ev = Event::Frame {
                            from: ep,
                            to,
                            conn,
                            envelope,
                        };
                        self.queue.push(at, ev);
                    }
                    let ev = Event::Frame {
                        from: ep,
                        to,
                        conn,
                        envelope,
                    };
                    self.queue.push(last, ev);
                }
            }
        }
    }

    /// Whether a role's process is alive on a node (for the ctl executor).
    pub fn has_proc(&self, node: NodeId, role: Role) -> bool {
        self.inc_of(Endpoint { node, role }).is_some()
    }
}
