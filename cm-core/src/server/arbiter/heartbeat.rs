//! Heartbeat timeouts (§4.3), driven by ticks: a silent member is Unknown after half of
//! `instance_heartbeat_timeout` ([`super::Member::role`]); after all of it the group's round
//! counters are raised past every wait, once per second, so a dead node's group is not held
//! by the wait that exists to let a restarted old primary win back its role.

use core::time::Duration;

use crate::params::Params;

use super::{Ctx, GroupArbiter};

/// Rounds past every wait: the static primary's 5, `wait_static_primary_times`,
/// `cluster_starting_arbit_delay` and `delay_arbitrate_timeout`.
pub(crate) fn raised_rounds(params: &Params) -> u64 {
    Params::STATIC_PRIMARY_WAIT_ROUNDS
        .max(params.candidate_wait_rounds(false))
        .max(params.cluster_starting_arbit_delay)
        .max(params.delay_arbitrate_timeout)
        + 1
}

impl GroupArbiter {
    /// A tick: raise the rounds if a member's heartbeat expired, then arbitrate.
    pub fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        if !ctx.halted() {
            self.raise_rounds(ctx);
        }
        self.arbitrate(ctx);
    }

    fn raise_rounds(&mut self, ctx: &mut Ctx<'_>) {
        let Some(g) = ctx.group(self.id) else {
            return;
        };
        let expired = self
            .members
            .iter()
            .any(|m| m.heartbeat_expired(ctx.now, ctx.params));
        if !expired || self.valid_primary(ctx, &g).is_some() {
            self.last_raise = None;
            return;
        }
        let due = self
            .last_raise
            .is_none_or(|t| ctx.now.saturating_since(t) >= Duration::from_secs(1));
        if due {
            let raised = raised_rounds(ctx.params);
            for m in &mut self.members {
                m.rounds = m.rounds.max(raised);
            }
            self.last_raise = Some(ctx.now);
        }
    }
}

#[cfg(test)]
#[path = "heartbeat_tests.rs"]
mod tests;
