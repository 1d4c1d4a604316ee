//! The failover flow of §4.2: Lock1, the Lock1 quorum, the candidate and its wait, the fencing
//! floor of §8, then a compare-and-set Promote; the Failover itself goes out only once that
//! Promote committed ([`GroupArbiter::on_promote_outcome`]).

use crate::dn::{DnRole, LockState};
use crate::history::PromotionReason;
use crate::ids::{InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::state::{Change, GroupState, Outcome};

use super::candidate::{self, Locked};
use super::{Ctx, GroupArbiter, PendingPromote};

impl GroupArbiter {
    /// The group has no valid primary: lock the followers and, once every condition holds,
    /// propose the promotion.
    pub(super) fn fail_over(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) {
        self.fence_unknown_static_primary(ctx, g);
        if !self.split_brain_gate(ctx, g) {
            return;
        }
        self.send_lock1s(ctx);
        let q = candidate::lock1_quorum(self.members.len(), ctx.params.test.lock1_quorum_override);
        if self.locked_count(ctx) < q {
            // As in CM: the send counts reset when the locked count falls below q.
            for m in &mut self.members {
                m.failovers_sent = 0;
            }
            return;
        }
        let Some(cand) = self.candidate(ctx, g) else {
            return;
        };
        self.fence_failed_promotions(ctx, cand);
        if !self.wait_done(ctx, g, cand)
            || self.primary_still_running(ctx, g, cand)
            || !self.fencing_floor_passed(ctx, g, cand)
            || !self.split_brain_allows_failover(ctx)
        {
            return;
        }
        let reason = self.decided_reason(ctx, g, cand);
        if let Some(proposal) = ctx.state.propose(Change::Promote {
            group: self.id,
            expected_term: g.term,
            static_primary: cand,
            reason,
        }) {
            self.log_decision(ctx, g, cand, q, reason);
            self.pending_promote = Some(PendingPromote {
                proposal,
                expected: g.term,
                candidate: cand,
                reason,
            });
        }
    }

    /// The promotion decision in one INFO line: what happened to whom, with the inputs (the
    /// group's term, the old primary, the locked members and their positions) and the rule
    /// that chose the candidate. A promotion from term 0 is the cluster's first primary, not a
    /// failover.
    fn log_decision(
        &self,
        ctx: &Ctx<'_>,
        g: &GroupState,
        cand: InstanceId,
        q: usize,
        reason: PromotionReason,
    ) {
        let locked: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_locked(ctx.now, ctx.params))
            .map(|m| {
                let p = m.position();
                format!(
                    "{} (tli {} lsn {})",
                    m.instance.0,
                    p.timeline.0,
                    p.lsn_text()
                )
            })
            .collect();
        let old: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.instance != cand && m.last_said_primary())
            .map(|m| m.instance.0.to_string())
            .collect();
        let rounds = self.members.iter().map(|m| m.rounds).max().unwrap_or(0);
        let rule = if cand == g.static_primary {
            "the static primary wins back after its wait"
        } else {
            "the locked standby with the newest position, after the non-static wait"
        };
        let what = match reason {
            PromotionReason::Start => "initial promotion (cluster start, not a failover)",
            PromotionReason::PhonyDead => "failover (the old primary hung)",
            PromotionReason::Disk => "failover (the old primary's disk failed)",
            _ => "failover",
        };
        tracing::info!(
            group = self.id.0,
            term = g.term.0,
            new_term = ctx.next_term(g.term).0,
            old_primary = if old.is_empty() { "none".to_string() } else { old.join(",") },
            new_primary = cand.0,
            lsn = %self.member(cand).map(|m| m.position().lsn_text()).unwrap_or_default(),
            locked = %locked.join(", "),
            lock1_quorum = q,
            rounds,
            rule,
            "{what}: promote {} (Lock1 quorum reached, fencing floor passed)",
            cand.0
        );
    }

    /// Lock1 to every heard-from standby and pending member that is not locked: once per
    /// incident, again after the resend interval if it did not take effect.
    fn send_lock1s(&mut self, ctx: &mut Ctx<'_>) {
        let resend = ctx.resend_interval();
        let mut sent = Vec::new();
        for m in &mut self.members {
            if !m.is_follower(ctx.now, ctx.params) || m.is_locked(ctx.now, ctx.params) {
                continue;
            }
            let due = match (m.lock1, &m.report) {
                (None, _) => true,
                _ if m.released_since_lock1 => true,
                (Some((stamp, _)), Some(r))
                    if r.last_applied >= stamp && r.lock == LockState::Prohibit =>
                {
                    false
                }
                (Some((_, at)), _) => ctx.now.saturating_since(at) >= resend,
            };
            if due {
                m.send(ctx.out, ctx.now, CmsCommand::Lock1);
                sent.push(m.instance.0.to_string());
            }
        }
        if !sent.is_empty() {
            tracing::info!(
                group = self.id.0,
                to = %sent.join(","),
                "no serving primary: Lock1 (stop replaying and report the position)"
            );
        }
    }

    /// Members that count as locked (§4.2).
    pub fn locked_count(&self, ctx: &Ctx<'_>) -> usize {
        self.locked_count_at(ctx.now, ctx.params)
    }

    /// The candidate among the locked standbys (§4.2).
    pub fn candidate(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<InstanceId> {
        let locked: Vec<Locked<'_>> = self
            .members
            .iter()
            .filter(|m| m.is_locked(ctx.now, ctx.params))
            .filter_map(|m| {
                let r = m.report.as_ref()?;
                Some(Locked {
                    instance: m.instance,
                    az: &m.az,
                    az_priority: m.az_priority,
                    position: r.position,
                    history: &r.history,
                })
            })
            .collect();
        let static_az = self.member(g.static_primary).map(|m| &m.az);
        candidate::select(&locked, g.static_primary, static_az)
    }

    /// The candidate's wait in rounds (§4.2), and `delay_arbitrate_timeout` for a candidate
    /// outside the static primary's AZ.
    fn wait_done(&self, ctx: &Ctx<'_>, g: &GroupState, cand: InstanceId) -> bool {
        let max_rounds = self.members.iter().map(|m| m.rounds).max().unwrap_or(0);
        let wait = if cand == g.static_primary {
            Params::STATIC_PRIMARY_WAIT_ROUNDS
        } else {
            ctx.params
                .candidate_wait_rounds(ctx.committed().is_starting(ctx.wall))
        };
        if max_rounds < wait {
            return false;
        }
        let delay = ctx.params.delay_arbitrate_timeout;
        if cand == g.static_primary || delay == 0 || max_rounds > delay {
            return true;
        }
        let Some(static_az) = self.member(g.static_primary).map(|m| m.az.clone()) else {
            return true;
        };
        if self.member(cand).is_some_and(|c| c.az == static_az) {
            return true;
        }
        // Hold a cross-AZ promotion unless every online member of the static AZ is locked.
        self.members
            .iter()
            .filter(|m| m.az == static_az)
            .filter(|m| !matches!(m.role(ctx.now, ctx.params), DnRole::Unknown | DnRole::Down))
            .all(|m| m.is_locked(ctx.now, ctx.params))
    }

    /// Fencing comes first: a heard-from member that may still be a primary (it says Primary
    /// — a stale or hung one being restarted —, a promotion sent to it is unresolved, or its
    /// role is unknown, see [`Member::may_be_primary`](super::Member::may_be_primary)) must be
    /// down before another is promoted.
    /// The candidate itself is exempt: a resend to it (a fresh term, §4.2) cannot make a
    /// second primary.
    fn primary_still_running(&self, ctx: &Ctx<'_>, g: &GroupState, cand: InstanceId) -> bool {
        self.members.iter().any(|m| {
            m.instance != cand
                && m.may_be_primary(g.static_primary)
                && !m.timed_out(ctx.now, ctx.params)
        })
    }

    /// A promotion that failed (the member is not promoting any more, see
    /// `promotion_in_progress`) but was never disproved may still complete or have completed
    /// unseen (a DN that hung mid-promotion): fence it with `Restart` before another member is
    /// promoted. Its next known non-primary status after the Restart resolves it. (A resend
    /// to the same member needs no fence.)
    fn fence_failed_promotions(&mut self, ctx: &mut Ctx<'_>, cand: InstanceId) {
        let resend = ctx.resend_interval();
        for m in &mut self.members {
            if m.instance != cand
                && m.promotion.is_some()
                && !m.timed_out(ctx.now, ctx.params)
                && m.report.as_ref().is_some_and(|r| r.role != DnRole::Primary)
            {
                m.send_unless_recent(ctx.out, ctx.now, CmsCommand::Restart, resend);
            }
        }
    }

    /// The static primary's agent reports a running DN whose role it has never known (a
    /// fresh store, status unreadable) for `instance_heartbeat_timeout`: it may be serving,
    /// so it blocks every promotion (fencing comes first), and without phony-dead hits nothing
    /// would ever resolve it — fence it; it comes back pending and can win its role back.
    fn fence_unknown_static_primary(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) {
        let resend = ctx.resend_interval();
        let hb = ctx.params.instance_heartbeat_timeout();
        let Some(i) = self.index_of(g.static_primary) else {
            return;
        };
        let m = &mut self.members[i];
        let long_unknown = m.known_role.is_none()
            && m.unknown_since
                .is_some_and(|since| ctx.now.saturating_since(since) >= hb);
        if long_unknown && !m.timed_out(ctx.now, ctx.params) {
            m.send_unless_recent(ctx.out, ctx.now, CmsCommand::Restart, resend);
        }
    }

    /// §8: no Failover before the fencing floor has passed since the receipt of the newest
    /// report of every member that may still be a primary (see
    /// [`Member::may_be_primary`](super::Member::may_be_primary)), or that was not heard from
    /// since the election — other than the candidate itself.
    pub fn fencing_floor_passed(&self, ctx: &Ctx<'_>, g: &GroupState, cand: InstanceId) -> bool {
        if ctx.params.test.skip_fencing_floor {
            return true;
        }
        let floor = ctx.params.fencing_floor();
        // §5.4 healing: the other side's primary may hold a lease its leader granted until this
        // leader first heard that peer at its term.
        if ctx
            .state
            .other_side_ended_at()
            .is_some_and(|ended| ctx.now < ended + floor)
        {
            return false;
        }
        self.members
            .iter()
            .filter(|m| m.instance != cand)
            .filter(|m| m.report.is_none() || m.may_be_primary(g.static_primary))
            .all(|m| ctx.now >= m.receipt + floor)
    }

    /// The Promote committed (send the Failover) or was refused (nothing to do).
    pub fn on_promote_outcome(&mut self, ctx: &mut Ctx<'_>, outcome: &Outcome) {
        let Some(p) = self.pending_promote else {
            return;
        };
        if p.proposal != outcome.id {
            return;
        }
        self.pending_promote = None;
        if outcome.result.is_err() || ctx.halted() {
            return;
        }
        let term = ctx.next_term(p.expected);
        if !self.still_eligible(ctx, p.candidate) {
            // The term is spent without a Failover: harmless, terms only need to be unique.
            return;
        }
        let alarm = p.reason != PromotionReason::Start;
        self.send_failover(ctx, p.candidate, term, p.reason, alarm);
    }

    fn still_eligible(&self, ctx: &Ctx<'_>, cand: InstanceId) -> bool {
        let Some(g) = ctx.group(self.id) else {
            return false;
        };
        let q = candidate::lock1_quorum(self.members.len(), ctx.params.test.lock1_quorum_override);
        // The committed Promote made the candidate the static primary, so selection prefers
        // it whenever it is still at the maximum.
        self.locked_count(ctx) >= q
            && self.candidate(ctx, &g) == Some(cand)
            && !self.primary_still_running(ctx, &g, cand)
    }

    /// Sends the Failover for a committed promotion; `alarm` raises the Failover alarm (not for
    /// the first primary after a cluster start, nor for a switchover abort restoring the old
    /// primary).
    pub(crate) fn send_failover(
        &mut self,
        ctx: &mut Ctx<'_>,
        cand: InstanceId,
        term: Term,
        reason: PromotionReason,
        alarm: bool,
    ) {
        self.note_promotion(term);
        let Some(idx) = self.index_of(cand) else {
            return;
        };
        self.members[idx].send(ctx.out, ctx.now, CmsCommand::Failover { term, reason });
        tracing::info!(
            group = self.id.0,
            term = term.0,
            new_primary = cand.0,
            reason = reason.as_str(),
            "promotion committed: Failover sent"
        );
        if alarm {
            ctx.out.alarm(Alarm::Failover {
                group: self.id,
                instance: cand,
            });
        }
        self.reset_rounds();
        self.awaiting = Some((term, cand, ctx.now));
    }
}

/// A promotion while the cluster starts (`cm_ctl start` in effect, or a new cluster that never
/// had a primary) brings up the first primary: it is a start, not a failover. The term number
/// cannot tell: after a stop and start the first promotion is at term 2 or more.
/// `before` is the group's term before the promotion.
pub(super) fn is_initial_promotion(ctx: &Ctx<'_>, before: Term) -> bool {
    before == Term(0) || ctx.committed().is_starting(ctx.wall)
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
