//! Recording confirmed promotions in the history (§15): the point where a promotion is final is
//! the new primary's report of Primary at the group's committed term, on the timeline it created
//! — the same point the term → timeline record of §5.1 is made ([`GroupArbiter::record_answers`]).
//! The reason is the one the deciding leader committed with the term (`GroupState::term_reason`,
//! set by the Promote and the switchover changes), so a leader that did not make the decision
//! records the same one; terms reached before that was kept fall back to reading the replicated
//! state and the old primary's last report.

use crate::dn::DbState;
use crate::history::{Promotion, PromotionReason};
use crate::ids::{InstanceId, Term, Timeline};
use crate::state::{Change, GroupState, SwitchoverResult};

use super::{Ctx, GroupArbiter};

impl GroupArbiter {
    /// Proposes the history entry of `instance`'s promotion at `term` unless it is recorded or
    /// already proposed.
    pub(super) fn record_promotion(
        &mut self,
        ctx: &mut Ctx<'_>,
        g: &GroupState,
        instance: InstanceId,
        term: Term,
        timeline: Timeline,
    ) {
        if self.promotion_proposed == Some(term)
            || ctx.committed().promotions.contains(self.id, term)
        {
            return;
        }
        let previous = self.previous_primary(ctx, instance);
        let entry = Promotion {
            group: self.id,
            term,
            instance,
            previous,
            reason: self.promotion_reason(ctx, g, term, previous),
            timeline,
            wall_ms: ctx.wall,
        };
        if ctx.state.propose(Change::RecordPromotion(entry)).is_some() {
            self.promotion_proposed = Some(term);
        }
    }

    /// The group's last recorded primary; without history, a member other than `instance`
    /// whose last report said Primary.
    fn previous_primary(&self, ctx: &Ctx<'_>, instance: InstanceId) -> Option<InstanceId> {
        if let Some(p) = ctx.committed().promotions.last_of(self.id) {
            return Some(p.instance);
        }
        self.members
            .iter()
            .find(|m| m.instance != instance && m.last_said_primary())
            .map(|m| m.instance)
    }

    /// The reason the deciding leader committed with the term (the group's `term_reason`);
    /// for a term reached before that was kept, derived here from the replicated state and
    /// the old primary's last report.
    fn promotion_reason(
        &self,
        ctx: &Ctx<'_>,
        g: &GroupState,
        term: Term,
        previous: Option<InstanceId>,
    ) -> PromotionReason {
        if g.term == term
            && let Some(reason) = g.term_reason
        {
            return reason;
        }
        let switchover = g.switchover.as_ref().is_some_and(|s| s.term == term)
            || g.last_switchover.as_ref().is_some_and(|s| {
                s.term == term || (s.result == SwitchoverResult::Aborted && s.term.next() == term)
            });
        if switchover {
            return PromotionReason::Switchover;
        }
        // The first term, no primary before it (neither recorded nor heard of), or `cm_ctl
        // start` in effect: the group's start, not a failover.
        if term == Term(1) || previous.is_none() || ctx.committed().is_starting(ctx.wall) {
            return PromotionReason::Start;
        }
        self.old_primary_cause(ctx, g, previous)
    }

    /// Why the leader promotes `cand` now (a failover decision, §4.2): the group's start when
    /// it never had a primary (term 0) or `cm_ctl start` is in effect, else what became of the
    /// old primary (the last recorded one, else the static primary being replaced). Carried
    /// in the Promote and the Failover.
    pub(super) fn decided_reason(
        &self,
        ctx: &Ctx<'_>,
        g: &GroupState,
        cand: InstanceId,
    ) -> PromotionReason {
        if super::failover::is_initial_promotion(ctx, g.term) || start_still_pending(g) {
            return PromotionReason::Start;
        }
        let previous = self
            .previous_primary(ctx, cand)
            .or_else(|| Some(g.static_primary).filter(|s| *s != cand));
        self.old_primary_cause(ctx, g, previous)
    }

    /// Phony-dead, disk or plain failover, from the old primary's state.
    fn old_primary_cause(
        &self,
        ctx: &Ctx<'_>,
        g: &GroupState,
        previous: Option<InstanceId>,
    ) -> PromotionReason {
        let Some(prev) = previous.and_then(|i| self.member(i)) else {
            return PromotionReason::Failover;
        };
        let cooling = g
            .phony_dead_cooldown
            .get(&prev.instance)
            .is_some_and(|until| ctx.wall < *until);
        if prev.phony.hung || prev.phony.restart_at.is_some() || cooling {
            return PromotionReason::PhonyDead;
        }
        let disk = prev
            .report
            .as_ref()
            .is_some_and(|r| r.disk_damaged || r.db_state == DbState::DiskDamaged);
        if disk {
            PromotionReason::Disk
        } else {
            PromotionReason::Failover
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;

/// The group's current term was the start's promotion and it never took effect: no timeline
/// was recorded for it (the promoted member never reported Primary at that term — e.g. its
/// agent could not confirm the term and the leader decides again at the next one). The group
/// never had a primary, so the next promotion is still its start, not a failover.
fn start_still_pending(g: &GroupState) -> bool {
    g.term_reason == Some(PromotionReason::Start) && !g.timelines.contains_key(&g.term)
}
