//! World mechanics with a toy daemon (no cm-core machine): determinism, the client and
//! replication loop, partitions, crashes and the S4 checker.

use core::time::Duration;

use cm_core::agent::{AgentCommand, AgentInput};
use cm_core::dn::{DnAction, StopMode};
use cm_core::flags::Flag;
use cm_core::io::{NetCommand, NetEvent, PersistState};
use cm_core::monitor::{MonitorCommand, MonitorInput};
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_core::server::{ServerCommand, ServerInput};
use cm_core::{InstanceId, Instant, NodeId, OpId, QuorumTerm, Term, WriteToken};

use crate::daemon::{Daemon, DaemonFactory, Obs, ServerObs, SimMachine, Spawn};
use crate::scenario::{Fault, FaultAction, Scenario};
use crate::world::World;

/// A toy agent: starts its DNs, promotes the listed instances at 5 s (local), makes the others
/// follow `primary`, pings every CMS twice a second and persists a counter every second.
struct ToyAgent {
    node: NodeId,
    local: Vec<InstanceId>,
    promote: Vec<InstanceId>,
    primary: InstanceId,
    cms: Vec<NodeId>,
    started: Option<Instant>,
    next: Instant,
    stage: u8,
    ops: u64,
    /// What it shows as the pause in force at it.
    paused: bool,
}

impl SimMachine<AgentInput, AgentCommand> for ToyAgent {
    fn step(&mut self, now: Instant, input: AgentInput) -> Vec<AgentCommand> {
        let start = *self.started.get_or_insert(now);
        let mut out = Vec::new();
        if let AgentInput::Net(NetEvent::Closed { peer }) = input {
            out.push(AgentCommand::Net(NetCommand::Connect { peer }));
        }
        if now < self.next {
            return out;
        }
        self.next = now + Duration::from_millis(500);
        self.ops += 1;
        let op = OpId(self.ops);
        let run = |i: InstanceId, action: DnAction| AgentCommand::RunDnAction {
            op,
            instance: i,
            action,
        };
        match self.stage {
            0 => {
                out.extend(self.local.iter().map(|i| run(*i, DnAction::StartPending)));
                out.extend(self.cms.iter().map(|n| {
                    AgentCommand::Net(NetCommand::Connect {
                        peer: Endpoint::server(*n),
                    })
                }));
                self.stage = 1;
            }
            1 if now - start >= Duration::from_secs(5) => {
                for i in &self.local {
                    if self.promote.contains(i) {
                        out.push(run(*i, DnAction::Promote { term: Term(1) }));
                    } else {
                        out.push(run(
                            *i,
                            DnAction::NotifyStandby {
                                primary: self.primary,
                            },
                        ));
                    }
                }
                self.stage = 2;
            }
            _ => {}
        }
        for n in &self.cms {
            let envelope = Envelope {
                from: Endpoint::agent(self.node),
                to: Endpoint::server(*n),
                quorum_term: QuorumTerm(0),
                msg: Msg::TermCheck { nonce: self.ops },
            };
            out.push(AgentCommand::Net(NetCommand::Send { envelope }));
        }
        if self.ops.is_multiple_of(2) {
            let bytes = self.ops.to_le_bytes().to_vec();
            out.push(AgentCommand::PersistState(PersistState {
                token: WriteToken(self.ops),
                bytes,
            }));
        }
        out
    }
    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next)
    }
    fn observe(&self) -> Obs {
        Obs::Agent {
            paused: self.paused,
        }
    }
    fn dump(&self) -> String {
        format!("toy agent stage {}", self.stage)
    }
}

/// A toy server: answers term checks; the lowest CMS node claims a lease renewed each step.
struct ToyServer {
    leader: bool,
    paused: bool,
    last: Instant,
    checks: u64,
}

