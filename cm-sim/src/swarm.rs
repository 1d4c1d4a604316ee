//! Swarm mode (TigerBeetle's VOPR method): the seed draws the whole run — topology, parameters
//! that pass config validation, network behaviour and a random mix of faults — for a safety
//! phase of at least 300 simulated seconds, then a liveness phase with every fault healed.
//!
//! Two generators share one seed. `swarm-classic` is the original draw (1, 3 or 5 CMS, every
//! node powered on at 0, eleven fault kinds); seeds found by it keep their meaning through it.
//! `swarm` makes the classic draws from the same stream and widens them from a second one
//! (issue 11): two CMS (with and without `cms_enable_failover_on2nodes`, gateways reachable
//! from one side, both or neither), CMS-only nodes, staggered cold starts and late joins,
//! operator actions against moving targets (switchovers whose target crashes just before or
//! during the request, concurrent and refused requests, pause/resume and stop/start mid-way),
//! and partial partitions (a leader cut from the agents only, a node cut from the leader but
//! not from the followers, flapping links, a disk hanging I/O on the leader).

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::config::{
    AzConfig, ClusterConfig, DatabaseConfig, GroupConfig, MemberConfig, NodeConfig,
};
use cm_core::params::{Params, Profile, SyncMode};
use cm_core::rng::{Prng, derive_seed};
use cm_core::{AzName, GroupId, InstanceId, NodeId};

use crate::db::DbTimings;
use crate::net::NetParams;
use crate::scenario::{Fault, FaultAction, RoleName, Scenario, SimParams};

/// The name `run` and `sweep` accept for a (widened) swarm run.
pub const SWARM: &str = "swarm";

/// The name of the original generator, under which seeds found before issue 11 reproduce.
pub const SWARM_CLASSIC: &str = "swarm-classic";

/// The widened generator plus custom resources (SPEC §14): a `with_primary_of` resource on
/// group 1 (some of its instances starting slowly; its `time_out` the default 10 s in about 4
/// seeds of 10, else 1–10 s) and a `fixed` one whose script may fail,
/// hang or flap, with resource kills, so that S7 is checked under every fault. Drawn from a
/// stream of their own: `swarm` and `swarm-classic` seeds keep their meaning (the slow starts
/// are drawn last, but they change the runs of the seeds that draw them).
pub const SWARM_RESOURCES: &str = "swarm-resources";

/// The widened generator plus every fault of the model that `swarm` never draws (review of
/// issue 11): failing Builds, recoveries that never end, disk read/write errors and hung I/O on
/// any node, SIGSTOP/SIGCONT of one daemon, a CMS store lost with its disk (the §5.1 non-voter
/// path, then the operator's `cms --readd`), the CMS leader's node isolated, the network's
/// loss, latency, duplication and reordering changed for a while, a data disk that fills up,
/// and the operator's `build`. Drawn from a stream of its own after the `swarm` draw, which it
/// keeps unchanged: `swarm` and `swarm-classic` seeds keep their meaning.
pub const SWARM_FAULTS: &str = "swarm-faults";

/// Where the classic draw places CMS and DNs: `cms` CMS nodes, of which `cms_only` host no DN.
#[derive(Clone, Copy, Debug)]
struct Layout {
    cms: usize,
    cms_only: usize,
}

/// The topology drawn for a seed: (groups × members, CMS count, AZ count).
fn topology(rng: &mut Prng) -> (Vec<usize>, usize, usize) {
    let groups = 1 + rng.index(3);
    let members: Vec<usize> = (0..groups).map(|_| 2 + rng.index(4)).collect();
    let cms = [1, 3, 5][rng.index(3)];
    let azs = 1 + rng.index(3);
    (members, cms, azs)
}

/// The widened layout: 1, 2, 3 or 5 CMS, some of them on nodes without DNs.
fn wide_layout(wide: &mut Prng, classic_cms: usize) -> Layout {
    let cms = if wide.chance(0.25) { 2 } else { classic_cms };
    let cms_only = if wide.chance(0.3) {
        1 + wide.index(cms.min(2))
    } else {
        0
    };
    Layout { cms, cms_only }
}

fn config(rng: &mut Prng, members: &[usize], layout: Layout, azs: usize) -> ClusterConfig {
    let Layout { cms, cms_only } = layout;
    let dn_nodes = members.iter().copied().max().unwrap_or(2);
    let node_count = (dn_nodes + cms_only).max(cms);
    // CMS-only nodes are the last ones; the other CMS are the first nodes.
    let is_cms = |i: usize| i <= cms - cms_only || i > node_count - cms_only;
    let dn_count = node_count - cms_only;
    let az_names: Vec<AzName> = (1..=azs).map(|i| AzName(format!("AZ{i}"))).collect();
    let nodes: Vec<NodeConfig> = (1..=node_count as u32)
        .map(|i| NodeConfig {
            id: NodeId(i),
            name: format!("n{i}"),
            address: format!("10.0.0.{i}"),
            az: az_names[(i as usize - 1) % azs].clone(),
            state_dir: format!("/var/lib/cm/n{i}"),
            monitor_port: 17001,
            cms_port: is_cms(i as usize).then_some(17101),
            cms_http_port: None,
            rest_port: None,
        })
        .collect();
    let groups: Vec<GroupConfig> = members
        .iter()
        .enumerate()
        .map(|(g, m)| {
            let offset = rng.index(dn_count);
            GroupConfig {
                id: GroupId(g as u32 + 1),
                members: (0..*m)
                    .map(|k| MemberConfig {
                        instance: InstanceId(6001 + 100 * g as u32 + k as u32),
                        node: NodeId(((offset + k) % dn_count) as u32 + 1),
                        data_dir: format!("/var/lib/pg/g{g}m{k}"),
                        port: 5432 + g as u16,
                    })
                    .collect(),
            }
        })
        .collect();
    let azs = az_names
        .into_iter()
        .enumerate()
        .map(|(i, name)| AzConfig {
            name,
            priority: i as u32 + 1,
        })
        .collect();
    let mut cfg = ClusterConfig {
        name: "swarm".into(),
        security: Default::default(),
        azs,
        nodes,
        groups,
        database: DatabaseConfig::default(),
        params: Params::defaults(),
        event_triggers: Default::default(),
        resources: Vec::new(),
    };
    cfg.params = params(rng, &cfg);
    cfg
}

