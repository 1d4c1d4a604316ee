//! Empty stores and the non-voter rejoin (SPEC.md §5.1); see "Membership and empty stores" in
//! the module documentation of `quorum`.

use super::{Change, EntryPayload, Membership, Quorum, QuorumMsg, Role};
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

    /// Never left term 0 and never held an entry.
    fn pristine(&self) -> bool {
        self.term.0 == 0
            && self.log.last_index() == LogIndex(0)
            && !matches!(self.membership, Membership::Rejoining { .. })
    }

    pub(super) fn send_hellos(&mut self, now: Instant) {
        self.hello_at = now + self.params.election_timeout_max();
        let (nonce, skip) = match &self.membership {
            Membership::Joining {
                nonce,
                pristine_from,
            } => (*nonce, pristine_from.clone()),
            Membership::Rejoining { nonce, .. } => (*nonce, Default::default()),
            Membership::Voter => return,
        };
        for to in self.others().collect::<Vec<_>>() {
            if !skip.contains(&to) {
                self.send(to, QuorumMsg::Hello { nonce });
            }
        }
    }

    pub(super) fn on_hello(&mut self, from: NodeId, nonce: u64) {
        let reply = QuorumMsg::HelloReply {
            nonce,
            pristine: self.pristine(),
            last_index: self.log.last_index(),
        };
        self.send(from, reply);
        if self.role == Role::Leader && !self.pristine() {
            self.mark_non_voter(from);
        }
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
        pristine: bool,
        last_index: LogIndex,
    ) {
        let Membership::Joining {
            nonce: ours,
            pristine_from,
        } = &mut self.membership
        else {
            return;
        };
        if *ours != nonce {
            return;
        }
        if pristine {
            pristine_from.insert(from);
            let all = self.members.iter().filter(|n| **n != self.node).count();
            if pristine_from.len() == all {
                tracing::info!(node = %self.node, "empty store, fresh cluster: voter");
                self.membership = Membership::Voter;
                self.dirty = true;
            }
        } else {
            tracing::warn!(node = %self.node, "empty store in a running cluster: non-voter");
            let nonce = *ours;
            self.membership = Membership::Rejoining {
                horizon: last_index,
                marked: false,
                nonce,
            };
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
