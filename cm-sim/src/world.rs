//! The simulated world: hosts with their daemons, disks and flag files, the network, the
//! databases and the client, driven by one event heap and one seed. Daemons see only their
//! node's drifting clock; the checkers see everything after every event.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::dn::{DnAction, ProcState};
use cm_core::flags::FlagSet;
use cm_core::io::{Executor, NetEvent};
use cm_core::monitor::MonitorInput;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_core::rng::{Prng, derive_seed};
use cm_core::server::ServerInput;
use cm_core::time::{WallMillis, scale_up};
use cm_core::{InstanceId, Instant, NodeId, OpId, WriteToken};

use crate::check::{Checker, ServerView};
use crate::daemon::{Daemon, DaemonFactory, Delivery, Obs, SimMachine, Spawn};
use crate::db::Databases;
use crate::disk::Disk;
use crate::engine::{EventQueue, NodeClock, TraceHash};
use crate::exec::ProcExec;
use crate::net::Network;
use crate::operator::Operator;
use crate::scenario::{FaultAction, Scenario};

/// Where cm_ctl runs: a node outside the cluster that no partition cuts.
pub const CTL_NODE: NodeId = NodeId(0);

/// Everything that can happen.
#[derive(Debug)]
pub(crate) enum Event {
    Input {
        to: Endpoint,
        inc: u64,
        input: Delivery,
    },
    Deadline {
        to: Endpoint,
        inc: u64,
        local: Instant,
    },
    Frame {
        from: Endpoint,
        to: Endpoint,
        conn: u64,
        envelope: Envelope,
    },
    Connect {
        from: Endpoint,
        to: Endpoint,
        inc: u64,
    },
    DnDone {
        agent: Endpoint,
        inc: u64,
        op: OpId,
        instance: InstanceId,
        action: DnAction,
        db_inc: u64,
    },
    PersistDone {
        to: Endpoint,
        inc: u64,
        token: WriteToken,
    },
    Spawn {
        node: NodeId,
        role: Role,
        normal: bool,
        boot: u64,
        parent: Option<u64>,
    },
    Boot {
        node: NodeId,
        boot: u64,
    },
    /// A staggered or late power-on at cold start (not a fault).
    PowerOn(NodeId),
    Replicate,
    Write,
    Fault(FaultAction),
    Operator(crate::operator::OpEvent),
}

/// A host's daemons by role: a slot per role, in `Role`'s order (what a `BTreeMap<Role, Proc>`
/// iterated in), looked up by index — the checks after every event look up every host's
/// agent and server.
#[derive(Default)]
pub struct Procs([Option<Proc>; 4]);

impl Procs {
    fn slot(role: Role) -> usize {
        match role {
            Role::Monitor => 0,
            Role::Agent => 1,
            Role::Server => 2,
            Role::Ctl => 3,
        }
    }

    const ROLES: [Role; 4] = [Role::Monitor, Role::Agent, Role::Server, Role::Ctl];

    /// The process of `role`, if one runs.
    pub fn get(&self, role: &Role) -> Option<&Proc> {
        self.0[Self::slot(*role)].as_ref()
    }

    /// The process of `role`, if one runs.
    pub fn get_mut(&mut self, role: &Role) -> Option<&mut Proc> {
        self.0[Self::slot(*role)].as_mut()
    }

    /// Whether a process of `role` runs.
    pub fn contains_key(&self, role: &Role) -> bool {
        self.get(role).is_some()
    }

    /// Puts `p` in `role`'s slot; returns what was there.
    pub fn insert(&mut self, role: Role, p: Proc) -> Option<Proc> {
        self.0[Self::slot(role)].replace(p)
    }

    /// Empties `role`'s slot; returns what was there.
    pub fn remove(&mut self, role: &Role) -> Option<Proc> {
        self.0[Self::slot(*role)].take()
    }

    /// Whether no process runs.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The processes with their roles, in `Role`'s order.
    pub fn iter(&self) -> impl Iterator<Item = (&Role, &Proc)> {
        Self::ROLES
            .iter()
            .zip(&self.0)
            .filter_map(|(r, p)| p.as_ref().map(|p| (r, p)))
    }

    /// The roles that run, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Role> {
        self.iter().map(|(r, _)| r)
    }
}

impl std::ops::Index<&Role> for Procs {
    type Output = Proc;

    fn index(&self, role: &Role) -> &Proc {
        self.get(role).expect("no process of that role")
    }
}

/// A running daemon process.
pub struct Proc {
    pub(crate) daemon: Daemon,
    /// Incarnation (events of earlier ones are dropped).
    pub inc: u64,
    /// SIGSTOPped.
    pub stopped: bool,
    /// The incarnation of the process that started it (None: the init system).
    pub parent: Option<u64>,
    held: Vec<Delivery>,
    deadline: Option<Instant>,
}

