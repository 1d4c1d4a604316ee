//! Log replication, commit, apply, snapshots and proposals (SPEC.md §5.1).
//!
//! Rules, with why:
//! * Log matching: a follower accepts entries only after an entry matching `(prev_index,
//!   prev_term)`; a conflicting suffix is cut, never at or below the commit index: a leader
//!   whose log conflicts with a committed entry is refused (two-node healing, `heal.rs`).
//! * An append or snapshot is acknowledged only once durable; a refusal goes out at once.
//! * The leader commits an index only when a quorum's durable logs hold it **and** the entry is
//!   of its own term (Raft §5.4.2: earlier-term entries commit indirectly, through the no-op).
//! * Committed entries are applied in order to `ClusterState::apply`; this node's proposals
//!   get their outcomes then.
//! * Applied entries are folded into a whole-state snapshot once more than [`COMPACT_AFTER`]
//!   accumulate; a follower whose next entry is gone gets the snapshot.

use super::heal::SnapshotVerdict;
use super::log::SnapshotMeta;
use super::{
    COMPACT_AFTER, EntryPayload, LogEntry, MAX_ENTRIES_PER_APPEND, MAX_ROUNDS, Quorum, QuorumMsg,
    Role, Round,
};
use crate::ids::{LogIndex, NodeId, QuorumTerm};
use crate::state::{ClusterState, Outcome, OutcomeError};
use crate::time::Instant;

impl Quorum {
    /// Sends a new heartbeat round to every peer (with whatever each one is missing).
    pub(super) fn broadcast(&mut self, now: Instant) {
        let interval = self.params.quorum_heartbeat_interval();
        let store_stuck = self.store_stuck(now);
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let round = lead.next_round;
        lead.next_round += 1;
        let mut acks = std::collections::BTreeSet::new();
        if !store_stuck {
            acks.insert(self.node);
        }
        lead.rounds.insert(round, Round { sent_at: now, acks });
        while lead.rounds.len() > MAX_ROUNDS {
            lead.rounds.pop_first();
        }
        lead.heartbeat_at = now + interval;
        for to in self.others().collect::<Vec<_>>() {
            self.replicate_to(to, round);
        }
        self.check_round(now, round);
    }

    /// Sends `to` the entries it is missing from its next index, or the snapshot.
    pub(super) fn replicate_to(&mut self, to: NodeId, round: u64) {
        let Some(next) = self.lead.as_ref().and_then(|l| l.next.get(&to).copied()) else {
            return;
        };
        let msg = if next <= self.log.snapshot_index() {
            let snap = &self.log.snapshot;
            QuorumMsg::Snapshot {
                last_index: snap.index,
                last_term: snap.term,
                state: snap.state.clone(),
                round,
            }
        } else {
            let prev_index = LogIndex(next.0 - 1);
            QuorumMsg::Append {
                prev_index,
                prev_term: self.log.term_at(prev_index).unwrap_or_default(),
                entries: self.log.entries_from(next, MAX_ENTRIES_PER_APPEND),
                commit: self.commit,
                round,
            }
        };
        self.send(to, msg);
    }

    fn current_round(&self) -> u64 {
        self.lead
            .as_ref()
            .map_or(0, |l| l.next_round.saturating_sub(1))
    }

