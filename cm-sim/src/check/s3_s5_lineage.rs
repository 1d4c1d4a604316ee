//! S3 and S5 (SPEC §13): no acknowledged commit is lost — every write acknowledged in a group
//! lies on the history of each member that acknowledges later or is promoted, up to its
//! position. Writes past a fork are counted as lost, once each.

use std::collections::BTreeMap;

use cm_core::dn::History;
use cm_core::{GroupId, InstanceId, Instant, Lsn, Position, Timeline};

use super::Checker;
use crate::db::{Ack, Databases, Promotion};

/// What S3/S5 remember.
#[derive(Debug, Default)]
pub(super) struct Lineage {
    /// Acknowledged LSNs per group and timeline, sorted.
    acked: BTreeMap<GroupId, BTreeMap<Timeline, Vec<Lsn>>>,
    /// How many of a timeline's acknowledged writes were already counted lost.
    lost_marked: BTreeMap<(GroupId, Timeline), usize>,
}

impl Checker {
    /// Writes were acknowledged (by the primaries whose histories are given).
    pub fn on_acks(&mut self, at: Instant, acks: &[Ack], dbs: &Databases) {
        for a in acks {
            self.acks_total += 1;
            if a.group == self.affected_group {
                self.note_unwritable_until(at);
            }
            self.last_ack.insert(a.group, at);
            if a.group == self.affected_group && self.fault_at.is_some_and(|f| a.accepted_at > f) {
                self.first("writable_again_s", at);
            }
            let lsns = self
                .lineage
                .acked
                .entry(a.group)
                .or_default()
                .entry(a.position.timeline)
                .or_default();
            let pos = lsns.partition_point(|l| *l <= a.position.lsn);
            lsns.insert(pos, a.position.lsn);
        }
        // Each run of acknowledgements by one primary is checked once (as the list was
        // deduplicated before), against its history in place.
        let mut last: Option<(GroupId, InstanceId)> = None;
        for a in acks {
            let key = (a.group, a.instance);
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            if let Some(inst) = dbs.get(a.instance) {
                self.check_lineage(at, a.group, a.instance, &inst.history, inst.position());
            }
        }
    }

    /// A promotion took effect: S5 (its position covers every acknowledged commit) and S3.
    pub fn on_promotion(&mut self, at: Instant, p: &Promotion) {
        self.check_lineage(at, p.group, p.instance, &p.history, p.before);
    }

    /// S3/S5: every acknowledged write of `group` must lie on `history` up to `upto` (the
    /// position of a member that is promoted or acknowledging). Writes past a fork are lost;
    /// each is counted once.
    fn check_lineage(
        &mut self,
        at: Instant,
        group: GroupId,
        instance: InstanceId,
        history: &History,
        upto: Position,
    ) {
        if !self.sync {
            return;
        }
        let Some(by_tli) = self.lineage.acked.get(&group) else {
            return;
        };
        let mut lost = Vec::new();
        for (tli, lsns) in by_tli {
            let end = if *tli == upto.timeline {
                Some(upto.lsn)
            } else {
                history
                    .forks
                    .iter()
                    .find(|(t, _)| t == tli)
                    .map(|(_, e)| *e)
            };
            let kept = end.map_or(0, |e| lsns.partition_point(|l| *l <= e));
            if kept < lsns.len() {
                lost.push((*tli, kept, lsns.len(), lsns[lsns.len() - 1]));
            }
        }
        for (tli, kept, total, max) in lost {
            let marked = self.lineage.lost_marked.entry((group, tli)).or_insert(kept);
            if total > *marked {
                self.lost_acked_writes += (total - *marked) as u64;
                *marked = total;
            }
            let m = format!(
                "S3/S5: {instance} at {upto} does not hold acknowledged writes up to {}/{:X}",
                tli.0, max.0
            );
            let key = format!("{group}/{instance}/{}", tli.0);
            self.violate_once(at, "S3", key, m);
        }
    }
}
