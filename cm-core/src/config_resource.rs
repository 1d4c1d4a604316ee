//! Custom resources in the cluster config (SPEC §14): `[[resource]]` tables.
//!
//! ```toml
//! [[resource]]
//! name = "pgbouncer"
//! script = "/usr/local/lib/cm/pgbouncer.sh"
//! instances = [{ node = 1, id = 9001, args = "" }, { node = 2, id = 9002 }]
//! check_interval = 1        # seconds
//! time_out = 10
//! restart_delay = 1
//! restart_period = 1
//! restart_times = -1        # -1: unlimited
//! abnormal_timeout = 30
//! placement = { with_primary_of = 1 }   # or "fixed" (the default)
//! ```

use core::time::Duration;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, ConfigIssue};
use crate::ids::{GroupId, InstanceId, NodeId};

/// Longest resource name (CM's limit).
pub const RESOURCE_NAME_MAX: usize = 32;

/// Where a resource runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Every instance runs on its own node.
    Fixed,
    /// Runs only on the node whose DN is this group's confirmed primary (ours).
    WithPrimaryOf(GroupId),
}

/// One instance of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInstanceConfig {
    /// The node it runs on.
    pub node: NodeId,
    /// Its id (unique in the cluster, disjoint from DN ids).
    pub id: InstanceId,
    /// Extra arguments passed to the script after the id (one string, split on whitespace).
    pub args: String,
}

/// A custom resource, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceConfig {
    /// Its name (≤ 32 characters, unique).
    pub name: String,
    /// The script's absolute path.
    pub script: String,
    /// Its instances.
    pub instances: Vec<ResourceInstanceConfig>,
    /// How often each instance is checked.
    pub check_interval: Duration,
    /// Every script run is killed after this long.
    pub time_out: Duration,
    /// An offline instance is restarted this long after it went offline.
    pub restart_delay: Duration,
    /// At least this long between two restarts of one instance.
    pub restart_period: Duration,
    /// Restarts allowed in a counting window before the manual stop; `None` = unlimited.
    pub restart_times: Option<u32>,
    /// An instance abnormal this long is cleaned, then treated as offline.
    pub abnormal_timeout: Duration,
    /// Where it runs.
    pub placement: Placement,
}

impl ResourceConfig {
    /// The config of one instance.
    pub fn instance(&self, id: InstanceId) -> Option<&ResourceInstanceConfig> {
        self.instances.iter().find(|i| i.id == id)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPlacement {
    Word(String),
    Table { with_primary_of: GroupId },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    node: NodeId,
    id: InstanceId,
    #[serde(default)]
    args: String,
}

/// `[[resource]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    name: String,
    script: String,
    #[serde(default)]
    instances: Vec<RawInstance>,
    #[serde(default = "one")]
    check_interval: f64,
    #[serde(default = "ten")]
    time_out: f64,
    #[serde(default = "one")]
    restart_delay: f64,
    #[serde(default = "one")]
    restart_period: f64,
    #[serde(default = "minus_one")]
    restart_times: i64,
    #[serde(default = "thirty")]
    abnormal_timeout: f64,
    #[serde(default)]
    placement: Option<RawPlacement>,
}

fn one() -> f64 {
    1.0
}
fn ten() -> f64 {
    10.0
}
fn thirty() -> f64 {
    30.0
}
fn minus_one() -> i64 {
    -1
}

/// The shortest `check_interval` accepted (seconds): a check every 100 ms already forks a
/// script ten times a second per instance.
pub(crate) const MIN_CHECK_INTERVAL: f64 = 0.1;

fn seconds(
    issues: &mut Vec<ConfigIssue>,
    at: String,
    v: f64,
    allow_zero: bool,
) -> Option<Duration> {
    let ok = v.is_finite() && v <= 86_400.0 && (v > 0.0 || (allow_zero && v == 0.0));
    if ok {
        Some(Duration::from_secs_f64(v))
    } else {
        let low = if allow_zero { "0" } else { "more than 0" };
        issues.push(ConfigIssue {
            location: at,
            message: format!("{v} is not a number of seconds from {low} to 86400"),
        });
        None
    }
}

/// Converts the raw tables, collecting every problem of shape or range (the cross-checks against
/// nodes and groups are [`check_resources`]).
pub(crate) fn convert(raw: Vec<RawResource>, issues: &mut Vec<ConfigIssue>) -> Vec<ResourceConfig> {
    let mut out = Vec::new();
    for (ri, r) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("resource[{ri}].{k}");
        let check_interval =
            if r.check_interval.is_finite() && r.check_interval < MIN_CHECK_INTERVAL {
                issues.push(ConfigIssue {
                    location: at("check_interval"),
                    message: format!(
                        "{} is below the shortest check interval, {MIN_CHECK_INTERVAL} s",
                        r.check_interval
                    ),
                });
                None
            } else {
                seconds(issues, at("check_interval"), r.check_interval, false)
            };
        let time_out = seconds(issues, at("time_out"), r.time_out, false);
        let restart_delay = seconds(issues, at("restart_delay"), r.restart_delay, true);
        let restart_period = seconds(issues, at("restart_period"), r.restart_period, true);
        let abnormal_timeout = seconds(issues, at("abnormal_timeout"), r.abnormal_timeout, false);
        let restart_times = match r.restart_times {
            -1 => Some(None),
            n if (0..=i64::from(u32::MAX)).contains(&n) => Some(Some(n as u32)),
            n => {
                issues.push(ConfigIssue {
                    location: at("restart_times"),
                    message: format!("{n} is not -1 (unlimited) or a count ≥ 0"),
                });
                None
            }
        };
        let placement = match r.placement {
            None => Some(Placement::Fixed),
            Some(RawPlacement::Word(w)) if w == "fixed" => Some(Placement::Fixed),
            Some(RawPlacement::Word(w)) => {
                issues.push(ConfigIssue {
                    location: at("placement"),
                    message: format!(
                        "`{w}` is not a placement: write \"fixed\" or {{ with_primary_of = GROUP }}"
                    ),
                });
                None
            }
            Some(RawPlacement::Table { with_primary_of }) => {
                Some(Placement::WithPrimaryOf(with_primary_of))
            }
        };
        let (
            Some(check_interval),
            Some(time_out),
            Some(restart_delay),
            Some(restart_period),
            Some(abnormal_timeout),
            Some(restart_times),
            Some(placement),
        ) = (
            check_interval,
            time_out,
            restart_delay,
            restart_period,
            abnormal_timeout,
            restart_times,
            placement,
        )
        else {
            continue;
        };
        out.push(ResourceConfig {
            name: r.name,
            script: r.script,
            instances: r
                .instances
                .into_iter()
                .map(|i| ResourceInstanceConfig {
                    node: i.node,
                    id: i.id,
                    args: i.args,
                })
                .collect(),
            check_interval,
            time_out,
            restart_delay,
            restart_period,
            restart_times,
            abnormal_timeout,
            placement,
        });
    }
    out
}