    /// Follower side of `Append` (the term already equals ours).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        now: Instant,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: QuorumTerm,
        entries: Vec<LogEntry>,
        leader_commit: LogIndex,
        round: u64,
    ) {
        if !self.accept_leader(now, from) {
            return;
        }
        self.send_view_to_leader(now, from);
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index.0 == prev_index.0 + 1 + i as u64);
        if !contiguous {
            return;
        }
        let fail = |hint: LogIndex| QuorumMsg::AppendReply {
            success: false,
            match_index: hint,
            round,
        };
        if let Some(at) = self.committed_conflict(prev_index, prev_term, &entries) {
            return self.on_committed_conflict(from, at, round);
        }
        if self.append_unchecked(prev_index, &entries) {
            return self.send(from, fail(self.log.snapshot_index()));
        }
        if prev_index > self.log.last_index() {
            return self.send(from, fail(self.log.last_index()));
        }
        if prev_index >= self.log.snapshot_index()
            && self.log.term_at(prev_index) != Some(prev_term)
        {
            let hint = LogIndex(prev_index.0.saturating_sub(1)).max(self.commit);
            return self.send(from, fail(hint));
        }
        let match_index = LogIndex(prev_index.0 + entries.len() as u64);
        for e in entries {
            if e.index <= self.log.snapshot_index() {
                continue;
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                // Never at or below the commit index: `committed_conflict` refused those.
                Some(_) => self.log.truncate_from(e.index),
                None => {}
            }
            self.log.append(e);
            self.dirty = true;
        }
        let commit = leader_commit.min(match_index);
        if commit > self.commit {
            self.commit = commit;
            self.apply_committed();
        }
        self.send_durable(
            from,
            QuorumMsg::AppendReply {
                success: true,
                match_index,
                round,
            },
        );
    }

    /// A message from the leader of our term: follow it and restart the election timer.
    fn accept_leader(&mut self, now: Instant, from: NodeId) -> bool {
        if self.role == Role::Leader {
            tracing::error!(node = %self.node, %from, term = %self.term, "two leaders in one term");
            return false;
        }
        self.role = Role::Follower;
        self.leader = Some(from);
        self.leader_seen_at = Some(now);
        self.reset_election_timer(now);
        true
    }

    /// Follower side of `Snapshot` (the term already equals ours).
    pub(super) fn on_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        last_index: LogIndex,
        last_term: QuorumTerm,
        state: ClusterState,
        round: u64,
    ) {
        if !self.accept_leader(now, from) {
            return;
        }
        self.send_view_to_leader(now, from);
        let install = if self.two_node_failover() {
            match self.snapshot_verdict(last_index, last_term, &state) {
                SnapshotVerdict::Ignore => false,
                SnapshotVerdict::Install => true,
                SnapshotVerdict::Overwrite => {
                    tracing::warn!(node = %self.node, leader = %from, index = %last_index,
                        "two-node healing: the leader's snapshot replaces what this side committed alone");
                    true
                }
                SnapshotVerdict::Diverged => {
                    return self.send_diverged(from, last_index, round);
                }
            }
        } else {
            last_index > self.commit
        };
        if install {
            self.diverged = false;
            self.log.install(SnapshotMeta {
                index: last_index,
                term: last_term,
                state: state.clone(),
            });
            self.state = state;
            self.commit = last_index;
            self.applied = last_index;
            self.dirty = true;
            self.check_rejoin();
        }
        self.send_durable(from, QuorumMsg::SnapshotReply { last_index, round });
    }

    pub(super) fn on_append_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        round: u64,
    ) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let Some(next) = lead.next.get(&from).copied() else {
            return;
        };
        let mut matched = lead.matched.get(&from).copied().unwrap_or_default();
        if success {
            let m = matched.max(match_index);
            lead.matched.insert(from, m);
            lead.next.insert(from, next.max(m.next()));
        } else {
            if match_index < matched {
                // The follower holds less than it once acknowledged: it lost its store (a
                // rejoin) or this refusal is stale. Lowering `matched` never uncommits
                // anything and lets replication find the real match point.
                matched = match_index;
                lead.matched.insert(from, matched);
            }
            // Back off below the refused index, never below what is known to match.
            let back = LogIndex(next.0.saturating_sub(1)).min(match_index.next());
            lead.next.insert(from, back.max(matched.next()));
        }
        let new_next = lead.next.get(&from).copied().unwrap_or(next);
        // Resend at once only when this reply moved `next`: a duplicated or stale reply must not
        // start a second stream of appends (the heartbeat retries anyway).
        let resend = new_next != next && new_next <= self.log.last_index();
        self.ack_round(now, from, round);
        if success {
            self.advance_commit(now);
        }
        if resend && self.lead.is_some() {
            let r = self.current_round();
            self.replicate_to(from, r);
        }
    }

    pub(super) fn on_snapshot_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        last_index: LogIndex,
        round: u64,
    ) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if !lead.next.contains_key(&from) {
            return;
        }
        let m = lead
            .matched
            .get(&from)
            .copied()
            .unwrap_or_default()
            .max(last_index);
        lead.matched.insert(from, m);
        let old_next = lead.next.get(&from).copied().unwrap_or_default();
        let next = old_next.max(m.next());
        lead.next.insert(from, next);
        self.ack_round(now, from, round);
        self.advance_commit(now);
        if self.lead.is_some() && next != old_next && next <= self.log.last_index() {
            let r = self.current_round();
            self.replicate_to(from, r);
        }
    }

    /// Commits the highest index of the current term held durably by a quorum, then applies.
    pub(super) fn advance_commit(&mut self, _now: Instant) {
        let Some(lead) = self.lead.as_ref() else {
            return;
        };
        let mut n = self.log.last_index();
        let mut new_commit = self.commit;
        // Terms never decrease along the log: below the first entry of an earlier term nothing
        // can be committed by counting (Raft §5.4.2).
        while n > self.commit && self.log.term_at(n) == Some(self.term) {
            let holders = lead
                .matched
                .iter()
                .filter(|(_, m)| **m >= n)
                .map(|(node, _)| *node)
                .collect();
            if self.is_quorum(&holders) {
                new_commit = n;
                break;
            }
            n = LogIndex(n.0 - 1);
        }
        if new_commit > self.commit {
            self.commit = new_commit;
            self.apply_committed();
        }
    }

    /// Applies committed entries in order and reports outcomes of this node's proposals.
    pub(super) fn apply_committed(&mut self) {
        while self.applied < self.commit {
            let index = self.applied.next();
            let Some(entry) = self.log.entry(index) else {
                break;
            };
            let payload = entry.payload.clone();
            let entry_term = entry.term;
            self.applied = index;
            let EntryPayload::Change(change) = payload else {
                continue;
            };
            let step = self.two_node_failover().then_some(entry_term);
            let result = self
                .state
                .apply_stepped(&change, step)
                .map_err(OutcomeError::Conflict);
            let id = self.lead.as_mut().and_then(|l| l.pending.remove(&index));
            if let Some(id) = id {
                self.outcomes.push(Outcome { id, change, result });
            }
            self.check_rejoin();
        }
        if self.applied.0 >= self.log.snapshot_index().0 + COMPACT_AFTER {
            self.log.compact(self.applied, self.state.clone());
            self.dirty = true;
        }
    }

    /// Appends the queued proposals (leader with a lease only), persists and replicates.
    pub(super) fn on_flush(&mut self, now: Instant) {
        if self.queued.is_empty() {
            return;
        }
        if !self.holds_lease(now) {
            self.drop_queued();
            return;
        }
        for (id, change) in std::mem::take(&mut self.queued) {
            let index = self.append_local(EntryPayload::Change(change));
            if let Some(lead) = self.lead.as_mut() {
                lead.pending.insert(index, id);
            }
        }
        self.broadcast(now);
    }
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
