//! The simulated custom resources (SPEC §14): one virtual program per resource instance, run
//! on its node's host and driven through the same script contract the agent uses
//! (`-start|-stop|-check|-clean`), with a behaviour per instance the scenario (or the swarm)
//! chooses: scripts that succeed, fail, hang, or a program that flaps.

use core::time::Duration;

use cm_core::config::Placement;
use cm_core::ids::{InstanceId, NodeId};
use cm_core::msg::Role;
use cm_core::resource::{ScriptExit, ScriptVerb};
use cm_core::time::scale_up;
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
    /// `-start` takes 80–95 % of `time_out` and the program comes up only as it exits (a
    /// daemon that forks once it is ready); the other verbs work at once. The worst case of
    /// §14's hand-over: a node whose start is in flight must not look stopped.
    SlowStart,
}

/// Script run time of a script that does not hang.
const SCRIPT_MIN: Duration = Duration::from_millis(20);
const SCRIPT_MAX: Duration = Duration::from_millis(80);

impl World {
    /// Whether resource instance `id` runs on `node` (its host powered on).
    pub fn resource_running(&self, node: NodeId, id: InstanceId) -> bool {
        let now = self.now();
        self.hosts.get(&node).is_some_and(|h| {
            h.up && (h.resources.get(&id).copied().unwrap_or(false)
                || h.resources_coming.get(&id).is_some_and(|at| *at <= now))
        })
    }

    /// The DNs of `node` that hold the write lease at its agent (the lease-and-role part of
    /// `/primary`, SPEC §15: what §14's placement uses), judged at the node's own clock; empty
    /// when the host or its agent is down.
    pub fn write_leased(&self, node: NodeId) -> Vec<InstanceId> {
        let now = self.now();
        self.agent_of(node)
            .map(|(h, p)| p.daemon.write_leased(h.clock.local(now)))
            .unwrap_or_default()
    }

    /// The DNs of `node` whose `/primary` answers 200 at its agent (SPEC §15), at the node's
    /// own clock; empty when the host or its agent is down.
    pub fn primary_answers_on(&self, node: NodeId) -> Vec<InstanceId> {
        let now = self.now();
        self.agent_of(node)
            .map(|(h, p)| p.daemon.writable(h.clock.local(now)))
            .unwrap_or_default()
    }

    /// `node`'s agent's health snapshot (what its HTTP endpoints answer from, SPEC §15); None
    /// when the host or its agent is down.
    pub fn agent_health(&self, node: NodeId) -> Option<cm_core::agent::AgentHealth> {
        self.agent_of(node)?.1.daemon.agent_health()
    }

    /// The local clock of `node` now.
    pub fn local_now(&self, node: NodeId) -> Option<cm_core::Instant> {
        Some(self.hosts.get(&node)?.clock.local(self.now()))
    }

    /// Whether §14's hand-over rule lets resource instance `id` start on `node` now, as that
    /// node's agent judges it (None: no agent, or not a `with_primary_of` instance there).
    pub fn resource_handover_clear(&self, node: NodeId, id: InstanceId) -> Option<bool> {
        let now = self.now();
        let (h, p) = self.agent_of(node)?;
        p.daemon.resource_handover_clear(h.clock.local(now), id)
    }

    fn agent_of(&self, node: NodeId) -> Option<(&crate::world::Host, &crate::world::Proc)> {
        let h = self.hosts.get(&node).filter(|h| h.up)?;
        Some((h, h.procs.get(&Role::Agent)?))
    }

