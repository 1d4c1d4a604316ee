//! Empty stores and the non-voter rejoin (SPEC.md §5.1); see "Membership and empty stores" in
//! the module documentation of `quorum`.

use super::{AfterWrite, Change, EntryPayload, Membership, Quorum, QuorumMsg, Role};
use crate::ids::{LogIndex, NodeId};
use crate::time::Instant;

impl Quorum {
    /// Still deciding whether the cluster has history: ignores everything but hellos.
    pub(super) fn is_joining(&self) -> bool {
        matches!(self.membership, Membership::Joining { .. })
    }

    /// Joining, or rejoined and not yet marked non-voter by a leader.
    pub(super) fn sends_hellos(&self) -> bool {
        matches!(
            self.membership,
            Membership::Joining { .. } | Membership::Rejoining { marked: false, .. }
        )
    }

    pub(super) fn send_hellos(&mut self, now: Instant) {
        self.hello_at = now + self.params.election_timeout_max();
        let (nonce, skip, rejoining) = match &self.membership {
            Membership::Joining { nonce, cleared_by } => (*nonce, cleared_by.clone(), false),
            Membership::Rejoining { nonce, .. } => (*nonce, Default::default(), true),
            Membership::Voter => return,
        };
        for to in self.others().collect::<Vec<_>>() {
            if !skip.contains(&to) {
                self.send(to, QuorumMsg::Hello { nonce, rejoining });
            }
        }
    }

    /// A peer started with an empty store. Answer whether we ever counted it; from now on count
    /// nothing it sent before (that was an earlier incarnation, whose store is gone); a leader
    /// marks it non-voter if it lost a store it had written.
    pub(super) fn on_hello(&mut self, from: NodeId, nonce: u64, rejoining: bool) {
        let counted = self.counted.contains(&from);
        let reply = QuorumMsg::HelloReply {
            nonce,
            counted,
            last_index: self.log.last_index(),
        };
        self.send(from, reply);
        if self.role == Role::Candidate {
            self.votes.remove(&from);
            self.vote_fence.insert(from);
        }
        if let Some(lead) = self.lead.as_mut() {
            lead.ack_fence.insert(from, lead.next_round);
            // What it acknowledged before is gone with its store.
            lead.matched.insert(from, LogIndex(0));
        }
        if self.role == Role::Leader && (counted || rejoining) {
            self.mark_non_voter(from);
        }
    }

    /// A vote (to a candidate) or an acknowledgement (to a leader) from a peer this node has
    /// never counted: record the peer in `counted` first and handle the message once that is
    /// durable (returns true: the message is taken). Messages of an earlier incarnation of a
    /// peer that said hello since are dropped (also returns true).
    pub(super) fn count_once_durable(&mut self, from: NodeId, msg: &QuorumMsg) -> bool {
        let round = match msg {
            QuorumMsg::VoteReply { granted: true } if self.role == Role::Candidate => None,
            QuorumMsg::AppendReply {
                success: true,
                round,
                ..
            }
            | QuorumMsg::SnapshotReply { round, .. }
                if self.role == Role::Leader =>
            {
                Some(*round)
            }
            _ => return false,
        };
        let stale = match round {
            None => self.vote_fence.contains(&from),
            Some(r) => self
                .lead
                .as_ref()
                .and_then(|l| l.ack_fence.get(&from))
                .is_some_and(|fence| r < *fence),
        };
        if stale {
            return true;
        }
        if self.counted.contains(&from) {
            return false;
        }
        self.counted.insert(from);
        self.dirty = true;
        self.deferred.push(AfterWrite::Redeliver {
            term: self.term,
            from,
            msg: msg.clone(),
        });
        true
    }

    /// The leader records that `node` lost its store, unless such an entry is already pending.
    fn mark_non_voter(&mut self, node: NodeId) {
        if !self.holds_lease(self.clock.last()) {
            return;
        }
        let change = Change::SetVoter { node, voter: false };
        let pending = (self.commit.0 + 1..=self.log.last_index().0).any(|i| {
            self.log
                .entry(LogIndex(i))
                .is_some_and(|e| e.payload == EntryPayload::Change(change.clone()))
        });
        if !pending {
            self.append_local(EntryPayload::Change(change));
        }
    }

    pub(super) fn on_hello_reply(
        &mut self,
        from: NodeId,
        nonce: u64,
        counted: bool,
        last_index: LogIndex,
    ) {
        let Membership::Joining {
            nonce: ours,
            cleared_by,
        } = &mut self.membership
        else {
            return;
        };
        if *ours != nonce {
            return;
        }
        if counted {
            tracing::warn!(node = %self.node, cms = %from,
                "empty store, but a CMS counted this node before: store lost, non-voter");
            let nonce = *ours;
            self.membership = Membership::Rejoining {
                horizon: last_index,
                marked: false,
                nonce,
            };
            self.dirty = true;
            return;
        }
        cleared_by.insert(from);
        let all = self.members.iter().filter(|n| **n != self.node).count();
        if cleared_by.len() == all {
            tracing::info!(node = %self.node, "empty store that no CMS ever counted: voter");
            self.membership = Membership::Voter;
            self.dirty = true;
        }
    }

    /// After applying committed state: has a leader marked this rejoined node non-voter, and
    /// has an operator re-added it since?
    pub(super) fn check_rejoin(&mut self) {
        let listed = self.state.non_voters.contains(&self.node);
        let Membership::Rejoining {
            horizon, marked, ..
        } = &mut self.membership
        else {
            return;
        };
        if self.applied <= *horizon {
            return;
        }
        if !*marked && listed {
            *marked = true;
            self.dirty = true;
        } else if *marked && !listed {
            tracing::info!(node = %self.node, "re-added as a voter");
            self.membership = Membership::Voter;
            self.dirty = true;
        }
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
