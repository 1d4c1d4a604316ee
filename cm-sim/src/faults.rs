//! Applying scenario faults and operator actions to the world, and healing everything for the
//! liveness phase.

use core::time::Duration;

use cm_core::NodeId;
use cm_core::dn::{DnRole, ProcState};
use cm_core::msg::{Endpoint, Role};

use crate::scenario::{FaultAction, RoleName};
use crate::world::World;

fn role_of(r: RoleName) -> Role {
    match r {
        RoleName::Monitor => Role::Monitor,
        RoleName::Agent => Role::Agent,
        RoleName::Server => Role::Server,
    }
}

impl World {
    /// The node hosting the affected group's primary right now (or its static first member).
    fn affected_node(&self) -> Option<NodeId> {
        let g = self.scenario.affected_group;
        self.dbs
            .group_members(g)
            .find(|i| i.running && i.role == DnRole::Primary)
            .map(|i| i.node)
            .or_else(|| {
                self.scenario
                    .config
                    .group(g)?
                    .members
                    .first()
                    .map(|m| m.node)
            })
    }

    /// Applies one fault or operator action now.
    pub(crate) fn apply_fault(&mut self, action: FaultAction) {
        let now = self.now();
        let affected = self.affected_node();
        self.checker.on_fault(now, affected);
        self.note(format!("FAULT {action:?}"));
        for g in action.touches(&self.scenario.config) {
            self.avail.faults_changed(g);
        }
        use FaultAction as F;
        match action {
            F::CrashHost { node } => self.crash_host(node),
            F::RestartHost { node } => self.power_on(node),
            F::FreezeHost { node } => {
                if let Some(h) = self.hosts.get_mut(&node) {
                    h.frozen = h.up;
                }
            }
            F::ThawHost { node } => self.thaw(node),
            F::KillProcess { node, role } => {
                self.kill_proc(
                    Endpoint {
                        node,
                        role: role_of(role),
                    },
                    Duration::from_millis(1),
                );
            }
            F::CrashCmsLeader => {
                let leader = self.server_views().into_iter().find(|s| s.holds_lease());
                if let Some(l) = leader {
                    self.kill_proc(Endpoint::server(l.node), Duration::from_millis(1));
                }
            }
            F::IsolateCmsLeader => {
                let leader = self.server_views().into_iter().find(|s| s.holds_lease());
                if let Some(l) = leader {
                    let others: Vec<NodeId> = self
                        .hosts
                        .keys()
                        .copied()
                        .filter(|n| *n != l.node)
                        .collect();
                    self.cut(&[l.node], &others, false);
                }
            }
            F::StopProcess { node, role } => self.set_stopped(node, role_of(role), true),
            F::ContProcess { node, role } => self.set_stopped(node, role_of(role), false),
            F::KillDn { instance } => {
                self.dbs.kill(instance);
            }
            F::KillResource { instance } => self.kill_resource(instance),
            F::BreakStream { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.stream_broken = true;
                }
            }
            F::FlapStream { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.stream_flaps = true;
                }
            }
            F::DivergeWal { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.wal_diverged = true;
                    i.receiver = None;
                }
            }
            F::RemoveWal { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.wal_removed = true;
                    i.receiver = None;
                }
            }
            F::StallRecovery { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.recovery_stalls = true;
                }
                self.dbs.kill(instance);
            }
            F::BreakBuild { instance } => {
                if let Some(i) = self.dbs.instances.get_mut(&instance) {
                    i.build_breaks = true;
                }
            }
            F::DnState { instance, state } => {
                let s = match state.as_str() {
                    "T" => ProcState::Stopped,
                    "D" => ProcState::DiskSleep,
                    "Z" => ProcState::Zombie,
                    _ => ProcState::Running,
                };
                if let Some(i) = self.dbs.instances.get_mut(&instance)
                    && i.running
                {
                    i.proc_state = s;
                }
            }
            F::Partition { a, b, one_way } => self.cut(&a, &b, one_way),
            F::IsolateNode { node } => {
                let others: Vec<NodeId> =
                    self.hosts.keys().copied().filter(|n| *n != node).collect();
                self.cut(&[node], &others, false);
            }
            F::IsolateAz { az } => {
                let (inside, outside): (Vec<_>, Vec<_>) = self
                    .scenario
                    .config
                    .nodes
                    .iter()
                    .partition(|n| n.az.0 == az);
                let a: Vec<NodeId> = inside.iter().map(|n| n.id).collect();
                let b: Vec<NodeId> = outside.iter().map(|n| n.id).collect();
                self.cut(&a, &b, false);
            }
            F::CutAgent { node } => {
                let agent = Endpoint::agent(node);
                let servers: Vec<Endpoint> = self
                    .scenario
                    .config
                    .cms_nodes()
                    .into_iter()
                    .map(Endpoint::server)
                    .collect();
                for peer in self.net.cut_endpoints(agent, &servers) {
                    self.notify_closed(peer, agent, Duration::from_millis(1));
                    self.notify_closed(agent, peer, Duration::from_millis(1));
                }
            }
            F::CutCmsLeaderFromAgents => {
                if let Some(l) = self.lease_holder() {
                    let server = Endpoint::server(l);
                    let cfg = &self.scenario.config;
                    let agents: Vec<Endpoint> = cfg
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|n| *n != l && !cfg.instances_on(*n).is_empty())
                        .map(Endpoint::agent)
                        .collect();
                    for peer in self.net.cut_endpoints(server, &agents) {
                        self.notify_closed(peer, server, Duration::from_millis(1));
                        self.notify_closed(server, peer, Duration::from_millis(1));
                    }
                }
            }
            F::PartitionFromCmsLeader { node, one_way } => {
                if let Some(l) = self.lease_holder()
                    && l != node
                {
                    self.cut(&[node], &[l], one_way);
                }
            }
            F::DiskHangCmsLeader { duration_s } => {
                if let Some(l) = self.lease_holder()
                    && let Some(h) = self.hosts.get_mut(&l)
                {
                    h.disk.hung_until = Some(now + Duration::from_secs_f64(duration_s.max(0.0)));
                }
            }
            F::Gateway { node, reachable } => self.net.set_gateway(node, reachable),
            F::Heal => self.net.heal(),
            F::DiskUsage {
                node,
                pct,
                growth_pct_per_s,
            } => {
                if let Some(h) = self.hosts.get_mut(&node) {
                    h.disk.set_usage(now, pct, growth_pct_per_s);
                }
            }
            F::DiskError { node, write, read } => {
                if let Some(h) = self.hosts.get_mut(&node) {
                    h.disk.write_error = write;
                    h.disk.read_error = read;
                }
            }
            F::DiskHang { node, duration_s } => {
                if let Some(h) = self.hosts.get_mut(&node) {
                    h.disk.hung_until = Some(now + Duration::from_secs_f64(duration_s.max(0.0)));
                }
            }
            F::Net { params } => self.net.params = params,
            F::WipeStore { node, role } => {
                if role == RoleName::Server {
                    let seen = self
                        .server_views()
                        .iter()
                        .map(|s| s.obs.quorum_term)
                        .chain(self.checker.highest_leader_term())
                        .max()
                        .unwrap_or_default();
                    self.avail.wiped_cms.insert(node, seen);
                }
                if let Some(h) = self.hosts.get_mut(&node) {
                    h.disk.wipe(role_of(role));
                }
            }
            F::Ctl {
                command,
                node,
                instance,
                mode,
            } => {
                if command == "switchover" {
                    self.checker.on_switchover_request(now);
                }
                if command == "readd"
                    && let Some(n) = node
                    && let Some(why) = self.readd_too_early(n)
                {
                    self.note(format!("cm_ctl cms --readd {}: not yet, {why}", n.0));
                    let outcome = ("cm_ctl readd".to_owned(), Err(why));
                    self.operator.outcomes.push(outcome);
                    self.after_db_change();
                    return;
                }
                crate::operator::start(self, &command, node, instance, mode.as_deref());
            }
        }
        self.after_db_change();
    }

    /// Why the operator may not re-add CMS `node` now (None: it may): SPEC §5.1 and the
    /// quorum's module doc want the cluster past every quorum term the lost store may have
    /// voted in, so a lease holder of a term above the highest one seen at the loss.
    fn readd_too_early(&self, node: NodeId) -> Option<String> {
        let lost_at = self.avail.wiped_cms.get(&node).copied().unwrap_or_default();
        let leader = self.server_views().into_iter().find(|s| s.holds_lease());
        match leader {
            Some(l) if l.obs.quorum_term > lost_at => None,
            Some(l) => Some(format!(
                "the leader's quorum term {} is not above {} (the store was lost then)",
                l.obs.quorum_term, lost_at
            )),
            None => Some("no CMS leader holds a lease".into()),
        }
    }

    /// The node of the cm_server holding the leader lease now.
    fn lease_holder(&self) -> Option<NodeId> {
        self.server_views()
            .into_iter()
            .find(|s| s.holds_lease())
            .map(|s| s.node)
    }

    fn cut(&mut self, a: &[NodeId], b: &[NodeId], one_way: bool) {
        for (x, y) in self.net.partition(a, b, one_way) {
            self.notify_closed(x, y, Duration::from_millis(1));
            self.notify_closed(y, x, Duration::from_millis(1));
        }
    }

    pub(crate) fn crash_host(&mut self, node: NodeId) {
        let close = self.net.dead_peer_close();
        let roles: Vec<Role> = self
            .hosts
            .get(&node)
            .map(|h| h.procs.keys().copied().collect())
            .unwrap_or_default();
        for role in roles {
            self.kill_proc(Endpoint { node, role }, close);
        }
        self.dbs.crash_node(node);
        if let Some(h) = self.hosts.get_mut(&node) {
            h.resources.clear();
            h.resources_coming.clear();
            h.up = false;
            h.frozen = false;
            h.disk.crash();
        }
    }

    fn thaw(&mut self, node: NodeId) {
        let now = self.now();
        let roles: Vec<Role> = match self.hosts.get_mut(&node) {
            Some(h) if h.frozen => {
                h.frozen = false;
                h.thawed_at = Some(now);
                h.procs.keys().copied().collect()
            }
            _ => return,
        };
        for role in roles {
            let ep = Endpoint { node, role };
            let stopped = self
                .hosts
                .get(&node)
                .and_then(|h| h.procs.get(&role))
                .is_some_and(|p| p.stopped);
            if !stopped {
                self.release(ep);
            }
        }
    }

    fn set_stopped(&mut self, node: NodeId, role: Role, stopped: bool) {
        let Some(p) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.procs.get_mut(&role))
        else {
            return;
        };
        let was = p.stopped;
        p.stopped = stopped;
        if was && !stopped && self.host_runs(node) {
            self.release(Endpoint { node, role });
        }
    }

    /// Ends every fault for the liveness phase: hosts powered and thawed, processes continued,
    /// hung DNs running again, the network whole and clean, disks without errors.
    pub fn heal_all(&mut self) {
        self.note("HEAL everything (liveness phase)".into());
        self.net.heal();
        self.net.params.loss = 0.0;
        self.net.params.duplication = 0.0;
        let nodes: Vec<NodeId> = self.hosts.keys().copied().collect();
        for node in nodes {
            self.power_on(node);
            self.thaw(node);
            let roles: Vec<Role> = self
                .hosts
                .get(&node)
                .map(|h| h.procs.keys().copied().collect())
                .unwrap_or_default();
            for role in roles {
                self.set_stopped(node, role, false);
            }
            if let Some(h) = self.hosts.get_mut(&node) {
                h.disk.write_error = false;
                h.disk.read_error = false;
                h.disk.hung_until = None;
            }
        }
        for i in self.dbs.instances.values_mut() {
            i.proc_state = ProcState::Running;
        }
        // A cluster left paused, or an instance left stopped, by the operator's own failed
        // request is not the core's to converge (swarm seeds 140, 187).
        crate::operator::retry_failed(self);
    }
}
