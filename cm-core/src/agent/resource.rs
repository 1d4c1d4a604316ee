//! Custom resources on this node (SPEC §14): the agent checks each instance every
//! `check_interval` with its script and keeps it running or stopped as intended.
//!
//! Rules, per instance (one script run in flight at a time):
//! - **Cadence**: `-check` every `check_interval`; the first one runs before anything else, so a
//!   restarted agent *adopts* an instance that checks online instead of starting it again.
//! - **Online streak**: 5 online checks in a row reset the restart counter (the counting window).
//! - **Restart**: offline and wanted (no flag, no cluster stop, not paused, placement here) →
//!   `-start` at `offline since + restart_delay`, and no sooner than `restart_period` after the
//!   previous restart. A restart is followed at once by a `-check`.
//! - **Budget**: when `restart_times` restarts were spent in the window, the agent writes
//!   `instance_manual_start_<id>` (the manual stop) and raises an alarm instead of restarting.
//! - **Abnormal**: abnormal for `abnormal_timeout` → `-clean`, then treated as offline.
//! - **Stopping** (flag, cluster stop, placement away): a check that does not say offline runs
//!   `-stop`; still not offline `time_out` after it → `-clean` (and again every `time_out`).
//! - **Pause**: nothing is started, nothing is stopped — a placement moving away included
//!   (only an operator's flag or cluster stop still stops, §2).
//! - **Hand-over** (`with_primary_of`): only a peer's `Stopped` counts as proof it is down; an
//!   instance with a `-start` not yet followed by a `-check` is reported Unknown. Without that
//!   proof a node waits `fencing floor + 2 × time_out × (1 + ρ)/(1 − ρ)` from the peer node's
//!   last report (as the leader relays it, [`crate::resource::handover_wait`]).
//!
//! # When a `with_primary_of` resource moves (§14's timing, as we read it)
//!
//! §14 asks for two things that cannot both hold when a node crashes: the resource "runs on
//! the new primary's node ≤ 2 s after that node's DN reports Primary", and the new node starts
//! it only after the old node reported it stopped or after the fencing floor + 2 × `time_out`
//! × (1 + ρ)/(1 − ρ) since the old node's last report. A crashed node reports nothing, the
//! failover comes ≈ 8–9 s after its last report, and with the default `time_out` (10 s) the
//! hand-over wait is ≈ 28 s: the 2 s after the promotion would mean running the resource on two
//! nodes at once, which S7 forbids without exception. So the hand-over rule wins and the 2 s
//! count from the **later** of
//! 1. the new primary's node reported its DN Primary (and the leader's answer granted the
//!    write lease, the lease-and-role part of §15's `/primary`), and
//! 2. the hand-over rule is satisfied: the old holder was reported `Stopped`, or the hand-over
//!    wait has passed since its node's last report.
//!
//! The agent meets it with a margin: the gate is re-evaluated on every tick (at least every
//! 200 ms) and at each leader answer, and a gate that turns to Run triggers a `-check` at once,
//! then the `-start` (restart delay counted from when the instance was first seen offline).
//! With defaults a crashed primary's resource thus moves ≈ 28 s after that node's last report
//! (≈ 19 s after the promotion), a switchover's within ≈ 2 s of the old node's `Stopped`
//! report. The simulator asserts both (`cm-sim/tests/resources.rs`).
//!
//! The driver runs the script ([`AgentCommand::RunScript`]) and answers with
//! [`AgentInput::ScriptCompleted`]; the script's path and arguments come from the config.

use core::time::Duration;

use crate::config::{ClusterConfig, Placement, ResourceConfig};
use crate::flags::Flag;
use crate::ids::{GroupId, InstanceId, OpId};
use crate::io::Alarm;
use crate::msg::PeerResource;
use crate::resource::{ResourceReport, ResourceState, ScriptExit, ScriptVerb};
use crate::time::Instant;

use super::{Agent, AgentCommand};

/// Online checks in a row that reset the restart counter (§14).
pub const ONLINE_STREAK_RESET: u32 = 5;