/// A host.
pub struct Host {
    /// Powered on.
    pub up: bool,
    /// Frozen (VM pause).
    pub frozen: bool,
    /// Bumps at every power-on.
    pub boot: u64,
    /// Its clock.
    pub clock: NodeClock,
    /// Its disk.
    pub disk: Disk,
    /// Flag files in its state directory.
    pub flags: FlagSet,
    /// Its daemons.
    pub procs: Procs,
    /// Custom resource programs on it (§14): running or not.
    pub resources: BTreeMap<InstanceId, bool>,
    /// Programs a slow `-start` brings up when it ends (world time), §14's worst case.
    pub resources_coming: BTreeMap<InstanceId, Instant>,
    /// When it was last thawed (its processes resume together; the first instants after a
    /// thaw are the window SPEC §8 concedes in asynchronous mode).
    pub thawed_at: Option<Instant>,
}

/// One simulated cluster.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    pub(crate) queue: EventQueue<Event>,
    pub(crate) rng: Prng,
    /// Network.
    pub net: Network,
    /// Databases.
    pub dbs: Databases,
    /// Hosts.
    pub hosts: BTreeMap<NodeId, Host>,
    /// Invariants and timings.
    pub checker: Checker,
    pub(crate) factory: Box<dyn DaemonFactory>,
    pub(crate) operator: Operator,
    /// Trace hash over every event.
    pub trace: TraceHash,
    /// Events processed.
    pub events: u64,
    /// Notable events for the human timeline.
    pub timeline: Vec<String>,
    /// Print every event as it happens.
    pub verbose: bool,
    next_inc: u64,
    pub(crate) exiting: Option<Endpoint>,
    last_restart_cmd: BTreeMap<InstanceId, Instant>,
    /// (from, to) of cm_server frames delivered between CMS nodes since their link was last
    /// down (the two-node concession lasts until both have heard each other).
    cms_heard: std::collections::BTreeSet<(NodeId, NodeId)>,
    /// The per-event checks' buffers (server views, `/primary` answers), kept between events
    /// so that checking after each event allocates nothing.
    check_bufs: (Vec<ServerView>, Vec<(NodeId, InstanceId)>),
    /// Until when the two-node concession lasts after its span ended on a lost gateway.
    concession_until: Option<Instant>,
    pub(crate) avail: crate::avail::Availability,
    /// Behaviour of each simulated resource instance (absent: [`crate::resources::ResourceModel::Ok`]).
    pub resource_models: BTreeMap<InstanceId, crate::resources::ResourceModel>,
    /// Draws of the resource scripts (their own stream: runs without resources keep their
    /// trajectories).
    pub(crate) resource_rng: Prng,
    /// Since when each with_primary_of instance has run on a node whose DN may not write.
    pub(crate) s7_since: BTreeMap<(NodeId, InstanceId), Instant>,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

impl World {
    /// Builds the world of a scenario; every host boots at time zero.
    pub fn new(scenario: Scenario, seed: u64, factory: Box<dyn DaemonFactory>) -> Self {
        let resource_models = scenario.sim.resource_models.clone();
        let config = scenario.config.clone();
        let mut rng = Prng::new(derive_seed(seed, 0));
        let rho = config.params.max_clock_drift * scenario.sim.drift_fraction;
        let mut hosts = BTreeMap::new();
        for n in &config.nodes {
            let drift = (rng.unit_f64() * 2.0 - 1.0) * rho;
            let clock = NodeClock {
                origin: Instant::from_secs(1_000 + rng.range_inclusive(0, 100_000)),
                drift,
                wall_origin_ms: 1_700_000_000_000 + rng.range_inclusive(0, 200),
            };
            hosts.insert(
                n.id,
                Host {
                    up: false,
                    frozen: false,
                    boot: 0,
                    clock,
                    disk: Disk::new(scenario.sim.disk_pct),
                    flags: FlagSet::default(),
                    procs: Procs::default(),
                    resources: BTreeMap::new(),
                    resources_coming: BTreeMap::new(),
                    thawed_at: None,
                },
            );
        }
        let mut dbs = Databases::new(&config, scenario.db.clone());
        dbs.wal_timeout = config.params.freshness_window();
        let mut checker = Checker::new(&config, scenario.affected_group);
        checker.heal_fence_bound = heal_fence_bound(&config.params);
        let mut w = Self {
            net: Network::new(scenario.net.clone()),
            operator: Operator::new(config),
            scenario,
            seed,
            queue: EventQueue::default(),
            rng,
            dbs,
            hosts,
            checker,
            factory,
            trace: TraceHash::default(),
            events: 0,
            timeline: Vec::new(),
            verbose: false,
            next_inc: 0,
            exiting: None,
            last_restart_cmd: BTreeMap::new(),
            cms_heard: std::collections::BTreeSet::new(),
            check_bufs: (Vec::new(), Vec::new()),
            concession_until: None,
            avail: crate::avail::Availability::default(),
            resource_models,
            resource_rng: Prng::new(derive_seed(seed, 0x5245_534f)),
            s7_since: BTreeMap::new(),
        };
        let offsets = w.scenario.sim.power_on_s.clone();
        let nodes: Vec<NodeId> = w.scenario.config.nodes.iter().map(|n| n.id).collect();
        for (i, n) in nodes.into_iter().enumerate() {
            match offsets.get(i).copied().filter(|s| *s > 0.0) {
                Some(s) => w
                    .queue
                    .push(Instant::ZERO + ms(s * 1000.0), Event::PowerOn(n)),
                None => w.power_on(n),
            }
        }
        w.queue.push(Instant::ZERO, Event::Replicate);
        w.queue.push(Instant::ZERO, Event::Write);
        for f in w.scenario.faults.clone() {
            w.queue.push(Instant::ZERO + f.at, Event::Fault(f.action));
        }
        w
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.queue.now()
    }

