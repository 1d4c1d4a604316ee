//! Two-node mode: healing after both sides led alone (SPEC.md §5.4).
//!
//! With `cms_enable_failover_on2nodes`, W2 commits alone while its weight counts and W1 commits
//! alone through the gateway rule, so after a partition both logs may hold committed entries
//! the other lacks. Raft's log matching cannot reconcile that (a follower never cuts a committed
//! entry), and one side's decisions must give way. The rules:
//!
//! * **Disjoint group terms.** Every term-changing change moves a group to the next term of the
//!   parity of the quorum term of the entry that carries it
//!   ([`crate::quorum_math::next_group_term`]; W2 leads odd quorum terms, W1 even ones), so the
//!   two sides never commit the same group term and at most one Failover is ever sent per
//!   (group, term) (S2), with no coordination between them.
//! * **Detection (follower).** An `Append` whose previous entry or one of whose entries has,
//!   at an index this follower may have committed, another term than its own; or a `Snapshot` whose
//!   last entry does, or whose state has a lower term for some group than this follower
//!   committed; or (this mode only) an `Append` that lies wholly below this follower's
//!   snapshot, which it cannot check (a leader holding every entry this follower committed
//!   never sends one, but a stale message may: it is refused with the snapshot index as hint,
//!   which costs that leader one back-off step). The follower then appends nothing and answers
//!   [`QuorumMsg::Diverged`] with its committed groups, which does not acknowledge the round.
//!   It grants no vote or pre-vote until healed (its log says nothing comparable). "May have
//!   committed": at or below its commit index, or an entry of its own parity (it created it,
//!   and may have committed it alone before a restart made it forget its commit index, which
//!   is not persisted); the groups it sends, and checks a snapshot against, are those of its
//!   whole log applied (the most it may have committed).
//! * **Merge (leader).** A leader given a `Diverged` whose groups its committed state does not
//!   cover (some group's term is higher there) appends [`Change::MergeDiverged`] — at most one
//!   in flight — which, applied, raises each such group to the other side's term, static
//!   primary and timelines. So each group's term is the higher of the two sides'; the side with
//!   the lower term now has a primary below the group's term, which the arbiter restarts
//!   (§4.4), and the primary promoted at the higher term is the static one.
//!   The operator's pause or resume is merged the same way: `Diverged` carries the follower's
//!   pause with the wall-clock instant its leader took the request ([`Change::SetPausedAt`]),
//!   and a newer request of the other side that differs is appended with its stamp (swarm
//!   seeds 212 and 236: a `resume` acknowledged on the overwritten side was lost and the cluster
//!   stayed paused for good). Wall clocks order requests minutes apart; a skew larger than the
//!   gap between two requests on the two sides may keep the older one.
//! * **Overwrite (follower).** Once its committed state covers the follower's groups, the
//!   leader folds its applied entries into its snapshot and sends it; the follower installs a
//!   snapshot over its own diverged log only when that snapshot covers its committed groups.
//!   What the follower committed alone besides group terms and the pause (a pending
//!   switchover, a read-only step, a parameter) is discarded with its log; the leader's
//!   committed decisions all stay.
//!
//! Who survives: a leader that needs its peer's acknowledgement to commit (W1 once it hears W2
//! again) cannot commit the merge, since `Diverged` acknowledges nothing; check-quorum makes it
//! step down, the diverged follower refuses it votes, and W2, whose weight counts again as soon
//! as it hears its peer, wins alone. So in practice W2's log survives and W1's alone span is
//! folded into it.
//!
//! Why S1–S3 still hold. S1: quorum terms stay disjoint by parity (§5.4), healing adds no
//! election rule but a refusal. S2: group terms in each replica's applied state never decrease
//! (a merge only raises terms; a follower installs only a snapshot that covers its committed
//! terms); the sides' terms are disjoint, so no (group, term) gets two Failovers. S3: a primary
//! of the side with the lower group term is restarted pending and rebuilt from the surviving
//! primary, as after any failover (§4.4); acknowledged writes it held beyond the survivor are
//! exactly what two-node mode concedes while both sides reached the gateway (S4's trade).
//! Outside two-node mode a conflict with a committed entry breaks a Raft invariant: it is
//! refused and logged, never a panic.

