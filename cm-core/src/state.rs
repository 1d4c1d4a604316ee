//! The replicated cluster state (SPEC.md §5.1) and the narrow interface between the arbiter and
//! whatever replicates it (the CMS quorum, or an in-memory single node for tests).
//!
//! The state is small and holds no node-local [`Instant`]: long timers are wall
//! clock deadlines ([`WallMillis`]). Every [`Change`] that could race is a compare-and-set, so a
//! repeated or stale proposal cannot bump a term twice; a refused change is an outcome, not an
//! error of the replication.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::dn::History;
use crate::history::{Promotion, PromotionLog, PromotionReason};
use crate::ids::{GroupId, InstanceId, NodeId, ProposalId, QuorumTerm, Term, Timeline};
use crate::quorum_math;
use crate::time::{Instant, WallMillis};

/// The read-only FSM state of one instance (§7.2; CM's DDB values 0..3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadOnlyState {
    /// Not read-only by CM (0).
    #[default]
    Off,
    /// CM decided read-only; `SetReadOnly{on}` is being applied (1).
    ExpectOn,
    /// CM made it read-only and the DN reported it (2, final).
    On,
    /// CM decided to clear it; `SetReadOnly{off}` is being applied (3).
    ExpectOff,
}

/// A switchover the CMS is driving (§4.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSwitchover {
    /// The member to promote.
    pub target: InstanceId,
    /// The primary being demoted.
    pub from: InstanceId,
    /// The term committed for it.
    pub term: Term,
    /// `-f`, as asked. It skips no wait of the switchover itself: `Switchover{term}` is never
    /// sent before the target reached the old primary's final position (§4.5, S5).
    pub fast: bool,
    /// Abandoned after this wall-clock deadline.
    pub deadline: WallMillis,
}

/// How a switchover ended (§4.5), kept so `cm_ctl switchover` and `query` can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwitchoverResult {
    /// The target reported Primary at the switchover's term.
    Promoted,
    /// Aborted before `Switchover{term}` was sent; the old primary got a fresh term.
    Aborted,
    /// Abandoned at `switchover_timeout`, or once its target stopped or fell silent after
    /// `Switchover{term}` was sent; arbitration resolved the group.
    TimedOut,
}

/// The end of the latest switchover of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverEnd {
    /// The member that was to be promoted.
    pub target: InstanceId,
    /// The primary it was to replace.
    pub from: InstanceId,
    /// The switchover's (last) term.
    pub term: Term,
    /// How it ended.
    pub result: SwitchoverResult,
}

impl PendingSwitchover {
    fn end(&self, result: SwitchoverResult) -> SwitchoverEnd {
        SwitchoverEnd {
            target: self.target,
            from: self.from,
            term: self.term,
            result,
        }
    }
}

/// Per-group replicated facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's term (promotion counter).
    pub term: Term,
    /// The static primary: the member arbitration regards as the rightful primary.
    pub static_primary: InstanceId,
    /// The install-time primary (`switchover -a` moves back to it).
    pub initial_primary: InstanceId,
    /// Term → timeline recorded after each promotion, with the history the promotion created.
    pub timelines: BTreeMap<Term, History>,
    /// Read-only FSM per instance.
    pub read_only: BTreeMap<InstanceId, ReadOnlyState>,
    /// Phony-dead cool-down deadlines per instance (§6).
    pub phony_dead_cooldown: BTreeMap<InstanceId, WallMillis>,
    /// A switchover in progress.
    pub switchover: Option<PendingSwitchover>,
    /// How the latest switchover ended.
    pub last_switchover: Option<SwitchoverEnd>,
    /// Why the group reached its current term, as the leader that committed the term-changing
    /// change decided it (§15: the history records this reason, whichever leader records it).
    /// `None` for a term reached before this was kept. (Last, so older snapshots keep their
    /// encoding up to it.)
    #[serde(default)]
    pub term_reason: Option<PromotionReason>,
}

impl GroupState {
    /// The newest recorded timeline history, if any.
    pub fn latest_history(&self) -> Option<&History> {
        self.timelines.values().next_back()
    }

    /// The timeline the latest term promoted onto, if recorded.
    pub fn latest_timeline(&self) -> Option<Timeline> {
        self.latest_history().map(|h| h.timeline)
    }
}

