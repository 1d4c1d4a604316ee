//! The split-brain rule of §8: when the primary's agent falls silent while a standby still
//! receives WAL from it (fresh streaming evidence), the primary is alive and keeps serving — no
//! Lock1 — until the evidence stops or `split_brain_timeout` passed since the agent's last
//! report; then the fence command runs, Lock1 goes out, and the Failover waits for a Lock1
//! quorum and either a successful fence command or `split_brain_fence_wait` since the standbys
//! stopped streaming.

use crate::io::Alarm;
use crate::state::GroupState;
use crate::time::Instant;

use super::{Ctx, GroupArbiter};

/// An incident "primary alive but its agent silent".
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitBrain {
    /// Index of the silent old primary among the members.
    pub silent: usize,
    /// Receipt of its agent's newest report.
    pub since: Instant,
    /// The newest instant a standby received a message from it.
    pub last_stream: Instant,
    /// The fence command was started (or there is none and the timeout passed).
    pub fence_started: bool,
    /// The fence command exited 0.
    pub fence_ok: bool,
}

impl GroupArbiter {
    /// The silent old primary: it may be a primary (its newest report said Primary, or a
    /// promotion sent to it is unresolved) and it has timed out.
    /// Among several, the one standbys still stream from (a dead or stale one earlier in
    /// config order must not hide the live one's evidence), else the first.
    fn silent_primary(&self, ctx: &Ctx<'_>, g: &GroupState) -> Option<usize> {
        let silent: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let m = &self.members[i];
                m.may_be_primary(g.static_primary) && m.timed_out(ctx.now, ctx.params)
            })
            .collect();
        silent
            .iter()
            .copied()
            .find(|&i| self.streaming_evidence(ctx, i).1)
            .or_else(|| silent.first().copied())
    }

    /// The newest message any standby received from member `old` after its agent went silent,
    /// and whether it is fresh (within the freshness window).
    fn streaming_evidence(&self, ctx: &Ctx<'_>, old: usize) -> (Option<Instant>, bool) {
        let since = self.members[old].receipt;
        let inst = self.members[old].instance;
        let window = ctx.params.freshness_window();
        let latest = self
            .members
            .iter()
            .filter_map(|m| {
                let up = m.report.as_ref()?.upstream?;
                (up.instance == inst && up.last_msg_age <= window)
                    .then(|| m.receipt - up.last_msg_age)
            })
            .filter(|&at| at > since)
            .max();
        let fresh = latest.is_some_and(|at| ctx.now.saturating_since(at) <= window);
        (latest, fresh)
    }

    /// Whether the failover path may go on (send Lock1). False while fresh evidence defers it.
    pub(super) fn split_brain_gate(&mut self, ctx: &mut Ctx<'_>, g: &GroupState) -> bool {
        let Some(old) = self.silent_primary(ctx, g) else {
            self.split = None;
            return true;
        };
        let (latest, fresh) = self.streaming_evidence(ctx, old);
        if self.split.as_ref().is_some_and(|s| s.silent != old) {
            self.split = None;
        }
        let since = self.members[old].receipt;
        match (&mut self.split, latest) {
            (None, Some(at)) if fresh => {
                tracing::info!(
                    group = self.id.0,
                    silent_primary = self.members[old].instance.0,
                    "primary silent but its standbys still stream from it: failover deferred \
                     until the split-brain timeout"
                );
                ctx.out.alarm(Alarm::PrimaryAliveButSilent {
                    group: self.id,
                    instance: self.members[old].instance,
                });
                self.split = Some(SplitBrain {
                    silent: old,
                    since,
                    last_stream: at,
                    fence_started: false,
                    fence_ok: false,
                });
            }
            (None, _) => return true,
            (Some(s), Some(at)) if at > s.last_stream => s.last_stream = at,
            (Some(_), _) => {}
        }
        let timeout = ctx.params.split_brain_timeout(ctx.cms_count);
        if ctx.now < since + timeout {
            if fresh {
                return false;
            }
            // The evidence stopped before the timeout: the normal path of §4.3 resumes.
            self.split = None;
            return true;
        }
        let Some(s) = self.split.as_mut() else {
            return true;
        };
        if !s.fence_started {
            s.fence_started = true;
            tracing::info!(
                group = self.id.0,
                silent_primary = self.members[old].instance.0,
                timeout_s = timeout.as_secs(),
                fence_command = !ctx.params.fence_command.is_empty(),
                "split-brain timeout reached: the silent primary's standbys still stream from \
                 it; failover may go on once it is fenced"
            );
            if !ctx.params.fence_command.is_empty() {
                let m = &self.members[old];
                ctx.out.fence(self.id, m.instance, m.node);
            }
        }
        true
    }

    /// After the timeout: the fence command succeeded, or the silent primary has had time to
    /// notice its stale streaming rows and fence itself.
    pub(super) fn split_brain_allows_failover(&self, ctx: &Ctx<'_>) -> bool {
        self.split.as_ref().is_none_or(|s| {
            s.fence_ok || ctx.now >= s.last_stream + ctx.params.split_brain_fence_wait()
        })
    }

    /// The fence command finished.
    pub fn on_fence_command_done(&mut self, success: bool) {
        if let Some(s) = &mut self.split {
            s.fence_ok = success;
        }
    }
}

#[cfg(test)]
#[path = "split_brain_tests.rs"]
mod tests;