/// Random parameters; draws again until they pass validation (defaults after 20 tries).
fn params(rng: &mut Prng, cfg: &ClusterConfig) -> Params {
    for _ in 0..20 {
        let profile = if rng.chance(0.3) {
            Profile::Fast
        } else {
            Profile::Default
        };
        let mut p = Params::for_profile(profile);
        p.max_clock_drift = rng.unit_f64() * 0.05;
        if rng.chance(0.2) {
            p.dn_sync_mode = SyncMode::Off;
        }
        if rng.chance(0.3) {
            p.agent_self_fence_timeout *= 1.0 + rng.unit_f64();
        }
        if rng.chance(0.3) {
            p.wait_static_primary_times = 5 + rng.range_inclusive(0, 5);
        }
        if rng.chance(0.3) {
            let min = p.election_timeout_min_ms;
            p.election_timeout_max_ms = min + rng.range_inclusive(min / 4, min);
        }
        let mut c = cfg.clone();
        c.params = p.clone();
        if c.validate().is_empty() {
            return p;
        }
    }
    Params::defaults()
}

fn net(rng: &mut Prng) -> NetParams {
    let min = 0.1 + rng.unit_f64() * 5.0;
    NetParams {
        latency_min_ms: min,
        latency_max_ms: min + rng.unit_f64() * 45.0,
        loss: if rng.chance(0.3) {
            rng.unit_f64() * 0.02
        } else {
            0.0
        },
        duplication: if rng.chance(0.3) {
            rng.unit_f64() * 0.02
        } else {
            0.0
        },
        reorder: rng.chance(0.2),
        ..NetParams::default()
    }
}

/// A random fault mix: each fault with its own recovery a little later.
fn faults(rng: &mut Prng, cfg: &ClusterConfig, duration: Duration) -> Vec<Fault> {
    let nodes: Vec<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
    let instances: Vec<InstanceId> = cfg
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(|m| m.instance))
        .collect();
    let azs: Vec<String> = cfg.azs.iter().map(|a| a.name.0.clone()).collect();
    let weights: [u32; 11] = [3, 2, 3, 2, 2, 2, 2, 1, 2, 1, 1];
    let total: u32 = weights.iter().sum();
    let count = 3 + rng.index(8);
    let span = duration.as_secs_f64() - 40.0;
    let mut out = Vec::new();
    for _ in 0..count {
        let at = 20.0 + rng.unit_f64() * span;
        let hold = 2.0 + rng.unit_f64() * 60.0;
        let node = nodes[rng.index(nodes.len())];
        let inst = instances[rng.index(instances.len())];
        let mut pick = rng.range_inclusive(0, u64::from(total) - 1) as u32;
        let kind = weights
            .iter()
            .position(|w| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        let (start, end) = match kind {
            0 => (
                FaultAction::CrashHost { node },
                Some(FaultAction::RestartHost { node }),
            ),
            1 => (
                FaultAction::FreezeHost { node },
                Some(FaultAction::ThawHost { node }),
            ),
            2 => (FaultAction::KillDn { instance: inst }, None),
            3 => {
                let state = ["T", "D", "Z"][rng.index(3)].to_owned();
                (
                    FaultAction::DnState {
                        instance: inst,
                        state,
                    },
                    Some(FaultAction::DnState {
                        instance: inst,
                        state: "R".into(),
                    }),
                )
            }
            4 => {
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    nodes.iter().partition(|_| rng.chance(0.5));
                (
                    FaultAction::Partition {
                        a,
                        b,
                        one_way: rng.chance(0.3),
                    },
                    Some(FaultAction::Heal),
                )
            }
            5 => (FaultAction::IsolateNode { node }, Some(FaultAction::Heal)),
            6 => (FaultAction::CutAgent { node }, Some(FaultAction::Heal)),
            7 => (
                FaultAction::IsolateAz {
                    az: azs[rng.index(azs.len())].clone(),
                },
                Some(FaultAction::Heal),
            ),
            8 => {
                let role = [RoleName::Agent, RoleName::Server, RoleName::Monitor][rng.index(3)];
                (FaultAction::KillProcess { node, role }, None)
            }
            9 => (
                FaultAction::DiskUsage {
                    node,
                    pct: 80.0 + rng.unit_f64() * 15.0,
                    growth_pct_per_s: 0.0,
                },
                Some(FaultAction::DiskUsage {
                    node,
                    pct: 40.0,
                    growth_pct_per_s: 0.0,
                }),
            ),
            _ => (FaultAction::CrashCmsLeader, None),
        };
        out.push(Fault {
            at: Duration::from_secs_f64(at),
            action: start,
        });
        if let Some(e) = end {
            out.push(Fault {
                at: Duration::from_secs_f64(at + hold),
                action: e,
            });
        }
    }
    out.sort_by_key(|f| f.at);
    out
}

/// The scenario of `swarm-faults` for a seed: the widened draw plus [`model_faults`].
pub fn with_model_faults(seed: u64) -> Scenario {
    let mut s = draw(seed, true);
    let mut rng = Prng::new(derive_seed(seed, 0x4641_554c_5453));
    let extra = model_faults(&mut rng, &s.config, s.duration, &s.net);
    s.description += &format!(", {} model faults", extra.len());
    s.faults.extend(extra);
    s.faults.sort_by_key(|f| f.at);
    s.name = SWARM_FAULTS.into();
    s
}

/// The scenario a seed draws (the widened generator, `swarm`).
pub fn scenario(seed: u64) -> Scenario {
    draw(seed, true)
}

