//! Switchover (§4.5, §9): commit `BeginSwitchover` (term + 1), send `Demote` to the old
//! primary, wait until the target has reached the old primary's final position (its position
//! reported after the shutdown — `-f` does not skip this, S5), send `Switchover{term}` to the
//! target, and commit `EndSwitchover` once it reports Primary at that term — or, after
//! `switchover_timeout`, abandon it (`EndSwitchover{promoted: false}`) and let arbitration
//! resolve the group.
//!
//! A switchover that cannot finish is aborted at once, but only before `Switchover{term}` went
//! out (after it, only ordinary failover applies): once the old primary is down, if the
//! target's process stops, its agent falls silent, or it has not reached the final position
//! within `instance_heartbeat_timeout`, the leader commits `AbortSwitchover` — the end of the
//! request and a fresh term for the old primary in one change — and sends `Failover` at that
//! term to the old primary as soon as its agent reports it running again (it holds the newest
//! position). A switchover inherited from a previous leader is never aborted: that leader may
//! have sent `Switchover{term}`.
//!
//! Once `Switchover{term}` is out, the request ends without an abort
//! (`EndSwitchover{promoted: false}`, ordinary failover applies) as soon as the target cannot
//! promote: its agent falls silent, it reports Down or Pending, a process of it hangs or is a
//! zombie (T/D/Z), or — as for an unanswered Failover — `instance_heartbeat_timeout` after the
//! send it reports neither Promoting nor Primary at the term (its promotion failed).

use std::collections::BTreeMap;

use crate::ctl::Refusal;
use crate::dn::{DbState, DnRole, ProcState};
use crate::history::PromotionReason;
use crate::ids::{GroupId, InstanceId, Position, ProposalId, Term};
use crate::msg::CmsCommand;
use crate::state::{Change, GroupState, Outcome, PendingSwitchover};
use crate::time::Instant;

use super::arbiter::{Ctx, GroupArbiter, Member, RestartHold};

/// Leader-local progress of one group's switchover.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Progress {
    term: Term,
    /// This leader committed `term` (BeginSwitchover or RenewSwitchoverTerm): only then may it
    /// send `Switchover{term}`. A switchover inherited from a previous leader is not owned — that
    /// leader may already have sent `Switchover{term}` (§13 S2: one per term).
    owned: bool,
    /// A RenewSwitchoverTerm was proposed for this term.
    renew_proposed: bool,
    demote_at: Option<Instant>,
    /// When this leader first saw the old primary no longer serving after a Demote.
    down_at: Option<Instant>,
    final_position: Option<Position>,
    switch_sent: bool,
    /// When this leader sent `Switchover{term}`.
    #[serde(default)]
    switch_sent_at: Option<Instant>,
    end_proposed: bool,
}

impl Progress {
    fn new(term: Term, owned: bool) -> Self {
        Self {
            term,
            owned,
            renew_proposed: false,
            demote_at: None,
            down_at: None,
            final_position: None,
            switch_sent: false,
            switch_sent_at: None,
            end_proposed: false,
        }
    }
}