use std::collections::BTreeMap;

use super::{EntryPayload, LogEntry, Quorum, QuorumMsg};
use crate::ids::{GroupId, LogIndex, NodeId, QuorumTerm};
use crate::state::{Change, ClusterState, GroupState};
use crate::time::{Instant, WallMillis};

impl Quorum {
    /// Follower: the first index this node committed at which the leader's log (the entry
    /// before `entries`, or one of them) has another term.
    pub(super) fn committed_conflict(
        &self,
        prev_index: LogIndex,
        prev_term: QuorumTerm,
        entries: &[LogEntry],
    ) -> Option<LogIndex> {
        let checkable = |i: LogIndex| i >= self.log.snapshot_index() && self.may_have_committed(i);
        let differs = |i: LogIndex, t: QuorumTerm| self.log.term_at(i).is_some_and(|own| own != t);
        if checkable(prev_index) && differs(prev_index, prev_term) {
            return Some(prev_index);
        }
        entries
            .iter()
            .find(|e| checkable(e.index) && differs(e.index, e.term))
            .map(|e| e.index)
    }

    /// Whether the entry at `index` of this log may have been committed: at or below the commit
    /// index, or — two-node mode — created by this node, which may have committed it alone
    /// (W2 whenever its weight counts) before a restart made it forget its commit index.
    pub(super) fn may_have_committed(&self, index: LogIndex) -> bool {
        if index <= self.commit {
            return true;
        }
        let own = u64::from(self.is_w2());
        self.two_node_failover()
            && self
                .log
                .term_at(index)
                .is_some_and(|t| t.0 > 0 && t.0 % 2 == own)
    }

    /// Two-node mode: the state once every entry of this log is applied — the most this node
    /// may have committed (an entry it created may be committed without its commit index
    /// knowing). A term in its groups that was never committed is harmless to merge: group
    /// terms need only be unique; its pause is the newest operator request this side knows.
    pub(super) fn possible_state(&self) -> ClusterState {
        let mut state = self.state.clone();
        let mut i = self.applied.next();
        while let Some(e) = self.log.entry(i) {
            if let EntryPayload::Change(change) = &e.payload {
                let step = self.two_node_failover().then_some(e.term);
                let _ = state.apply_stepped(change, step);
            }
            i = i.next();
        }
        state
    }

    /// Follower, two-node mode: an append wholly below this node's snapshot cannot be checked
    /// against what it committed (see the module documentation).
    pub(super) fn append_unchecked(&self, prev_index: LogIndex, entries: &[LogEntry]) -> bool {
        let snap = self.log.snapshot_index();
        self.two_node_failover()
            && prev_index < snap
            && entries.last().is_none_or(|e| e.index < snap)
    }

    /// Follower: the leader's log conflicts with what this node committed.
    pub(super) fn on_committed_conflict(&mut self, from: NodeId, at: LogIndex, round: u64) {
        if !self.two_node_failover() {
            tracing::error!(node = %self.node, leader = %from, index = %at, term = %self.term,
                "the leader's log conflicts with a committed entry (a broken quorum invariant): refused");
            return self.send(
                from,
                QuorumMsg::AppendReply {
                    success: false,
                    match_index: self.commit,
                    round,
                },
            );
        }
        self.send_diverged(from, at, round);
    }

    /// Follower, two-node mode: answers `Diverged` with the committed groups.
    pub(super) fn send_diverged(&mut self, from: NodeId, at: LogIndex, round: u64) {
        if !self.diverged {
            tracing::warn!(node = %self.node, leader = %from, index = %at, term = %self.term,
                "two-node healing: both sides committed alone; asking the leader to merge the group terms");
        }
        self.diverged = true;
        let possible = self.possible_state();
        let pause = possible.pause_stamp();
        let groups = possible.groups;
        self.send(
            from,
            QuorumMsg::Diverged {
                groups,
                round,
                pause,
            },
        );
    }