/// The scenario of `swarm-resources` for a seed: the widened draw plus resources.
pub fn with_resources(seed: u64) -> Scenario {
    let mut s = draw(seed, true);
    add_resources(&mut s, seed);
    s
}

/// The scenario the original generator drew for a seed (`swarm-classic`).
pub fn classic(seed: u64) -> Scenario {
    draw(seed, false)
}

/// The scenario of a generator name (`swarm`, `swarm-classic`, `swarm-resources`,
/// `swarm-faults`), None for other names.
pub fn by_name(name: &str, seed: u64) -> Option<Scenario> {
    match name {
        SWARM => Some(scenario(seed)),
        SWARM_CLASSIC => Some(classic(seed)),
        SWARM_RESOURCES => Some(with_resources(seed)),
        SWARM_FAULTS => Some(with_model_faults(seed)),
        _ => None,
    }
}

fn draw(seed: u64, widen: bool) -> Scenario {
    let mut rng = Prng::new(derive_seed(seed, 0x0053_5741_524d));
    let mut wide = Prng::new(derive_seed(seed, 0x5749_4445));
    let (members, cms, azs) = topology(&mut rng);
    let layout = if widen {
        wide_layout(&mut wide, cms)
    } else {
        Layout { cms, cms_only: 0 }
    };
    let mut config = config(&mut rng, &members, layout, azs);
    let duration = Duration::from_secs(300 + rng.range_inclusive(0, 120));
    let mut faults = faults(&mut rng, &config, duration);
    let net = net(&mut rng);
    let mut sim = SimParams::default();
    let mut extra = String::new();
    if widen {
        if layout.cms == 2 && wide.chance(0.6) {
            config.params.cms_enable_failover_on2nodes = true;
            config.params.third_party_gateway_ip = "10.0.0.254".into();
        }
        sim.power_on_s = power_on(&mut wide, config.nodes.len());
        faults.extend(wide_faults(&mut wide, &config, duration));
        faults.extend(operator_actions(&mut wide, &config, duration));
        // A stream of its own, drawn last: the seeds that draw none of these keep their runs.
        let mut nemesis = Prng::new(derive_seed(seed, 0x004E_454D_4553_4953));
        faults.extend(nemesis_faults(&mut nemesis, &config, duration));
        faults.sort_by_key(|f| f.at);
        extra = format!(
            ", {} CMS-only, two-node failover {}, power-on {:?}",
            layout.cms_only,
            config.params.cms_enable_failover_on2nodes,
            sim.power_on_s
                .iter()
                .map(|s| (s * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
    }
    let description = format!(
        "swarm: groups {members:?}, {} CMS, {azs} AZ, sync {:?}, {} faults{extra}",
        layout.cms,
        config.params.dn_sync_mode,
        faults.len()
    );
    Scenario {
        name: if widen { SWARM } else { SWARM_CLASSIC }.into(),
        description,
        config,
        duration,
        liveness: true,
        affected_group: GroupId(1),
        net,
        db: DbTimings::default(),
        sim,
        faults,
        expect: BTreeMap::new(),
    }
}

/// Adds the resources of `swarm-resources` (see [`SWARM_RESOURCES`]).
fn add_resources(s: &mut Scenario, seed: u64) {
    use crate::resources::ResourceModel;
    use cm_core::config::{Placement, ResourceConfig, ResourceInstanceConfig};
    let mut res = Prng::new(derive_seed(seed, 0x5245_5352));
    let Some(g) = s.config.groups.first() else {
        return;
    };
    let mut nodes: Vec<NodeId> = g.members.iter().map(|m| m.node).collect();
    nodes.sort();
    nodes.dedup();
    let base = |name: &str, script: &str, instances: Vec<ResourceInstanceConfig>| ResourceConfig {
        name: name.into(),
        script: script.into(),
        instances,
        check_interval: Duration::from_secs(1),
        time_out: Duration::from_secs(10),
        restart_delay: Duration::from_secs(1),
        restart_period: Duration::from_secs(1),
        restart_times: None,
        abnormal_timeout: Duration::from_secs(30),
        placement: Placement::Fixed,
    };
    let mut vip = base(
        "vip",
        "/opt/vip.sh",
        nodes
            .iter()
            .enumerate()
            .map(|(k, n)| ResourceInstanceConfig {
                node: *n,
                id: InstanceId(9001 + k as u32),
                args: String::new(),
            })
            .collect(),
    );
    vip.placement = Placement::WithPrimaryOf(g.id);
    vip.time_out = Duration::from_secs(1 + res.range_inclusive(0, 9));
    let app_node = s.config.nodes[res.index(s.config.nodes.len())].id;
    let mut app = base(
        "app",
        "/opt/app.sh",
        vec![ResourceInstanceConfig {
            node: app_node,
            id: InstanceId(9101),
            args: String::new(),
        }],
    );
    app.time_out = Duration::from_secs(1 + res.range_inclusive(0, 4));
    if res.chance(0.3) {
        app.restart_times = Some(res.range_inclusive(0, 5) as u32);
    }
    let models = [
        ResourceModel::Ok,
        ResourceModel::FailStart,
        ResourceModel::Hang,
        ResourceModel::Flap,
    ];
    s.sim
        .resource_models
        .insert(InstanceId(9101), models[res.index(models.len())]);
    if res.chance(0.3) {
        let k = res.index(vip.instances.len());
        s.sim
            .resource_models
            .insert(vip.instances[k].id, ResourceModel::Flap);
    }
    let kills = res.index(4);
    let ids: Vec<InstanceId> = vip
        .instances
        .iter()
        .map(|i| i.id)
        .chain([InstanceId(9101)])
        .collect();
    for _ in 0..kills {
        let at = 20.0 + res.unit_f64() * (s.duration.as_secs_f64() - 40.0).max(1.0);
        let instance = ids[res.index(ids.len())];
        s.faults
            .push(fault(at, FaultAction::KillResource { instance }));
    }
    // Drawn last so that the draws above keep their meaning for older seeds: some vip
    // instances start slowly, their program coming up only as `-start` ends (§14's hand-over).
    for i in &vip.instances {
        if res.chance(0.4) {
            s.sim
                .resource_models
                .entry(i.id)
                .or_insert(ResourceModel::SlowStart);
        }
    }
    // Drawn after everything else for the same reason: §14's default `time_out` (10 s) in
    // about 4 seeds of 10 (1–10 s uniformly drew it in 1 of 10), so the swarm exercises the
    // long hand-over wait after a crash (≈ 28 s) and the long stops it must cover.
    if res.chance(0.4) {
        vip.time_out = Duration::from_secs(10);
    }
    s.faults.sort_by_key(|f| f.at);
    s.config.resources = vec![vip, app];
    s.name = SWARM_RESOURCES.into();
    s.description += &format!(
        ", resources vip (time_out {:?}) and app ({:?}), {kills} resource kills",
        s.config.resources[0].time_out,
        s.sim
            .resource_models
            .get(&InstanceId(9101))
            .copied()
            .unwrap_or_default()
    );
}

/// Power-on instants: every node at 0, or a staggered cold start (each node within 3 s), and
/// sometimes one node joining late (10–90 s).
fn power_on(wide: &mut Prng, nodes: usize) -> Vec<f64> {
    let mut out = vec![0.0; nodes];
    if wide.chance(0.5) {
        for s in &mut out {
            *s = wide.unit_f64() * 3.0;
        }
    }
    if wide.chance(0.15) {
        let late = wide.index(nodes);
        out[late] = 10.0 + wide.unit_f64() * 80.0;
    }
    out
}

fn fault(at: f64, action: FaultAction) -> Fault {
    Fault {
        at: Duration::from_secs_f64(at),
        action,
    }
}

/// Partial partitions and faults aimed at the CMS leader, each with its recovery.
fn wide_faults(wide: &mut Prng, cfg: &ClusterConfig, duration: Duration) -> Vec<Fault> {
    let nodes: Vec<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
    let cms = cfg.cms_nodes();
    let span = duration.as_secs_f64() - 60.0;
    let count = wide.index(4);
    let mut out = Vec::new();
    for _ in 0..count {
        let at = 20.0 + wide.unit_f64() * span;
        let hold = 5.0 + wide.unit_f64() * 140.0;
        let node = nodes[wide.index(nodes.len())];
        match wide.index(7) {
            0 => {
                out.push(fault(at, FaultAction::CutCmsLeaderFromAgents));
                out.push(fault(at + hold, FaultAction::Heal));
            }
            1 => {
                let one_way = wide.chance(0.3);
                out.push(fault(
                    at,
                    FaultAction::PartitionFromCmsLeader { node, one_way },
                ));
                out.push(fault(at + hold, FaultAction::Heal));
            }
            2 => {
                // A flapping link: cut and healed again every few seconds.
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    nodes.iter().partition(|n| **n == node || wide.chance(0.2));
                let one_way = wide.chance(0.3);
                let mut t = at;
                for _ in 0..3 + wide.index(6) {
                    let partition = FaultAction::Partition {
                        a: a.clone(),
                        b: b.clone(),
                        one_way,
                    };
                    out.push(fault(t, partition));
                    t += 0.5 + wide.unit_f64() * 4.0;
                    out.push(fault(t, FaultAction::Heal));
                    t += 0.5 + wide.unit_f64() * 5.0;
                }
            }
            3 => {
                let duration_s = 2.0 + wide.unit_f64() * 60.0;
                out.push(fault(at, FaultAction::DiskHangCmsLeader { duration_s }));
            }
            4 if cms.len() == 2 => {
                // Two-node mode: the CMS nodes cut from each other, the gateways reachable
                // from one side, both or neither.
                let (a, b): (Vec<NodeId>, Vec<NodeId>) = nodes
                    .iter()
                    .partition(|n| **n == cms[0] || **n != cms[1] && wide.chance(0.5));
                for c in &cms {
                    let reachable = wide.chance(0.5);
                    out.push(fault(
                        at,
                        FaultAction::Gateway {
                            node: *c,
                            reachable,
                        },
                    ));
                }
                out.push(fault(
                    at,
                    FaultAction::Partition {
                        a,
                        b,
                        one_way: false,
                    },
                ));
                out.push(fault(at + hold, FaultAction::Heal));
            }
            6 => {
                // A standby whose stream breaks (its receiver connects and gets nothing): it
                // must be seen not streaming, re-pointed, then rebuilt (issue 18).
                let members: Vec<InstanceId> = cfg
                    .groups
                    .iter()
                    .flat_map(|g| g.members.iter().map(|m| m.instance))
                    .collect();
                let instance = members[wide.index(members.len())];
                // Or one that flaps: it streams for a moment every few seconds and fails in
                // between (review of issue 18: one streaming report used to end its loss).
                let action = if wide.chance(0.5) {
                    FaultAction::FlapStream { instance }
                } else {
                    FaultAction::BreakStream { instance }
                };
                out.push(fault(at, action));
            }
            _ => {
                // A one-way cut of one node from the rest.
                let others: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != node).collect();
                let (a, b) = if wide.chance(0.5) {
                    (vec![node], others)
                } else {
                    (others, vec![node])
                };
                out.push(fault(
                    at,
                    FaultAction::Partition {
                        a,
                        b,
                        one_way: true,
                    },
                ));
                out.push(fault(at + hold, FaultAction::Heal));
            }
        }
    }
    out
}

/// Shapes the nemesis found on real PostgreSQL (issue 16) that the draws above almost never
/// made: a DN crash-restarting several times within a minute (the restart-count rule of
/// §4.4 then wants its group's primary switched over — a kill every 3–15 s, 4–6 times),
/// often followed by the crash of another member's node (a failover, possibly onto the
/// crash-looping DN), and a standby whose WAL diverged so that its receiver never comes up
/// (no refusal the CMS could read; only a Build repairs it). Before, a kill of one DN was 2 of
/// 23 weights among 3–10 faults spread over 300–420 s, and no fault left a receiver down for
/// good: the switchover start-abort loop and the never-rebuilt standby were out of reach.
fn nemesis_faults(n: &mut Prng, cfg: &ClusterConfig, duration: Duration) -> Vec<Fault> {
    let members: Vec<(GroupId, InstanceId, NodeId)> = cfg
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(move |m| (g.id, m.instance, m.node)))
        .collect();
    let span = duration.as_secs_f64() - 120.0;
    let mut out = Vec::new();
    if n.chance(0.4) {
        let (group, instance, node) = members[n.index(members.len())];
        let mut t = 20.0 + n.unit_f64() * span.max(1.0);
        for _ in 0..4 + n.index(3) {
            out.push(fault(t, FaultAction::KillDn { instance }));
            t += 3.0 + n.unit_f64() * 12.0;
        }
        let others: Vec<NodeId> = members
            .iter()
            .filter(|(g, _, nd)| *g == group && *nd != node)
            .map(|(_, _, nd)| *nd)
            .collect();
        if !others.is_empty() && n.chance(0.6) {
            let victim = others[n.index(others.len())];
            let at = t + n.unit_f64() * 10.0;
            out.push(fault(at, FaultAction::CrashHost { node: victim }));
            out.push(fault(
                at + 20.0 + n.unit_f64() * 100.0,
                FaultAction::RestartHost { node: victim },
            ));
        }
        if n.chance(0.5) {
            // A standby of the same group whose WAL diverged just before.
            let peers: Vec<InstanceId> = members
                .iter()
                .filter(|(g, i, _)| *g == group && *i != instance)
                .map(|(_, i, _)| *i)
                .collect();
            if !peers.is_empty() {
                let at = (t - n.unit_f64() * 10.0).max(20.0);
                let instance = peers[n.index(peers.len())];
                out.push(fault(at, FaultAction::DivergeWal { instance }));
            }
        }
    }
    if n.chance(0.2) {
        let (_, instance, _) = members[n.index(members.len())];
        let at = 20.0 + n.unit_f64() * span.max(1.0);
        out.push(fault(at, FaultAction::DivergeWal { instance }));
    }
    if n.chance(0.2) {
        // A member whose stream start the primary no longer has (issue 18): a rewind does not
        // cure it, only a full copy.
        let (_, instance, _) = members[n.index(members.len())];
        let at = 20.0 + n.unit_f64() * span.max(1.0);
        out.push(fault(at, FaultAction::RemoveWal { instance }));
    }
    out
}

/// The kinds [`model_faults`] draws, by name (the test table's rows).
pub const MODEL_FAULT_KINDS: &[&str] = &[
    "break-build",
    "stall-recovery",
    "disk-error-write",
    "disk-error-read",
    "disk-hang",
    "stop-agent",
    "stop-server",
    "stop-monitor",
    "wipe-cms-store",
    "readd",
    "isolate-cms-leader",
    "net-lossy",
    "net-slow",
    "net-dup-reorder",
    "disk-filling",
    "ctl-build",
];

/// The faults of the model that `swarm` never draws, each with its healing (see
/// [`SWARM_FAULTS`]): 2–5 of them per seed, started between 20 s and 60 s before the end of
/// the safety phase and healed before it ends (the liveness phase heals the rest).
///
/// Ordering rules: a stopped daemon is continued; a disk error is cleared (the disk replaced);
/// a Build is broken just before something needs one (a diverged WAL or the operator's
/// `build`); a CMS store is lost at most once per run and only with 3 or more CMS (SPEC §13's
/// fault model: a minority of CMS disks; §5.1), with its cm_server dead while the disk is
/// replaced, and the operator re-adds it later (`cms --readd`, after a new CMS leader in half
/// the seeds: §5.1 wants the cluster past every term the lost store may have voted in — the
/// simulated operator refuses otherwise); the network changes back to what it was.
pub fn model_faults(
    r: &mut Prng,
    cfg: &ClusterConfig,
    duration: Duration,
    net: &NetParams,
) -> Vec<Fault> {
    let nodes: Vec<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
    let cms = cfg.cms_nodes();
    let members: Vec<InstanceId> = cfg
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(|m| m.instance))
        .collect();
    let end = duration.as_secs_f64() - 5.0;
    let span = duration.as_secs_f64() - 80.0;
    let mut wiped = false;
    let stall_cure = 2.0 * cfg.params.dn_start_bound().as_secs_f64() + 60.0;
    let mut stalled: Vec<GroupId> = Vec::new();
    let stalled_ok = |stalled: &mut Vec<GroupId>, i: InstanceId| {
        let g = cfg
            .groups
            .iter()
            .find(|g| g.members.iter().any(|m| m.instance == i));
        let g = g.map(|g| g.id).unwrap_or(GroupId(0));
        let ok = !stalled.contains(&g);
        stalled.push(g);
        ok
    };
    let mut out = Vec::new();
    for _ in 0..2 + r.index(4) {
        let at = 20.0 + r.unit_f64() * span;
        let until = |hold: f64| (at + hold).min(end);
        let hold = 2.0 + r.unit_f64() * 60.0;
        let node = nodes[r.index(nodes.len())];
        let instance = members[r.index(members.len())];
        match r.index(11) {
            0 => {
                out.push(fault(at, FaultAction::BreakBuild { instance }));
                let trigger = if r.chance(0.5) {
                    FaultAction::DivergeWal { instance }
                } else {
                    ctl("build", None, Some(instance))
                };
                out.push(fault(at + r.unit_f64() * 5.0, trigger));
            }
            // The cure takes two start bounds (a rewind after the first, a full copy after
            // the second, see `standby-recovery-stalls`) and a copy: drawn only early enough
            // to end before the heal, since SPEC §13's liveness bound counts one Build, not
            // the start bounds.
            // At most one member per group: with two, a 1P1S group has no copy left to
            // rebuild from (both members' data lost is outside the fault model).
            1 if !stalled_ok(&mut stalled, instance) => {}
            1 if at + stall_cure <= duration.as_secs_f64() => {
                out.push(fault(at, FaultAction::StallRecovery { instance }))
            }
            1 => {
                let at = 20.0 + r.unit_f64() * (duration.as_secs_f64() - stall_cure - 20.0);
                if at >= 20.0 {
                    out.push(fault(at, FaultAction::StallRecovery { instance }));
                }
            }
            2 => {
                let (write, read) = match r.index(3) {
                    0 => (true, false),
                    1 => (false, true),
                    _ => (true, true),
                };
                out.push(fault(at, FaultAction::DiskError { node, write, read }));
                let healed = FaultAction::DiskError {
                    node,
                    write: false,
                    read: false,
                };
                out.push(fault(until(hold), healed));
            }
            3 => {
                let duration_s = 1.0 + r.unit_f64() * 60.0;
                out.push(fault(at, FaultAction::DiskHang { node, duration_s }));
            }
            4 => {
                let role = [RoleName::Agent, RoleName::Server, RoleName::Monitor][r.index(3)];
                out.push(fault(at, FaultAction::StopProcess { node, role }));
                out.push(fault(until(hold), FaultAction::ContProcess { node, role }));
            }
            5 if cms.len() >= 3 && !wiped => {
                wiped = true;
                let node = cms[r.index(cms.len())];
                let role = RoleName::Server;
                if r.chance(0.5) {
                    // The whole host down while its disk is replaced.
                    out.push(fault(at, FaultAction::CrashHost { node }));
                    out.push(fault(at + 0.5, FaultAction::WipeStore { node, role }));
                    out.push(fault(until(5.0 + hold), FaultAction::RestartHost { node }));
                } else {
                    // Only cm_server's store (its own volume): it dies and om_monitor
                    // restarts it on an empty store.
                    out.push(fault(at, FaultAction::KillProcess { node, role }));
                    out.push(fault(at + 0.01, FaultAction::WipeStore { node, role }));
                }
                let readd = until(5.0 + hold + 20.0 + r.unit_f64() * 60.0);
                if r.chance(0.5) {
                    out.push(fault(readd - 10.0, FaultAction::CrashCmsLeader));
                }
                out.push(fault(readd, ctl("readd", Some(node), None)));
            }
            6 => {
                out.push(fault(at, FaultAction::IsolateCmsLeader));
                out.push(fault(until(hold), FaultAction::Heal));
            }
            7 => {
                let mut worse = net.clone();
                match r.index(3) {
                    0 => worse.loss = worse.loss.max(0.01 + r.unit_f64() * 0.04),
                    1 => {
                        // Slow, but a round trip well inside the shortest election timeout.
                        let cap = (cfg.params.election_timeout_min_ms as f64 / 8.0).min(150.0);
                        worse.latency_min_ms = cap * (0.2 + r.unit_f64() * 0.3);
                        worse.latency_max_ms =
                            worse.latency_min_ms + r.unit_f64() * (cap - worse.latency_min_ms);
                    }
                    _ => {
                        worse.duplication = worse.duplication.max(0.01 + r.unit_f64() * 0.09);
                        worse.reorder = true;
                    }
                }
                out.push(fault(at, FaultAction::Net { params: worse }));
                let params = net.clone();
                out.push(fault(until(hold), FaultAction::Net { params }));
            }
            8 => {
                // A data disk filling up past the read-only threshold (§7.2), then emptied.
                let growth_pct_per_s = 0.2 + r.unit_f64() * 1.5;
                out.push(fault(
                    at,
                    FaultAction::DiskUsage {
                        node,
                        pct: 70.0,
                        growth_pct_per_s,
                    },
                ));
                out.push(fault(
                    until(hold + 20.0),
                    FaultAction::DiskUsage {
                        node,
                        pct: 40.0,
                        growth_pct_per_s: 0.0,
                    },
                ));
            }
            9 => out.push(fault(at, ctl("build", None, Some(instance)))),
            _ => {
                // A hung disk on a CMS node that is not (necessarily) the leader.
                let node = cms[r.index(cms.len())];
                let duration_s = 1.0 + r.unit_f64() * 30.0;
                out.push(fault(at, FaultAction::DiskHang { node, duration_s }));
            }
        }
    }
    out
}