    pub(crate) fn note(&mut self, line: String) {
        let line = format!("{:>10} {line}", self.now().to_string());
        if self.verbose {
            println!("{line}");
        }
        if self.timeline.len() < 10_000 {
            self.timeline.push(line);
        }
    }

    /// Runs events until `until` (or until `stop` says so after an event). Returns whether
    /// `stop` ended it.
    pub fn run_until(&mut self, until: Instant, stop: &mut dyn FnMut(&mut Self) -> bool) -> bool {
        while let Some((at, ev)) = self.queue.pop_until(until) {
            self.events += 1;
            self.trace.mix_u64(at.as_nanos());
            self.dispatch(ev);
            self.check();
            if stop(self) {
                return true;
            }
        }
        self.queue.advance_to(until);
        false
    }

    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Input { to, inc, input } => {
                self.trace.mix(&[1, to.role as u8]);
                self.trace.mix_u64(u64::from(to.node.0));
                self.deliver(to, inc, input);
            }
            Event::Deadline { to, inc, local } => {
                self.trace.mix(&[2]);
                if self.proc_deadline(to, inc) == Some(local) {
                    if let Some(p) = self.proc_mut(to, inc) {
                        p.deadline = None;
                    }
                    self.deliver(to, inc, Delivery::tick(to.role));
                }
            }
            Event::Frame {
                from,
                to,
                conn,
                envelope,
            } => self.on_frame(from, to, conn, envelope),
            Event::Connect { from, to, inc } => self.on_connect(from, to, inc),
            Event::DnDone {
                agent,
                inc,
                op,
                instance,
                action,
                db_inc,
            } => {
                self.trace.mix(&[3]);
                let now = self.now();
                let result = match &action {
                    DnAction::Build { source, .. }
                        if !self.build_source_reachable(instance, *source) =>
                    {
                        self.dbs.fail_build(instance, *source, db_inc)
                    }
                    _ => self.dbs.finish(now, instance, &action, db_inc),
                }
                .map_err(cm_core::dn::ActionError::from);
                self.after_db_change();
                let done = cm_core::agent::AgentInput::ActionCompleted {
                    op,
                    instance,
                    result,
                };
                self.deliver(agent, inc, done.into());
            }
            Event::PersistDone { to, inc, token } => {
                self.trace.mix(&[4]);
                let done = self
                    .hosts
                    .get_mut(&to.node)
                    .and_then(|h| h.disk.complete(to.role, token));
                if let Some(result) = done {
                    let wc = cm_core::io::WriteCompleted { token, result };
                    self.deliver(to, inc, Delivery::write_completed(to.role, wc));
                }
            }
            Event::Spawn {
                node,
                role,
                normal,
                boot,
                parent,
            } => self.spawn(node, role, normal, boot, parent),
            Event::Boot { node, boot } => self.on_boot(node, boot),
            Event::PowerOn(node) => {
                self.trace.mix(&[7]);
                self.power_on(node);
            }
            Event::Replicate => self.on_replicate(),
            Event::Write => self.on_write(),
            Event::Fault(action) => {
                self.trace.mix(&[5]);
                self.apply_fault(action);
            }
            Event::Operator(e) => {
                self.trace.mix(&[6]);
                crate::operator::on_event(self, e);
            }
        }
    }

    fn proc_deadline(&self, to: Endpoint, inc: u64) -> Option<Instant> {
        let p = self.hosts.get(&to.node)?.procs.get(&to.role)?;
        (p.inc == inc).then_some(p.deadline).flatten()
    }

    fn proc_mut(&mut self, to: Endpoint, inc: u64) -> Option<&mut Proc> {
        let p = self.hosts.get_mut(&to.node)?.procs.get_mut(&to.role)?;
        (p.inc == inc).then_some(p)
    }

    /// The process of daemon `ep`, if incarnation `inc` still runs.
    pub(crate) fn daemon_mut(&mut self, ep: Endpoint, inc: u64) -> Option<&mut Daemon> {
        self.proc_mut(ep, inc).map(|p| &mut p.daemon)
    }

    /// The live incarnation of a daemon.
    pub fn inc_of(&self, ep: Endpoint) -> Option<u64> {
        let h = self.hosts.get(&ep.node)?;
        if !h.up {
            return None;
        }
        h.procs.get(&ep.role).map(|p| p.inc)
    }

    /// Whether a host is up and not frozen.
    pub fn host_runs(&self, node: NodeId) -> bool {
        node == CTL_NODE || self.hosts.get(&node).is_some_and(|h| h.up && !h.frozen)
    }

    /// Whether a Build of `instance` can copy from `source` now: the source runs, on a running
    /// host, linked to the instance's node (pg_rewind and pg_basebackup connect to it).
    fn build_source_reachable(&self, instance: InstanceId, source: InstanceId) -> bool {
        let (Some(me), Some(src)) = (self.dbs.get(instance), self.dbs.get(source)) else {
            return false;
        };
        src.running
            && src.proc_state == ProcState::Running
            && self.host_runs(src.node)
            && self.net.link_up(me.node, src.node)
    }

    /// Feeds one input to a daemon and executes what its machine orders.
    pub(crate) fn deliver(&mut self, to: Endpoint, inc: u64, input: Delivery) {
        let now = self.now();
        let Some(host) = self.hosts.get_mut(&to.node) else {
            return;
        };
        if !host.up {
            return;
        }
        let (frozen, clock) = (host.frozen, host.clock);
        let Some(p) = host.procs.get_mut(&to.role).filter(|p| p.inc == inc) else {
            return;
        };
        if frozen || p.stopped {
            p.held.push(input);
            return;
        }
        if self.verbose {
            println!("{:>10}   -> {to}: {input:?}", now.to_string());
        }
        let local = clock.local(now);
        let actions = match input {
            Delivery::Monitor(i) => self.drive(to, inc, local, i, Vec::new(), Daemon::monitor_mut),
            Delivery::Agent(i) => self.drive(to, inc, local, i, Vec::new(), Daemon::agent_mut),
            Delivery::Server(i) => {
                if let Daemon::Server { wall_fed, .. } = &mut p.daemon
                    && !*wall_fed
                {
                    // The daemon tells its machine the wall clock before anything else.
                    *wall_fed = true;
                    let wall = ServerInput::WallClock(WallMillis(clock.wall_ms(now)));
                    self.drive(to, inc, local, wall, vec![i], Daemon::server_mut)
                } else {
                    self.drive(to, inc, local, i, Vec::new(), Daemon::server_mut)
                }
            }
            Delivery::Absorbed => 0,
        };
        self.trace.mix_u64(actions);
        self.reschedule(to);
    }

    /// Steps the machine of daemon `to` on `first`, then on `pending` (the last first), and
    /// hands each step's commands, in order, to the world's executor for that machine;
    /// completions a synchronous driver feeds back at once are stepped before the delivery
    /// ends. Stops when the daemon dies (an order may kill it). Returns the world operations
    /// started. (`first` apart from `pending`: most deliveries are one input, and an empty
    /// `Vec` allocates nothing.)
    fn drive<I, C>(
        &mut self,
        to: Endpoint,
        inc: u64,
        local: Instant,
        first: I,
        mut pending: Vec<I>,
        machine: fn(&mut Daemon) -> Option<&mut dyn SimMachine<I, C>>,
    ) -> u64
    where
        for<'w> ProcExec<'w, I>: Executor<C>,
    {
        let mut actions = 0;
        let mut next = Some(first);
        while let Some(input) = next.take().or_else(|| pending.pop()) {
            let Some(commands) = self
                .proc_mut(to, inc)
                .and_then(|p| machine(&mut p.daemon))
                .map(|m| m.step(local, input))
            else {
                break;
            };
            let mut exec = ProcExec::new(self, to, inc);
            for command in commands {
                if exec.world.inc_of(to) != Some(inc) {
                    break; // the daemon exited or was killed by an earlier order
                }
                exec.execute(local, command);
            }
            actions += exec.actions;
            pending.extend(exec.immediate);
        }
        actions
    }

    /// Re-queries the daemon's deadline and schedules it if it changed.
    pub(crate) fn reschedule(&mut self, ep: Endpoint) {
        let Some(host) = self.hosts.get_mut(&ep.node) else {
            return;
        };
        let clock = host.clock;
        let Some(p) = host.procs.get_mut(&ep.role) else {
            return;
        };
        let next = p.daemon.next_deadline();
        if next == p.deadline {
            return;
        }
        p.deadline = next;
        if let Some(local) = next {
            let at = clock.global_at(local);
            let inc = p.inc;
            self.queue.push(at, Event::Deadline { to: ep, inc, local });
        }
    }

    /// Powers a host on: om_monitor (or whatever the factory boots) starts after `boot_s`.
    pub(crate) fn power_on(&mut self, node: NodeId) {
        let boot_after = Duration::from_secs_f64(self.scenario.sim.boot_s);
        let Some(h) = self.hosts.get_mut(&node) else {
            return;
        };
        if h.up {
            return;
        }
        h.up = true;
        h.frozen = false;
        h.boot += 1;
        let boot = h.boot;
        self.queue
            .push_after(boot_after, Event::Boot { node, boot });
    }

    fn on_boot(&mut self, node: NodeId, boot: u64) {
        if !self
            .hosts
            .get(&node)
            .is_some_and(|h| h.up && h.boot == boot)
        {
            return;
        }
        let is_cms = self
            .scenario
            .config
            .node(node)
            .is_some_and(|n| n.cms_port.is_some());
        for role in self.factory_boot_roles(is_cms) {
            self.queue.push_after(
                Duration::ZERO,
                Event::Spawn {
                    node,
                    role,
                    normal: false,
                    boot,
                    parent: None,
                },
            );
        }
    }

    fn factory_boot_roles(&self, is_cms: bool) -> Vec<Role> {
        self.factory.boot_roles(is_cms)
    }

    fn spawn(&mut self, node: NodeId, role: Role, normal: bool, boot: u64, parent: Option<u64>) {
        let Some(h) = self.hosts.get(&node) else {
            return;
        };
        if !h.up || h.boot != boot || h.procs.contains_key(&role) {
            return;
        }
        if role == Role::Server
            && self
                .scenario
                .config
                .node(node)
                .is_some_and(|n| n.cms_port.is_none())
        {
            return;
        }
        self.next_inc += 1;
        let inc = self.next_inc;
        let restored = h.disk.durable(role).cloned();
        let seed = derive_seed(self.seed, 1_000_000 + inc);
        let spawn = Spawn {
            config: &self.scenario.config,
            node,
            seed,
            incarnation: inc,
            restored,
            normal_start: normal,
        };
        let Some(daemon) = self.factory.spawn(role, spawn) else {
            return;
        };
        let ep = Endpoint { node, role };
        self.note(format!("start {ep}"));
        if let Some(h) = self.hosts.get_mut(&node) {
            h.procs.insert(
                role,
                Proc {
                    daemon,
                    inc,
                    stopped: false,
                    parent,
                    held: Vec::new(),
                    deadline: None,
                },
            );
        }
        self.deliver(ep, inc, Delivery::tick(role));
    }

    /// Kills a daemon: its connections close (peers see it after `close_after`).
    pub(crate) fn kill_proc(&mut self, ep: Endpoint, close_after: Duration) {
        let Some(h) = self.hosts.get_mut(&ep.node) else {
            return;
        };
        let Some(gone) = h.procs.remove(&ep.role) else {
            return;
        };
        let (up, boot) = (h.up, h.boot);
        let parent = h
            .procs
            .iter()
            .find(|(_, p)| Some(p.inc) == gone.parent)
            .map(|(r, p)| (*r, p.inc));
        self.note(format!("exit {ep}"));
        if up && self.factory.world_supervised().contains(&ep.role) {
            let ev = Event::Spawn {
                node: ep.node,
                role: ep.role,
                normal: false,
                boot,
                parent: None,
            };
            self.queue.push_after(Duration::from_secs(1), ev);
        }
        if up && ep.role == Role::Monitor {
            self.schedule_cron(ep.node, boot);
        }
        if let (true, Some((role, inc))) = (up, parent) {
            let abnormal = self.exiting != Some(ep);
            // om_monitor's machine is told its cm_agent exited; cm_agent learns that its
            // cm_server is gone from its next sample.
            let input = match role {
                Role::Monitor => MonitorInput::AgentExited { abnormal }.into(),
                _ => Delivery::Absorbed,
            };
            let to = Endpoint {
                node: ep.node,
                role,
            };
            let ev = Event::Input { to, inc, input };
            self.queue.push_after(Duration::from_millis(1), ev);
        }
        for peer in self.net.close_all_of(ep) {
            self.notify_closed(peer, ep, close_after);
        }
    }

    /// The cron line of SPEC §1 keeps om_monitor alive: it checks at second 0 of every minute
    /// of the host's clock, so a dead om_monitor is back within 60 s. Without it a killed
    /// om_monitor stayed dead for the rest of the run, and with it every daemon it supervises
    /// (a later-killed cm_agent, the cm_server that agent restarts): the liveness phase
    /// could then never converge although SPEC §13 heals "all processes".
    fn schedule_cron(&mut self, node: NodeId, boot: u64) {
        let now = self.now();
        let Some(h) = self.hosts.get(&node) else {
            return;
        };
        let wall = h.clock.wall_ms(now);
        let local_wait_ms = 60_000 - wall % 60_000;
        let wait = Duration::from_secs_f64(local_wait_ms as f64 / 1000.0 / (1.0 + h.clock.drift));
        let ev = Event::Spawn {
            node,
            role: Role::Monitor,
            normal: false,
            boot,
            parent: None,
        };
        self.queue.push_after(wait, ev);
    }

    pub(crate) fn notify_closed(&mut self, who: Endpoint, peer: Endpoint, after: Duration) {
        if who.role == Role::Ctl {
            return;
        }
        if let Some(inc) = self.inc_of(who) {
            let input = self.net_delivery(who, inc, NetEvent::Closed { peer });
            self.queue.push_after(
                after,
                Event::Input {
                    to: who,
                    inc,
                    input,
                },
            );
        }
    }

    /// Releases what a frozen or stopped daemon accumulated, and its deadline.
    pub(crate) fn release(&mut self, ep: Endpoint) {
        let Some(p) = self
            .hosts
            .get_mut(&ep.node)
            .and_then(|h| h.procs.get_mut(&ep.role))
        else {
            return;
        };
        let held = std::mem::take(&mut p.held);
        let inc = p.inc;
        p.deadline = None;
        for input in held {
            self.queue
                .push_after(Duration::ZERO, Event::Input { to: ep, inc, input });
        }
        self.queue.push_after(
            Duration::ZERO,
            Event::Input {
                to: ep,
                inc,
                input: Delivery::tick(ep.role),
            },
        );
    }

    fn on_frame(&mut self, from: Endpoint, to: Endpoint, conn: u64, envelope: Envelope) {
        self.trace.mix(&[7, from.role as u8, to.role as u8]);
        if self.net.conn(from, to) != Some(conn) || !self.net.endpoints_up(from, to) {
            return;
        }
        if to.role == Role::Ctl {
            crate::operator::on_frame(self, envelope);
            return;
        }
        if from.role == Role::Agent
            && to.role == Role::Server
            && let Msg::AgentReport(_) = &envelope.msg
        {
            let now = self.now();
            self.checker.on_report(from.node, now);
        }
        if from.role == Role::Server && to.role == Role::Server {
            self.cms_heard.insert((from.node, to.node));
        }
        if let Msg::Command(c) = &envelope.msg
            && matches!(c.cmd, cm_core::msg::CmsCommand::Restart)
        {
            let now = self.now();
            self.last_restart_cmd.insert(c.instance, now);
        }
        if let Some(inc) = self.inc_of(to) {
            let ev = NetEvent::FrameReceived {
                peer: from,
                envelope,
            };
            let input = self.net_delivery(to, inc, ev);
            self.deliver(to, inc, input);
        }
    }

    fn on_connect(&mut self, from: Endpoint, to: Endpoint, inc: u64) {
        self.trace.mix(&[8]);
        let ok = self.inc_of(to).is_some() && self.net.endpoints_up(from, to);
        let peer = to;
        let ev = if ok {
            self.net.open(from, to);
            NetEvent::Connected { peer }
        } else {
            NetEvent::ConnectFailed { peer }
        };
        let input = self.net_delivery(from, inc, ev);
        self.deliver(from, inc, input);
    }

    fn on_replicate(&mut self) {
        self.trace.mix(&[9]);
        let now = self.now();
        let hosts = &self.hosts;
        let net = &self.net;
        let talk = |a: NodeId, b: NodeId| {
            let runs = |n: NodeId| hosts.get(&n).is_some_and(|h| h.up && !h.frozen);
            runs(a) && runs(b) && net.link_up(a, b)
        };
        let acks = self.dbs.replicate(now, &talk);
        self.checker.on_acks(now, &acks, &self.dbs);
        self.after_db_change();
        let tick = ms(self.scenario.sim.replication_tick_ms);
        self.queue.push_after(tick, Event::Replicate);
    }

    fn on_write(&mut self) {
        self.trace.mix(&[10]);
        let now = self.now();
        let ids: Vec<InstanceId> = self
            .dbs
            .instances
            .values()
            .filter(|i| i.accepts_writes() && self.host_runs(i.node))
            .map(|i| i.id)
            .collect();
        for id in ids {
            let acks = self.dbs.write(now, id);
            self.checker.on_acks(now, &acks, &self.dbs);
        }
        let every = ms(self.scenario.sim.write_interval_ms);
        self.queue.push_after(every, Event::Write);
    }

    pub(crate) fn after_db_change(&mut self) {
        let now = self.now();
        for p in self.dbs.take_promotions() {
            self.note(format!("promoted {} to {}", p.instance, p.history.timeline));
            self.checker.on_promotion(now, &p);
        }
    }

    /// Runs the checkers on the state after an event.
    fn check(&mut self) {
        let now = self.now();
        let (mut servers, mut writable) = std::mem::take(&mut self.check_bufs);
        self.refresh_server_views(&mut servers);
        self.checker.two_node_concession = self.two_node_concession();
        let hosts = &self.hosts;
        let frozen = |n: NodeId| hosts.get(&n).is_none_or(|h| !h.up || h.frozen);
        // An agent "runs" for S4 once it had a moment to act after a thaw: its self-fence
        // check runs on its next turn (at most one report interval).
        let params = &self.scenario.config.params;
        let agents = |n: NodeId| {
            hosts.get(&n).is_some_and(|h| {
                h.procs.get(&Role::Agent).is_some_and(|p| !p.stopped)
                    && h.thawed_at
                        .is_none_or(|t| now - t > params.report_interval())
            })
        };
        self.checker
            .check_state(now, &servers, &self.dbs, &frozen, &agents);
        self.primary_answers_into(&mut writable);
        self.checker.check_primary_answers(now, &writable);
        writable.clear();
        self.check_bufs = (servers, writable);
        self.check_resources();
        self.check_availability();
    }

    /// Every local DN whose agent answers `/primary` with 200 now (SPEC §15), evaluated by the
    /// same cm-core function the daemon serves, at each node's local clock; agents on a host
    /// that is down or frozen, or that are themselves stopped, answer nothing.
    fn primary_answers_into(&self, out: &mut Vec<(NodeId, InstanceId)>) {
        let now = self.now();
        for (node, h) in &self.hosts {
            if !h.up || h.frozen {
                continue;
            }
            if let Some(p) = h.procs.get(&Role::Agent).filter(|p| !p.stopped) {
                let local = h.clock.local(now);
                p.daemon
                    .for_each_writable(local, &mut |i| out.push((*node, i)));
            }
        }
    }

    /// Two-node mode with the gateway rule, both CMS nodes reaching the gateway, and the two
    /// not linked — or linked again but not yet having heard each other (until then each still
    /// acts on its isolation): the span SPEC §5.4 trades S4 and single leases in.
    fn two_node_concession(&mut self) -> bool {
        // The flag first: listing the CMS nodes allocates, and this runs after every event.
        if !self.scenario.config.params.cms_enable_failover_on2nodes {
            return false;
        }
        let cms = self.scenario.config.cms_nodes();
        if cms.len() != 2 {
            return false;
        }
        let linked = self.net.link_up(cms[0], cms[1]);
        if !linked {
            self.cms_heard.clear();
        }
        let heard = linked
            && self.cms_heard.contains(&(cms[0], cms[1]))
            && self.cms_heard.contains(&(cms[1], cms[0]));
        let nodes: Vec<NodeId> = self.hosts.keys().copied().collect();
        let now = self.now();
        if heard {
            self.concession_until = None;
            return false;
        }
        if cms.iter().all(|n| self.net.gateway_reachable(*n, &nodes)) {
            self.concession_until = Some(now + gateway_lag(&self.scenario.config.params));
            return true;
        }
        // A node learns that its gateway stopped answering only from its next probe.
        self.concession_until.is_some_and(|u| now < u)
    }

    /// What every live cm_server shows, with its local clock.
    pub fn server_views(&self) -> Vec<ServerView> {
        let mut out = Vec::new();
        self.server_views_into(&mut out);
        out
    }

    /// [`World::server_views`] appended to `out` (the per-event checks reuse one buffer).
    fn server_views_into(&self, out: &mut Vec<ServerView>) {
        let now = self.now();
        for (node, h) in &self.hosts {
            if !h.up {
                continue;
            }
            if let Some(p) = h.procs.get(&Role::Server)
                && let Some(obs) = p.daemon.server_obs()
            {
                out.push(ServerView {
                    node: *node,
                    local_now: h.clock.local(now),
                    incarnation: p.inc,
                    obs,
                });
            }
        }
    }

    /// Makes `out` what [`World::server_views_into`] would give on an empty vector, in place:
    /// a view still showing the observation it holds gets only its clock (and incarnation)
    /// updated, so a server that did not step costs no reference count traffic (two atomic
    /// operations per server per event, when the views were rebuilt after every event).
    fn refresh_server_views(&self, out: &mut Vec<ServerView>) {
        let now = self.now();
        let mut k = 0;
        for (node, h) in &self.hosts {
            if !h.up {
                continue;
            }
            let Some(p) = h.procs.get(&Role::Server) else {
                continue;
            };
            let Some(obs) = p.daemon.server_obs_ref() else {
                continue;
            };
            let local_now = h.clock.local(now);
            match out.get_mut(k) {
                Some(v) if v.node == *node && std::sync::Arc::ptr_eq(&v.obs, obs) => {
                    v.local_now = local_now;
                    v.incarnation = p.inc;
                }
                Some(v) => {
                    *v = ServerView {
                        node: *node,
                        local_now,
                        incarnation: p.inc,
                        obs: std::sync::Arc::clone(obs),
                    };
                }
                None => out.push(ServerView {
                    node: *node,
                    local_now,
                    incarnation: p.inc,
                    obs: std::sync::Arc::clone(obs),
                }),
            }
            k += 1;
        }
        out.truncate(k);
    }

    /// Whether the leader-held pause is in effect (any lease holder says paused).
    pub fn paused(&self) -> bool {
        self.server_views()
            .iter()
            .any(|s| s.holds_lease() && s.obs.paused)
    }

    /// Whether a pause is in force at the agent of `node` (S6, see `run_dn`).
    pub fn agent_paused(&self, node: NodeId) -> bool {
        self.hosts
            .get(&node)
            .filter(|h| h.up)
            .and_then(|h| h.procs.get(&Role::Agent))
            .is_some_and(|p| matches!(p.daemon.observe(), Obs::Agent { paused: true }))
    }

    pub(crate) fn recent_restart_cmd(&self, instance: InstanceId, within: Duration) -> bool {
        let now = self.now();
        self.last_restart_cmd
            .get(&instance)
            .is_some_and(|t| now - *t <= within)
    }

    /// The finished cm_ctl commands: (label, `Ok(message)` or `Err(message)`), in order.
    pub fn ctl_outcomes(&self) -> &[(String, Result<String, String>)] {
        &self.operator.outcomes
    }

    /// A per-node dump for failure reports.
    pub fn dump(&self) -> String {
        let now = self.now();
        let mut s = String::new();
        for (node, h) in &self.hosts {
            s.push_str(&format!(
                "{node}: up={} frozen={} drift={:+.4} disk={:.0}% flags={:?}\n",
                h.up,
                h.frozen,
                h.clock.drift,
                h.disk.usage_pct(now),
                h.flags
            ));
            for (role, p) in h.procs.iter() {
                s.push_str(&format!(
                    "  {role:?} inc={} stopped={} {}\n",
                    p.inc,
                    p.stopped,
                    p.daemon.dump()
                ));
            }
            for i in self.dbs.instances.values().filter(|i| i.node == *node) {
                s.push_str(&format!(
                    "  dn {} running={} {:?} {:?} {:?} pos={} term={} lock={:?} up={:?} ro={}\n",
                    i.id,
                    i.running,
                    i.proc_state,
                    i.role,
                    i.db_state,
                    i.position(),
                    i.term,
                    i.lock,
                    i.receiver.map(|r| r.upstream),
                    i.read_only
                ));
            }
        }
        s
    }

    /// Whether a DN process is in a hung state (for the executors' samples).
    pub fn dn_proc_state(&self, instance: InstanceId) -> Option<ProcState> {
        self.dbs
            .get(instance)
            .filter(|i| i.running)
            .map(|i| i.proc_state)
    }
}