/// A written manual stop not seen in the flags this long after (five flag reads) is written
/// again: the write failed.
pub(super) const FLAG_WRITE_RETRY: Duration = Duration::from_secs(5);

/// Another node's resource instance as the leader last relayed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct PeerRes {
    /// Its state in its node's newest report (`None`: never reported).
    pub(super) state: Option<ResourceState>,
    /// That report was received no later than this (this agent's clock).
    pub(super) reported_by: Instant,
}

/// Why an instance must not run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Gate {
    /// It should run: start it when offline.
    Run,
    /// Leave it as it is (paused, flags not read yet, hand-over not clear).
    Hold,
    /// Stopped by intent: stop it when it runs, report `Stopped` when offline.
    Stop,
}

/// One resource instance of this node.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ResInst {
    id: InstanceId,
    cfg: ResourceConfig,
    in_flight: Option<(OpId, ScriptVerb)>,
    next_check: Instant,
    /// What the newest `-check` said (`None`: not checked yet).
    seen: Option<ResourceState>,
    online_streak: u32,
    restarts: u32,
    last_restart: Option<Instant>,
    offline_since: Option<Instant>,
    restart_at: Option<Instant>,
    abnormal_since: Option<Instant>,
    stop_sent: Option<Instant>,
    /// The manual stop was (last) written at this instant; waiting to see the flag. Not seen
    /// [`FLAG_WRITE_RETRY`] later (the write failed), it is written again.
    budget_spent: Option<Instant>,
    /// Stopping by intent reached `-clean`: down as far as the agent can make it.
    stop_cleaned: bool,
    /// A `-start` was sent and no `-check` has completed since: the program may be up
    /// whatever the previous check said, so the instance is reported Unknown, never
    /// Offline or Stopped (another node would take that as the hand-over, §14).
    unconfirmed_start: bool,
    gate: Gate,
}

impl ResInst {
    /// The resource instances of `node`, in config order.
    pub(super) fn for_node(config: &ClusterConfig, node: crate::ids::NodeId) -> Vec<Self> {
        let mut out = Vec::new();
        for r in &config.resources {
            for i in r.instances.iter().filter(|i| i.node == node) {
                out.push(Self {
                    id: i.id,
                    cfg: r.clone(),
                    in_flight: None,
                    next_check: Instant::ZERO,
                    seen: None,
                    online_streak: 0,
                    restarts: 0,
                    last_restart: None,
                    offline_since: None,
                    restart_at: None,
                    abnormal_since: None,
                    stop_sent: None,
                    budget_spent: None,
                    stop_cleaned: false,
                    unconfirmed_start: false,
                    gate: Gate::Hold,
                });
            }
        }
        out
    }

    /// The state to report.
    pub(super) fn state(&self) -> ResourceState {
        match self.seen {
            None => ResourceState::Unknown,
            Some(ResourceState::Offline) if self.unconfirmed_start => ResourceState::Unknown,
            Some(ResourceState::Offline) if self.gate == Gate::Stop => ResourceState::Stopped,
            Some(s) => s,
        }
    }

    /// The group it follows, for `with_primary_of`.
    pub(super) fn follows(&self) -> Option<GroupId> {
        match self.cfg.placement {
            Placement::Fixed => None,
            Placement::WithPrimaryOf(g) => Some(g),
        }
    }

    /// The next instant it wants a tick (none while a script runs: its completion comes).
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        Some(match self.restart_at {
            Some(at) => at.min(self.next_check),
            None => self.next_check,
        })
    }

    /// Down for a cluster stop: nothing in flight, and checked offline or cleaned (a script
    /// that cannot tell must not keep the agent from exiting).
    pub(super) fn down(&self) -> bool {
        self.in_flight.is_none() && (self.seen == Some(ResourceState::Offline) || self.stop_cleaned)
    }

    /// Plain data for status and reports.
    pub(super) fn report(&self) -> ResourceReport {
        ResourceReport {
            instance: self.id,
            state: self.state(),
        }
    }
}