fn ctl(command: &str, node: Option<NodeId>, instance: Option<InstanceId>) -> FaultAction {
    FaultAction::Ctl {
        command: command.into(),
        node,
        instance,
        mode: None,
    }
}

/// Operator actions against moving targets.
fn operator_actions(wide: &mut Prng, cfg: &ClusterConfig, duration: Duration) -> Vec<Fault> {
    let members: Vec<(InstanceId, NodeId)> = cfg
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(|m| (m.instance, m.node)))
        .collect();
    let span = duration.as_secs_f64() - 60.0;
    let count = if wide.chance(0.5) {
        1 + wide.index(4)
    } else {
        0
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let at = 20.0 + wide.unit_f64() * span;
        let (inst, node) = members[wide.index(members.len())];
        let switchover = ctl("switchover", Some(node), Some(inst));
        match wide.index(6) {
            0 => out.push(fault(at, switchover)),
            1 => {
                // The target crashes just before the request.
                out.push(fault(at, FaultAction::KillDn { instance: inst }));
                out.push(fault(at + wide.unit_f64() * 0.5, switchover));
            }
            2 => {
                // ... or during it.
                out.push(fault(at, switchover));
                let later = at + wide.unit_f64() * 3.0;
                if wide.chance(0.5) {
                    out.push(fault(later, FaultAction::KillDn { instance: inst }));
                } else {
                    out.push(fault(later, FaultAction::CrashHost { node }));
                    out.push(fault(
                        later + 5.0 + wide.unit_f64() * 60.0,
                        FaultAction::RestartHost { node },
                    ));
                }
            }
            3 => {
                // Concurrent requests: the second one is refused or queued.
                let (i2, n2) = members[wide.index(members.len())];
                out.push(fault(at, switchover));
                let again = ctl("switchover", Some(n2), Some(i2));
                out.push(fault(at + wide.unit_f64() * 2.0, again));
            }
            4 => {
                out.push(fault(at, ctl("pause", None, None)));
                if wide.chance(0.5) {
                    out.push(fault(at + wide.unit_f64() * 2.0, switchover));
                }
                out.push(fault(
                    at + 2.0 + wide.unit_f64() * 60.0,
                    ctl("resume", None, None),
                ));
            }
            _ => {
                out.push(fault(at, ctl("stop", Some(node), Some(inst))));
                if wide.chance(0.5) {
                    out.push(fault(at + wide.unit_f64() * 2.0, switchover));
                }
                out.push(fault(
                    at + 2.0 + wide.unit_f64() * 60.0,
                    ctl("start", Some(node), Some(inst)),
                ));
            }
        }
    }
    out
}

