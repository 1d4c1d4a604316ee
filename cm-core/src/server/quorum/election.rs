//! Election: message fencing by term, pre-vote, vote, and the role transitions (SPEC.md §5.1).
//!
//! Rules, with why:
//! * Every message carries its sender's term. A higher term makes this node a follower of that
//!   term — except a pre-vote (it never changes terms) and a vote request that arrives while
//!   this node refuses votes (so a disruptive candidate cannot depose a live leader). A lower
//!   term is refused with this node's term, which makes a deposed sender step down.
//! * Pre-vote: a node whose election timer fires asks first whether a quorum *would* vote for
//!   it at term + 1; only then does it bump its term. A partitioned node therefore does not
//!   inflate its term and disrupt the cluster when it comes back.
//! * A voter that heard from a live leader within the minimum election timeout, a leader, a
//!   node within its start-up hold-off, and a non-voter refuse both pre-votes and votes. This
//!   is what makes the leader lease (§5.2) safe.
//! * Votes go to candidates whose log is at least as up to date (election restriction), once
//!   per term, and are answered only after the vote is durable.

use super::{
    AfterWrite, EntryPayload, LeaderState, LogEntry, Quorum, QuorumMsg, QuorumOutput, Role,
};
use crate::ids::{LogIndex, NodeId, QuorumTerm};
use crate::quorum_math;
use crate::time::Instant;

