//! The simulated custom resources (SPEC §14): one virtual program per resource instance, run
//! on its node's host and driven through the same script contract the agent uses
//! (`-start|-stop|-check|-clean`), with a behaviour per instance the scenario (or the swarm)
//! chooses: scripts that succeed, fail, hang, or a program that flaps.

use core::time::Duration;

use cm_core::ids::{InstanceId, NodeId};
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
            .rng
            .duration_between(SCRIPT_MIN, SCRIPT_MAX)
            .min(timeout);
        let flapped = model == ResourceModel::Flap && self.rng.chance(0.3);
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

    /// Kills a resource's program (SIGKILL of the process, the script untouched).
    pub(crate) fn kill_resource(&mut self, id: InstanceId) {
        for h in self.hosts.values_mut() {
            if let Some(r) = h.resources.get_mut(&id) {
                *r = false;
            }
        }
    }
}