/// The rules across resources, nodes and groups: names, scripts, ids, nodes, placement.
pub(crate) fn check_resources(cfg: &ClusterConfig, issues: &mut Vec<ConfigIssue>) {
    let mut push = |location: String, message: String| {
        issues.push(ConfigIssue { location, message });
    };
    let nodes: BTreeSet<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
    let dn_ids: BTreeSet<InstanceId> = cfg
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(|m| m.instance))
        .collect();
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (ri, r) in cfg.resources.iter().enumerate() {
        let at = |k: &str| format!("resource[{ri}].{k}");
        let len = r.name.chars().count();
        if len == 0 || len > RESOURCE_NAME_MAX {
            push(
                at("name"),
                format!(
                    "a resource name has 1 to {RESOURCE_NAME_MAX} characters (`{}` has {len})",
                    r.name
                ),
            );
        } else if r.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            push(at("name"), format!("`{}` contains whitespace", r.name));
        }
        if !names.insert(r.name.as_str()) {
            push(at("name"), format!("duplicate resource name `{}`", r.name));
        }
        if !r.script.starts_with('/') {
            push(
                at("script"),
                format!("script {:?} is not an absolute path", r.script),
            );
        }
        if r.instances.is_empty() {
            push(
                at("instances"),
                "a resource needs at least one instance".into(),
            );
        }
        for (ii, inst) in r.instances.iter().enumerate() {
            let at = |k: &str| format!("resource[{ri}].instances[{ii}].{k}");
            if inst.id.0 == 0 {
                push(at("id"), "instance ids start at 1".into());
            } else if dn_ids.contains(&inst.id) {
                push(
                    at("id"),
                    format!("id {} is already a DN instance id", inst.id.0),
                );
            } else if !ids.insert(inst.id) {
                push(
                    at("id"),
                    format!("duplicate resource instance id {}", inst.id.0),
                );
            }
            if !nodes.contains(&inst.node) {
                push(at("node"), format!("node {} is not declared", inst.node.0));
            }
        }
        if let Placement::WithPrimaryOf(group) = r.placement {
            let Some(g) = cfg.group(group) else {
                push(
                    at("placement"),
                    format!(
                        "with_primary_of names group {}, which is not declared",
                        group.0
                    ),
                );
                continue;
            };
            let member_nodes: BTreeSet<NodeId> = g.members.iter().map(|m| m.node).collect();
            for n in &member_nodes {
                if !r.instances.iter().any(|i| i.node == *n) {
                    push(
                        at("instances"),
                        format!(
                            "with_primary_of = {} needs an instance on every node of the \
                             group's members: node {} has none",
                            group.0, n.0
                        ),
                    );
                }
            }
            for (ii, inst) in r.instances.iter().enumerate() {
                if nodes.contains(&inst.node) && !member_nodes.contains(&inst.node) {
                    push(
                        format!("resource[{ri}].instances[{ii}].node"),
                        format!(
                            "node {} has no member of group {}: this instance would never run",
                            inst.node.0, group.0
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "config_resource_tests.rs"]
mod tests;