impl Quorum {
    pub(super) fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        term: QuorumTerm,
        msg: QuorumMsg,
    ) {
        if from == self.node || !self.members.contains(&from) {
            return;
        }
        self.note_peer(now, from);
        match msg {
            QuorumMsg::Hello { nonce, rejoining } => {
                return self.on_hello(from, nonce, rejoining);
            }
            QuorumMsg::HelloReply {
                nonce,
                counted,
                last_index,
            } => return self.on_hello_reply(from, nonce, counted, last_index),
            _ if self.is_joining() => return,
            _ => {}
        }
        if term > self.term {
            match &msg {
                QuorumMsg::PreVote { .. } | QuorumMsg::PreVoteReply { granted: true, .. } => {}
                QuorumMsg::Vote { .. } if !self.can_vote(now) => {
                    return self.send(from, QuorumMsg::VoteReply { granted: false });
                }
                QuorumMsg::Append { .. } | QuorumMsg::Snapshot { .. } => {
                    self.become_follower(now, term, Some(from));
                }
                _ => self.become_follower(now, term, None),
            }
        } else if term < self.term {
            return self.refuse_stale(from, msg);
        }
        self.note_heard_at_term(now, from);
        if self.count_once_durable(from, &msg) {
            return;
        }
        self.dispatch(now, from, msg);
    }

    /// Answers a message from a lower term so that its sender learns the current one.
    fn refuse_stale(&mut self, from: NodeId, msg: QuorumMsg) {
        match msg {
            QuorumMsg::Append { round, .. } | QuorumMsg::Snapshot { round, .. } => self.send(
                from,
                QuorumMsg::AppendReply {
                    success: false,
                    match_index: LogIndex(0),
                    round,
                },
            ),
            QuorumMsg::Vote { .. } => self.send(from, QuorumMsg::VoteReply { granted: false }),
            QuorumMsg::PreVote { term, .. } => {
                self.send(
                    from,
                    QuorumMsg::PreVoteReply {
                        term,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    pub(super) fn dispatch(&mut self, now: Instant, from: NodeId, msg: QuorumMsg) {
        match msg {
            QuorumMsg::PreVote {
                term,
                last_term,
                last_index,
            } => self.on_pre_vote(now, from, term, last_term, last_index),
            QuorumMsg::PreVoteReply { term, granted } => {
                self.on_pre_vote_reply(now, from, term, granted);
            }
            QuorumMsg::Vote {
                last_term,
                last_index,
            } => self.on_vote(now, from, last_term, last_index),
            QuorumMsg::VoteReply { granted } => {
                if granted && self.role == Role::Candidate {
                    self.votes.insert(from);
                    self.check_election_won(now);
                }
            }
            QuorumMsg::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            } => self.on_append(now, from, prev_index, prev_term, entries, commit, round),
            QuorumMsg::AppendReply {
                success,
                match_index,
                round,
            } => self.on_append_reply(now, from, success, match_index, round),
            QuorumMsg::Snapshot {
                last_index,
                last_term,
                state,
                round,
            } => self.on_snapshot(now, from, last_index, last_term, state, round),
            QuorumMsg::SnapshotReply { last_index, round } => {
                self.on_snapshot_reply(now, from, last_index, round);
            }
            QuorumMsg::Hello { .. } | QuorumMsg::HelloReply { .. } => {}
            QuorumMsg::AgentView { dn_agents } => self.on_agent_view(now, from, dn_agents),
            QuorumMsg::Diverged { groups, pause, .. } => {
                self.on_diverged(now, from, groups, pause);
            }
        }
    }

    /// Whether this node may grant a vote or pre-vote now (membership, start-up hold-off,
    /// leader stickiness). The log and once-per-term checks come on top.
    pub(super) fn can_vote(&self, now: Instant) -> bool {
        // A diverged follower's log compares with nothing (two-node healing, `heal.rs`).
        if !self.is_voter() || self.role == Role::Leader || self.diverged {
            return false;
        }
        if self.in_startup_holdoff(now) {
            return false;
        }
        self.leader_seen_at
            .is_none_or(|seen| now >= seen + self.params.election_timeout_min())
    }

    /// A freshly started CMS may have forgotten a leader it heard (§5.1). A lone CMS has
    /// nobody to forget.
    pub(super) fn in_startup_holdoff(&self, now: Instant) -> bool {
        self.members.len() > 1
            && self
                .started_at
                .is_some_and(|s| now < s + self.params.startup_vote_holdoff())
    }

    fn on_pre_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: QuorumTerm,
        last_term: QuorumTerm,
        last_index: LogIndex,
    ) {
        let granted = term > self.term
            && self.can_vote(now)
            && self.log.is_behind_or_equal(last_term, last_index)
            && self.cut_allows_pre_vote(now, from);
        self.send(from, QuorumMsg::PreVoteReply { term, granted });
    }

    fn on_pre_vote_reply(&mut self, now: Instant, from: NodeId, term: QuorumTerm, granted: bool) {
        if granted && self.role == Role::PreCandidate && term == self.campaign_term() {
            self.prevotes.insert(from);
            if self.is_quorum(&self.prevotes) {
                self.become_candidate(now);
            }
        }
    }

    fn on_vote(&mut self, now: Instant, from: NodeId, last_term: QuorumTerm, last_index: LogIndex) {
        let granted = self.can_vote(now)
            && self.voted_for.is_none_or(|v| v == from)
            && self.log.is_behind_or_equal(last_term, last_index);
        if !granted {
            return self.send(from, QuorumMsg::VoteReply { granted: false });
        }
        if self.voted_for.is_none() {
            assert!(
                self.role != Role::Candidate,
                "a candidate votes only for itself"
            );
            self.voted_for = Some(from);
            self.dirty = true;
        }
        self.reset_election_timer(now);
        self.send_durable(from, QuorumMsg::VoteReply { granted: true });
    }

    /// The election timer fired: start a pre-vote if allowed, else wait another timeout.
    pub(super) fn election_timeout(&mut self, now: Instant) {
        if self.may_campaign(now) {
            self.become_pre_candidate(now);
        } else {
            if self.role != Role::Follower {
                self.role = Role::Follower;
            }
            self.reset_election_timer(now);
        }
    }

    fn may_campaign(&self, now: Instant) -> bool {
        self.is_voter()
            && !self.in_startup_holdoff(now)
            && self.demoted_until.is_none_or(|u| now >= u)
            && !self.cut_held(now)
            && self.two_node_may_lead(now)
    }

    /// The term this node campaigns for: the next one, or with two CMS nodes and the failover
    /// rule the next of its own parity (§5.4: the two never lead the same term).
    fn campaign_term(&self) -> QuorumTerm {
        if self.two_node_failover() {
            let index = self
                .members
                .iter()
                .position(|n| *n == self.node)
                .unwrap_or(0);
            quorum_math::two_node_campaign_term(self.term, index)
        } else {
            self.term.next()
        }
    }

    pub(super) fn reset_election_timer(&mut self, now: Instant) {
        let timeout = self.rng.duration_between(
            self.params.election_timeout_min(),
            self.params.election_timeout_max(),
        );
        self.election_at = now + timeout;
    }

    fn become_pre_candidate(&mut self, now: Instant) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.prevotes.clear();
        self.prevotes.insert(self.node);
        self.reset_election_timer(now);
        let msg = QuorumMsg::PreVote {
            term: self.campaign_term(),
            last_term: self.log.last_term(),
            last_index: self.log.last_index(),
        };
        for to in self.others().collect::<Vec<_>>() {
            self.view_before_pre_vote(to);
            self.send(to, msg.clone());
        }
        if self.is_quorum(&self.prevotes) {
            self.become_candidate(now);
        }
    }

    fn become_candidate(&mut self, now: Instant) {
        self.term = self.campaign_term();
        self.voted_for = Some(self.node);
        self.dirty = true;
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.vote_fence.clear();
        self.reset_election_timer(now);
        self.deferred.push(AfterWrite::SelfVote { term: self.term });
        let msg = QuorumMsg::Vote {
            last_term: self.log.last_term(),
            last_index: self.log.last_index(),
        };
        for to in self.others().collect::<Vec<_>>() {
            self.send_durable(to, msg.clone());
        }
    }

    pub(super) fn check_election_won(&mut self, now: Instant) {
        if self.role == Role::Candidate
            && self.votes.contains(&self.node)
            && self.is_quorum(&self.votes)
        {
            self.become_leader(now);
        }
    }

    fn become_leader(&mut self, now: Instant) {
        self.role = Role::Leader;
        // Its log is the one that survives (two-node healing).
        self.diverged = false;
        self.leader = Some(self.node);
        let next = self.log.last_index().next();
        let mut lead = LeaderState {
            next: self.others().map(|n| (n, next)).collect(),
            matched: self.others().map(|n| (n, LogIndex(0))).collect(),
            rounds: Default::default(),
            next_round: 1,
            lease_until: None,
            ack_fence: Default::default(),
            quorum_heard_at: now,
            heartbeat_at: now,
            pending: Default::default(),
            merge_at: None,
            heard: self.votes.clone(),
            other_side_ended_at: None,
        };
        lead.matched.insert(self.node, LogIndex(0));
        self.lead = Some(lead);
        if self.few_agents_since.is_some() {
            self.few_agents_since = Some(now);
        }
        tracing::info!(node = %self.node, term = %self.term, "became CMS leader");
        self.out
            .push(QuorumOutput::BecameLeader { term: self.term });
        // A no-op of the new term lets entries of earlier terms commit (Raft §5.4.2).
        self.append_local(EntryPayload::Noop);
        self.broadcast(now);
    }

    /// Becomes a follower at `term` (≥ the current one), stepping down if leading.
    pub(super) fn become_follower(
        &mut self,
        now: Instant,
        term: QuorumTerm,
        leader: Option<NodeId>,
    ) {
        assert!(term >= self.term, "terms never decrease");
        // Step down first, so that `SteppedDown` names the term that was led.
        if self.role == Role::Leader {
            self.step_down(now);
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.dirty = true;
        }
        if self.role != Role::Follower {
            self.role = Role::Follower;
            self.reset_election_timer(now);
        }
        self.leader = leader;
    }

    /// Stops leading: the lease ends at once and proposals are dropped.
    pub(super) fn step_down(&mut self, now: Instant) {
        if self.role != Role::Leader {
            return;
        }
        tracing::info!(node = %self.node, term = %self.term, "stepped down as CMS leader");
        self.drop_proposals();
        self.lead = None;
        self.cut_since = None;
        self.role = Role::Follower;
        self.leader = None;
        self.out.push(QuorumOutput::SteppedDown { term: self.term });
        self.reset_election_timer(now);
    }

    /// Appends an entry of the current term to the leader's own log (written, then counted).
    pub(super) fn append_local(&mut self, payload: EntryPayload) -> LogIndex {
        let index = self.log.last_index().next();
        self.log.append(LogEntry {
            term: self.term,
            index,
            payload,
        });
        self.dirty = true;
        self.deferred.push(AfterWrite::SelfAppended {
            term: self.term,
            index,
        });
        index
    }
}

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;
