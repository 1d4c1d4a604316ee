//! What follows once the group has a valid primary (§4.2 "Then"): Unlock a locked primary,
//! Unlock standbys on its timeline and Lock2 the others to it, Notify pending members, Build a
//! standby that diverged (one build at a time in groups of ≤ 2 standbys).

use crate::dn::{DbState, DnRole, LockState};
use crate::msg::CmsCommand;
use crate::state::GroupState;

use super::{Ctx, GroupArbiter};

impl GroupArbiter {
    pub(super) fn follow_up(&mut self, ctx: &mut Ctx<'_>, _g: &GroupState, p: usize) {
        let resend = ctx.resend_interval();
        let Some(pr) = self.members[p].report.clone() else {
            return;
        };
        let primary = self.members[p].instance;
        if matches!(pr.lock, LockState::Prohibit | LockState::Specified(_)) {
            self.members[p].send_unless_recent(
                ctx.out,
                ctx.now,
                CmsCommand::Unlock { primary },
                resend,
            );
        }
        // Without a history that matches its position the primary cannot judge divergence.
        let history_known = pr.history.timeline == pr.position.timeline;
        let mut builds = self.builds_in_progress(ctx);
        let limit = self.build_limit();
        for i in 0..self.members.len() {
            if i == p {
                continue;
            }
            let (role, Some(r)) = (
                self.members[i].role(ctx.now, ctx.params),
                self.members[i].report.clone(),
            ) else {
                continue;
            };
            let cmd = match role {
                DnRole::Pending => Some(CmsCommand::NotifyStandby { primary }),
                DnRole::Standby => {
                    let diverged = history_known && !pr.history.contains(r.position);
                    if diverged || r.db_state == DbState::NeedRepair {
                        if r.db_state == DbState::Building || builds >= limit {
                            None
                        } else {
                            builds += 1;
                            Some(CmsCommand::Build { source: primary })
                        }
                    } else {
                        self.repoint(ctx, i, &r, primary, pr.position.timeline)
                    }
                }
                _ => None,
            };
            if let Some(cmd) = cmd {
                self.members[i].send_unless_recent(ctx.out, ctx.now, cmd, resend);
            }
        }
    }

    /// What a standby on the primary's history needs to follow it: Unlock on the primary's
    /// timeline, Lock2 off it. A standby is re-pointed when it is locked (Lock1, or Lock2 to
    /// another instance), and also when it follows normally but streams from no one or from
    /// another instance and no command pointing it at this primary has been applied: its
    /// upstream setting is then stale (an old primary's), and nothing else would ever move it.
    /// "Applied" only means the agent made the command durable, not that the DN took it (a
    /// Lock2 on a hung DN fails): an applied command that has not produced a stream from the
    /// primary within `instance_heartbeat_timeout` of its send is sent again (swarm seeds 7506,
    /// 8885: a standby hung while Lock2 arrived stayed on the old upstream for good).
    fn repoint(
        &self,
        ctx: &Ctx<'_>,
        i: usize,
        r: &crate::dn::DnReport,
        primary: crate::ids::InstanceId,
        primary_timeline: crate::ids::Timeline,
    ) -> Option<CmsCommand> {
        let on_timeline = r.position.timeline == primary_timeline;
        let follow = if on_timeline {
            CmsCommand::Unlock { primary }
        } else {
            CmsCommand::Lock2 { primary }
        };
        match r.lock {
            LockState::Prohibit => Some(follow),
            LockState::Specified(x) if x != primary => Some(CmsCommand::Lock2 { primary }),
            LockState::Specified(_) if on_timeline => Some(CmsCommand::Unlock { primary }),
            LockState::None => {
                let streams = r.upstream.is_some_and(|u| u.instance == primary);
                let m = &self.members[i];
                let pointed = m.pointed_at(primary, r, ctx.now, ctx.resend_interval());
                let hb = ctx.params.instance_heartbeat_timeout();
                let unanswered = m
                    .pointed
                    .is_some_and(|(_, _, at)| ctx.now.saturating_since(at) >= hb);
                (!streams && (!pointed || unanswered)).then_some(follow)
            }
            _ => None,
        }
    }

    /// Builds running or sent and not yet applied.
    fn builds_in_progress(&self, ctx: &Ctx<'_>) -> usize {
        self.members
            .iter()
            .filter(|m| {
                let Some(r) = &m.report else { return false };
                let unapplied = m.last_cmd.as_ref().is_some_and(|c| {
                    matches!(c.cmd, CmsCommand::Build { .. })
                        && r.last_applied < c.stamp
                        && ctx.now.saturating_since(c.at) < ctx.resend_interval()
                });
                r.db_state == DbState::Building || unapplied
            })
            .count()
    }

    /// Concurrent builds allowed: one in groups of ≤ 2 standbys (as CM), else about half of
    /// the standbys minus the one a quorum needs.
    fn build_limit(&self) -> usize {
        let standbys = self.members.len().saturating_sub(1);
        if standbys <= 2 {
            1
        } else {
            ((standbys - 1) / 2).max(1)
        }
    }
}

#[cfg(test)]
#[path = "follow_up_tests.rs"]
mod tests;
