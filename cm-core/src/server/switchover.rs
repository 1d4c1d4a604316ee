//! Switchover (§4.5, §9): commit `BeginSwitchover` (term + 1), send `Demote` to the old
//! primary, wait until the target has replayed the old primary's final position (its position
//! reported after the shutdown; skipped with `-f`), send `Switchover{term}` to the target, and
//! commit `EndSwitchover` once it reports Primary at that term — or, after
//! `switchover_timeout`, abandon it (`EndSwitchover{promoted: false}`) and let arbitration
//! resolve the group.

use std::collections::BTreeMap;

use crate::ctl::Refusal;
use crate::dn::{DbState, DnRole};
use crate::ids::{GroupId, InstanceId, Position, ProposalId, Term};
use crate::msg::CmsCommand;
use crate::state::{Change, Outcome, PendingSwitchover};
use crate::time::Instant;

use super::arbiter::{Ctx, GroupArbiter};

/// Leader-local progress of one group's switchover.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Progress {
    term: Term,
    /// This leader committed `term` (BeginSwitchover or RenewSwitchoverTerm): only then may it
    /// send `Switchover{term}`. A switchover inherited from a previous leader is not owned — that
    /// leader may already have sent `Switchover{term}` (§13 S2: one per term).
    owned: bool,
    /// A RenewSwitchoverTerm was proposed for this term.
    renew_proposed: bool,
    demote_at: Option<Instant>,
    final_position: Option<Position>,
    switch_sent: bool,
    end_proposed: bool,
}

impl Progress {
    fn new(term: Term, owned: bool) -> Self {
        Self {
            term,
            owned,
            renew_proposed: false,
            demote_at: None,
            final_position: None,
            switch_sent: false,
            end_proposed: false,
        }
    }
}

/// The switchovers the leader drives.
#[derive(Clone, Debug, Default)]
pub struct Switchovers {
    progress: BTreeMap<GroupId, Progress>,
    /// `BeginSwitchover` proposals not yet committed.
    proposed: BTreeMap<ProposalId, GroupId>,
}

impl Switchovers {
    /// Forgets leader-local progress (a new leader derives it from reports).
    pub fn reset(&mut self) {
        self.progress.clear();
        self.proposed.clear();
    }

    /// Whether some switchover is being driven (it has a wall-clock deadline to watch).
    pub fn any_pending(&self) -> bool {
        !self.progress.is_empty()
    }

    /// Validates a switchover of `arb`'s group to `target` and proposes `BeginSwitchover`.
    pub fn begin(
        &mut self,
        ctx: &mut Ctx<'_>,
        arb: &GroupArbiter,
        target: InstanceId,
        fast: bool,
    ) -> Result<ProposalId, Refusal> {
        if ctx.committed().paused {
            return Err(Refusal::Paused);
        }
        let g = ctx
            .group(arb.id)
            .ok_or_else(|| Refusal::Invalid(format!("no {}", arb.id)))?;
        let proposing = self.proposed.values().any(|g| *g == arb.id);
        if g.switchover.is_some() || arb.pending_promote.is_some() || proposing {
            return Err(Refusal::Busy(format!(
                "{} is already changing primary",
                arb.id
            )));
        }
        let Some(p) = arb.valid_primary(ctx, &g) else {
            return Err(Refusal::Invalid(format!("{} has no valid primary", arb.id)));
        };
        let healthy = arb.member(target).is_some_and(|m| {
            !m.timed_out(ctx.now, ctx.params)
                && m.report
                    .as_ref()
                    .is_some_and(|r| r.role == DnRole::Standby && r.db_state == DbState::Normal)
        });
        if target == arb.members[p].instance || !healthy {
            return Err(Refusal::Invalid(format!(
                "instance {target} is not a healthy standby of {}",
                arb.id
            )));
        }
        let change = Change::BeginSwitchover {
            group: arb.id,
            expected_term: g.term,
            switchover: PendingSwitchover {
                target,
                from: arb.members[p].instance,
                term: Term(0),
                fast,
                deadline: ctx.wall.saturating_add(ctx.params.switchover_timeout()),
            },
        };
        let id = ctx
            .state
            .propose(change)
            .ok_or(Refusal::NotLeader { leader: None })?;
        self.proposed.insert(id, arb.id);
        Ok(id)
    }

