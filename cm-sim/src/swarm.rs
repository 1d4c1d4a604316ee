//! Swarm mode (TigerBeetle's VOPR method): the seed draws the whole run — topology, parameters
//! that pass config validation, network behaviour and a random mix of faults — for a safety
//! phase of at least 300 simulated seconds, then a liveness phase with every fault healed.

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

/// The name `run` and `sweep` accept for a swarm run.
pub const SWARM: &str = "swarm";

/// The topology drawn for a seed: (groups × members, CMS count, AZ count).
fn topology(rng: &mut Prng) -> (Vec<usize>, usize, usize) {
    let groups = 1 + rng.index(3);
    let members: Vec<usize> = (0..groups).map(|_| 2 + rng.index(4)).collect();
    let cms = [1, 3, 5][rng.index(3)];
    let azs = 1 + rng.index(3);
    (members, cms, azs)
}

fn config(rng: &mut Prng, members: &[usize], cms: usize, azs: usize) -> ClusterConfig {
    let node_count = members.iter().copied().max().unwrap_or(2).max(cms);
    let az_names: Vec<AzName> = (1..=azs).map(|i| AzName(format!("AZ{i}"))).collect();
    let nodes: Vec<NodeConfig> = (1..=node_count as u32)
        .map(|i| NodeConfig {
            id: NodeId(i),
            name: format!("n{i}"),
            address: format!("10.0.0.{i}"),
            az: az_names[(i as usize - 1) % azs].clone(),
            state_dir: format!("/var/lib/cm/n{i}"),
            monitor_port: 17001,
            cms_port: (i as usize <= cms).then_some(17101),
        })
        .collect();
    let groups: Vec<GroupConfig> = members
        .iter()
        .enumerate()
        .map(|(g, m)| {
            let offset = rng.index(node_count);
            GroupConfig {
                id: GroupId(g as u32 + 1),
                members: (0..*m)
                    .map(|k| MemberConfig {
                        instance: InstanceId(6001 + 100 * g as u32 + k as u32),
                        node: NodeId(((offset + k) % node_count) as u32 + 1),
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
        secret_file: None,
        azs,
        nodes,
        groups,
        database: DatabaseConfig::default(),
        params: Params::defaults(),
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

/// The scenario a seed draws.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = Prng::new(derive_seed(seed, 0x0053_5741_524d));
    let (members, cms, azs) = topology(&mut rng);
    let config = config(&mut rng, &members, cms, azs);
    let duration = Duration::from_secs(300 + rng.range_inclusive(0, 120));
    let faults = faults(&mut rng, &config, duration);
    let net = net(&mut rng);
    let description = format!(
        "swarm: groups {members:?}, {cms} CMS, {azs} AZ, sync {:?}, {} faults",
        config.params.dn_sync_mode,
        faults.len()
    );
    Scenario {
        name: SWARM.into(),
        description,
        config,
        duration,
        liveness: true,
        affected_group: GroupId(1),
        net,
        db: DbTimings::default(),
        sim: SimParams::default(),
        faults,
        expect: BTreeMap::new(),
    }
}

/// Runs the swarm scenario of every seed with the real cm-core machines and describes each
/// run that broke an invariant or missed an expectation, with the command that reproduces it
/// (for regression tests of seeds that once failed).
pub fn failures(seeds: impl IntoIterator<Item = u64>) -> Vec<String> {
    seeds
        .into_iter()
        .filter_map(|seed| {
            let r = crate::run::run(
                &scenario(seed),
                "swarm",
                seed,
                Box::new(crate::adapters::Machines),
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
    fn swarm_draws_valid_configs_within_the_topology_bounds() {
        for seed in 0..200 {
            let s = scenario(seed);
            assert!(
                s.config.validate().is_empty(),
                "seed {seed}: {:?}",
                s.config.validate()
            );
            let cms = s.config.cms_nodes().len();
            assert!([1, 3, 5].contains(&cms));
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

    #[test]
    fn swarm_is_a_function_of_the_seed() {
        assert_eq!(scenario(7).description, scenario(7).description);
        assert_eq!(scenario(7).faults, scenario(7).faults);
    }
}
