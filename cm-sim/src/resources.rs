//! The simulated custom resources (SPEC §14): one virtual program per resource instance, run
//! on its node's host and driven through the same script contract the agent uses
//! (`-start|-stop|-check|-clean`), with a behaviour per instance the scenario (or the swarm)
//! chooses: scripts that succeed, fail, hang, or a program that flaps.

use core::time::Duration;

use cm_core::config::Placement;
use cm_core::dn::DnRole;
use cm_core::ids::{InstanceId, NodeId};
use cm_core::msg::Role;
use cm_core::resource::{ScriptExit, ScriptVerb};
use serde::{Deserialize, Serialize};

use crate::world::World;

/// How a simulated resource's script and program behave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceModel {
    /// Every script does its job and exits at once (20–80 ms).
    #[default]
    Ok,
    /// `-start` exits 1 and starts nothing; the other verbs work.
    FailStart,
    /// Every script hangs until it is killed at `time_out`.
    Hang,
    /// Starts fine, but the program dies on its own: each check finds it dead with
    /// probability 0.3.
    Flap,
}

/// Script run time of a script that does not hang.
const SCRIPT_MIN: Duration = Duration::from_millis(20);
const SCRIPT_MAX: Duration = Duration::from_millis(80);

impl World {
    /// Whether resource instance `id` runs on `node` (its host powered on).
    pub fn resource_running(&self, node: NodeId, id: InstanceId) -> bool {
        self.hosts
            .get(&node)
            .is_some_and(|h| h.up && h.resources.get(&id).copied().unwrap_or(false))
    }

    /// Runs one script verb of `id` on `node`; returns when it ends and how.
    pub(crate) fn run_resource_script(
        &mut self,
        node: NodeId,
        id: InstanceId,
        verb: ScriptVerb,
        timeout: Duration,
    ) -> (Duration, ScriptExit) {
        let model = self.resource_models.get(&id).copied().unwrap_or_default();
        if model == ResourceModel::Hang {
            return (timeout, ScriptExit::Killed);
        }
        let took = self
            .resource_rng
            .duration_between(SCRIPT_MIN, SCRIPT_MAX)
            .min(timeout);
        let flapped = model == ResourceModel::Flap && self.resource_rng.chance(0.3);
        let Some(h) = self.hosts.get_mut(&node) else {
            return (took, ScriptExit::Failed("no such host".into()));
        };
        let running = h.resources.entry(id).or_insert(false);
        let code = match verb {
            ScriptVerb::Start if model == ResourceModel::FailStart => 1,
            ScriptVerb::Start => {
                *running = true;
                0
            }
            ScriptVerb::Stop | ScriptVerb::Clean => {
                *running = false;
                0
            }
            ScriptVerb::Check => {
                if flapped {
                    *running = false;
                }
                i32::from(!*running)
            }
        };
        (took, ScriptExit::Code(code))
    }

    /// S7 (SPEC §14, ours), after every event: a `with_primary_of` resource never runs on two
    /// nodes at once while their agents run, and never stays running on a node whose DN may
    /// not write (not a running primary) longer than the agent needs to see it and stop it:
    /// one report interval (the status query that shows the DN's new role) + `time_out` (the
    /// `-stop` run) + 0.5 s. A thawed host's agent counts as running after that same grace.
    pub(crate) fn check_resources(&mut self) {
        let now = self.now();
        let report = self.scenario.config.params.report_interval();
        // An agent "runs" once it had a moment to act after a thaw (as for S4): its next turn
        // (one report interval) and the `-stop` run.
        let agent_runs = |w: &Self, n: NodeId, grace: Duration| {
            w.hosts.get(&n).is_some_and(|h| {
                h.up && !h.frozen
                    && h.procs.get(&Role::Agent).is_some_and(|p| !p.stopped)
                    && h.thawed_at.is_none_or(|t| now.saturating_since(t) > grace)
            })
        };
        let mut found = Vec::new();
        for r in &self.scenario.config.resources {
            let Placement::WithPrimaryOf(group) = r.placement else {
                continue;
            };
            let grace = report + r.time_out + Duration::from_millis(500);
            let on: Vec<(NodeId, InstanceId)> = r
                .instances
                .iter()
                .filter(|i| self.resource_running(i.node, i.id))
                .map(|i| (i.node, i.id))
                .collect();
            let live: Vec<NodeId> = on
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| agent_runs(self, *n, grace))
                .collect();
            if live.len() > 1 {
                found.push((
                    format!("S7 {} two", r.name),
                    format!("S7: `{}` runs on {live:?} at once", r.name),
                ));
            }
            for i in &r.instances {
                let key = (i.node, i.id);
                let may_write = self.dbs.instances.values().any(|d| {
                    d.node == i.node && d.group == group && d.running && d.role == DnRole::Primary
                });
                if !on.contains(&key) || may_write || !agent_runs(self, i.node, grace) {
                    self.s7_since.remove(&key);
                    continue;
                }
                let since = *self.s7_since.entry(key).or_insert(now);
                if now.saturating_since(since) > grace {
                    found.push((
                        format!("S7 {} {}", r.name, i.id),
                        format!(
                            "S7: `{}` ({}) runs on {} whose DN may not write, for {:?}",
                            r.name,
                            i.id,
                            i.node,
                            now.saturating_since(since)
                        ),
                    ));
                }
            }
        }
        for (key, message) in found {
            self.checker.violate_keyed(now, "S7", key, message);
        }
    }

    /// Kills a resource's program (SIGKILL of the process, the script untouched).
    pub(crate) fn kill_resource(&mut self, id: InstanceId) {
        for h in self.hosts.values_mut() {
            if let Some(r) = h.resources.get_mut(&id) {
                *r = false;
            }
        }
    }
}