/// The whole replicated state. Snapshots are this struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Per-group state.
    pub groups: BTreeMap<GroupId, GroupState>,
    /// `cm_ctl pause`: no arbitration, no automatic restarts, no self-fence kills.
    pub paused: bool,
    /// `cm_ctl stop` in progress: arbitration halted until the next start.
    pub stopping: bool,
    /// `cm_ctl start` in progress until this wall-clock deadline (§2, §4.2).
    pub starting_until: Option<WallMillis>,
    /// Parameter values set with `cm_ctl set --server`, by canonical name.
    pub param_overrides: BTreeMap<String, String>,
    /// CMS nodes that lost their store and rejoined as non-voters (§5.1).
    pub non_voters: BTreeSet<NodeId>,
    /// Confirmed promotions, newest 20 per group and 1,000 in all (§15). (Last, like every
    /// later field.)
    pub promotions: PromotionLog,
    /// The proposing leader's wall clock when `paused` was last set by `cm_ctl pause|resume`:
    /// two-node healing keeps the newer of the two sides' operator requests (§5.4).
    pub paused_at: Option<WallMillis>,
}

impl ClusterState {
    /// The initial state of a configured cluster: term 0, first member static primary.
    pub fn initial(config: &crate::config::ClusterConfig) -> Self {
        let groups = config
            .groups
            .iter()
            .filter_map(|g| {
                let first = g.members.first()?.instance;
                Some((
                    g.id,
                    GroupState {
                        term: Term(0),
                        static_primary: first,
                        initial_primary: first,
                        timelines: BTreeMap::new(),
                        read_only: BTreeMap::new(),
                        phony_dead_cooldown: BTreeMap::new(),
                        switchover: None,
                        last_switchover: None,
                        term_reason: None,
                    },
                ))
            })
            .collect();
        Self {
            groups,
            ..Self::default()
        }
    }

    /// Whether every group's term here is at least its term in `groups` (another side's
    /// committed groups, §5.4): nothing of theirs needs merging. Unknown groups are ignored.
    pub fn covers_terms(&self, groups: &BTreeMap<GroupId, GroupState>) -> bool {
        groups
            .iter()
            .all(|(id, theirs)| self.groups.get(id).is_none_or(|g| g.term >= theirs.term))
    }

    /// Whether this state's pause needs nothing of `theirs` (another side's, §5.4): the same
    /// value, or a request here at least as new.
    pub fn covers_pause(&self, theirs: Option<(bool, WallMillis)>) -> bool {
        theirs.is_none_or(|(paused, at)| {
            paused == self.paused || self.paused_at.is_some_and(|ours| ours >= at)
        })
    }

    /// The pause and its request time, for a diverged follower's report (§5.4).
    pub fn pause_stamp(&self) -> Option<(bool, WallMillis)> {
        self.paused_at.map(|at| (self.paused, at))
    }

    fn merge_diverged(&mut self, groups: &BTreeMap<GroupId, GroupState>) {
        for (id, theirs) in groups {
            let Some(g) = self.groups.get_mut(id) else {
                continue;
            };
            if theirs.term <= g.term {
                continue;
            }
            g.term = theirs.term;
            g.static_primary = theirs.static_primary;
            for (t, h) in &theirs.timelines {
                g.timelines.entry(*t).or_insert_with(|| h.clone());
            }
            g.switchover = None;
        }
    }

    /// Whether `cm_ctl start` is still in effect at `wall`.
    pub fn is_starting(&self, wall: WallMillis) -> bool {
        self.starting_until.is_some_and(|until| wall < until)
    }

    /// Applies a committed change. Deterministic: every replica reaches the same state.
    /// A failed compare-and-set leaves the state unchanged and is returned as the outcome.
    /// Term-changing changes move the group term by one.
    pub fn apply(&mut self, change: &Change) -> Result<(), Conflict> {
        self.apply_stepped(change, None)
    }