/// The switchovers the leader drives.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
        if target == arb.members[p].instance {
            return Err(Refusal::Invalid(format!(
                "instance {target} is already the primary of {}: nothing to switch over",
                arb.id
            )));
        }
        if !healthy {
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
        tracing::info!(group = %arb.id, term = %ctx.next_term(g.term), from = %arb.members[p].instance,
            target = %target, fast, "switchover: request accepted; committing its term");
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
            if promoted {
                tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from,
                    target = %sw.target, "switchover: the target is primary; ending the request");
            } else {
                tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from,
                    target = %sw.target, timeout_s = ctx.params.switchover_timeout().as_secs(),
                    "switchover: timed out; arbitration resolves the group");
            }
            ctx.state.propose(Change::EndSwitchover {
                group: arb.id,
                term: sw.term,
                promoted,
            });
            return;
        }
        // An inherited switchover (not owned) may have been sent by the previous leader.
        if prog.switch_sent || !prog.owned {
            // §4.5: once `Switchover{term}` is sent only ordinary failover applies. A target
            // whose process stopped (or came back pending) or whose agent fell silent will not
            // report Primary: end the request now rather than at its timeout, so that the
            // group is arbitrated (before: no failover for up to 120 s, swarm seeds 20, 223).
            // So does a target whose processes hang or are zombies (T/D/Z, swarm seed 1078:
            // it turned zombie after its last report, the Switchover went out, its promotion
            // failed, and it came back a healthy standby that nothing promoted), and, as for
            // an unanswered Failover (`promotion_in_progress`), a target that neither promotes
            // nor reports Primary at the term `instance_heartbeat_timeout` after the send.
            let target = &arb.members[t];
            let why = if let Some(why) = target_gone(target, ctx) {
                Some(why)
            } else if target
                .report
                .as_ref()
                .is_some_and(|r| r.processes.iter().any(|p| *p != ProcState::Running))
            {
                Some("the target's process hangs or is a zombie")
            } else if prog.switch_sent_at.is_some_and(|at| {
                ctx.now.saturating_since(at) >= ctx.params.instance_heartbeat_timeout()
            }) && target
                .report
                .as_ref()
                .is_none_or(|r| r.db_state != DbState::Promoting)
            {
                Some("the target did not promote")
            } else {
                None
            };
            if let Some(why) = why {
                prog.end_proposed = true;
                tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from,
                    target = %sw.target, reason = why, "switchover: the target failed after Switchover was sent; ordinary failover applies");
                ctx.state.propose(Change::EndSwitchover {
                    group: arb.id,
                    term: sw.term,
                    promoted: false,
                });
                return;
            }
            if prog.switch_sent {
                return;
            }
        }
        let from = &mut arb.members[f];
        if from.is_live_primary(ctx.now, ctx.params) {
            let due = prog
                .demote_at
                .is_none_or(|at| ctx.now.saturating_since(at) >= ctx.resend_interval());
            if due {
                if prog.demote_at.is_none() {
                    tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from,
                        target = %sw.target, "switchover: demoting the old primary");
                }
                prog.demote_at = Some(ctx.now);
                from.send(ctx.out, ctx.now, CmsCommand::Demote);
            }
            return;
        }
        let down_at = *prog.down_at.get_or_insert(ctx.now);
        if !from.timed_out(ctx.now, ctx.params)
            && let Some(r) = &from.report
            && r.role != DnRole::Primary
            && r.position.lsn.0 > 0
        {
            prog.final_position = Some(r.position);
        }
        let target = &arb.members[t];
        let reached = prog
            .final_position
            .is_some_and(|fp| target.report.as_ref().is_some_and(|r| r.position >= fp));
        if prog.owned && prog.demote_at.is_some() {
            let why = if let Some(why) = target_gone(target, ctx) {
                Some(why)
            } else if !reached
                && ctx.now.saturating_since(down_at) >= ctx.params.instance_heartbeat_timeout()
            {
                Some("the target did not reach the old primary's final position in time")
            } else {
                None
            };
            if let Some(why) = why {
                prog.end_proposed = true;
                tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from,
                    target = %sw.target, reason = why,
                    final_position = %prog.final_position.map_or_else(|| "unknown".into(), |p| p.to_string()),
                    "switchover: aborting; the old primary gets term {} and is promoted again",
                    ctx.next_term(sw.term));
                ctx.state.propose(Change::AbortSwitchover {
                    group: arb.id,
                    term: sw.term,
                });
                return;
            }
        }
        let Some(final_pos) = prog.final_position else {
            return;
        };
        let ready = !target.timed_out(ctx.now, ctx.params)
            && target.report.as_ref().is_some_and(|r| {
                // Normal, not Promoting: a new leader must not renew the term while an
                // inherited Switchover is still being carried out.
                r.role == DnRole::Standby
                    && r.db_state == DbState::Normal
                    && r.position >= final_pos
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
            tracing::info!(group = %arb.id, term = %sw.term, from = %sw.from, target = %sw.target,
                final_position = %final_pos, "switchover: the target reached the old primary's final position; sending Switchover");
            prog.switch_sent = true;
            prog.switch_sent_at = Some(ctx.now);
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
                    .insert(*group, Progress::new(ctx.next_term(*expected_term), true));
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
            Change::AbortSwitchover { group, term } => {
                self.progress.remove(group);
                if outcome.result.is_ok()
                    && let Some(arb) = groups.get_mut(group)
                    && let Some(g) = ctx.group(*group)
                {
                    arb.restore = Some(Restore {
                        term: ctx.next_term(*term),
                        instance: g.static_primary,
                        since: ctx.now,
                    });
                    // The restarts that may have started it start no other (§4.4).
                    let report = arb.member(g.static_primary).and_then(|m| m.report.as_ref());
                    arb.restart_hold = Some(RestartHold {
                        instance: g.static_primary,
                        at: ctx.now,
                        restarts_10min: report.map(|r| r.restarts_10min),
                        restarts_1h: report.map(|r| r.restarts_1h),
                    });
                }
            }
            _ => {}
        }
    }
}