impl Agent {
    /// Why resource instance `id` must (not) run now: cluster stop and its flag stop it; before
    /// the flags are read, while paused, or while a hand-over is not clear, it is left alone.
    pub(super) fn resource_gate(&self, now: Instant, r: &ResInst) -> Gate {
        let Some(flags) = &self.flags else {
            return Gate::Hold;
        };
        if flags.cluster_manual_start.is_some() || flags.instance_manual_start.contains_key(&r.id) {
            return Gate::Stop;
        }
        if self.paused(now) {
            // §2/§14: while paused CM starts and stops nothing, placement included (an
            // operator's flag above still stops).
            return Gate::Hold;
        }
        match r.follows() {
            Some(group) => self.placement_here(now, group, r),
            None => Gate::Run,
        }
    }

    /// Re-evaluates every instance's gate (the inputs behind it changed). With `look`, an
    /// instance whose new gate asks for action is checked at once rather than at its next
    /// check: a primary's resource starts, a deposed one's stops, without a check interval's
    /// delay.
    fn refresh_gates(&mut self, now: Instant, look: bool) {
        let gates: Vec<Gate> = self
            .res
            .iter()
            .map(|r| self.resource_gate(now, r))
            .collect();
        for (r, g) in self.res.iter_mut().zip(gates) {
            let offline = r.seen == Some(ResourceState::Offline);
            let act = match g {
                Gate::Stop => !offline && r.stop_sent.is_none(),
                Gate::Run => offline && r.restart_at.is_none(),
                Gate::Hold => false,
            };
            if look && r.gate != g && act && r.in_flight.is_none() {
                r.next_check = r.next_check.min(now);
            }
            r.gate = g;
        }
    }