/// Runs the swarm scenario of every seed with the real cm-core machines and describes each
/// run that broke an invariant or missed an expectation, with the command that reproduces it
/// (for regression tests of seeds that once failed).
pub fn failures(seeds: impl IntoIterator<Item = u64>) -> Vec<String> {
    failures_of(SWARM, seeds)
}

/// [`failures`] for a generator by name (`swarm` or `swarm-classic`).
pub fn failures_of(name: &str, seeds: impl IntoIterator<Item = u64>) -> Vec<String> {
    seeds
        .into_iter()
        .filter_map(|seed| {
            let s = by_name(name, seed)?;
            let r = crate::run::run(
                &s,
                name,
                seed,
                Box::new(crate::daemon::Machines),
                crate::run::RunOptions::default(),
            );
            (!r.ok()).then(|| format!("{:?} {:?} — {}", r.violations, r.misses, r.repro()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_draws_only_the_old_shapes() {
        for seed in 0..200 {
            let s = classic(seed);
            assert!([1, 3, 5].contains(&s.config.cms_nodes().len()));
            assert!(s.sim.power_on_s.is_empty());
            assert!(s.faults.iter().all(|f| !matches!(
                f.action,
                FaultAction::Ctl { .. }
                    | FaultAction::CutCmsLeaderFromAgents
                    | FaultAction::PartitionFromCmsLeader { .. }
                    | FaultAction::DiskHangCmsLeader { .. }
                    | FaultAction::Gateway { .. }
            )));
        }
    }

    /// Every shape the product supports is drawn within the first 400 seeds.
    #[test]
    fn swarm_draws_every_supported_shape() {
        let mut cms_counts = std::collections::BTreeSet::new();
        let (mut two_node_flag, mut two_node_plain, mut cms_only) = (false, false, false);
        let (mut staggered, mut late, mut gateway_split) = (false, false, false);
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..400 {
            let s = scenario(seed);
            let cms = s.config.cms_nodes();
            cms_counts.insert(cms.len());
            if cms.len() == 2 {
                if s.config.params.cms_enable_failover_on2nodes {
                    two_node_flag = true;
                } else {
                    two_node_plain = true;
                }
            }
            let dn_nodes: std::collections::BTreeSet<NodeId> = s
                .config
                .groups
                .iter()
                .flat_map(|g| g.members.iter().map(|m| m.node))
                .collect();
            cms_only |= cms.iter().any(|n| !dn_nodes.contains(n));
            staggered |= s.sim.power_on_s.iter().filter(|t| **t > 0.0).count() > 1;
            late |= s.sim.power_on_s.iter().any(|t| *t >= 10.0);
            let gw: Vec<bool> = s
                .faults
                .iter()
                .filter_map(|f| match f.action {
                    FaultAction::Gateway { reachable, .. } => Some(reachable),
                    _ => None,
                })
                .collect();
            gateway_split |= gw.windows(2).any(|w| w[0] != w[1]);
            for f in &s.faults {
                let k: String = match &f.action {
                    FaultAction::Ctl { command, .. } => command.clone(),
                    FaultAction::CutCmsLeaderFromAgents => "leader-cut-from-agents".into(),
                    FaultAction::PartitionFromCmsLeader { .. } => "cut-from-leader".into(),
                    FaultAction::DiskHangCmsLeader { .. } => "leader-disk-hang".into(),
                    FaultAction::Partition { one_way: true, .. } => "one-way".into(),
                    FaultAction::BreakStream { .. } => "break-stream".into(),
                    FaultAction::FlapStream { .. } => "flap-stream".into(),
                    FaultAction::DivergeWal { .. } => "diverge-wal".into(),
                    FaultAction::RemoveWal { .. } => "remove-wal".into(),
                    _ => continue,
                };
                kinds.insert(k);
            }
        }
        assert_eq!(cms_counts.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 5]);
        assert!(two_node_flag && two_node_plain && cms_only);
        assert!(staggered && late && gateway_split);
        for k in [
            "switchover",
            "pause",
            "resume",
            "stop",
            "start",
            "leader-cut-from-agents",
            "cut-from-leader",
            "leader-disk-hang",
            "one-way",
            "break-stream",
            "flap-stream",
            "diverge-wal",
        ] {
            assert!(kinds.contains(k), "{k} never drawn: {kinds:?}");
        }
    }

    /// A DN killed at least 4 times within a minute (the restart-count rule of §4.4), and the
    /// node of another member of its group crashed right after, are drawn within 100 seeds.
    #[test]
    fn swarm_draws_crash_loops_followed_by_a_peer_node_crash() {
        let looped = (0..100).any(|seed| {
            let s = scenario(seed);
            let kills: Vec<(Duration, InstanceId)> = s
                .faults
                .iter()
                .filter_map(|f| match f.action {
                    FaultAction::KillDn { instance } => Some((f.at, instance)),
                    _ => None,
                })
                .collect();
            kills.iter().any(|(t, i)| {
                let within = kills
                    .iter()
                    .filter(|(u, j)| j == i && *u >= *t && *u - *t <= Duration::from_secs(60))
                    .count();
                let crash = s.faults.iter().any(|f| {
                    matches!(f.action, FaultAction::CrashHost { .. })
                        && f.at > *t
                        && f.at - *t <= Duration::from_secs(100)
                });
                within >= 4 && crash
            })
        });
        assert!(looped);
    }

    #[test]
    fn swarm_draws_valid_configs_within_the_topology_bounds() {
        for seed in 0..200 {
            let s = scenario(seed);
            assert!(
                s.config.validate().is_empty(),
                "seed {seed}: {:?}",
                s.config.validate()
            );
            let cms = s.config.cms_nodes().len();
            assert!([1, 2, 3, 5].contains(&cms));
            assert!((1..=3).contains(&s.config.groups.len()));
            assert!(
                s.config
                    .groups
                    .iter()
                    .all(|g| (2..=5).contains(&g.members.len()))
            );
            assert!(s.duration >= Duration::from_secs(300));
            assert!(s.faults.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }

    /// `swarm-resources` draws §14's default `time_out` (10 s) for the vip in a good fraction
    /// of seeds (about 4 in 10), and the rest of 1–10 s too; the configs stay valid.
    #[test]
    fn swarm_resources_draws_the_default_time_out_often() {
        let mut outs = BTreeMap::new();
        for seed in 0..200 {
            let s = with_resources(seed);
            assert!(s.config.validate().is_empty(), "seed {seed}");
            *outs
                .entry(s.config.resources[0].time_out.as_secs())
                .or_insert(0) += 1;
        }
        let default = outs[&10];
        assert!((60..=110).contains(&default), "{outs:?}");
        assert!((1..=9).all(|t| outs.contains_key(&t)), "{outs:?}");
    }

    /// The kind of a `swarm-faults` action in [`MODEL_FAULT_KINDS`] (None: a healing step or
    /// a fault `swarm` draws too).
    fn model_kind(a: &FaultAction, net: &NetParams) -> Option<&'static str> {
        Some(match a {
            FaultAction::BreakBuild { .. } => "break-build",
            FaultAction::StallRecovery { .. } => "stall-recovery",
            FaultAction::DiskError { write: true, .. } => "disk-error-write",
            FaultAction::DiskError { read: true, .. } => "disk-error-read",
            FaultAction::DiskHang { .. } => "disk-hang",
            FaultAction::StopProcess { role, .. } => match role {
                RoleName::Agent => "stop-agent",
                RoleName::Server => "stop-server",
                RoleName::Monitor => "stop-monitor",
            },
            FaultAction::WipeStore { .. } => "wipe-cms-store",
            FaultAction::Ctl { command, .. } if command == "readd" => "readd",
            FaultAction::Ctl { command, .. } if command == "build" => "ctl-build",
            FaultAction::IsolateCmsLeader => "isolate-cms-leader",
            FaultAction::Net { params } if params == net => return None,
            FaultAction::Net { params } if params.loss > net.loss => "net-lossy",
            FaultAction::Net { params } if params.latency_min_ms > net.latency_min_ms => "net-slow",
            FaultAction::Net { .. } => "net-dup-reorder",
            FaultAction::DiskUsage {
                growth_pct_per_s, ..
            } if *growth_pct_per_s > 0.0 => "disk-filling",
            _ => return None,
        })
    }

    /// `swarm-faults` draws every kind of [`MODEL_FAULT_KINDS`] (a table of counts over 300
    /// seeds; fails if one is never drawn), each stopped daemon is continued and each disk
    /// error cleared before the safety phase ends, a store is lost at most once and only with
    /// 3 or more CMS, and `swarm` is unchanged underneath.
    #[test]
    fn swarm_faults_draws_every_fault_kind_of_the_model() {
        let mut table: BTreeMap<&str, usize> = MODEL_FAULT_KINDS.iter().map(|k| (*k, 0)).collect();
        for seed in 0..300 {
            let s = with_model_faults(seed);
            let base = scenario(seed);
            assert!(s.config.validate().is_empty(), "seed {seed}");
            assert!(s.faults.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(
                base.faults.iter().all(|f| s.faults.contains(f)),
                "seed {seed}: the swarm draw changed"
            );
            let mut wipes = 0;
            for (i, f) in s.faults.iter().enumerate() {
                if let Some(k) = model_kind(&f.action, &s.net) {
                    *table.get_mut(k).expect("a listed kind") += 1;
                }
                let later = &s.faults[i + 1..];
                match &f.action {
                    FaultAction::StopProcess { node, role } => assert!(
                        later.iter().any(|g| g.at < s.duration
                            && g.action
                                == FaultAction::ContProcess {
                                    node: *node,
                                    role: *role
                                }),
                        "seed {seed}: {f:?} never continued"
                    ),
                    FaultAction::DiskError { node, write, read } if *write || *read => assert!(
                        later.iter().any(|g| g.at < s.duration
                            && g.action
                                == FaultAction::DiskError {
                                    node: *node,
                                    write: false,
                                    read: false
                                }),
                        "seed {seed}: {f:?} never cleared"
                    ),
                    FaultAction::WipeStore { node, .. } => {
                        wipes += 1;
                        assert!(s.config.cms_nodes().len() >= 3, "seed {seed}");
                        let readd = ctl("readd", Some(*node), None);
                        assert!(later.iter().any(|g| g.action == readd), "seed {seed}");
                    }
                    _ => {}
                }
            }
            assert!(wipes <= 1, "seed {seed}: {wipes} stores lost");
        }
        let never: Vec<&&str> = table
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| k)
            .collect();
        assert!(never.is_empty(), "never drawn: {never:?} in {table:?}");
    }

    #[test]
    fn swarm_is_a_function_of_the_seed() {
        assert_eq!(scenario(7).description, scenario(7).description);
        assert_eq!(scenario(7).faults, scenario(7).faults);
        assert_eq!(classic(7).faults, classic(7).faults);
    }
}