    /// [`Self::apply`], with term-changing changes moving the group term by
    /// [`quorum_math::next_group_term`]: `leader_term` is the quorum term of the entry in
    /// two-node mode with failover (§5.4: the two sides' group terms are disjoint), else `None`.
    pub fn apply_stepped(
        &mut self,
        change: &Change,
        leader_term: Option<QuorumTerm>,
    ) -> Result<(), Conflict> {
        let step = |t: Term| quorum_math::next_group_term(t, leader_term);
        match change {
            Change::Promote {
                group,
                expected_term,
                static_primary,
                reason,
            } => {
                let g = self.group_mut(*group)?;
                expect_term(g, *expected_term)?;
                g.term = step(*expected_term);
                g.static_primary = *static_primary;
                g.term_reason = Some(*reason);
                Ok(())
            }
            Change::SetStaticPrimary {
                group,
                expected_term,
                instance,
            } => {
                let g = self.group_mut(*group)?;
                expect_term(g, *expected_term)?;
                g.static_primary = *instance;
                Ok(())
            }
            Change::RecordTimeline {
                group,
                term,
                history,
            } => {
                let g = self.group_mut(*group)?;
                if *term > g.term {
                    return Err(Conflict::TermMoved {
                        expected: *term,
                        actual: g.term,
                    });
                }
                g.timelines.insert(*term, history.clone());
                Ok(())
            }
            Change::ReadOnly {
                group,
                instance,
                from,
                to,
            } => {
                let g = self.group_mut(*group)?;
                let cur = g.read_only.get(instance).copied().unwrap_or_default();
                if cur != *from {
                    return Err(Conflict::ReadOnlyMoved {
                        expected: *from,
                        actual: cur,
                    });
                }
                if *to == ReadOnlyState::Off {
                    g.read_only.remove(instance);
                } else {
                    g.read_only.insert(*instance, *to);
                }
                Ok(())
            }
            Change::PhonyDeadCooldown {
                group,
                instance,
                until,
            } => {
                let g = self.group_mut(*group)?;
                match until {
                    Some(u) => g.phony_dead_cooldown.insert(*instance, *u),
                    None => g.phony_dead_cooldown.remove(instance),
                };
                Ok(())
            }
            Change::BeginSwitchover {
                group,
                expected_term,
                switchover,
            } => {
                let g = self.group_mut(*group)?;
                expect_term(g, *expected_term)?;
                if g.switchover.is_some() {
                    return Err(Conflict::Busy);
                }
                g.term = step(*expected_term);
                g.term_reason = Some(PromotionReason::Switchover);
                g.switchover = Some(PendingSwitchover {
                    term: g.term,
                    ..switchover.clone()
                });
                Ok(())
            }
            Change::RenewSwitchoverTerm {
                group,
                expected_term,
            } => {
                let g = self.group_mut(*group)?;
                expect_term(g, *expected_term)?;
                let next = step(*expected_term);
                match &mut g.switchover {
                    Some(s) if s.term == *expected_term => s.term = next,
                    _ => return Err(Conflict::NoSuchSwitchover),
                }
                g.term = next;
                g.term_reason = Some(PromotionReason::Switchover);
                Ok(())
            }
            Change::EndSwitchover {
                group,
                term,
                promoted,
            } => {
                let g = self.group_mut(*group)?;
                match &g.switchover {
                    Some(s) if s.term == *term => {
                        if *promoted {
                            g.static_primary = s.target;
                        }
                        let result = if *promoted {
                            SwitchoverResult::Promoted
                        } else {
                            SwitchoverResult::TimedOut
                        };
                        g.last_switchover = Some(s.end(result));
                        g.switchover = None;
                        Ok(())
                    }
                    _ => Err(Conflict::NoSuchSwitchover),
                }
            }
            Change::AbortSwitchover { group, term } => {
                let g = self.group_mut(*group)?;
                expect_term(g, *term)?;
                match &g.switchover {
                    Some(s) if s.term == *term => {
                        g.term = step(*term);
                        g.term_reason = Some(PromotionReason::Switchover);
                        g.static_primary = s.from;
                        g.last_switchover = Some(s.end(SwitchoverResult::Aborted));
                        g.switchover = None;
                        Ok(())
                    }
                    _ => Err(Conflict::NoSuchSwitchover),
                }
            }
            Change::MergeDiverged { groups } => {
                self.merge_diverged(groups);
                Ok(())
            }
            Change::SetPaused(p) => {
                self.paused = *p;
                Ok(())
            }
            Change::SetPausedAt { paused, at } => {
                self.paused = *paused;
                self.paused_at = Some(*at);
                Ok(())
            }
            Change::SetStopping(s) => {
                self.stopping = *s;
                Ok(())
            }
            Change::SetStarting(until) => {
                self.starting_until = *until;
                Ok(())
            }
            Change::SetParam { name, value } => {
                self.param_overrides.insert(name.clone(), value.clone());
                Ok(())
            }
            Change::SetVoter { node, voter } => {
                if *voter {
                    self.non_voters.remove(node);
                } else {
                    self.non_voters.insert(*node);
                }
                Ok(())
            }
            Change::RecordPromotion(p) => self.record_promotion(p),
        }
    }

