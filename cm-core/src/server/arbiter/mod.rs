//! DN arbitration of one group on the CMS leader (§4): rounds, Lock1, candidate selection,
//! Failover with a committed fresh term, follow-ups, dual primaries, heartbeat timeouts and the
//! split-brain rule of §8.
//!
//! Driving contract: the [`Leader`](crate::server::leader::Leader) feeds each member's reports
//! ([`GroupArbiter::record_report`]), calls [`GroupArbiter::arbitrate`] after every report and
//! tick, and routes the outcomes of the proposals it made
//! ([`GroupArbiter::on_promote_outcome`]). `now` never goes backwards. The arbiter acts only on
//! committed state: a Failover is sent only after the `Promote` carrying its term committed.

pub(crate) mod dual_primary;
mod failover;
mod follow_up;
mod heartbeat;
mod history;
mod split_brain;

pub mod candidate;
pub mod members;

use core::time::Duration;

use crate::config::{ClusterConfig, GroupConfig};
use crate::dn::DnReport;
use crate::history::PromotionReason;
use crate::ids::{GroupId, InstanceId, ProposalId, Term};
use crate::params::Params;
use crate::server::outbox::Outbox;
use crate::state::{ClusterState, GroupState, ReplicatedState};
use crate::time::{Instant, WallMillis};

pub use dual_primary::RestartHold;
pub use members::Member;
pub use split_brain::SplitBrain;

/// Everything a handler needs for one step.
pub struct Ctx<'a> {
    /// The step's monotonic time.
    pub now: Instant,
    /// The step's wall-clock time (for deadlines stored in the replicated state).
    pub wall: WallMillis,
    /// Effective parameters (config plus committed `cm_ctl set --server` overrides).
    pub params: &'a Params,
    /// Number of CMS nodes (enters the split-brain timeout).
    pub cms_count: usize,
    /// The replicated state.
    pub state: &'a mut dyn ReplicatedState,
    /// Outputs.
    pub out: &'a mut Outbox,
}

impl Ctx<'_> {
    /// The committed cluster state.
    pub fn committed(&self) -> &ClusterState {
        self.state.committed()
    }

    /// A copy of the committed state of one group.
    pub fn group(&self, id: GroupId) -> Option<GroupState> {
        self.committed().groups.get(&id).cloned()
    }

    /// The group term a term-changing proposal made now moves a group to from `current`
    /// (§5.4: by parity in two-node mode with failover).
    pub fn next_term(&self, current: Term) -> Term {
        self.state.next_term(current)
    }

    /// Paused or stopping: no arbitration (§2, §4).
    pub fn halted(&self) -> bool {
        let s = self.committed();
        s.paused || s.stopping
    }

    /// How long before an unanswered command of the same kind is sent again.
    pub fn resend_interval(&self) -> Duration {
        resend_interval(self.params)
    }
}

/// Resend interval of unanswered commands: half of `instance_heartbeat_timeout` (3 s).
pub fn resend_interval(params: &Params) -> Duration {
    params.instance_heartbeat_timeout() / 2
}

/// A Promote proposed and not yet committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingPromote {
    /// The proposal.
    pub proposal: ProposalId,
    /// The term the proposal compares against.
    pub expected: Term,
    /// The member to promote once it commits.
    pub candidate: InstanceId,
    /// Why (carried in the Promote and in the Failover).
    pub reason: PromotionReason,
}

/// The leader's arbitration state of one DN group.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupArbiter {
    /// The group.
    pub id: GroupId,
    /// Members in config order.
    pub members: Vec<Member>,
    /// The Promote in flight.
    pub pending_promote: Option<PendingPromote>,
    /// A Failover sent and not yet answered: (term, member, send time).
    pub awaiting: Option<(Term, InstanceId, Instant)>,
    /// The highest term a Failover or Switchover was sent with (at most one per term, §13 S2).
    pub last_promotion_term: Term,
    /// The split-brain incident in progress (§8).
    pub split: Option<SplitBrain>,
    /// Last time the rounds were raised past every wait (§4.3).
    pub last_raise: Option<Instant>,
    /// A DoublePrimary alarm was raised for the current incident.
    pub double_primary_alarmed: bool,
    /// Term whose timeline was proposed for recording.
    pub timeline_proposed: Option<Term>,
    /// Term at which a SetStaticPrimary adoption was proposed.
    pub adopt_proposed: Option<Term>,
    /// Term whose promotion was proposed for the history (§15).
    pub promotion_proposed: Option<Term>,
    /// An aborted switchover's old primary waiting to be promoted (§4.5).
    pub restore: Option<crate::server::switchover::Restore>,
    /// The latest aborted switchover's old primary and its restart counts then (§4.4).
    pub restart_hold: Option<RestartHold>,
}

