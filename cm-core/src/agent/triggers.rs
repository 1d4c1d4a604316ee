//! Event triggers (SPEC.md §15, CM's `event_triggers`): WHEN an operator script runs is decided
//! here, from what the agent observes of its DNs; the daemon only runs it.
//!
//! - `on_start` / `on_stop`: a process sample finds the DN running after one found it stopped,
//!   or the reverse (the first sample after the agent starts only sets the baseline).
//! - `on_role_change`: a successful status query finds it Primary or Standby while the last one
//!   that found either found the other (a stop in between does not reset it, so a primary that
//!   crashes and comes back as a standby fires it).
//! - `on_failover` / `on_switchover`: a status query finds it Primary at the term of the
//!   Failover/Switchover this agent promoted it for (after the promotion took effect). Which
//!   one is the reason the deciding CMS leader sent with the command: a Failover for a
//!   switchover's abort (the old primary restored) fires `on_switchover`, and one for the
//!   group's start (the cluster's first primary, `cm_ctl start`) fires no promotion trigger —
//!   a start is not a failover — but `on_role_change` once it is seen Primary, if the role
//!   rule above did not already fire it (a DN started pending had no Primary/Standby role).
//!
//! A trigger is fire-and-forget: [`AgentCommand::RunTrigger`] has no answer and no decision
//! waits for it, so a hanging or failing script cannot delay or block anything (the daemon kills
//! it after [`TRIGGER_TIMEOUT`] and counts the failure).

use core::time::Duration;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::EventTriggers;
use crate::dn::DnRole;
use crate::history::PromotionReason;
use crate::ids::{InstanceId, Term};

use super::AgentCommand;

/// The daemon SIGKILLs a trigger's process group after this long (§15).
pub const TRIGGER_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TriggerEvent {
    /// `on_start`.
    Start,
    /// `on_stop`.
    Stop,
    /// `on_failover`.
    Failover,
    /// `on_switchover`.
    Switchover,
    /// `on_role_change`.
    RoleChange,
}

impl TriggerEvent {
    /// The config key, also the script's first argument.
    pub fn key(self) -> &'static str {
        match self {
            Self::Start => "on_start",
            Self::Stop => "on_stop",
            Self::Failover => "on_failover",
            Self::Switchover => "on_switchover",
            Self::RoleChange => "on_role_change",
        }
    }
}

/// One script to run: `program EVENT INSTANCE ROLE TERM`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRun {
    /// The configured absolute path.
    pub program: String,
    /// The event.
    pub event: TriggerEvent,
    /// The DN.
    pub instance: InstanceId,
    /// Its role when the event was seen (for `on_stop`: the last role known).
    pub role: DnRole,
    /// Its CM term (for `on_failover`/`on_switchover`: the promotion's term).
    pub term: Term,
}

impl TriggerRun {
    /// The script's arguments.
    pub fn args(&self) -> Vec<String> {
        vec![
            self.event.key().to_string(),
            self.instance.0.to_string(),
            role_arg(self.role).to_string(),
            self.term.0.to_string(),
        ]
    }
}

fn role_arg(role: DnRole) -> &'static str {
    match role {
        DnRole::Primary => "primary",
        DnRole::Standby => "standby",
        DnRole::Pending => "pending",
        DnRole::Down => "down",
        _ => "unknown",
    }
}

/// What the triggers remember of one DN.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seen {
    running: Option<bool>,
    /// The last Primary/Standby role a status query found.
    role: Option<DnRole>,
    /// A Failover/Switchover accepted for this DN: (term, why), until it is seen Primary.
    promotion: Option<(Term, PromotionReason)>,
}

/// The trigger rules of one agent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Triggers {
    config: EventTriggers,
    seen: BTreeMap<InstanceId, Seen>,
}

impl Triggers {
    pub(super) fn new(config: &EventTriggers) -> Self {
        Self {
            config: config.clone(),
            seen: BTreeMap::new(),
        }
    }

    fn path(&self, event: TriggerEvent) -> Option<&String> {
        let c = &self.config;
        match event {
            TriggerEvent::Start => c.on_start.as_ref(),
            TriggerEvent::Stop => c.on_stop.as_ref(),
            TriggerEvent::Failover => c.on_failover.as_ref(),
            TriggerEvent::Switchover => c.on_switchover.as_ref(),
            TriggerEvent::RoleChange => c.on_role_change.as_ref(),
        }
    }

    fn fire(
        &self,
        event: TriggerEvent,
        instance: InstanceId,
        role: DnRole,
        term: Term,
        out: &mut Vec<AgentCommand>,
    ) {
        if let Some(program) = self.path(event) {
            out.push(AgentCommand::RunTrigger(TriggerRun {
                program: program.clone(),
                event,
                instance,
                role,
                term,
            }));
        }
    }

    /// A fresh process sample of `instance`.
    pub(super) fn on_sample(
        &mut self,
        instance: InstanceId,
        running: bool,
        term: Term,
        out: &mut Vec<AgentCommand>,
    ) {
        let seen = self.seen.entry(instance).or_default();
        let before = seen.running.replace(running);
        let role = seen.role.unwrap_or(DnRole::Unknown);
        match (before, running) {
            (Some(false), true) => self.fire(TriggerEvent::Start, instance, role, term, out),
            (Some(true), false) => self.fire(TriggerEvent::Stop, instance, role, term, out),
            _ => {}
        }
    }

    /// The agent accepted a Failover or Switchover (`reason` Switchover) at `term`.
    pub(super) fn on_promotion_ordered(
        &mut self,
        instance: InstanceId,
        term: Term,
        reason: PromotionReason,
    ) {
        self.seen.entry(instance).or_default().promotion = Some((term, reason));
    }

    /// A successful status query found `role`; `term` is the DN's CM term.
    pub(super) fn on_status(
        &mut self,
        instance: InstanceId,
        role: DnRole,
        term: Term,
        out: &mut Vec<AgentCommand>,
    ) {
        if !matches!(role, DnRole::Primary | DnRole::Standby) {
            return;
        }
        let seen = self.seen.entry(instance).or_default();
        let before = seen.role.replace(role);
        let promoted = match seen.promotion {
            Some((t, reason)) if role == DnRole::Primary && term >= t => {
                seen.promotion = None;
                Some((t, reason))
            }
            _ => None,
        };
        let role_changed = before.is_some_and(|b| b != role);
        if role_changed {
            self.fire(TriggerEvent::RoleChange, instance, role, term, out);
        }
        match promoted {
            Some((_, PromotionReason::Start))
                if !role_changed && before != Some(DnRole::Primary) =>
            {
                self.fire(TriggerEvent::RoleChange, instance, role, term, out);
            }
            Some((_, PromotionReason::Start)) => {}
            Some((t, PromotionReason::Switchover)) => {
                self.fire(TriggerEvent::Switchover, instance, role, t, out);
            }
            Some((t, _)) => self.fire(TriggerEvent::Failover, instance, role, t, out),
            None => {}
        }
    }
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