    pub(crate) fn group_mut(&mut self, id: GroupId) -> Result<&mut GroupState, Conflict> {
        self.groups.get_mut(&id).ok_or(Conflict::NoSuchGroup(id))
    }
}

/// A change to the replicated state, proposed by the CMS leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Failover: term := expected_term + 1 and static primary := candidate, if the term is still
    /// `expected_term` (§4.2).
    Promote {
        /// The group.
        group: GroupId,
        /// The term the proposer saw.
        expected_term: Term,
        /// The candidate.
        static_primary: InstanceId,
        /// Why (kept as the group's `term_reason`).
        reason: PromotionReason,
    },
    /// Moves the static primary without a promotion (phony-dead, §6), if the term is unchanged.
    SetStaticPrimary {
        /// The group.
        group: GroupId,
        /// The term the proposer saw.
        expected_term: Term,
        /// The new static primary.
        instance: InstanceId,
    },
    /// Records the timeline history a promotion at `term` created.
    RecordTimeline {
        /// The group.
        group: GroupId,
        /// The term of the promotion.
        term: Term,
        /// The new primary's history.
        history: History,
    },
    /// A read-only FSM transition, compare-and-set on the current state (§7.2).
    ReadOnly {
        /// The group.
        group: GroupId,
        /// The instance.
        instance: InstanceId,
        /// Expected current state.
        from: ReadOnlyState,
        /// New state.
        to: ReadOnlyState,
    },
    /// Starts (`Some`) or clears (`None`) an instance's phony-dead cool-down.
    PhonyDeadCooldown {
        /// The group.
        group: GroupId,
        /// The instance.
        instance: InstanceId,
        /// Cool-down deadline.
        until: Option<WallMillis>,
    },
    /// Starts a switchover: term := expected + 1, recorded as pending (§4.5).
    BeginSwitchover {
        /// The group.
        group: GroupId,
        /// The term the proposer saw.
        expected_term: Term,
        /// The switchover (its `term` field is overwritten with the new term).
        switchover: PendingSwitchover,
    },
    /// Ends the switchover of `term`; `promoted` moves the static primary to its target.
    EndSwitchover {
        /// The group.
        group: GroupId,
        /// The switchover's term.
        term: Term,
        /// Whether the target was promoted.
        promoted: bool,
    },
    /// `cm_ctl pause` / `resume`.
    SetPaused(bool),
    /// `cm_ctl stop` begins (`true`) or `cm_ctl start` ends it (`false`).
    SetStopping(bool),
    /// `cm_ctl start` in progress until a deadline (`None` clears it).
    SetStarting(Option<WallMillis>),
    /// `cm_ctl set --server`.
    SetParam {
        /// Canonical parameter name.
        name: String,
        /// Value text.
        value: String,
    },
    /// Marks a CMS node voter or non-voter (§5.1).
    SetVoter {
        /// The CMS node.
        node: NodeId,
        /// Voter or not.
        voter: bool,
    },
    /// Gives the pending switchover of `expected_term` a fresh term (term := expected + 1): a
    /// new leader cannot know whether its predecessor already sent `Switchover{expected}`, and
    /// at most one Switchover/Failover goes out per (group, term) (§4.2, §13 S2). (Last, so
    /// the encoding of the older variants is unchanged.)
    RenewSwitchoverTerm {
        /// The group.
        group: GroupId,
        /// The term of the pending switchover the proposer saw.
        expected_term: Term,
    },
    /// Aborts the pending switchover of `term` before `Switchover{term}` was sent (§4.5), in
    /// one change: the request ends, and term := term + 1 with the old primary (which holds
    /// the newest position) as static primary, to be started and promoted at that term.
    /// Compare-and-set on both the group's and the switchover's term.
    AbortSwitchover {
        /// The group.
        group: GroupId,
        /// The switchover's term (also the group's).
        term: Term,
    },
    /// Adds a confirmed promotion to the history (§15), once per (group, term), at a term the
    /// group reached. (Last, so the encoding of the older variants is unchanged.)
    RecordPromotion(Promotion),
    /// Two-node mode, healing (§5.4): the committed groups of the side whose log diverged
    /// while both sides led alone. Each group whose term here is higher takes this term, this
    /// static primary and these timelines, and loses any pending switchover; so each group's
    /// term is the higher of the two sides', and the side with the lower term has a primary
    /// below the group's term, which §4.4 restarts. Never refused.
    MergeDiverged {
        /// The other side's committed groups.
        groups: BTreeMap<GroupId, GroupState>,
    },
    /// `cm_ctl pause` / `resume`, stamped with the proposing leader's wall clock, so that
    /// two-node healing keeps the newer request of the two sides (§5.4; `SetPaused` stays for
    /// entries written before). (Last, so the encoding of the older variants is unchanged.)
    SetPausedAt {
        /// Paused or not.
        paused: bool,
        /// The proposer's wall clock.
        at: WallMillis,
    },
}

