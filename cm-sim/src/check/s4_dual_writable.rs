//! S4 (SPEC §13): at most one member of a group can acknowledge commits at any instant (while
//! its agents run, in asynchronous mode). Also the `dual_writable_ms` figure. Under §5.4's
//! two-node concession a dual window is reported, and judged once the span ended and healing
//! had the time to fence the lower side's primary.

use std::collections::{BTreeMap, BTreeSet};

use cm_core::{GroupId, InstanceId, Instant, NodeId};

use super::Checker;
use crate::db::Databases;

/// What S4 remembers.
#[derive(Debug, Default)]
pub(super) struct S4 {
    /// The groups of the instances in id order (adjacent repeats removed), the order in which
    /// groups are judged; filled on the first check (the set of instances never changes).
    groups: Option<Vec<GroupId>>,
    /// Since when each group has had two members able to acknowledge.
    pub(super) dual_since: BTreeMap<GroupId, Instant>,
    /// Groups whose dual window opened under the two-node concession.
    pub(super) conceded_dual: BTreeSet<GroupId>,
}

impl Checker {
    /// S4 after an event (`fence_due`: the concession ended at least the healing fence bound
    /// ago).
    pub(super) fn check_dual_writable(
        &mut self,
        at: Instant,
        dbs: &Databases,
        frozen: &dyn Fn(NodeId) -> bool,
        agents_alive: &dyn Fn(NodeId) -> bool,
        fence_due: bool,
    ) {
        let groups = self.s4.groups.take().unwrap_or_else(|| {
            let mut gs: Vec<GroupId> = dbs.instances.values().map(|i| i.group).collect();
            gs.dedup();
            gs
        });
        for g in &groups {
            let g = *g;
            // Two acknowledgers need two members accepting writes on thawed hosts; most of
            // the time there is one, and its replication scan (`acknowledgers`) is skipped.
            let dual = dbs
                .group_members(g)
                .filter(|p| p.accepts_writes() && !frozen(p.node))
                .nth(1)
                .is_some()
                && dbs.acknowledgers(g, frozen).nth(1).is_some();
            let judge = match (dual, self.s4.dual_since.get(&g).copied()) {
                (true, None) => {
                    self.s4.dual_since.insert(g, at);
                    true
                }
                // A window opened under the two-node concession is judged once it ends and
                // healing had the time to fence the lower side's primary (§5.4, §4.4).
                (true, Some(_)) => {
                    !self.two_node_concession && fence_due && self.s4.conceded_dual.remove(&g)
                }
                (false, Some(since)) => {
                    self.dual_writable += at - since;
                    self.s4.dual_since.remove(&g);
                    self.s4.conceded_dual.remove(&g);
                    false
                }
                (false, None) => false,
            };
            if judge {
                let able: Vec<InstanceId> = dbs.acknowledgers(g, frozen).collect();
                let agents = able
                    .iter()
                    .all(|i| dbs.get(*i).is_some_and(|d| agents_alive(d.node)));
                if self.sync || agents {
                    let m = format!("S4: {g}: {able:?} can all acknowledge commits");
                    if self.two_node_concession {
                        self.s4.conceded_dual.insert(g);
                        self.concede(at, "S4", m);
                    } else {
                        self.violate(at, "S4", m);
                    }
                }
            }
        }
        self.s4.groups = Some(groups);
    }
}
