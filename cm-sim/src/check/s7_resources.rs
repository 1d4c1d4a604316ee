//! S7's first half (SPEC §14, ours): a `with_primary_of` resource never runs on two nodes at
//! once while their agents run. The world finds the resources running twice (its resource
//! model, `resources.rs`); this judges them against §5.4's two-node concession.

use std::collections::BTreeSet;

use core::time::Duration;

use cm_core::Instant;

use super::Checker;

/// What S7 remembers.
#[derive(Debug, Default)]
pub(super) struct S7 {
    /// Resources (keys) that began running on two nodes under the two-node concession and have
    /// not stopped since: judged like S8's.
    conceded: BTreeSet<String>,
}

impl Checker {
    /// `with_primary_of` resources now running on two nodes at once while their agents run,
    /// as (key, message, grace). A resource follows its group's primary, so under §5.4's
    /// two-node concession — which trades S4 (two primaries) for availability — it runs on
    /// both sides: reported, not failed, like S8; one that began in the span is judged once
    /// healing had the time to fence the lower side's primary (`heal_fence_bound`) and that
    /// side's agent the `grace` to stop the resource.
    pub(crate) fn check_resources_twice(
        &mut self,
        at: Instant,
        twice: Vec<(String, String, Duration)>,
    ) {
        self.s7
            .conceded
            .retain(|k| twice.iter().any(|(t, _, _)| t == k));
        for (key, m, grace) in twice {
            let due = self
                .concession_ended
                .is_some_and(|e| at >= e + self.heal_fence_bound + grace);
            if self.two_node_concession {
                self.s7.conceded.insert(key);
                self.concede(at, "S7", m);
            } else if self.s7.conceded.contains(&key) && !due {
                // Began in the span: healing stops the lower side's within the bound.
            } else {
                self.s7.conceded.remove(&key);
                self.violate_keyed(at, "S7", key, m);
            }
        }
    }

    /// Whether resources from the two-node span still wait for their judgement.
    pub(super) fn s7_pending(&self) -> bool {
        !self.s7.conceded.is_empty()
    }
}
