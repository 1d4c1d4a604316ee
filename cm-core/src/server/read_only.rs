//! Disk-threshold read-only protection (§7.2).
//!
//! Every `datastorage_threshold_check_interval` (on ticks) the leader walks each DN's newest
//! report through a per-instance FSM kept in the replicated state: usage ≥ threshold (85 %) →
//! `ExpectOn` (committed) → `SetReadOnly{on}` → `On` once the DN reports read-only; usage below
//! threshold − 5 (80 %) → `ExpectOff` → `SetReadOnly{off}` → `Off`. Usage ≥ ⌊threshold × 4/5⌋
//! (68 %) raises a pre-alarm only. A DN made read-only by hand (FSM `Off`, reported read-only)
//! is left alone. When the static primary is over the threshold the whole group goes read-only
//! and a switchover to a standby below it is requested.

use std::collections::{BTreeMap, BTreeSet};

use crate::dn::{DbState, DnRole};
use crate::ids::{GroupId, InstanceId};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::state::{Change, GroupState, Outcome, ReadOnlyState};
use crate::time::Instant;

use super::arbiter::{Ctx, GroupArbiter};

/// A switchover the read-only rule asks for: the static primary's disk is over the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchoverWish {
    /// The group.
    pub group: GroupId,
    /// A healthy standby below the threshold.
    pub target: InstanceId,
}

/// The leader-local part of the read-only rule.
#[derive(Clone, Debug, Default)]
pub struct ReadOnlyChecker {
    next_check: Option<Instant>,
    prealarmed: BTreeSet<InstanceId>,
    in_flight: BTreeMap<InstanceId, ReadOnlyState>,
}

impl ReadOnlyChecker {
    /// Leadership starts at `now`: the first check is one interval later.
    pub fn on_elected(&mut self, ctx: &Ctx<'_>) {
        *self = Self::default();
        self.next_check = Some(ctx.now + ctx.params.read_only_check_interval());
    }

    /// Leadership lost.
    pub fn on_deposed(&mut self) {
        *self = Self::default();
    }

    /// When the next check is due.
    pub fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// Runs a check if one is due; returns the switchovers the rule asks for.
    pub fn on_tick(
        &mut self,
        ctx: &mut Ctx<'_>,
        groups: &mut BTreeMap<GroupId, GroupArbiter>,
    ) -> Vec<SwitchoverWish> {
        let Some(due) = self.next_check else {
            return Vec::new();
        };
        if ctx.now < due {
            return Vec::new();
        }
        self.next_check = Some(ctx.now + ctx.params.read_only_check_interval());
        if !ctx.params.enable_transaction_read_only || ctx.committed().stopping {
            return Vec::new();
        }
        let mut wishes = Vec::new();
        for arb in groups.values_mut() {
            if let Some(w) = self.check_group(ctx, arb) {
                wishes.push(w);
            }
        }
        wishes
    }

    fn check_group(&mut self, ctx: &mut Ctx<'_>, arb: &mut GroupArbiter) -> Option<SwitchoverWish> {
        let g = ctx.group(arb.id)?;
        let p = ctx.params;
        let (thr, clear) = (p.datastorage_threshold_value_check, p.read_only_clear_pct());
        let usage =
            |m: &super::arbiter::Member| m.report.as_ref().map(|r| u64::from(r.data_disk_pct));
        let static_m = arb.member(g.static_primary);
        let static_usage = static_m.and_then(usage);
        let static_fsm = fsm(&g, g.static_primary);
        let forced = static_usage.is_some_and(|u| {
            u >= thr
                || (matches!(static_fsm, ReadOnlyState::On | ReadOnlyState::ExpectOn) && u >= clear)
        });
        for i in 0..arb.members.len() {
            if arb.members[i].timed_out(ctx.now, ctx.params) {
                continue;
            }
            let Some(u) = usage(&arb.members[i]) else {
                continue;
            };
            self.prealarm(ctx, arb.members[i].instance, u);
            let want_on = u >= thr || forced;
            let want_off = u < clear && !forced;
            self.step_member(ctx, arb, i, &g, want_on, want_off);
        }
        if static_usage.is_some_and(|u| u >= thr) && g.switchover.is_none() {
            let target = arb.members.iter().find(|m| {
                m.instance != g.static_primary
                    && m.report.as_ref().is_some_and(|r| {
                        r.role == DnRole::Standby
                            && r.db_state == DbState::Normal
                            && u64::from(r.data_disk_pct) < thr
                    })
                    && !m.timed_out(ctx.now, ctx.params)
            })?;
            return Some(SwitchoverWish {
                group: arb.id,
                target: target.instance,
            });
        }
        None
    }

    fn prealarm(&mut self, ctx: &mut Ctx<'_>, instance: InstanceId, u: u64) {
        let p = ctx.params;
        if u >= p.read_only_prealarm_pct() && u < p.datastorage_threshold_value_check {
            if self.prealarmed.insert(instance) {
                ctx.out.alarm(Alarm::StorageThresholdPreAlarm {
                    instance,
                    usage_pct: u8::try_from(u).unwrap_or(u8::MAX),
                });
            }
        } else if u < p.read_only_prealarm_pct() {
            self.prealarmed.remove(&instance);
        }
    }