/// Why a committed change did not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Conflict {
    /// The group's term is no longer the expected one.
    #[error("term moved: expected {expected}, found {actual}")]
    TermMoved {
        /// Expected.
        expected: Term,
        /// Found.
        actual: Term,
    },
    /// The read-only FSM is not in the expected state.
    #[error("read-only state moved: expected {expected:?}, found {actual:?}")]
    ReadOnlyMoved {
        /// Expected.
        expected: ReadOnlyState,
        /// Found.
        actual: ReadOnlyState,
    },
    /// No such group.
    #[error("no group {0}")]
    NoSuchGroup(GroupId),
    /// Another switchover is pending.
    #[error("another switchover is pending")]
    Busy,
    /// No matching switchover.
    #[error("no such switchover")]
    NoSuchSwitchover,
    /// The promotion of this (group, term) is already in the history.
    #[error("promotion already recorded")]
    AlreadyRecorded,
}

/// The outcome of one proposal, learned once it committed (or was dropped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The proposal.
    pub id: ProposalId,
    /// The change as proposed.
    pub change: Change,
    /// Applied, refused by its compare-and-set, or dropped because leadership was lost.
    pub result: Result<(), OutcomeError>,
}

/// Why a proposal did not take effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OutcomeError {
    /// Committed, but its compare-and-set failed.
    #[error("{0}")]
    Conflict(Conflict),
    /// Never committed: this node stopped leading.
    #[error("dropped: leadership lost")]
    Dropped,
}

/// The arbiter's view of the replicated state (DESIGN.md "Replicated state interface").
///
/// Asynchronous even when local: `propose` only queues; the outcome is learned on a later step
/// through [`ReplicatedState::take_outcomes`]. The arbiter acts only on committed state.
pub trait ReplicatedState {
    /// Queues a change. `None` when this node cannot propose (not the leader).
    fn propose(&mut self, change: Change) -> Option<ProposalId>;
    /// The committed state.
    fn committed(&self) -> &ClusterState;
    /// Outcomes learned since the last call, in commit order.
    fn take_outcomes(&mut self) -> Vec<Outcome>;
    /// The group term a term-changing change proposed now moves a group to from `current`
    /// (by one, or by the two-node parity rule of [`quorum_math::next_group_term`]).
    fn next_term(&self, current: Term) -> Term {
        current.next()
    }
    /// Two-node mode (§5.4): when this leader first heard, at its term, a peer it had led
    /// without — that peer may have led the other side and granted write leases until then, so
    /// no Failover before the fencing floor has passed since. `None` outside that case.
    fn other_side_ended_at(&self) -> Option<Instant> {
        None
    }
}

/// A single-node, in-memory [`ReplicatedState`] for tests and single-CMS unit harnesses:
/// proposals commit when [`InMemoryState::commit_all`] is called.
#[derive(Clone, Debug, Default)]
pub struct InMemoryState {
    state: ClusterState,
    queued: Vec<(ProposalId, Change)>,
    outcomes: Vec<Outcome>,
    next_id: u64,
    /// When false, `propose` refuses (simulates "not leader").
    pub leader: bool,
}

