//! Flag files: operator intent per node, in the node's state directory (SPEC.md §2).
//! Reading and writing them is I/O (cm-io); their names, contents and meaning live here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dn::StopMode;
use crate::ids::InstanceId;

/// One flag file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Flag {
    /// `cluster_manual_start`: stop everything with the mode inside, then exit.
    ClusterManualStart,
    /// `instance_manual_start_<id>`: keep this instance stopped.
    InstanceManualStart(InstanceId),
    /// `cluster_manual_starting`: lets the agent start instances while paused.
    ClusterManualStarting,
    /// `cluster_dilatation_status`: om_monitor refuses to start cm_agent.
    DilatationStatus,
}

impl Flag {
    /// The file name in the state directory.
    pub fn file_name(self) -> String {
        match self {
            Self::ClusterManualStart => "cluster_manual_start".into(),
            Self::InstanceManualStart(id) => format!("instance_manual_start_{}", id.0),
            Self::ClusterManualStarting => "cluster_manual_starting".into(),
            Self::DilatationStatus => "cluster_dilatation_status".into(),
        }
    }

    /// The flag a file name denotes, if any.
    pub fn from_file_name(name: &str) -> Option<Self> {
        match name {
            "cluster_manual_start" => Some(Self::ClusterManualStart),
            "cluster_manual_starting" => Some(Self::ClusterManualStarting),
            "cluster_dilatation_status" => Some(Self::DilatationStatus),
            _ => name
                .strip_prefix("instance_manual_start_")
                .and_then(|id| id.parse::<u32>().ok())
                .map(|id| Self::InstanceManualStart(InstanceId(id))),
        }
    }
}

/// The content written into a manual-start flag: the stop mode (one line). Unreadable or empty
/// content means `fast`, as a half-written flag must still stop the instance.
pub fn stop_mode_from_content(content: &str) -> StopMode {
    content
        .lines()
        .find_map(StopMode::parse)
        .unwrap_or(StopMode::Fast)
}

/// The flags present in one node's state directory, as observed by a driver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSet {
    /// `cluster_manual_start` with its stop mode.
    pub cluster_manual_start: Option<StopMode>,
    /// `instance_manual_start_<id>` with their stop modes.
    pub instance_manual_start: BTreeMap<InstanceId, StopMode>,
    /// `cluster_manual_starting`.
    pub cluster_manual_starting: bool,
    /// `cluster_dilatation_status`.
    pub dilatation: bool,
}

impl FlagSet {
    /// Whether an instance must stay stopped (per-instance or cluster flag).
    pub fn keeps_stopped(&self, instance: InstanceId) -> Option<StopMode> {
        self.cluster_manual_start
            .or_else(|| self.instance_manual_start.get(&instance).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [
            Flag::ClusterManualStart,
            Flag::InstanceManualStart(InstanceId(6001)),
            Flag::ClusterManualStarting,
            Flag::DilatationStatus,
        ] {
            assert_eq!(Flag::from_file_name(&f.file_name()), Some(f));
        }
        assert_eq!(Flag::from_file_name("instance_manual_start_x"), None);
        assert_eq!(Flag::from_file_name("other"), None);
    }

    #[test]
    fn content_gives_the_stop_mode_with_fast_as_fallback() {
        assert_eq!(stop_mode_from_content("immediate\n"), StopMode::Immediate);
        assert_eq!(stop_mode_from_content("F\ni\n"), StopMode::Immediate);
        assert_eq!(stop_mode_from_content(""), StopMode::Fast);
        assert_eq!(stop_mode_from_content("garbage"), StopMode::Fast);
    }
}
