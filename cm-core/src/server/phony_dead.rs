//! Phony-dead (hang) handling on the CMS side (§6).
//!
//! On each report: `phony_dead_hits ≥ phony_dead_effective_time` makes a primary's role Unknown
//! (so its group can fail over, see [`Member::role`](super::arbiter::Member::role)), raises the
//! alarm, sends `Restart`, and moves the static primary to a member with a strictly greater
//! position that is not hung (else it stays, and the restarted old primary wins its role back).
//! When the member later reports 0 hits a cool-down (`instance_phony_dead_restart_interval`,
//! a wall-clock deadline in the replicated state) starts: no second hang-restart before it ends,
//! except that a hung primary is still killed before its group fails over.

use crate::dn::DnReport;
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::state::{Change, GroupState};
use crate::time::Instant;

use super::arbiter::{Ctx, GroupArbiter};

/// Per-member phony-dead bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PhonyDeadMember {
    /// The member reached the hit threshold since it last reported 0 hits.
    pub hung: bool,
    /// When the hang-restart was sent, if it was.
    pub restart_at: Option<Instant>,
}

impl PhonyDeadMember {
    /// Whether a report counts as phony dead (`≥`, as CM's code: the 5th hit triggers).
    pub fn is_hung(&self, r: &DnReport, params: &Params) -> bool {
        u64::from(r.phony_dead_hits) >= params.phony_dead_effective_time.max(1)
    }
}

/// Whether `instance` is in its phony-dead cool-down at `ctx.wall`.
fn in_cooldown(ctx: &Ctx<'_>, g: &GroupState, instance: crate::ids::InstanceId) -> bool {
    g.phony_dead_cooldown
        .get(&instance)
        .is_some_and(|until| ctx.wall < *until)
}

/// Handles the phony-dead part of member `idx`'s newest report.
pub fn on_report(arb: &mut GroupArbiter, idx: usize, ctx: &mut Ctx<'_>) {
    let Some(g) = ctx.group(arb.id) else {
        return;
    };
    let Some(r) = arb.members[idx].report.clone() else {
        return;
    };
    let m = &mut arb.members[idx];
    if !m.phony.is_hung(&r, ctx.params) {
        if r.phony_dead_hits == 0 && m.phony.hung {
            m.phony = PhonyDeadMember::default();
            ctx.state.propose(Change::PhonyDeadCooldown {
                group: arb.id,
                instance: m.instance,
                until: Some(ctx.wall.saturating_add(ctx.params.phony_dead_cooldown())),
            });
        }
        return;
    }
    m.phony.hung = true;
    if ctx.committed().paused {
        return; // S6: nothing is restarted while paused.
    }
    let cooling = in_cooldown(ctx, &g, m.instance);
    let primary = m.may_be_primary(g.static_primary);
    let due = match m.phony.restart_at {
        None => !cooling || primary,
        // A hung primary that still reports is killed again: fencing comes first.
        Some(at) => primary && ctx.now.saturating_since(at) >= ctx.resend_interval(),
    };
    if !due {
        return;
    }
    let first = m.phony.restart_at.is_none();
    m.phony.restart_at = Some(ctx.now);
    if first && !cooling {
        ctx.out.alarm(Alarm::PhonyDead {
            instance: m.instance,
        });
    }
    tracing::info!(
        group = arb.id.0,
        instance = m.instance.0,
        primary,
        again = !first,
        "phony-dead: the DN is hung; restarting it"
    );
    m.send(ctx.out, ctx.now, CmsCommand::Restart);
    if first && m.instance == g.static_primary {
        move_static_primary(arb, idx, ctx, &g);
    }
}

/// The static primary moves to the member with the greatest position strictly beyond the hung
/// one's, among heard-from members that are not hung; if none, it stays.
fn move_static_primary(arb: &GroupArbiter, idx: usize, ctx: &mut Ctx<'_>, g: &GroupState) {
    let hung_pos = arb.members[idx].position();
    let best = arb
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != idx)
        .filter(|(_, m)| !m.timed_out(ctx.now, ctx.params))
        .filter_map(|(i, m)| {
            let r = m.report.as_ref()?;
            (!m.phony.is_hung(r, ctx.params) && r.position > hung_pos).then_some((i, r.position))
        })
        // Greatest position; ties go to config order.
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
    if let Some((i, _)) = best {
        ctx.state.propose(Change::SetStaticPrimary {
            group: arb.id,
            expected_term: g.term,
            instance: arb.members[i].instance,
        });
    }
}

#[cfg(test)]
#[path = "phony_dead_tests.rs"]
mod tests;
