//! The promotion history of SPEC.md §15: the newest [`PER_GROUP`] promotions of each group and at
//! most [`TOTAL`] in all, kept in the replicated state so every CMS (and, through `cm_ctl query`,
//! every agent) shows the same list.
//!
//! A promotion is recorded when it is final: the promoted member reported Primary at the group's
//! committed term on the timeline it created — the same instant the term → timeline record of
//! §5.1 is made. A proposed but never confirmed promotion (the candidate died first) leaves no
//! entry; the term that replaced it does.
//!
//! The leader's wall-clock time is stored as information for people only; no decision reads it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, InstanceId, Term, Timeline};
use crate::state::{ClusterState, Conflict};
use crate::time::WallMillis;

/// Promotions kept per group.
pub const PER_GROUP: usize = 20;
/// Promotions kept in all (the oldest of the whole cluster go first).
pub const TOTAL: usize = 1_000;

/// Why a member was promoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromotionReason {
    /// The group's first primary, or a promotion while `cm_ctl start` is in effect.
    Start,
    /// Arbitration replaced a failed primary (§4.2).
    Failover,
    /// `cm_ctl switchover`, including the old primary's fresh term after an abort (§4.5).
    Switchover,
    /// The old primary was hung (§6).
    PhonyDead,
    /// The old primary's disk was damaged (§7.1).
    Disk,
}

impl PromotionReason {
    /// The name `cm_ctl history` prints (the JSON spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Failover => "failover",
            Self::Switchover => "switchover",
            Self::PhonyDead => "phony-dead",
            Self::Disk => "disk",
        }
    }
}

/// One confirmed promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The group.
    pub group: GroupId,
    /// The group term the member was promoted at.
    pub term: Term,
    /// The promoted member.
    pub instance: InstanceId,
    /// The primary it replaced, when known.
    pub previous: Option<InstanceId>,
    /// Why.
    pub reason: PromotionReason,
    /// The timeline the promotion created.
    pub timeline: Timeline,
    /// The recording leader's wall clock, milliseconds since the Unix epoch (information only).
    pub wall_ms: WallMillis,
}

/// The bounded history: oldest first, at most [`PER_GROUP`] per group and [`TOTAL`] in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionLog {
    entries: VecDeque<Promotion>,
}

impl PromotionLog {
    /// Every entry, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Promotion> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no promotion is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The group's newest promotion.
    pub fn last_of(&self, group: GroupId) -> Option<&Promotion> {
        self.entries.iter().rev().find(|p| p.group == group)
    }

    /// Whether the group's promotion at `term` is recorded (or a later one is: a group's
    /// promotions are recorded in term order and its newest entry is never dropped, so this
    /// does not depend on what the bound dropped).
    pub fn contains(&self, group: GroupId, term: Term) -> bool {
        self.last_of(group).is_some_and(|p| p.term >= term)
    }

    /// Appends `p` and drops the group's oldest beyond [`PER_GROUP`], then the cluster's oldest
    /// beyond [`TOTAL`] that is not its group's newest (with more than [`TOTAL`] groups the log
    /// holds one entry per group). A (group, term) at or below the group's newest recorded term
    /// is refused (`false`), so a proposal re-driven by a new leader cannot record a promotion
    /// twice.
    pub fn record(&mut self, p: Promotion) -> bool {
        if self.contains(p.group, p.term) {
            return false;
        }
        let group = p.group;
        self.entries.push_back(p);
        if self.entries.iter().filter(|e| e.group == group).count() > PER_GROUP
            && let Some(i) = self.entries.iter().position(|e| e.group == group)
        {
            self.entries.remove(i);
        }
        if self.entries.len() > TOTAL {
            let mut newest = std::collections::BTreeMap::new();
            for (i, e) in self.entries.iter().enumerate() {
                newest.insert(e.group, i);
            }
            let mut excess = self.entries.len() - TOTAL;
            let mut i = 0;
            self.entries.retain(|e| {
                let keep = excess == 0 || newest.get(&e.group) == Some(&i);
                if !keep {
                    excess -= 1;
                }
                i += 1;
                keep
            });
        }
        true
    }
}

impl ClusterState {
    /// Applies [`Change::RecordPromotion`](crate::state::Change::RecordPromotion): a promotion
    /// enters the history once, and only at a term its group already reached.
    pub(crate) fn record_promotion(&mut self, p: &Promotion) -> Result<(), Conflict> {
        let g = self.group_mut(p.group)?;
        if p.term > g.term {
            return Err(Conflict::TermMoved {
                expected: p.term,
                actual: g.term,
            });
        }
        if self.promotions.record(p.clone()) {
            Ok(())
        } else {
            Err(Conflict::AlreadyRecorded)
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
