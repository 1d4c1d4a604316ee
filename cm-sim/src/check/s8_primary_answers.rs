//! S8 (ours, SPEC §15): `/primary` never answers 200 on two members of a group at once while
//! their agents run; under §5.4's two-node concession it is reported, not failed, and a pair
//! that began in the span is judged once healing had the time to fence. Also times
//! `primary_http_lost_s`: the first instant after the fault at which no member of the
//! affected group answers `/primary` with 200.

use std::collections::BTreeSet;

use cm_core::{GroupId, InstanceId, Instant, NodeId};

use super::Checker;

/// What S8 remembers.
#[derive(Debug, Default)]
pub(super) struct S8 {
    /// Groups whose two `/primary` 200s began under the two-node concession and have not
    /// ended since: judged, like S4's windows, once healing had the time to fence (§5.4).
    pub(super) conceded: BTreeSet<GroupId>,
}

impl Checker {
    /// S8 over the answers of every running agent now (`writable`: node and instance).
    pub fn check_primary_answers(&mut self, at: Instant, writable: &[(NodeId, InstanceId)]) {
        let group_of = |i: &InstanceId| self.group_of.get(i).copied().unwrap_or_default();
        // The common case, one answer or none, needs no grouping.
        if writable.len() <= 1 {
            if !writable
                .iter()
                .any(|(_, i)| group_of(i) == self.affected_group)
            {
                self.first("primary_http_lost_s", at);
            }
            self.s8.conceded.clear();
            return;
        }
        // Grouped by a stable sort: groups in order, each group's answers in `writable` order.
        let mut answers: Vec<(GroupId, InstanceId)> =
            writable.iter().map(|(_, i)| (group_of(i), *i)).collect();
        answers.sort_by_key(|(g, _)| *g);
        if !answers.iter().any(|(g, _)| *g == self.affected_group) {
            self.first("primary_http_lost_s", at);
        }
        let dual: Vec<(GroupId, Vec<InstanceId>)> = answers
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1)
            .map(|run| (run[0].0, run.iter().map(|(_, i)| *i).collect()))
            .collect();
        self.s8
            .conceded
            .retain(|g| dual.iter().any(|(d, _)| d == g));
        let fence_due = self.fence_due(at);
        for (g, insts) in dual {
            let m = format!("S8: {g}: /primary answers 200 on {insts:?} at once");
            if self.two_node_concession {
                self.s8.conceded.insert(g);
                self.concede(at, "S8", m);
            } else if self.s8.conceded.contains(&g) && !fence_due {
                // Opened in the span: healing fences the lower side within the bound (§5.4).
            } else {
                self.s8.conceded.remove(&g);
                let key = format!("{g}/{insts:?}");
                self.violate_keyed(at, "S8", key, m);
            }
        }
    }
}
