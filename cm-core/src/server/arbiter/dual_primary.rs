//! Dual primaries (§4.4): a primary below the group's term (or below another live primary's
//! term, two-node healing, §5.4) is restarted; several primaries at the same highest term are
//! all restarted; a sole primary at the group's term that is not the
//! static primary is adopted as static (CM's `ChangeStaticPrimary`); a primary restarted too
//! often is switched over.

use crate::ids::{InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::state::{Change, GroupState};

use super::{Ctx, GroupArbiter};

/// Restarts within 10 minutes above which a primary is switched over (CM's `DN_RESTART_COUNTS`).
pub(crate) const RESTARTS_10MIN_LIMIT: u32 = 3;
/// Restarts within an hour above which a primary is switched over.
pub(crate) const RESTARTS_1H_LIMIT: u32 = 8;

impl GroupArbiter {
    pub(super) fn restart_stale_primaries(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) {
        let resend = ctx.resend_interval();
        let switching = g.switchover.as_ref().map(|s| s.from);
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_live_primary(ctx.now, ctx.params))
            .filter(|&i| Some(self.members[i].instance) != switching)
            .collect();
        let term_of = |i: usize| self.members[i].report.as_ref().map(|r| r.term);
        // A live primary above the committed term exists only after both sides of a two-node
        // partition failed over alone (§5.4): the group's term is the higher of the two, so
        // the lower one is stale already, before the merge commits. Elsewhere this is g.term.
        let top = live
            .iter()
            .filter_map(|&i| term_of(i))
            .fold(g.term, Term::max);
        let mut restart: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| term_of(i).is_some_and(|t| t < top))
            .collect();
        let current: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| !restart.contains(i))
            .collect();
        if current.len() >= 2 {
            let max = current.iter().filter_map(|&i| term_of(i)).max();
            let tied: Vec<usize> = current
                .iter()
                .copied()
                .filter(|&i| term_of(i) == max)
                .collect();
            if tied.len() >= 2 {
                if !self.double_primary_alarmed {
                    self.double_primary_alarmed = true;
                    ctx.out.alarm(Alarm::DoublePrimary { group: self.id });
                }
                restart.extend(tied);
            }
        }
        for i in restart {
            self.members[i].send_unless_recent(ctx.out, ctx.now, CmsCommand::Restart, resend);
        }
    }

    /// No valid primary but exactly one serving primary at the group's term that is not the
    /// static primary: make it static. Returns whether a change was proposed (or is pending).
    pub(super) fn adopt_sole_primary(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) -> bool {
        let live: Vec<&super::Member> = self
            .members
            .iter()
            .filter(|m| m.is_live_primary(ctx.now, ctx.params))
            .collect();
        let [only] = live.as_slice() else {
            return false;
        };
        let at_term = only.report.as_ref().is_some_and(|r| r.term == g.term);
        if !at_term || only.instance == g.static_primary {
            return false;
        }
        if self.adopt_proposed != Some(g.term) {
            self.adopt_proposed = Some(g.term);
            ctx.state.propose(Change::SetStaticPrimary {
                group: self.id,
                expected_term: g.term,
                instance: only.instance,
            });
        }
        true
    }

    /// The valid primary restarted more than 3 times in 10 minutes or 8 times in an hour
    /// (§4.4): returns it, so the leader can switch it over to a healthy standby.
    pub fn restart_switchover_wanted(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<InstanceId> {
        let p = self.valid_primary(ctx, g)?;
        let r = self.members[p].report.as_ref()?;
        (r.restarts_10min > RESTARTS_10MIN_LIMIT || r.restarts_1h > RESTARTS_1H_LIMIT)
            .then_some(self.members[p].instance)
    }
}

#[cfg(test)]
#[path = "dual_primary_tests.rs"]
mod tests;
