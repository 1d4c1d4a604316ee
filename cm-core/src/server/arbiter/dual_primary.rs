//! Dual primaries (§4.4): a primary below the group's term (or below another live primary's
//! term, two-node healing, §5.4) is restarted; several primaries at the same highest term are
//! all restarted; a sole primary at the group's term that is not the
//! static primary is adopted as static (CM's `ChangeStaticPrimary`); a primary restarted too
//! often is switched over — to a standby that streams from it, and not again for the same
//! restarts once such a switchover aborted (nemesis, issue 16: a failover onto a DN that had
//! crash-restarted, with the other standby not streaming, started and aborted a switchover
//! 40–50 times in a row on real PostgreSQL).

use core::time::Duration;

use crate::dn::{DbState, DnRole};
use crate::ids::{InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::state::{Change, GroupState};
use crate::time::Instant;

use super::{Ctx, GroupArbiter};

/// Restarts within 10 minutes above which a primary is switched over (CM's `DN_RESTART_COUNTS`).
pub(crate) const RESTARTS_10MIN_LIMIT: u32 = 3;
/// Restarts within an hour above which a primary is switched over.
pub(crate) const RESTARTS_1H_LIMIT: u32 = 8;
/// The window of [`RESTARTS_10MIN_LIMIT`].
const TEN_MINUTES: Duration = Duration::from_secs(600);
/// The window of [`RESTARTS_1H_LIMIT`].
const ONE_HOUR: Duration = Duration::from_secs(3600);

/// A switchover away from `instance` aborted at `at` (§4.5), with the restart counts its
/// newest report showed then. The restarts counted then must not start another switchover
/// (§4.4): a count may trigger the rule again only once its window no longer reaches back
/// before the abort, or once it exceeds its limit by restarts that must be newer than the
/// abort (the count minus the one at the abort). Leader-local: a new leader may try once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartHold {
    /// The primary the aborted switchover tried to move away from.
    pub instance: InstanceId,
    /// When the abort committed.
    pub at: Instant,
    /// Its `restarts_10min` then (`None`: no report; only the window's end releases it).
    pub restarts_10min: Option<u32>,
    /// Its `restarts_1h` then.
    pub restarts_1h: Option<u32>,
}

impl GroupArbiter {
    pub(super) fn restart_stale_primaries(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) {
        let resend = ctx.resend_interval();
        let switching = g.switchover.as_ref().map(|s| s.from);
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_live_primary(ctx.now, ctx.params))
            .filter(|&i| Some(self.members[i].instance) != switching)
            // Its saved role says Primary, but it was started pending and has answered no
            // status query since: it serves nothing, and the follow-up rebuilds it (a Restart
            // only starts the same stalled recovery again).
            .filter(|&i| !self.members[i].may_be_stalled_old_primary())
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
    /// (§4.4), unless a switchover away from it aborted since those restarts (see
    /// [`RestartHold`]): returns it, so the leader can switch it over to a healthy standby.
    pub fn restart_switchover_wanted(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<InstanceId> {
        let p = self.valid_primary(ctx, g)?;
        let m = &self.members[p];
        let r = m.report.as_ref()?;
        let hold = self.restart_hold.filter(|h| h.instance == m.instance);
        let over = |count: u32, limit: u32, window: Duration, at_abort: Option<Option<u32>>| {
            count > limit
                && match (hold, at_abort) {
                    (Some(h), Some(then)) => {
                        ctx.now.saturating_since(h.at) >= window
                            || then.is_some_and(|c| count.saturating_sub(c) > limit)
                    }
                    _ => true,
                }
        };
        let wanted = over(
            r.restarts_10min,
            RESTARTS_10MIN_LIMIT,
            TEN_MINUTES,
            hold.map(|h| h.restarts_10min),
        ) || over(
            r.restarts_1h,
            RESTARTS_1H_LIMIT,
            ONE_HOUR,
            hold.map(|h| h.restarts_1h),
        );
        wanted.then_some(m.instance)
    }

    /// The standby a restart-count switchover (§4.4) goes to: a healthy one (§4.5) that
    /// streams from the valid primary — its WAL receiver is connected to it and the stream
    /// check of the follow-up (caught up or advancing) found it streaming — with the greatest
    /// position (ties: config order). A standby that does not stream cannot reach the old
    /// primary's final position: the switchover would abort, and the old primary be promoted
    /// again (nemesis, issue 16). Nor one whose data disk is over the read-only threshold: the
    /// disk rule of §7.2 would switch the group straight back (swarm seed 290: the two rules
    /// passed the primary back and forth). Nor one restarted as often, over either limit
    /// itself: this same rule would switch it straight back (nemesis seed 2, issue 16: with
    /// every DN restarted by earlier faults, the primary went back and forth 45 times in 65 s,
    /// each promotion a new timeline, until the data disks crossed the read-only threshold).
    /// None while no standby qualifies.
    pub fn restart_switchover_target(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<InstanceId> {
        let p = self.valid_primary(ctx, g)?;
        let primary = self.members[p].instance;
        self.members
            .iter()
            .filter(|m| m.instance != primary && !m.timed_out(ctx.now, ctx.params))
            .filter(|m| {
                m.streams_now(primary)
                    && m.report.as_ref().is_some_and(|r| {
                        r.role == DnRole::Standby
                            && r.db_state == DbState::Normal
                            && r.upstream.is_some_and(|u| u.instance == primary)
                            && u64::from(r.data_disk_pct)
                                < ctx.params.datastorage_threshold_value_check
                            && r.restarts_10min <= RESTARTS_10MIN_LIMIT
                            && r.restarts_1h <= RESTARTS_1H_LIMIT
                    })
            })
            .max_by(|a, b| {
                a.position()
                    .cmp(&b.position())
                    .then(b.instance.cmp(&a.instance))
            })
            .map(|m| m.instance)
    }
}

#[cfg(test)]
#[path = "dual_primary_tests.rs"]
mod tests;