impl InMemoryState {
    /// A leader holding `state`.
    pub fn new(state: ClusterState) -> Self {
        Self {
            state,
            queued: Vec::new(),
            outcomes: Vec::new(),
            next_id: 1,
            leader: true,
        }
    }

    /// Commits every queued proposal in order.
    pub fn commit_all(&mut self) {
        for (id, change) in std::mem::take(&mut self.queued) {
            let result = self.state.apply(&change).map_err(OutcomeError::Conflict);
            self.outcomes.push(Outcome { id, change, result });
        }
    }

    /// Drops every queued proposal (leadership lost).
    pub fn drop_all(&mut self) {
        for (id, change) in std::mem::take(&mut self.queued) {
            self.outcomes.push(Outcome {
                id,
                change,
                result: Err(OutcomeError::Dropped),
            });
        }
    }

    /// Proposals queued and not yet committed.
    pub fn queued(&self) -> Vec<Change> {
        self.queued.iter().map(|(_, c)| c.clone()).collect()
    }

    /// Mutable access to the committed state, for test set-up.
    pub fn state_mut(&mut self) -> &mut ClusterState {
        &mut self.state
    }
}

impl ReplicatedState for InMemoryState {
    fn propose(&mut self, change: Change) -> Option<ProposalId> {
        if !self.leader {
            return None;
        }
        let id = ProposalId(self.next_id);
        self.next_id += 1;
        self.queued.push((id, change));
        Some(id)
    }

    fn committed(&self) -> &ClusterState {
        &self.state
    }

    fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }
}