/// The old primary of an aborted switchover, to be promoted at the abort's fresh term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Restore {
    /// The term the abort committed.
    pub term: Term,
    /// The old primary.
    pub instance: InstanceId,
    /// When the abort committed.
    pub since: Instant,
}

/// Why a switchover's target can no longer take over, whatever step the switchover is at:
/// its agent fell silent, or its process stopped (Down), or came back pending (nothing points
/// it at a primary during the switchover, so it cannot catch up or promote).
fn target_gone(target: &Member, ctx: &Ctx<'_>) -> Option<&'static str> {
    if target.timed_out(ctx.now, ctx.params) {
        Some("the target's agent is silent")
    } else if target
        .report
        .as_ref()
        .is_some_and(|r| matches!(r.role, DnRole::Down | DnRole::Pending))
    {
        Some("the target's process stopped")
    } else {
        None
    }
}

impl GroupArbiter {
    /// After an abort (§4.5): sends `Failover{term}` to the old primary once its agent reports
    /// it running (restarted pending after its shutdown). Returns whether arbitration must
    /// wait for it. Gives up — ordinary arbitration takes over — if the term moved on, the old
    /// primary's agent falls silent, or it is not running within `instance_heartbeat_timeout`.
    pub(crate) fn restore_after_abort(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) -> bool {
        let Some(r) = self.restore else {
            return false;
        };
        let Some(i) = self.index_of(r.instance) else {
            self.restore = None;
            return false;
        };
        let m = &self.members[i];
        let hb = ctx.params.instance_heartbeat_timeout();
        if g.term != r.term
            || g.static_primary != r.instance
            || m.timed_out(ctx.now, ctx.params)
            || ctx.now.saturating_since(r.since) >= hb
        {
            tracing::info!(group = %self.id, term = %r.term, instance = %r.instance,
                "switchover abort: the old primary cannot be promoted directly; arbitration decides");
            self.restore = None;
            return false;
        }
        let running = m.report.as_ref().is_some_and(|rep| {
            matches!(rep.role, DnRole::Pending | DnRole::Standby)
                && rep.db_state != DbState::Unknown
        });
        if !running {
            return true;
        }
        self.restore = None;
        tracing::info!(group = %self.id, term = %r.term, instance = %r.instance,
            "switchover abort: promoting the old primary");
        // Restoring the old primary is no failover: no alarm.
        self.send_failover(ctx, r.instance, r.term, PromotionReason::Switchover, false);
        true
    }
}

#[cfg(test)]
#[path = "switchover_tests.rs"]
mod tests;
