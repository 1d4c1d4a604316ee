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

use super::arbiter::dual_primary::{RESTARTS_1H_LIMIT, RESTARTS_10MIN_LIMIT};
use super::arbiter::{Ctx, GroupArbiter};

/// A switchover the read-only rule asks for: the static primary's disk is over the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchoverWish {
    /// The group.
    pub group: GroupId,
    /// A healthy standby below the threshold.
    pub target: InstanceId,
}

/// One read-only transition the leader proposes, with the inputs that decided it. Its
/// `Display` is the one INFO line the leader logs (plain values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOnlyDecision {
    /// The group.
    pub group: GroupId,
    /// The instance.
    pub instance: InstanceId,
    /// Its reported data-disk usage, percent.
    pub usage_pct: u64,
    /// `datastorage_threshold_value_check`.
    pub threshold: u64,
    /// Read-only is cleared below this (threshold − 5).
    pub clear_below: u64,
    /// The group's static primary is over the threshold: the whole group goes read-only.
    pub forced: bool,
    /// The DN reports read-only.
    pub reported_read_only: bool,
    /// FSM state before.
    pub from: ReadOnlyState,
    /// FSM state proposed.
    pub to: ReadOnlyState,
}

impl ReadOnlyDecision {
    fn why(&self) -> &'static str {
        match self.to {
            ReadOnlyState::ExpectOn if self.usage_pct >= self.threshold => {
                "set read-only: disk usage at or above the threshold"
            }
            ReadOnlyState::ExpectOn => {
                "set read-only: the group's static primary is over the threshold"
            }
            ReadOnlyState::ExpectOff => "clear read-only: disk usage below the clear level",
            ReadOnlyState::On => "read-only confirmed: the DN reports it",
            ReadOnlyState::Off => "read-only cleared: the DN reports read-write",
        }
    }
}

fn state_name(s: ReadOnlyState) -> &'static str {
    match s {
        ReadOnlyState::Off => "off",
        ReadOnlyState::ExpectOn => "expect_on",
        ReadOnlyState::On => "on",
        ReadOnlyState::ExpectOff => "expect_off",
    }
}

impl core::fmt::Display for ReadOnlyDecision {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}: group={} instance={} usage_pct={} threshold={} clear_below={} \
             static_primary_over={} reported_read_only={} transition={}->{}",
            self.why(),
            self.group.0,
            self.instance.0,
            self.usage_pct,
            self.threshold,
            self.clear_below,
            self.forced,
            self.reported_read_only,
            state_name(self.from),
            state_name(self.to)
        )
    }
}

/// The leader-local part of the read-only rule.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
            self.step_member(ctx, arb, i, &g, u, forced);
        }
        if static_usage.is_some_and(|u| u >= thr) && g.switchover.is_none() {
            // Not to a member the restart-count rule (§4.4) would at once switch away from
            // again (swarm seed 290: the disk rule handed the primary to a crash-looped DN and
            // the restart rule moved it off 5 s later — four unrequested switchovers).
            let target = arb.members.iter().find(|m| {
                m.instance != g.static_primary
                    && m.report.as_ref().is_some_and(|r| {
                        r.role == DnRole::Standby
                            && r.db_state == DbState::Normal
                            && u64::from(r.data_disk_pct) < thr
                            && r.restarts_10min <= RESTARTS_10MIN_LIMIT
                            && r.restarts_1h <= RESTARTS_1H_LIMIT
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
        usage_pct: u64,
        forced: bool,
    ) {
        let (threshold, clear_below) = (
            ctx.params.datastorage_threshold_value_check,
            ctx.params.read_only_clear_pct(),
        );
        let want_on = usage_pct >= threshold || forced;
        let want_off = usage_pct < clear_below && !forced;
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
            self.propose(
                ctx,
                ReadOnlyDecision {
                    group: arb.id,
                    instance: inst,
                    usage_pct,
                    threshold,
                    clear_below,
                    forced,
                    reported_read_only: reported_ro,
                    from,
                    to,
                },
            );
            if to == ExpectOn {
                ctx.out.alarm(Alarm::TransactionReadOnly { instance: inst });
            }
        }
        if let Some(on) = resend {
            arb.members[i].send(ctx.out, ctx.now, CmsCommand::SetReadOnly { on });
        }
    }

    /// Proposes the decision's transition; logs it (one INFO line with its inputs) when proposed.
    fn propose(&mut self, ctx: &mut Ctx<'_>, d: ReadOnlyDecision) {
        if ctx
            .state
            .propose(Change::ReadOnly {
                group: d.group,
                instance: d.instance,
                from: d.from,
                to: d.to,
            })
            .is_some()
        {
            tracing::info!("{d}");
            self.in_flight.insert(d.instance, d.to);
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
        let (from, to) = match fsm(&g, m.instance) {
            ReadOnlyState::ExpectOn if r.read_only => (ReadOnlyState::ExpectOn, ReadOnlyState::On),
            ReadOnlyState::ExpectOff if !r.read_only => {
                (ReadOnlyState::ExpectOff, ReadOnlyState::Off)
            }
            _ => return,
        };
        let p = ctx.params;
        let static_over = arb
            .member(g.static_primary)
            .and_then(|s| s.report.as_ref())
            .is_some_and(|s| u64::from(s.data_disk_pct) >= p.datastorage_threshold_value_check);
        let d = ReadOnlyDecision {
            group: arb.id,
            instance: m.instance,
            usage_pct: u64::from(r.data_disk_pct),
            threshold: p.datastorage_threshold_value_check,
            clear_below: p.read_only_clear_pct(),
            forced: static_over,
            reported_read_only: r.read_only,
            from,
            to,
        };
        self.propose(ctx, d);
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
