//! Custom resources (SPEC §14): the vocabulary shared by the agent's resource machine, the
//! reports, the CMS leader, cm_ctl, the script runner's driver and the simulator. The rules
//! live in `agent/resource.rs`; the config in [`crate::config::ResourceConfig`].

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::InstanceId;

/// What a resource instance is, as shown by `cm_ctl query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceState {
    /// `-check` exited 0.
    Online,
    /// `-check` exited 1 and the resource should run.
    Offline,
    /// `-check` exited 2, any other code, was killed or could not run; or not checked yet; or
    /// (CMS leader) no report for `instance_heartbeat_timeout`.
    Unknown,
    /// Offline by intent: its manual-start flag, a cluster stop, or placement elsewhere.
    Stopped,
    /// `-check` exited 3.
    Abnormal,
}

impl ResourceState {
    /// The name shown by `cm_ctl query`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Offline => "Offline",
            Self::Unknown => "Unknown",
            Self::Stopped => "Stopped",
            Self::Abnormal => "Abnormal",
        }
    }

    /// Whether it counts against the cluster state (§14: not Online, and not stopped by intent).
    pub fn degrades(self) -> bool {
        !matches!(self, Self::Online | Self::Stopped)
    }
}

impl core::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One resource instance in an agent report (appended to [`crate::msg::AgentReport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// The resource instance.
    pub instance: InstanceId,
    /// Its state.
    pub state: ResourceState,
}

/// The script's first argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScriptVerb {
    /// `-start`.
    Start,
    /// `-stop`.
    Stop,
    /// `-check`.
    Check,
    /// `-clean`.
    Clean,
}

impl ScriptVerb {
    /// The argument as passed to the script.
    pub fn arg(self) -> &'static str {
        match self {
            Self::Start => "-start",
            Self::Stop => "-stop",
            Self::Check => "-check",
            Self::Clean => "-clean",
        }
    }
}

/// How one script run ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScriptExit {
    /// It exited with this code.
    Code(i32),
    /// It was killed at its `time_out` (or by a signal).
    Killed,
    /// It could not be run (missing, not executable), with the reason.
    Failed(String),
}

impl ScriptExit {
    /// What a `-check` that ended this way says (§14: 0 online, 1 offline, 2 unknown,
    /// 3 abnormal; killed or any other code = unknown).
    pub fn check_state(&self) -> ResourceState {
        match self {
            Self::Code(0) => ResourceState::Online,
            Self::Code(1) => ResourceState::Offline,
            Self::Code(3) => ResourceState::Abnormal,
            _ => ResourceState::Unknown,
        }
    }

    /// Whether a run of `verb` that ended this way counts as a failed script run (the agent's
    /// `cm_agent_resource_script_failures_total`, §15): killed or not runnable; for `-check`
    /// an exit code that is not one of its answers 0, 1, 3 (2, "unknown", says the script
    /// could not tell); for the other verbs any code but 0.
    pub fn failed(&self, verb: ScriptVerb) -> bool {
        match (self, verb) {
            (Self::Code(c), ScriptVerb::Check) => !matches!(c, 0 | 1 | 3),
            (Self::Code(c), _) => *c != 0,
            (Self::Killed | Self::Failed(_), _) => true,
        }
    }
}

/// The argument list of one run: `<verb> <id> <args split on whitespace>`.
pub fn script_args(verb: ScriptVerb, instance: InstanceId, args: &str) -> Vec<String> {
    let mut v = vec![verb.arg().to_owned(), instance.0.to_string()];
    v.extend(args.split_whitespace().map(str::to_owned));
    v
}

/// The hand-over wait of a `with_primary_of` resource (§14): after the node that ran it fell
/// silent, a new node may start it only once `fencing_floor + 2 × time_out × (1 + ρ)/(1 − ρ)`
/// have passed since that node's last report.
pub fn handover_wait(fencing_floor: Duration, time_out: Duration, drift_up: f64) -> Duration {
    fencing_floor + crate::time::scale_up(time_out * 2, drift_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_exit_codes_map_as_the_contract_says() {
        let table = [
            (ScriptExit::Code(0), ResourceState::Online),
            (ScriptExit::Code(1), ResourceState::Offline),
            (ScriptExit::Code(2), ResourceState::Unknown),
            (ScriptExit::Code(3), ResourceState::Abnormal),
            (ScriptExit::Code(4), ResourceState::Unknown),
            (ScriptExit::Code(-1), ResourceState::Unknown),
            (ScriptExit::Code(255), ResourceState::Unknown),
            (ScriptExit::Killed, ResourceState::Unknown),
            (
                ScriptExit::Failed("no such file".into()),
                ResourceState::Unknown,
            ),
        ];
        for (exit, state) in table {
            assert_eq!(exit.check_state(), state, "{exit:?}");
        }
    }

    #[test]
    fn a_run_fails_when_killed_unrunnable_or_its_code_is_no_answer_of_its_verb() {
        use ScriptVerb::*;
        let failed = ScriptExit::Failed("no such file".into());
        let table = [
            (ScriptExit::Code(0), Check, false),
            (ScriptExit::Code(1), Check, false),
            (ScriptExit::Code(3), Check, false),
            (ScriptExit::Code(2), Check, true),
            (ScriptExit::Code(4), Check, true),
            (ScriptExit::Killed, Check, true),
            (failed.clone(), Check, true),
            (ScriptExit::Code(0), Start, false),
            (ScriptExit::Code(1), Start, true),
            (ScriptExit::Code(3), Stop, true),
            (ScriptExit::Code(0), Clean, false),
            (ScriptExit::Killed, Stop, true),
            (failed, Start, true),
        ];
        for (exit, verb, want) in table {
            assert_eq!(exit.failed(verb), want, "{exit:?} {verb:?}");
        }
    }

    #[test]
    fn args_are_verb_id_then_the_configured_words() {
        assert_eq!(
            script_args(ScriptVerb::Check, InstanceId(9001), " --port  6432 "),
            vec!["-check", "9001", "--port", "6432"]
        );
        assert_eq!(
            script_args(ScriptVerb::Clean, InstanceId(7), ""),
            vec!["-clean", "7"]
        );
    }

    #[test]
    fn only_online_and_stopped_leave_the_cluster_normal() {
        use ResourceState::*;
        let degrading: Vec<_> = [Online, Offline, Unknown, Stopped, Abnormal]
            .into_iter()
            .filter(|s| s.degrades())
            .collect();
        assert_eq!(degrading, vec![Offline, Unknown, Abnormal]);
    }

    #[test]
    fn handover_wait_with_defaults() {
        // Fencing floor 6 × 1.01/0.99 + 1 + 0.5 ≈ 7.62 s; 2 × 10 s × 1.0202 ≈ 20.40 s.
        let p = crate::params::Params::defaults();
        let w = handover_wait(p.fencing_floor(), Duration::from_secs(10), p.drift_up());
        assert!(
            w > Duration::from_millis(28_000) && w < Duration::from_millis(28_100),
            "{w:?}"
        );
    }
}