    /// Programs whose slow start ended by now are up.
    fn settle_resources(&mut self) {
        let now = self.now();
        // Runs after every event: most hosts have no slow start in flight.
        for h in self.hosts.values_mut() {
            if h.resources_coming.is_empty() {
                continue;
            }
            let due: Vec<InstanceId> = h
                .resources_coming
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                h.resources_coming.remove(&id);
                h.resources.insert(id, true);
            }
        }
    }

    /// Runs one script verb of `id` on `node`; returns when it ends and how.
    pub(crate) fn run_resource_script(
        &mut self,
        node: NodeId,
        id: InstanceId,
        verb: ScriptVerb,
        timeout: Duration,
    ) -> (Duration, ScriptExit) {
        self.settle_resources();
        let model = self.resource_models.get(&id).copied().unwrap_or_default();
        if model == ResourceModel::Hang {
            return (timeout, ScriptExit::Killed);
        }
        let took = if model == ResourceModel::SlowStart && verb == ScriptVerb::Start {
            self.resource_rng
                .duration_between(timeout.mul_f64(0.8), timeout.mul_f64(0.95))
        } else {
            self.resource_rng
                .duration_between(SCRIPT_MIN, SCRIPT_MAX)
                .min(timeout)
        };
        let up_at = self.now() + took;
        let flapped = model == ResourceModel::Flap && self.resource_rng.chance(0.3);
        let Some(h) = self.hosts.get_mut(&node) else {
            return (took, ScriptExit::Failed("no such host".into()));
        };
        let running = h.resources.entry(id).or_insert(false);
        let code = match verb {
            ScriptVerb::Start if model == ResourceModel::FailStart => 1,
            ScriptVerb::Start if model == ResourceModel::SlowStart => {
                h.resources_coming.insert(id, up_at);
                0
            }
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
    /// nodes at once while their agents run (no tolerance: §14 says never — except under
    /// §5.4's two-node concession, which trades S4 and with it S7, judged like S8 by
    /// [`crate::check::Checker::check_resources_twice`]), and never runs on
    /// a node whose DN may not write — judged by that node's agent itself: its DN holds the
    /// write lease (the condition placement uses, SPEC §14/§15), at the node's own clock.
    ///
    /// The second half has a tolerance because §14 grants one: the hand-over lets the next
    /// node start only `2 × time_out × (1+ρ)/(1−ρ)` after the fencing floor, i.e. the old
    /// node may take a `-check` and a `-stop` (each up to `time_out`) to get it down after
    /// its lease ended; plus the `-start` that may be in flight when the lease ends (it was
    /// sent while the lease held; up to `time_out`) and one `check_interval` for the agent's
    /// turn. A thawed host's agent counts as running after that same grace.
    pub(crate) fn check_resources(&mut self) {
        if self.scenario.config.resources.is_empty() {
            // Nothing can run twice (S7's span state stays empty), and nothing is coming up
            // to settle: only a resource's script puts a program in `resources_coming`.
            return;
        }
        self.settle_resources();
        let now = self.now();
        let drift = self.scenario.config.params.drift_up();
        let agent_runs = |w: &Self, n: NodeId, grace: Duration| {
            w.hosts.get(&n).is_some_and(|h| {
                h.up && !h.frozen
                    && h.procs.get(&Role::Agent).is_some_and(|p| !p.stopped)
                    && h.thawed_at.is_none_or(|t| now.saturating_since(t) > grace)
            })
        };
        let mut found = Vec::new();
        let mut twice = Vec::new();
        for r in &self.scenario.config.resources {
            let Placement::WithPrimaryOf(group) = r.placement else {
                continue;
            };
            let grace = r.check_interval + scale_up(r.time_out * 3, drift);
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
                twice.push((
                    format!("S7 {} two", r.name),
                    format!("S7: `{}` runs on {live:?} at once", r.name),
                    grace,
                ));
            }
            for i in &r.instances {
                let key = (i.node, i.id);
                if !on.contains(&key) || !agent_runs(self, i.node, grace) {
                    self.s7_since.remove(&key);
                    continue;
                }
                let leased = self.hosts.get(&i.node).is_some_and(|h| {
                    h.procs.get(&Role::Agent).is_some_and(|p| {
                        let mine = p.daemon.write_leased(h.clock.local(now));
                        self.dbs
                            .instances
                            .values()
                            .any(|d| d.node == i.node && d.group == group && mine.contains(&d.id))
                    })
                });
                if leased {
                    self.s7_since.remove(&key);
                    continue;
                }
                let since = *self.s7_since.entry(key).or_insert(now);
                if now.saturating_since(since) > grace {
                    found.push((
                        format!("S7 {} {}", r.name, i.id),
                        format!(
                            "S7: `{}` ({}) runs on {} whose DN holds no write lease, for {:?}",
                            r.name,
                            i.id,
                            i.node,
                            now.saturating_since(since)
                        ),
                    ));
                }
            }
        }
        self.checker.check_resources_twice(now, twice);
        for (key, message) in found {
            self.checker.violate_keyed(now, "S7", key, message);
        }
    }

    /// Kills a resource's program (SIGKILL of the process, the script untouched).
    pub(crate) fn kill_resource(&mut self, id: InstanceId) {
        self.settle_resources();
        for h in self.hosts.values_mut() {
            if let Some(r) = h.resources.get_mut(&id) {
                *r = false;
            }
        }
    }
}