impl GroupArbiter {
    /// A group as configured; every member's receipt is `now`.
    pub fn new(config: &ClusterConfig, group: &GroupConfig, now: Instant) -> Self {
        let members = group
            .members
            .iter()
            .map(|m| {
                let az = config.az_of(m.node).cloned().unwrap_or_default();
                let prio = config.az_priority(&az);
                Member::new(m.instance, m.node, az, prio, now)
            })
            .collect();
        Self {
            id: group.id,
            members,
            pending_promote: None,
            awaiting: None,
            last_promotion_term: Term(0),
            split: None,
            last_raise: None,
            double_primary_alarmed: false,
            timeline_proposed: None,
            adopt_proposed: None,
            promotion_proposed: None,
            restore: None,
            restart_hold: None,
        }
    }

    /// Forgets everything learned under a previous leadership (§8: the election time becomes
    /// every agent's newest receipt). A committed promotion nobody answered yet (the group's
    /// term has no recorded timeline) may still complete: its member, the static primary,
    /// counts as possibly primary (`may_be_primary`) until it reports Primary or is fenced.
    /// It gets no `awaiting` wait, unlike a Failover this leader sends: a promotion that has
    /// not passed its term check cannot pass it any more (every CMS voter of the new quorum
    /// term answers with that higher term, §4.1), so a fresh Failover need not wait for it.
    pub fn reset(&mut self, now: Instant, committed: Option<&GroupState>) {
        for m in &mut self.members {
            m.reset(now);
        }
        if let Some(g) = committed
            && g.term > Term(0)
            && !g.timelines.contains_key(&g.term)
            && let Some(i) = self.index_of(g.static_primary)
        {
            self.members[i].promotion = Some((g.term, crate::ids::CmdStamp::default()));
        }
        self.pending_promote = None;
        self.awaiting = None;
        self.split = None;
        self.last_raise = None;
        self.double_primary_alarmed = false;
        self.timeline_proposed = None;
        self.adopt_proposed = None;
        self.promotion_proposed = None;
        self.restore = None;
    }

    /// The index of an instance among the members.
    pub fn index_of(&self, instance: InstanceId) -> Option<usize> {
        self.members.iter().position(|m| m.instance == instance)
    }

    /// The member of an instance.
    pub fn member(&self, instance: InstanceId) -> Option<&Member> {
        self.members.iter().find(|m| m.instance == instance)
    }

    /// Stores a member's report; counts a round unless arbitration is halted (§4.2).
    pub fn record_report(&mut self, idx: usize, report: DnReport, now: Instant, halted: bool) {
        let m = &mut self.members[idx];
        m.note_report(&report, now);
        m.report = Some(report);
        m.receipt = now;
        if !halted {
            m.rounds += 1;
        }
    }