    fn step_member(
        &mut self,
        ctx: &mut Ctx<'_>,
        arb: &mut GroupArbiter,
        i: usize,
        g: &GroupState,
        want_on: bool,
        want_off: bool,
    ) {
        let inst = arb.members[i].instance;
        if self.in_flight.contains_key(&inst) {
            return;
        }
        let Some(reported_ro) = arb.members[i]
            .report
            .as_ref()
            .filter(|r| setting_known(r))
            .map(|r| r.read_only)
        else {
            return;
        };
        use ReadOnlyState::{ExpectOff, ExpectOn, Off, On};
        let (transition, resend) = match fsm(g, inst) {
            // Read-only set by hand: left alone.
            Off if reported_ro => (None, None),
            Off if want_on => (Some((Off, ExpectOn)), None),
            ExpectOn if want_off => (Some((ExpectOn, ExpectOff)), None),
            On if want_off => (Some((On, ExpectOff)), None),
            ExpectOn | On if !reported_ro => (None, Some(true)),
            ExpectOff if want_on => (Some((ExpectOff, ExpectOn)), None),
            ExpectOff if reported_ro => (None, Some(false)),
            _ => (None, None),
        };
        if let Some((from, to)) = transition {
            self.propose(ctx, arb.id, inst, from, to);
            if to == ExpectOn {
                ctx.out.alarm(Alarm::TransactionReadOnly { instance: inst });
            }
        }
        if let Some(on) = resend {
            arb.members[i].send(ctx.out, ctx.now, CmsCommand::SetReadOnly { on });
        }
    }

    fn propose(
        &mut self,
        ctx: &mut Ctx<'_>,
        group: GroupId,
        instance: InstanceId,
        from: ReadOnlyState,
        to: ReadOnlyState,
    ) {
        if ctx
            .state
            .propose(Change::ReadOnly {
                group,
                instance,
                from,
                to,
            })
            .is_some()
        {
            self.in_flight.insert(instance, to);
        }
    }

    /// A report arrived: `ExpectOn` becomes `On` once the DN says read-only, `ExpectOff`
    /// becomes `Off` once it says not.
    pub fn on_report(&mut self, ctx: &mut Ctx<'_>, arb: &GroupArbiter, idx: usize) {
        let Some(g) = ctx.group(arb.id) else { return };
        let m = &arb.members[idx];
        let Some(r) = m.report.as_ref().filter(|r| setting_known(r)) else {
            return;
        };
        if self.in_flight.contains_key(&m.instance) {
            return;
        }
        match fsm(&g, m.instance) {
            ReadOnlyState::ExpectOn if r.read_only => {
                self.propose(
                    ctx,
                    arb.id,
                    m.instance,
                    ReadOnlyState::ExpectOn,
                    ReadOnlyState::On,
                );
            }
            ReadOnlyState::ExpectOff if !r.read_only => {
                self.propose(
                    ctx,
                    arb.id,
                    m.instance,
                    ReadOnlyState::ExpectOff,
                    ReadOnlyState::Off,
                );
            }
            _ => {}
        }
    }

    /// A read-only transition committed: `ExpectOn`/`ExpectOff` send the command at once.
    pub fn on_outcome(
        &mut self,
        ctx: &mut Ctx<'_>,
        groups: &mut BTreeMap<GroupId, GroupArbiter>,
        outcome: &Outcome,
    ) {
        let Change::ReadOnly {
            group,
            instance,
            to,
            ..
        } = &outcome.change
        else {
            return;
        };
        self.in_flight.remove(instance);
        if outcome.result.is_err() {
            return;
        }
        let on = match to {
            ReadOnlyState::ExpectOn => true,
            ReadOnlyState::ExpectOff => false,
            _ => return,
        };
        let Some(arb) = groups.get_mut(group) else {
            return;
        };
        let Some(i) = arb.index_of(*instance) else {
            return;
        };
        arb.members[i].send(ctx.out, ctx.now, CmsCommand::SetReadOnly { on });
    }
}

fn fsm(g: &GroupState, instance: InstanceId) -> ReadOnlyState {
    g.read_only.get(&instance).copied().unwrap_or_default()
}

#[cfg(test)]
#[path = "read_only_tests.rs"]
mod tests;

/// Whether a report's `read_only` says something: only a running DN whose status query
/// answered knows its setting. A DN that is down or unreadable reports `false` for "unknown",
/// which must not confirm `ExpectOff` (swarm seed 132: the DN was killed before `off` took
/// effect, came back read-only, and was then taken for a manual setting).
fn setting_known(r: &crate::dn::DnReport) -> bool {
    use crate::dn::{DbState, DnRole};
    matches!(r.role, DnRole::Primary | DnRole::Standby | DnRole::Pending)
        && r.db_state != DbState::Unknown
}
