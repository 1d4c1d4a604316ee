//! Recording confirmed promotions in the history (§15): the point where a promotion is final is
//! the new primary's report of Primary at the group's committed term, on the timeline it created
//! — the same point the term → timeline record of §5.1 is made ([`GroupArbiter::record_answers`]).
//! The reason is read from the replicated state and the old primary's last report, so a leader
//! that did not make the decision records it the same way.

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

    fn promotion_reason(
        &self,
        ctx: &Ctx<'_>,
        g: &GroupState,
        term: Term,
        previous: Option<InstanceId>,
    ) -> PromotionReason {
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