    /// The valid primary (§4.2): the only serving primary at the group's term, and the static
    /// primary. Primaries below the group's term are being restarted (§4.4) and do not count:
    /// locking the standbys away from the rightful primary because of them would stall it.
    pub fn valid_primary(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<usize> {
        let mut live = (0..self.members.len())
            .filter(|&i| self.members[i].is_live_primary(ctx.now, ctx.params))
            .filter(|&i| {
                self.members[i]
                    .report
                    .as_ref()
                    .is_some_and(|r| r.term >= g.term)
            });
        let first = live.next()?;
        if live.next().is_some() {
            return None;
        }
        let m = &self.members[first];
        let term = m.report.as_ref().map(|r| r.term)?;
        (m.instance == g.static_primary && term == g.term).then_some(first)
    }

    /// Members that count as locked at `now` (§4.2).
    pub fn locked_count_at(&self, now: Instant, params: &Params) -> usize {
        self.members
            .iter()
            .filter(|m| m.is_locked(now, params))
            .count()
    }

    /// Clears every round counter.
    pub fn reset_rounds(&mut self) {
        for m in &mut self.members {
            m.rounds = 0;
        }
    }

    /// Records a Failover or Switchover term; at most one per (group, term), terms increasing.
    /// Stays on in release builds (SPEC §13 S2).
    pub fn note_promotion(&mut self, term: Term) {
        assert!(
            term > self.last_promotion_term,
            "{}: a second promotion for {term} (last sent {}): one Failover/Switchover per term",
            self.id,
            self.last_promotion_term
        );
        self.last_promotion_term = term;
    }

    /// One arbitration pass: called after each report of a member and on each tick.
    pub fn arbitrate(&mut self, ctx: &mut Ctx<'_>) {
        let Some(g) = ctx.group(self.id) else {
            return;
        };
        if ctx.halted() {
            self.reset_rounds();
            return;
        }
        self.record_answers(ctx, &g);
        self.restart_stale_primaries(ctx, &g);
        if g.switchover.is_some() {
            // The switchover drives the group until it ends (§4.5).
            return;
        }
        if self.restore_after_abort(ctx, &g) {
            return;
        }
        if let Some(p) = self.valid_primary(ctx, &g) {
            self.on_valid_primary(ctx, &g, p);
            return;
        }
        if self.pending_promote.is_some() || self.adopt_sole_primary(ctx, &g) {
            return;
        }
        if self.promotion_in_progress(ctx) || !self.static_primary_known(ctx, &g) {
            return;
        }
        self.fail_over(ctx, &g);
    }

    fn on_valid_primary(&mut self, ctx: &mut Ctx<'_>, g: &GroupState, p: usize) {
        self.reset_rounds();
        for m in &mut self.members {
            m.failovers_sent = 0;
        }
        self.split = None;
        self.double_primary_alarmed = false;
        self.follow_up(ctx, g, p);
    }

    /// The static primary has either reported since the election or timed out: until then a
    /// fresh leader knows too little to lock anyone.
    fn static_primary_known(&self, ctx: &Ctx<'_>, g: &GroupState) -> bool {
        self.member(g.static_primary)
            .is_none_or(|m| m.report.is_some() || m.timed_out(ctx.now, ctx.params))
    }

    /// The member a Failover went to could still be promoting: no other Failover (with a fresh
    /// term) may go out until it reports Primary with that term (which clears `awaiting`),
    /// proves the Failover failed — silent past half of `instance_heartbeat_timeout`, or no
    /// process — or `instance_heartbeat_timeout` passed since the send
    /// while it does not report Promoting. Before this, the §4.3 round raise let the next tick
    /// resend the Failover ~0.4 s after the first, while the member was still confirming its
    /// term with the CMS majority.
    fn promotion_in_progress(&self, ctx: &Ctx<'_>) -> bool {
        let Some((_, inst, at)) = self.awaiting else {
            return false;
        };
        let Some(m) = self.member(inst) else {
            return false;
        };
        // Pending proves nothing: a pending member can be the candidate itself.
        let failed = m.timed_out(ctx.now, ctx.params)
            || m.report
                .as_ref()
                .is_some_and(|r| r.role == crate::dn::DnRole::Down);
        if failed {
            return false;
        }
        let promoting = m
            .report
            .as_ref()
            .is_some_and(|r| r.db_state == crate::dn::DbState::Promoting);
        promoting || ctx.now.saturating_since(at) < ctx.params.instance_heartbeat_timeout()
    }

    /// A primary reporting the group's term whose history is not recorded yet: record it
    /// (term → timeline, §5.1, and the promotion history, §15), and close the Failover it
    /// answers.
    fn record_answers(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) {
        let mut confirmed = None;
        for m in &self.members {
            if !m.is_live_primary(ctx.now, ctx.params) {
                continue;
            }
            let Some(r) = &m.report else { continue };
            if self
                .awaiting
                .is_some_and(|(t, i, _)| (t, i) == (r.term, m.instance))
            {
                self.awaiting = None;
            }
            let on_own_timeline = r.history.timeline == r.position.timeline;
            // Only the static primary's promotion is the group's: another member that also
            // says Primary at this term (a split brain being resolved) is not recorded.
            if r.term == g.term
                && g.term > Term(0)
                && on_own_timeline
                && m.instance == g.static_primary
            {
                confirmed = Some((m.instance, r.term, r.position.timeline));
            }
            if r.term == g.term
                && g.term > Term(0)
                && !g.timelines.contains_key(&r.term)
                && self.timeline_proposed != Some(r.term)
                && r.history.timeline == r.position.timeline
            {
                self.timeline_proposed = Some(r.term);
                ctx.state.propose(crate::state::Change::RecordTimeline {
                    group: self.id,
                    term: r.term,
                    history: r.history.clone(),
                });
            }
        }
        if let Some((instance, term, timeline)) = confirmed {
            self.record_promotion(ctx, g, instance, term, timeline);
        }
    }

    /// Instants at which this group's decisions may change without any report arriving.
    pub fn deadlines(&self, params: &Params, cms_count: usize) -> Vec<Instant> {
        let mut d = Vec::new();
        self.each_deadline(&DeadlineSpans::new(params, cms_count), &mut |t| d.push(t));
        d
    }

    /// Calls `f` with each instant of [`GroupArbiter::deadlines`], without collecting them
    /// (the leader asks for its next deadline after every step).
    pub fn each_deadline(&self, spans: &DeadlineSpans, f: &mut dyn FnMut(Instant)) {
        for m in &self.members {
            f(m.receipt + spans.heartbeat / 2);
            f(m.receipt + spans.heartbeat);
            f(m.receipt + spans.fencing_floor);
        }
        if let Some(s) = &self.split {
            f(s.since + spans.split_brain);
            f(s.last_stream + spans.freshness);
            f(s.last_stream + spans.split_brain_fence_wait);
        }
        if let Some(t) = self.last_raise {
            f(t + Duration::from_secs(1));
        }
        if let Some((_, _, at)) = self.awaiting {
            f(at + spans.heartbeat);
        }
    }
}

/// The parameter spans [`GroupArbiter::each_deadline`] adds, computed once per query.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineSpans {
    heartbeat: Duration,
    fencing_floor: Duration,
    split_brain: Duration,
    freshness: Duration,
    split_brain_fence_wait: Duration,
}

impl DeadlineSpans {
    /// The spans of `params` for a CMS of `cms_count` nodes.
    pub fn new(params: &Params, cms_count: usize) -> Self {
        Self {
            heartbeat: params.instance_heartbeat_timeout(),
            fencing_floor: params.fencing_floor(),
            split_brain: params.split_brain_timeout(cms_count),
            freshness: params.freshness_window(),
            split_brain_fence_wait: params.split_brain_fence_wait(),
        }
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