/// The compare-and-set of term-changing changes: the group's term must still be `expected`.
fn expect_term(g: &GroupState, expected: Term) -> Result<(), Conflict> {
    if g.term == expected {
        Ok(())
    } else {
        Err(Conflict::TermMoved {
            expected,
            actual: g.term,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_group() -> ClusterState {
        let mut s = ClusterState::default();
        s.groups.insert(
            GroupId(1),
            GroupState {
                term: Term(3),
                static_primary: InstanceId(1),
                initial_primary: InstanceId(1),
                timelines: BTreeMap::new(),
                read_only: BTreeMap::new(),
                phony_dead_cooldown: BTreeMap::new(),
                switchover: None,
                last_switchover: None,
                term_reason: None,
            },
        );
        s
    }

    /// §5.4 healing: another side's pause request needs merging only when it differs and is
    /// newer than this state's (an unstamped state is older than any stamped request).
    #[test]
    fn a_pause_request_is_covered_when_equal_or_not_newer() {
        let w = WallMillis;
        let mut s = ClusterState::default();
        assert!(s.covers_pause(None));
        assert!(s.covers_pause(Some((false, w(5)))), "same value");
        assert!(!s.covers_pause(Some((true, w(5)))), "unstamped here");
        s.apply(&Change::SetPausedAt {
            paused: true,
            at: w(10),
        })
        .unwrap();
        assert!(s.paused);
        assert_eq!(s.pause_stamp(), Some((true, w(10))));
        assert!(s.covers_pause(Some((false, w(9)))));
        assert!(
            s.covers_pause(Some((false, w(10)))),
            "a tie keeps this side's"
        );
        assert!(!s.covers_pause(Some((false, w(11)))));
    }

    #[test]
    fn promote_is_compare_and_set_so_a_repeat_cannot_bump_twice() {
        let mut s = one_group();
        let c = Change::Promote {
            group: GroupId(1),
            expected_term: Term(3),
            static_primary: InstanceId(2),
            reason: PromotionReason::PhonyDead,
        };
        assert_eq!(s.apply(&c), Ok(()));
        assert_eq!(s.groups[&GroupId(1)].term, Term(4));
        assert_eq!(s.groups[&GroupId(1)].static_primary, InstanceId(2));
        assert_eq!(
            s.groups[&GroupId(1)].term_reason,
            Some(PromotionReason::PhonyDead)
        );
        assert_eq!(
            s.apply(&c),
            Err(Conflict::TermMoved {
                expected: Term(3),
                actual: Term(4)
            })
        );
        assert_eq!(s.groups[&GroupId(1)].term, Term(4));
    }

    #[test]
    fn read_only_transitions_check_the_current_state() {
        let mut s = one_group();
        let on = |from, to| Change::ReadOnly {
            group: GroupId(1),
            instance: InstanceId(2),
            from,
            to,
        };
        assert!(
            s.apply(&on(ReadOnlyState::Off, ReadOnlyState::ExpectOn))
                .is_ok()
        );
        assert!(
            s.apply(&on(ReadOnlyState::Off, ReadOnlyState::ExpectOn))
                .is_err()
        );
        assert!(
            s.apply(&on(ReadOnlyState::ExpectOn, ReadOnlyState::On))
                .is_ok()
        );
        assert!(
            s.apply(&on(ReadOnlyState::On, ReadOnlyState::ExpectOff))
                .is_ok()
        );
        assert!(
            s.apply(&on(ReadOnlyState::ExpectOff, ReadOnlyState::Off))
                .is_ok()
        );
        assert!(s.groups[&GroupId(1)].read_only.is_empty());
    }

    #[test]
    fn switchover_bumps_the_term_once_and_ends_by_term() {
        let mut s = one_group();
        let sw = PendingSwitchover {
            target: InstanceId(2),
            from: InstanceId(1),
            term: Term(0),
            fast: false,
            deadline: WallMillis(1000),
        };
        let begin = Change::BeginSwitchover {
            group: GroupId(1),
            expected_term: Term(3),
            switchover: sw,
        };
        assert!(s.apply(&begin).is_ok());
        assert_eq!(
            s.groups[&GroupId(1)].switchover.as_ref().unwrap().term,
            Term(4)
        );
        assert!(s.apply(&begin).is_err());
        let end = Change::EndSwitchover {
            group: GroupId(1),
            term: Term(4),
            promoted: true,
        };
        assert!(s.apply(&end).is_ok());
        assert_eq!(s.groups[&GroupId(1)].static_primary, InstanceId(2));
        assert_eq!(s.apply(&end), Err(Conflict::NoSuchSwitchover));
    }

    #[test]
    fn an_abort_ends_the_request_and_gives_the_old_primary_a_fresh_term_in_one_change() {
        let mut s = one_group();
        let begin = Change::BeginSwitchover {
            group: GroupId(1),
            expected_term: Term(3),
            switchover: PendingSwitchover {
                target: InstanceId(2),
                from: InstanceId(1),
                term: Term(0),
                fast: false,
                deadline: WallMillis(1000),
            },
        };
        assert!(s.apply(&begin).is_ok());
        let stale = Change::AbortSwitchover {
            group: GroupId(1),
            term: Term(3),
        };
        assert!(s.apply(&stale).is_err());
        let abort = Change::AbortSwitchover {
            group: GroupId(1),
            term: Term(4),
        };
        assert!(s.apply(&abort).is_ok());
        let g = &s.groups[&GroupId(1)];
        assert_eq!(g.term, Term(5));
        assert_eq!(g.static_primary, InstanceId(1));
        assert_eq!(g.switchover, None);
        assert_eq!(
            g.last_switchover,
            Some(SwitchoverEnd {
                target: InstanceId(2),
                from: InstanceId(1),
                term: Term(4),
                result: SwitchoverResult::Aborted,
            })
        );
        // Applied once only: a repeat finds no switchover and cannot bump the term again.
        assert!(s.apply(&abort).is_err());
        assert_eq!(s.groups[&GroupId(1)].term, Term(5));
    }

    #[test]
    fn in_memory_state_commits_only_when_told_and_drops_on_leadership_loss() {
        let mut r = InMemoryState::new(one_group());
        let id = r
            .propose(Change::Promote {
                group: GroupId(1),
                expected_term: Term(3),
                static_primary: InstanceId(2),
                reason: PromotionReason::Failover,
            })
            .unwrap();
        assert_eq!(r.committed().groups[&GroupId(1)].term, Term(3));
        assert!(r.take_outcomes().is_empty());
        r.commit_all();
        let out = r.take_outcomes();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, id);
        assert_eq!(out[0].result, Ok(()));
        r.propose(Change::SetPaused(true));
        r.drop_all();
        assert_eq!(r.take_outcomes()[0].result, Err(OutcomeError::Dropped));
        assert!(!r.committed().paused);
        r.leader = false;
        assert_eq!(r.propose(Change::SetPaused(true)), None);
    }
}