    /// The resource loop: due checks, due restarts, and stops that intent now asks for.
    pub(super) fn resource_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        self.refresh_gates(now, true);
        for i in 0..self.res.len() {
            if self.res[i].in_flight.is_some() {
                continue;
            }
            let r = &self.res[i];
            if r.restart_at.is_some_and(|at| now >= at) {
                self.try_restart(now, i, out);
                if self.res[i].in_flight.is_some() {
                    continue;
                }
            }
            if now >= self.res[i].next_check {
                self.run_script(i, ScriptVerb::Check, out);
                let r = &mut self.res[i];
                r.next_check = now + r.cfg.check_interval;
            }
        }
    }

    fn run_script(&mut self, i: usize, verb: ScriptVerb, out: &mut Vec<AgentCommand>) {
        let op = self.op();
        let r = &mut self.res[i];
        r.in_flight = Some((op, verb));
        r.unconfirmed_start |= verb == ScriptVerb::Start;
        out.push(AgentCommand::RunScript {
            op,
            instance: r.id,
            verb,
            timeout: r.cfg.time_out,
        });
    }

    /// A script finished.
    pub(super) fn on_script(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        exit: ScriptExit,
        out: &mut Vec<AgentCommand>,
    ) {
        let Some(i) = self.res.iter().position(|r| r.id == id) else {
            return;
        };
        let Some((expected, verb)) = self.res[i].in_flight else {
            return;
        };
        if expected != op {
            return;
        }
        self.res[i].in_flight = None;
        self.refresh_gates(now, false);
        if verb != ScriptVerb::Check && exit != ScriptExit::Code(0) {
            tracing::warn!(resource = %self.res[i].cfg.name, instance = %id, verb = verb.arg(),
                ?exit, "resource script failed");
        }
        match verb {
            ScriptVerb::Check => {
                // This check ran after any start completed (one script at a time).
                self.res[i].unconfirmed_start = false;
                self.on_check(now, i, exit.check_state(), out);
            }
            ScriptVerb::Start | ScriptVerb::Stop => self.res[i].next_check = now,
            ScriptVerb::Clean => {
                let r = &mut self.res[i];
                if r.abnormal_since.is_some() && r.gate != Gate::Stop {
                    // Cleaned after abnormal_timeout: now offline, the restart rule applies.
                    r.abnormal_since = None;
                    self.on_check(now, i, ResourceState::Offline, out);
                } else {
                    r.next_check = now;
                }
            }
        }
    }

    fn on_check(
        &mut self,
        now: Instant,
        i: usize,
        state: ResourceState,
        out: &mut Vec<AgentCommand>,
    ) {
        let r = &mut self.res[i];
        r.seen = Some(state);
        if state == ResourceState::Online {
            r.online_streak += 1;
            if r.online_streak >= ONLINE_STREAK_RESET {
                r.restarts = 0;
            }
        } else {
            r.online_streak = 0;
        }
        if state != ResourceState::Offline {
            r.offline_since = None;
            r.restart_at = None;
        }
        if state != ResourceState::Abnormal {
            r.abnormal_since = None;
        }
        match (r.gate, state) {
            (_, ResourceState::Offline) => {
                r.stop_sent = None;
                r.stop_cleaned = false;
                let since = *r.offline_since.get_or_insert(now);
                r.restart_at = (r.gate == Gate::Run).then(|| {
                    let after_delay = since + r.cfg.restart_delay;
                    r.last_restart
                        .map_or(after_delay, |l| after_delay.max(l + r.cfg.restart_period))
                });
                if r.restart_at.is_some_and(|at| now >= at) {
                    self.try_restart(now, i, out);
                }
            }
            (Gate::Stop, _) => {
                let verb = match r.stop_sent {
                    None => ScriptVerb::Stop,
                    Some(at) if now >= at + r.cfg.time_out => ScriptVerb::Clean,
                    Some(_) => return,
                };
                r.stop_sent = Some(now);
                r.stop_cleaned |= verb == ScriptVerb::Clean;
                self.run_script(i, verb, out);
            }
            (_, ResourceState::Abnormal) => {
                r.stop_sent = None;
                let since = *r.abnormal_since.get_or_insert(now);
                if now >= since + r.cfg.abnormal_timeout {
                    self.run_script(i, ScriptVerb::Clean, out);
                }
            }
            _ => r.stop_sent = None,
        }
    }

    /// Restarts instance `i` if it is still wanted and its budget allows; writes the manual
    /// stop and alarms when the budget is spent.
    fn try_restart(&mut self, now: Instant, i: usize, out: &mut Vec<AgentCommand>) {
        let gate = self.resource_gate(now, &self.res[i]);
        let r = &mut self.res[i];
        r.gate = gate;
        if gate != Gate::Run {
            r.restart_at = None;
            return;
        }
        if r.cfg.restart_times.is_some_and(|n| r.restarts >= n) {
            r.restart_at = None;
            if let Some(at) = r.budget_spent {
                if now >= at + FLAG_WRITE_RETRY {
                    r.budget_spent = Some(now);
                    tracing::warn!(resource = %r.cfg.name, instance = %r.id,
                        "the resource's manual stop is still not seen: writing it again");
                    out.push(AgentCommand::WriteFlag {
                        flag: Flag::InstanceManualStart(r.id),
                    });
                }
            } else {
                r.budget_spent = Some(now);
                let (id, name) = (r.id, r.cfg.name.clone());
                tracing::warn!(resource = %name, instance = %id, restarts = r.restarts,
                    "resource restart budget spent: stopping it manually");
                out.push(AgentCommand::WriteFlag {
                    flag: Flag::InstanceManualStart(id),
                });
                self.alarm(
                    now,
                    Alarm::ResourceRestartBudgetSpent {
                        instance: id,
                        resource: name,
                    },
                    out,
                );
            }
            return;
        }
        r.restarts += 1;
        r.last_restart = Some(now);
        r.restart_at = None;
        r.offline_since = None;
        self.run_script(i, ScriptVerb::Start, out);
    }

    /// The flags changed: a manual stop that appeared renews the instance's budget (an
    /// operator's `cm_ctl start -I` starts it afresh), and intent is re-evaluated.
    pub(super) fn resources_on_flags(&mut self, now: Instant) {
        let Some(flags) = &self.flags else { return };
        let flagged: Vec<bool> = self
            .res
            .iter()
            .map(|r| flags.keeps_stopped(r.id).is_some())
            .collect();
        for (r, flagged) in self.res.iter_mut().zip(flagged) {
            if flagged {
                r.budget_spent = None;
                r.restarts = 0;
            }
        }
        self.refresh_gates(now, true);
    }

    /// Every resource instance is down (a cluster stop may let the agent exit).
    pub(super) fn resources_down(&self) -> bool {
        self.res.iter().all(ResInst::down)
    }

    /// The earliest resource deadline.
    pub(super) fn resource_deadline(&self) -> Option<Instant> {
        self.res.iter().filter_map(ResInst::deadline).min()
    }

    /// Whether a `with_primary_of` instance may run on this node (§14): the local DN of the
    /// group holds the write lease (the lease-and-role part of `/primary`, §15) — else it is
    /// stopped — and the hand-over is clear: every other instance of the resource was last
    /// reported `Stopped`, or its node's last report is older than the hand-over wait — else
    /// it is left alone until then. `Offline` is no proof: that node may want it running and
    /// start it; a node reports `Stopped` only with no `-start` unconfirmed.
    ///
    /// A restarted agent does not know yet whether its DN is the primary (no leader view, or
    /// the DN's role not read yet): until its start + the lease window it leaves the instance
    /// alone (an online one is adopted, not stopped); a DN read as a non-primary stops it.
    fn placement_here(&self, now: Instant, group: GroupId, r: &ResInst) -> Gate {
        let Some(inst) = self.insts.values().find(|i| i.gid == group) else {
            return Gate::Stop;
        };
        if self.write_lease(inst.id, now).is_err() {
            let role_unread = inst.status.is_none();
            let primary_unconfirmed =
                inst.view.is_none() && inst.known_role() == Some(crate::dn::DnRole::Primary);
            let started = self.started_at.unwrap_or(now);
            let learning = now < started + super::lease_window(&self.params);
            return if learning && (role_unread || primary_unconfirmed) {
                Gate::Hold
            } else {
                Gate::Stop
            };
        }
        if self.handover_clear(now, r) {
            Gate::Run
        } else {
            Gate::Hold
        }
    }

    /// §14's hand-over rule for `r` at `now`: every other instance of the resource was last
    /// reported `Stopped`, or its node's last report is older than the hand-over wait.
    fn handover_clear(&self, now: Instant, r: &ResInst) -> bool {
        let wait = self.handover_wait(r);
        r.cfg
            .instances
            .iter()
            .filter(|i| i.id != r.id)
            .all(|other| {
                self.peer_res.get(&other.id).is_some_and(|peer| {
                    peer.state == Some(ResourceState::Stopped) || now >= peer.reported_by + wait
                })
            })
    }

    /// Whether §14's hand-over rule lets local resource instance `instance` start at `now`
    /// (what the simulator measures the placement bound from; see the module documentation).
    /// `None` for an instance that is not a local `with_primary_of` one.
    pub fn resource_handover_clear(&self, now: Instant, instance: InstanceId) -> Option<bool> {
        let r = self.res.iter().find(|r| r.id == instance)?;
        r.follows()?;
        Some(self.handover_clear(now, r))
    }

    /// A leader's answer with its relay of other nodes' resource instances, received at `now`: each one's
    /// report time is at most `now − age` (the reply left the leader before `now`); the newest
    /// estimate wins.
    pub(super) fn note_peer_resources(&mut self, now: Instant, relayed: &[PeerResource]) {
        for p in relayed {
            let reported_by = now.saturating_sub(p.age);
            let known = self.peer_res.entry(p.instance).or_insert(PeerRes {
                state: p.state,
                reported_by,
            });
            if reported_by >= known.reported_by {
                *known = PeerRes {
                    state: p.state,
                    reported_by,
                };
            }
        }
        // The answer may also have granted or renewed the write lease.
        self.refresh_gates(now, true);
    }

    /// The interval a hand-over waits after the previous node's last report (§14).
    pub(super) fn handover_wait(&self, r: &ResInst) -> Duration {
        crate::resource::handover_wait(
            self.params.fencing_floor(),
            r.cfg.time_out,
            self.params.drift_up(),
        )
    }
}

#[cfg(test)]
#[path = "resource_tests.rs"]
mod tests;