    /// Follower, two-node mode: what to do with a leader's snapshot — install it only when it
    /// covers the group terms this node committed, and say when that discards entries it
    /// committed alone.
    pub(super) fn snapshot_verdict(
        &self,
        last_index: LogIndex,
        last_term: QuorumTerm,
        state: &ClusterState,
    ) -> SnapshotVerdict {
        let conflicts = self.may_have_committed(last_index)
            && self.log.term_at(last_index).is_some_and(|t| t != last_term);
        let discards = self.diverged || conflicts;
        if !discards && last_index <= self.commit {
            return SnapshotVerdict::Ignore;
        }
        let possible = self.possible_state();
        if !state.covers_terms(&possible.groups) || !state.covers_pause(possible.pause_stamp()) {
            return SnapshotVerdict::Diverged;
        }
        if discards {
            SnapshotVerdict::Overwrite
        } else {
            SnapshotVerdict::Install
        }
    }

    /// Leader, two-node mode: a message at this term from `from`. The first one from a peer
    /// this node has led without (it did not vote for this term) marks the latest instant at
    /// which that peer's own leadership of the other side, and the write leases it granted
    /// there, can have ended: the peer answers at this term only after it stopped leading.
    /// The arbiter waits the fencing floor from then before any Failover
    /// ([`crate::state::ReplicatedState::other_side_ended_at`]), because a primary of the other
    /// side may still write under such a lease although this leader never heard its reports.
    pub(super) fn note_heard_at_term(&mut self, now: Instant, from: NodeId) {
        if !self.two_node_failover() {
            return;
        }
        if let Some(lead) = self.lead.as_mut()
            && lead.heard.insert(from)
        {
            lead.other_side_ended_at = Some(now);
        }
    }

    /// Leader: a follower's log diverged (two-node mode). Merge its group terms, then
    /// overwrite its log with a snapshot that holds them.
    pub(super) fn on_diverged(
        &mut self,
        now: Instant,
        from: NodeId,
        groups: BTreeMap<GroupId, GroupState>,
        pause: Option<(bool, WallMillis)>,
    ) {
        if self.lead.is_none() {
            return;
        }
        if !self.two_node_failover() {
            tracing::error!(node = %self.node, %from, "a follower reports a diverged log outside two-node mode: ignored");
            return;
        }
        let terms = self.state.covers_terms(&groups);
        let pause = pause.filter(|_| !self.state.covers_pause(pause));
        if terms && pause.is_none() {
            return self.overwrite_follower(from);
        }
        let in_flight = self
            .lead
            .as_ref()
            .and_then(|l| l.merge_at)
            .is_some_and(|i| i > self.commit);
        if in_flight || !self.holds_lease(now) {
            return;
        }
        tracing::warn!(node = %self.node, %from, term = %self.term,
            "two-node healing: merging the other side's higher group terms and newer pause request");
        let mut index = self.log.last_index();
        if !terms {
            index = self.append_local(EntryPayload::Change(Change::MergeDiverged { groups }));
        }
        if let Some((paused, at)) = pause {
            // The other side's operator asked later: its pause or resume stands (§5.4).
            index = self.append_local(EntryPayload::Change(Change::SetPausedAt { paused, at }));
        }
        if let Some(lead) = self.lead.as_mut() {
            lead.merge_at = Some(index);
        }
        self.broadcast(now);
    }

    /// Leader: folds the applied entries into the snapshot and sends it to `to`.
    fn overwrite_follower(&mut self, to: NodeId) {
        if self.applied > self.log.snapshot_index() {
            self.log.compact(self.applied, self.state.clone());
            self.dirty = true;
        }
        let snap = self.log.snapshot_index();
        if let Some(lead) = self.lead.as_mut() {
            lead.next.insert(to, snap);
            lead.matched.insert(to, LogIndex(0));
        }
        let round = self
            .lead
            .as_ref()
            .map_or(0, |l| l.next_round.saturating_sub(1));
        self.replicate_to(to, round);
    }
}

/// What a follower in two-node mode does with a leader's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SnapshotVerdict {
    /// Nothing to install (it holds that much already): acknowledge.
    Ignore,
    /// A successor of its committed state: install.
    Install,
    /// Install over entries it committed alone (healing).
    Overwrite,
    /// It lacks group terms this follower committed: answer `Diverged`.
    Diverged,
}

#[cfg(test)]
#[path = "heal_tests.rs"]
mod tests;