impl SimMachine<ServerInput, ServerCommand> for ToyServer {
    fn step(&mut self, now: Instant, input: ServerInput) -> Vec<ServerCommand> {
        self.last = now;
        match input {
            ServerInput::Net(NetEvent::FrameReceived { peer, envelope }) => {
                self.checks += 1;
                let Msg::TermCheck { nonce } = envelope.msg else {
                    return Vec::new();
                };
                let reply = Envelope {
                    from: envelope.to,
                    to: peer,
                    quorum_term: QuorumTerm(1),
                    msg: Msg::TermCheckReply {
                        nonce,
                        highest: QuorumTerm(1),
                        weight: 1,
                    },
                };
                vec![ServerCommand::Net(NetCommand::Send { envelope: reply })]
            }
            _ => Vec::new(),
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    fn observe(&self) -> Obs {
        Obs::Server(ServerObs {
            quorum_term: QuorumTerm(1),
            leader: self.leader,
            voter: true,
            lease_until: self.leader.then(|| self.last + Duration::from_secs(3600)),
            paused: self.paused,
            ..ServerObs::default()
        })
    }
    fn dump(&self) -> String {
        format!("toy server checks {}", self.checks)
    }
}

struct Toy {
    promote: Vec<InstanceId>,
    /// The pause each toy agent shows in force at it.
    agent_paused: bool,
    /// The pause the toy leader's committed state shows.
    leader_paused: bool,
}

impl DaemonFactory for Toy {
    fn spawn(&self, role: Role, s: Spawn<'_>) -> Option<Daemon> {
        let cms = s.config.cms_nodes();
        match role {
            Role::Agent => Some(Daemon::agent(ToyAgent {
                node: s.node,
                local: s.config.instances_on(s.node),
                promote: self.promote.clone(),
                primary: self.promote[0],
                cms,
                started: None,
                next: Instant::ZERO,
                stage: 0,
                ops: 0,
                paused: self.agent_paused,
            })),
            Role::Server => Some(Daemon::server(ToyServer {
                leader: cms.first() == Some(&s.node),
                paused: self.leader_paused,
                last: Instant::ZERO,
                checks: 0,
            })),
            _ => None,
        }
    }
    fn boot_roles(&self, is_cms: bool) -> Vec<Role> {
        if is_cms {
            vec![Role::Agent, Role::Server]
        } else {
            vec![Role::Agent]
        }
    }
}

fn scenario(faults: Vec<Fault>) -> Scenario {
    let text = format!(
        "name = \"toy\"\nduration_s = 40\nliveness = false\n[cluster]\n{}",
        crate::db::tests::CONFIG_1P2S
            .replace("[[", "[[cluster.")
            .replace("[cluster.[", "[[")
    );
    let mut s = Scenario::from_toml_str(&text).expect("toy scenario");
    s.faults = faults;
    s
}

fn run_world(s: Scenario, seed: u64, promote: &[u32]) -> World {
    run_toy(s, seed, promote, false, false)
}

fn run_toy(
    s: Scenario,
    seed: u64,
    promote: &[u32],
    agent_paused: bool,
    leader_paused: bool,
) -> World {
    let promote = promote.iter().map(|i| InstanceId(*i)).collect();
    let toy = Toy {
        promote,
        agent_paused,
        leader_paused,
    };
    let mut w = World::new(s, seed, Box::new(toy));
    let end = Instant::ZERO + w.scenario.duration;
    w.run_until(end, &mut |_| false);
    w.checker.finish(end);
    w
}

#[test]
fn same_seed_gives_the_identical_trace_and_another_seed_does_not() {
    let a = run_world(scenario(Vec::new()), 11, &[6001]);
    let b = run_world(scenario(Vec::new()), 11, &[6001]);
    let c = run_world(scenario(Vec::new()), 12, &[6001]);
    assert_eq!((a.trace, a.events), (b.trace, b.events));
    assert_eq!(a.timeline, b.timeline);
    assert_ne!(a.trace, c.trace);
}

/// S6 is read at the agent (SPEC §2, §13): a start while the pause is in force at the starting
/// agent fails the run; a start by an agent whose pause lapsed with its CMS contact does not,
/// whatever the leader's committed state says.
#[test]
fn s6_fails_a_start_while_the_pause_is_in_force_at_the_agent_only() {
    let s6 = |w: &World| {
        w.checker
            .violations
            .iter()
            .filter(|v| v.rule == "S6")
            .count()
    };
    let in_force = run_toy(scenario(Vec::new()), 1, &[6001], true, true);
    assert_eq!(s6(&in_force), 3, "{:?}", in_force.checker.violations);
    let lapsed = run_toy(scenario(Vec::new()), 1, &[6001], false, true);
    assert_eq!(s6(&lapsed), 0, "{:?}", lapsed.checker.violations);
}

#[test]
fn client_writes_are_acknowledged_through_sync_replication() {
    let w = run_world(scenario(Vec::new()), 1, &[6001]);
    assert!(
        w.checker.violations.is_empty(),
        "{:?}",
        w.checker.violations
    );
    // 35 s of writes every 50 ms, each acknowledged once a standby streamed it.
    assert!(w.checker.acks_total > 500, "acks {}", w.checker.acks_total);
    let s = w.dbs.get(InstanceId(6002)).expect("standby");
    assert_eq!(s.receiver.map(|r| r.upstream), Some(InstanceId(6001)));
}

#[test]
fn isolating_the_primary_stops_acknowledgements_and_kills_receivers_after_the_wal_timeout() {
    let f = vec![Fault {
        at: Duration::from_secs(20),
        action: FaultAction::IsolateNode { node: NodeId(1) },
    }];
    let w = run_world(scenario(f), 1, &[6001]);
    let last = w
        .checker
        .last_ack
        .values()
        .max()
        .copied()
        .expect("acks before");
    assert!(
        last <= Instant::from_millis(20_100),
        "acked after isolation at {last}"
    );
    assert!(
        w.dbs
            .get(InstanceId(6002))
            .is_some_and(|s| s.receiver.is_none())
    );
    assert!(w.checker.violations.is_empty());
}

#[test]
fn two_primaries_that_can_both_acknowledge_are_an_s4_violation() {
    let mut s = scenario(Vec::new());
    s.config.params.dn_sync_mode = cm_core::params::SyncMode::Off;
    let w = run_world(s, 1, &[6001, 6002]);
    assert!(
        w.checker.violations.iter().any(|v| v.rule == "S4"),
        "{:?}",
        w.checker.violations
    );
    assert!(w.checker.dual_writable > Duration::from_secs(30));
}

#[test]
fn a_host_crash_loses_pending_writes_and_kills_its_databases() {
    let f = vec![Fault {
        at: Duration::from_millis(20_001),
        action: FaultAction::CrashHost { node: NodeId(2) },
    }];
    let w = run_world(scenario(f), 3, &[6001]);
    let h = w.hosts.get(&NodeId(2)).expect("host");
    assert!(!h.up);
    assert!(h.procs.is_empty());
    assert!(!w.dbs.get(InstanceId(6002)).is_some_and(|i| i.running));
    let durable = h
        .disk
        .durable(Role::Agent)
        .cloned()
        .expect("something was durable");
    let n = u64::from_le_bytes(durable.try_into().expect("8 bytes"));
    assert!(n <= 40, "nothing persisted after the crash: counter {n}");
}

#[test]
fn a_frozen_host_does_not_step_and_catches_up_on_thaw() {
    let f = vec![
        Fault {
            at: Duration::from_secs(10),
            action: FaultAction::FreezeHost { node: NodeId(1) },
        },
        Fault {
            at: Duration::from_secs(20),
            action: FaultAction::ThawHost { node: NodeId(1) },
        },
    ];
    let promote = vec![InstanceId(6001)];
    let toy = Toy {
        promote,
        agent_paused: false,
        leader_paused: false,
    };
    let mut w = World::new(scenario(f), 1, Box::new(toy));
    w.run_until(Instant::from_millis(10_200), &mut |_| false);
    let before = w.checker.acks_total;
    let checks_before = w.hosts[&NodeId(1)].procs[&Role::Server].daemon.dump();
    w.run_until(Instant::from_millis(19_900), &mut |_| false);
    assert_eq!(
        w.checker.acks_total, before,
        "a frozen primary acknowledges nothing"
    );
    let checks_frozen = w.hosts[&NodeId(1)].procs[&Role::Server].daemon.dump();
    assert_eq!(
        checks_before, checks_frozen,
        "a frozen server steps on nothing"
    );
    w.run_until(Instant::from_secs(25), &mut |_| false);
    assert!(
        w.checker.acks_total > before,
        "writes resume after the thaw"
    );
    let checks_after = w.hosts[&NodeId(1)].procs[&Role::Server].daemon.dump();
    assert_ne!(
        checks_after, checks_frozen,
        "held frames are delivered on thaw"
    );
    assert!(
        w.checker.violations.is_empty(),
        "{:?}",
        w.checker.violations
    );
}

#[test]
fn cron_restarts_a_killed_om_monitor_at_second_0_of_the_next_minute() {
    // SPEC §1: the cron line checks at second 0 of every minute. Without it a killed
    // om_monitor never came back, nor did a cm_agent killed after it (swarm seeds 2530, 3320,
    // 3424, 4859, 5213, 5259, 6805, 8758 could not converge after healing).
    let kill = FaultAction::KillProcess {
        node: NodeId(1),
        role: crate::scenario::RoleName::Monitor,
    };
    let mut s = scenario(vec![Fault {
        at: Duration::from_secs(10),
        action: kill,
    }]);
    s.duration = Duration::from_secs(75);
    let mut w = World::new(s, 3, Box::new(crate::daemon::Machines));
    let monitor_up = |w: &World| w.hosts[&NodeId(1)].procs.contains_key(&Role::Monitor);
    w.run_until(Instant::ZERO + Duration::from_secs(11), &mut |_| false);
    assert!(!monitor_up(&w), "killed at 10 s");
    let restarted = w.run_until(Instant::ZERO + Duration::from_secs(75), &mut |w| {
        w.hosts[&NodeId(1)].procs.contains_key(&Role::Monitor)
    });
    assert!(restarted, "back within 60 s of the kill");
    let at = w.now();
    let wall = w.hosts[&NodeId(1)].clock.wall_ms(at);
    assert!(wall % 60_000 <= 1, "started at second 0 (wall {wall} ms)");
    assert!(at < Instant::ZERO + Duration::from_secs(70));
}

fn at(s: u64, action: FaultAction) -> Fault {
    Fault {
        at: Duration::from_secs(s),
        action,
    }
}

/// (In the 1P2S toy every node hosts a DN, so the leader is cut from every other agent.)
#[test]
fn faults_aimed_at_the_cms_leader_hit_the_lease_holders_node_only() {
    let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
    let mut s = scenario(vec![
        at(10, FaultAction::CutCmsLeaderFromAgents),
        at(20, FaultAction::Heal),
        at(
            21,
            FaultAction::PartitionFromCmsLeader {
                node: n3,
                one_way: false,
            },
        ),
        at(30, FaultAction::Heal),
        at(31, FaultAction::DiskHangCmsLeader { duration_s: 5.0 }),
    ]);
    s.duration = Duration::from_secs(15);
    // The toy leader is node 1 (the lowest CMS node).
    let mut w = run_world(s, 1, &[6001]);
    assert!(
        !w.net
            .endpoints_up(Endpoint::server(n1), Endpoint::agent(n2))
    );
    assert!(
        !w.net
            .endpoints_up(Endpoint::server(n1), Endpoint::agent(n3))
    );
    assert!(
        w.net
            .endpoints_up(Endpoint::server(n1), Endpoint::agent(n1))
    );
    assert!(
        w.net
            .endpoints_up(Endpoint::server(n1), Endpoint::server(n2))
    );
    assert!(
        w.net
            .endpoints_up(Endpoint::agent(n2), Endpoint::server(n2))
    );
    w.run_until(Instant::from_secs(25), &mut |_| false);
    assert!(!w.net.link_up(n3, n1));
    assert!(w.net.link_up(n3, n2) && w.net.link_up(n2, n1));
    w.run_until(Instant::from_secs(33), &mut |_| false);
    let now = w.now();
    assert!(w.hosts[&n1].disk.hung(now));
    assert!(!w.hosts[&n2].disk.hung(now) && !w.hosts[&n3].disk.hung(now));
}

#[test]
fn staggered_power_on_boots_each_node_at_its_instant() {
    let mut s = scenario(Vec::new());
    s.sim.power_on_s = vec![0.0, 5.0, 20.0];
    let mut w = World::new(
        s,
        1,
        Box::new(Toy {
            promote: vec![InstanceId(6001)],
            agent_paused: false,
            leader_paused: false,
        }),
    );
    let up = |w: &World, n: u32| w.hosts[&NodeId(n)].up;
    w.run_until(Instant::from_secs(3), &mut |_| false);
    assert!(up(&w, 1) && !up(&w, 2) && !up(&w, 3));
    w.run_until(Instant::from_secs(6), &mut |_| false);
    assert!(up(&w, 2) && !up(&w, 3));
    // om_monitor, here the toy agent, starts boot_s (2 s) after the power-on.
    assert!(!w.has_proc(NodeId(2), Role::Agent));
    w.run_until(Instant::from_secs(8), &mut |_| false);
    assert!(w.has_proc(NodeId(2), Role::Agent));
    w.run_until(Instant::from_secs(21), &mut |_| false);
    assert!(up(&w, 3));
}

#[test]
fn the_gateway_fault_sets_reachability_until_heal() {
    let all = [NodeId(1), NodeId(2), NodeId(3)];
    let mut s = scenario(vec![
        at(
            5,
            FaultAction::Gateway {
                node: NodeId(2),
                reachable: false,
            },
        ),
        at(10, FaultAction::Heal),
    ]);
    s.duration = Duration::from_secs(7);
    let mut w = run_world(s, 1, &[6001]);
    assert!(!w.net.gateway_reachable(NodeId(2), &all));
    assert!(w.net.gateway_reachable(NodeId(1), &all));
    w.run_until(Instant::from_secs(11), &mut |_| false);
    assert!(w.net.gateway_reachable(NodeId(2), &all));
}

/// A toy om_monitor: on its first tick writes `cluster_manual_start`; on the completion asks
/// for an agent sample; logs what reaches it.
struct ToyMonitor {
    log: Vec<String>,
    wrote: bool,
}

impl SimMachine<MonitorInput, MonitorCommand> for ToyMonitor {
    fn step(&mut self, now: Instant, input: MonitorInput) -> Vec<MonitorCommand> {
        match input {
            MonitorInput::Tick if !self.wrote => {
                self.wrote = true;
                self.log.push(format!("tick {}", now.as_nanos()));
                vec![MonitorCommand::WriteFlag {
                    op: OpId(7),
                    flag: Flag::ClusterManualStart,
                    mode: StopMode::Fast,
                }]
            }
            MonitorInput::FlagOpCompleted { op, result } => {
                self.log
                    .push(format!("done {op:?} {result:?} {}", now.as_nanos()));
                vec![MonitorCommand::SampleAgent]
            }
            MonitorInput::AgentSampled {
                processes, flags, ..
            } => {
                let flag = flags.cluster_manual_start;
                self.log.push(format!(
                    "sampled {} {flag:?} {}",
                    processes.len(),
                    now.as_nanos()
                ));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    fn dump(&self) -> String {
        self.log.join("; ")
    }
}

struct ToyMonitors;

impl DaemonFactory for ToyMonitors {
    fn spawn(&self, role: Role, _s: Spawn<'_>) -> Option<Daemon> {
        (role == Role::Monitor).then(|| {
            Daemon::monitor(ToyMonitor {
                log: Vec::new(),
                wrote: false,
            })
        })
    }
}

#[test]
fn a_flag_write_completes_within_the_delivery_and_a_sample_reads_it_a_millisecond_later() {
    let mut w = World::new(scenario(Vec::new()), 1, Box::new(ToyMonitors));
    w.run_until(Instant::from_secs(5), &mut |_| false);
    let h = &w.hosts[&NodeId(1)];
    assert_eq!(h.flags.cluster_manual_start, Some(StopMode::Fast));
    let log = h.procs[&Role::Monitor].daemon.dump();
    let t = |i: usize| -> Instant {
        let word = log.split("; ").nth(i).and_then(|l| l.rsplit(' ').next());
        Instant::from_nanos(word.and_then(|s| s.parse().ok()).expect(&log))
    };
    assert!(log.starts_with("tick "), "{log}");
    assert!(log.contains("; done OpId(7) Ok(()) "), "{log}");
    assert!(log.contains("; sampled 0 Some(Fast) "), "{log}");
    assert_eq!(
        t(0),
        t(1),
        "the completion is stepped at the tick's instant: {log}"
    );
    let gap = t(2) - t(1);
    // One world millisecond on a clock within ρ of it.
    assert!(
        gap >= Duration::from_micros(990) && gap <= Duration::from_micros(1010),
        "{log}"
    );
}

/// The checkers' view of a cm_server is built once per step and shared; a step after which it
/// shows the same keeps the same `Arc` (which S2 and F skip), one that changes it gives a new one.
#[test]
fn a_servers_view_is_kept_until_a_step_changes_what_it_shows() {
    use std::sync::Arc;
    let toy = |leader| ToyServer {
        leader,
        paused: false,
        last: Instant::ZERO,
        checks: 0,
    };
    // A follower shows no lease: its steps change nothing it shows.
    let mut d = Daemon::server(toy(false));
    let first = d.server_obs().expect("a server shows a view");
    assert!(Arc::ptr_eq(&first, &d.server_obs().unwrap()));
    let m = d.server_mut().unwrap();
    m.step(Instant::from_secs(1), ServerInput::Tick);
    assert!(Arc::ptr_eq(&first, &d.server_obs().unwrap()));
    // A leader's lease moves with the step's instant: a new view, then kept at the same instant.
    let mut d = Daemon::server(toy(true));
    let first = d.server_obs().unwrap();
    d.server_mut()
        .unwrap()
        .step(Instant::from_secs(1), ServerInput::Tick);
    let second = d.server_obs().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(
        second.lease_until,
        Some(Instant::from_secs(1) + Duration::from_secs(3600))
    );
    d.server_mut()
        .unwrap()
        .step(Instant::from_secs(1), ServerInput::Tick);
    assert!(Arc::ptr_eq(&second, &d.server_obs().unwrap()));
}
