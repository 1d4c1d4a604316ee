//! S6 (SPEC §13): no instance is started while its manual-start flag exists or while the
//! cluster is paused (as the starting agent knows it).

use cm_core::dn::DnAction;
use cm_core::{InstanceId, Instant};

use super::Checker;

impl Checker {
    /// A DN action ran on `instance` (`kept_stopped`: its manual-start flag exists; `paused`:
    /// a pause is in force at its agent).
    pub(super) fn s6_action(
        &mut self,
        at: Instant,
        instance: InstanceId,
        action: &DnAction,
        kept_stopped: bool,
        paused: bool,
    ) {
        if matches!(action, DnAction::StartPending) && (kept_stopped || paused) {
            let why = if kept_stopped {
                "its manual-start flag exists"
            } else {
                "the cluster is paused"
            };
            self.violate(at, "S6", format!("S6: {instance} started while {why}"));
        }
    }
}