/// §5.4: how long a CMS of two may still act on a gateway that stopped answering: its next
/// probe goes out within the maximum election timeout (its clock) and answers within the
/// probe bound; a failed probe ends its leading alone at once.
fn gateway_lag(p: &cm_core::params::Params) -> Duration {
    let rho = p.max_clock_drift;
    scale_up(p.election_timeout_max(), (1.0 + rho) / (1.0 - rho))
        + cm_core::quorum_math::GATEWAY_PROBE_BOUND
}

/// §5.4 and §4.4: how long, after the two-node span ends, healing may take to fence the
/// primary of the side with the lower group term: the survivor may need an election (two
/// maximum election timeouts), then the merge commits and the stale primary's next report
/// (one report interval) gets `Restart`, resent after half the heartbeat timeout if lost,
/// and the kill is confirmed within `kill_confirm_bound`; on clocks within ρ.
pub fn heal_fence_bound(p: &cm_core::params::Params) -> Duration {
    let rho = p.max_clock_drift;
    let raw = 2 * p.election_timeout_max()
        + p.report_interval()
        + p.instance_heartbeat_timeout() / 2
        + p.kill_confirm_bound();
    scale_up(raw, (1.0 + rho) / (1.0 - rho))
}

#[cfg(test)]
#[path = "world_tests.rs"]
mod tests;