    /// Moves the group's committed switchover forward (called after each arbitration pass).
    pub fn drive(&mut self, ctx: &mut Ctx<'_>, arb: &mut GroupArbiter) {
        let Some(sw) = ctx.group(arb.id).and_then(|g| g.switchover) else {
            self.progress.remove(&arb.id);
            return;
        };
        let prog = self
            .progress
            .entry(arb.id)
            .or_insert_with(|| Progress::new(sw.term, false));
        if prog.term != sw.term {
            if prog.renew_proposed && sw.term > prog.term {
                // Our renewal committed: the switchover goes on under a term we own.
                prog.term = sw.term;
                prog.owned = true;
                prog.renew_proposed = false;
            } else {
                *prog = Progress::new(sw.term, false);
            }
        }
        if prog.end_proposed {
            return;
        }
        let (Some(t), Some(f)) = (arb.index_of(sw.target), arb.index_of(sw.from)) else {
            return;
        };
        let promoted = arb.members[t].is_live_primary(ctx.now, ctx.params)
            && arb.members[t]
                .report
                .as_ref()
                .is_some_and(|r| r.term == sw.term);
        if promoted || ctx.wall >= sw.deadline {
            prog.end_proposed = true;
            ctx.state.propose(Change::EndSwitchover {
                group: arb.id,
                term: sw.term,
                promoted,
            });
            return;
        }
        if prog.switch_sent {
            return;
        }
        let from = &mut arb.members[f];
        if from.is_live_primary(ctx.now, ctx.params) {
            let due = prog
                .demote_at
                .is_none_or(|at| ctx.now.saturating_since(at) >= ctx.resend_interval());
            if due {
                prog.demote_at = Some(ctx.now);
                from.send(ctx.out, ctx.now, CmsCommand::Demote);
            }
            return;
        }
        if !from.timed_out(ctx.now, ctx.params)
            && let Some(r) = &from.report
            && r.role != DnRole::Primary
            && r.position.lsn.0 > 0
        {
            prog.final_position = Some(r.position);
        }
        let Some(final_pos) = prog.final_position else {
            return;
        };
        let target = &arb.members[t];
        let ready = !target.timed_out(ctx.now, ctx.params)
            && target.report.as_ref().is_some_and(|r| {
                // Normal, not Promoting: a new leader must not renew the term while an
                // inherited Switchover is still being carried out.
                r.role == DnRole::Standby
                    && r.db_state == DbState::Normal
                    && (sw.fast || r.position >= final_pos)
            });
        if ready && !prog.owned {
            if !prog.renew_proposed {
                prog.renew_proposed = true;
                ctx.state.propose(Change::RenewSwitchoverTerm {
                    group: arb.id,
                    expected_term: sw.term,
                });
            }
            return;
        }
        if ready {
            prog.switch_sent = true;
            arb.note_promotion(sw.term);
            arb.members[t].send(ctx.out, ctx.now, CmsCommand::Switchover { term: sw.term });
        }
    }

    /// A switchover proposal committed or failed.
    pub fn on_outcome(
        &mut self,
        ctx: &mut Ctx<'_>,
        groups: &mut BTreeMap<GroupId, GroupArbiter>,
        outcome: &Outcome,
    ) {
        self.proposed.remove(&outcome.id);
        match &outcome.change {
            Change::BeginSwitchover {
                group,
                expected_term,
                ..
            } if outcome.result.is_ok() => {
                self.progress
                    .insert(*group, Progress::new(expected_term.next(), true));
                if let Some(arb) = groups.get_mut(group) {
                    self.drive(ctx, arb);
                }
            }
            Change::RenewSwitchoverTerm { group, .. } => {
                if let Some(arb) = groups.get_mut(group) {
                    if outcome.result.is_err()
                        && let Some(p) = self.progress.get_mut(group)
                    {
                        p.renew_proposed = false;
                    }
                    self.drive(ctx, arb);
                }
            }
            Change::EndSwitchover { group, .. } => {
                self.progress.remove(group);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "switchover_tests.rs"]
mod tests;
