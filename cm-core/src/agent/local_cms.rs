//! The node's own cm_server (SPEC.md §1, reference §4 last bullet): sampled every second,
//! restarted when absent, killed when it stays in state T, stopped after the DNs under
//! `cluster_manual_start`, and reported to every CMS (`AgentReport::cms_process`).
//!
//! Pause does not hold back its restarts: the CMS is the control plane that pause lives in.
//! Only `cluster_manual_start` (and flags not yet read) does. The local CMS comes before the
//! local DNs (start order CMM → CMA → CMS → DNs): a DN is not started until the CMS has been
//! sampled and while a CMS start is in flight.

use serde::{Deserialize, Serialize};

use super::{Agent, AgentCommand};
use crate::dn::ProcState;
use crate::ids::OpId;
use crate::time::Instant;

/// Consecutive samples in state T after which the local cm_server is killed (as om_monitor
/// does for the agent, `HANG_T_DETECT_MAX_TIMES`).
pub const CMS_HUNG_SAMPLES: u32 = 3;

/// What a cm_server action in flight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmsAction {
    /// [`AgentCommand::StartCms`].
    Start,
    /// [`AgentCommand::StopCms`] (cluster stop).
    Stop,
    /// [`AgentCommand::KillCms`] (hung in T).
    Kill,
}

impl CmsAction {
    /// For logs.
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Kill => "kill",
        }
    }
}

/// The local cm_server as the agent sees it (plain data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCmsStatus {
    /// States of its processes at the last sample; empty = absent (or not yet sampled).
    pub processes: Vec<ProcState>,
    /// A sample has been taken.
    pub sampled: bool,
    /// The action in flight, if any (at most one at a time).
    pub action: Option<CmsAction>,
    /// Consecutive samples that showed it in state T.
    pub hung_samples: u32,
}

/// The local cm_server's supervision state (present iff the node has a `cms_port`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct LocalCms {
    sampled: bool,
    /// The last sample was taken after the latest action completed.
    fresh: bool,
    processes: Vec<ProcState>,
    /// The newest sample accepted; older answers are stale.
    last_sample: OpId,
    /// Samples requested before the latest action completed are stale.
    sample_floor: OpId,
    action: Option<(OpId, CmsAction)>,
    hung_samples: u32,
}

impl LocalCms {
    fn running(&self) -> bool {
        !self.processes.is_empty()
    }

    /// What the report carries: `None` when absent, else the most telling state (a hang
    /// outranks a running sibling so the CMS sees it).
    pub(super) fn reported(&self) -> Option<ProcState> {
        [
            ProcState::Stopped,
            ProcState::DiskSleep,
            ProcState::Zombie,
            ProcState::Running,
        ]
        .into_iter()
        .find(|s| self.processes.contains(s))
    }

    pub(super) fn sampled(&self) -> bool {
        self.sampled
    }

    pub(super) fn starting(&self) -> bool {
        matches!(self.action, Some((_, CmsAction::Start)))
    }

    /// Freshly sampled absent, nothing in flight: what the cluster stop waits for.
    pub(super) fn down(&self) -> bool {
        self.fresh && !self.running() && self.action.is_none()
    }

    pub(super) fn status(&self) -> LocalCmsStatus {
        LocalCmsStatus {
            processes: self.processes.clone(),
            sampled: self.sampled,
            action: self.action.map(|(_, a)| a),
            hung_samples: self.hung_samples,
        }
    }
}

impl Agent {
    /// The 1 s check: sample the local cm_server.
    pub(super) fn local_cms_loop(&mut self, out: &mut Vec<AgentCommand>) {
        if self.local_cms.is_some() {
            let op = self.op();
            out.push(AgentCommand::SampleCms { op });
        }
    }

    /// A DN may start only once the local CMS has been sampled and while no CMS start is in
    /// flight (start order, §1). Nodes without a CMS never wait.
    pub(super) fn local_cms_lets_dns_start(&self) -> bool {
        self.local_cms
            .as_ref()
            .is_none_or(|c| c.sampled && !c.starting())
    }

    pub(super) fn on_cms_sampled(
        &mut self,
        now: Instant,
        op: OpId,
        processes: Vec<ProcState>,
        out: &mut Vec<AgentCommand>,
    ) {
        let Some(cms) = self.local_cms.as_mut() else {
            return;
        };
        if op < cms.sample_floor || op <= cms.last_sample {
            return;
        }
        cms.last_sample = op;
        cms.sampled = true;
        cms.fresh = true;
        cms.processes = processes;
        if cms.processes.contains(&ProcState::Stopped) {
            cms.hung_samples += 1;
        } else {
            cms.hung_samples = 0;
        }
        if cms.action.is_some() {
            self.check_cluster_stop_done(now, out);
            return;
        }
        let stopping = self
            .flags
            .as_ref()
            .map(|f| f.cluster_manual_start.is_some());
        let action = if cms.hung_samples >= CMS_HUNG_SAMPLES {
            tracing::warn!(
                samples = cms.hung_samples,
                "local cm_server hung in state T: killing it"
            );
            cms.hung_samples = 0;
            Some(CmsAction::Kill)
        } else if !cms.running() && stopping == Some(false) {
            Some(CmsAction::Start)
        } else {
            None
        };
        if let Some(action) = action {
            self.run_cms_action(action, out);
        }
        self.check_cluster_stop_done(now, out);
    }

    pub(super) fn run_cms_action(&mut self, action: CmsAction, out: &mut Vec<AgentCommand>) {
        let op = self.op();
        let Some(cms) = self.local_cms.as_mut() else {
            return;
        };
        assert!(cms.action.is_none(), "two cm_server actions in flight");
        cms.action = Some((op, action));
        out.push(match action {
            CmsAction::Start => AgentCommand::StartCms { op },
            CmsAction::Stop => AgentCommand::StopCms { op },
            CmsAction::Kill => AgentCommand::KillCms { op },
        });
    }

    pub(super) fn on_cms_action_completed(
        &mut self,
        now: Instant,
        op: OpId,
        result: Result<(), String>,
        out: &mut Vec<AgentCommand>,
    ) {
        let floor = OpId(self.next_op);
        let Some(cms) = self.local_cms.as_mut() else {
            return;
        };
        let Some((expected, action)) = cms.action else {
            return;
        };
        if expected != op {
            return;
        }
        cms.action = None;
        cms.sample_floor = floor;
        cms.fresh = false;
        if let Err(e) = result {
            tracing::warn!(action = action.name(), error = %e, "cm_server action failed");
        }
        self.check_cluster_stop_done(now, out);
    }

    /// Under `cluster_manual_start`, once every local DN is down: stop the local CMS (after a
    /// report, so the CMS nodes see the DNs manually stopped). Returns whether the CMS is down.
    pub(super) fn stop_local_cms(&mut self, now: Instant, out: &mut Vec<AgentCommand>) -> bool {
        let Some(cms) = self.local_cms.as_ref() else {
            return true;
        };
        if cms.down() {
            return true;
        }
        if cms.fresh && cms.running() && cms.action.is_none() {
            self.send_report(now, out);
            self.run_cms_action(CmsAction::Stop, out);
        }
        false
    }
}

#[cfg(test)]
#[path = "local_cms_tests.rs"]
mod tests;
