//! Local DNs (SPEC.md §1–3): process samples and adoption, restarts, kills (fence), flag-file
//! stops and the exit after `cluster_manual_start`, status queries, and the DN report.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use super::commands::TermCheck;
use super::{Agent, AgentCommand, InstanceStatus, PersistedInstance};
use crate::config::ClusterConfig;
use crate::dn::{
    ActionError, BuildOutcome, DbState, DnAction, DnReport, DnRole, DnStatus, LockState, ProcState,
};
use crate::flags::{Flag, FlagSet};
use crate::ids::{CmdStamp, GroupId, InstanceId, OpId, Term};
use crate::time::Instant;

const TEN_MINUTES: Duration = Duration::from_secs(600);
const ONE_HOUR: Duration = Duration::from_secs(3600);

/// What a DN action in flight is, for the rules that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum ActionKind {
    /// `StartPending`; `under_starting_flag`: issued while paused, allowed by
    /// `cluster_manual_starting`.
    Start { under_starting_flag: bool },
    /// `Stop` for a manual-start flag.
    Stop,
    /// `Kill` (fence).
    Kill,
    /// Anything else.
    Other,
}

impl ActionKind {
    /// For logs.
    fn name(self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Stop => "stop",
            Self::Kill => "kill",
            Self::Other => "other",
        }
    }
}

/// Progress of a kill (§3 "kill means fence").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Fence {
    /// No kill pending.
    None,
    /// Killed; no sample has yet shown it gone.
    Pending,
    /// A sample showed only processes in state D (each holds a pending SIGKILL): stopped.
    Confirmed,
}

/// Effects whose arrival triggers an immediate report (§3).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Watch {
    pub(super) prohibit: bool,
    pub(super) primary: bool,
    pub(super) read_only: Option<bool>,
}

/// How many status queries in flight an instance remembers the send time of (one is sent per
/// report interval; an answer later than this many intervals is stale anyway).
const QUERIES_KEPT: usize = 8;

/// One local DN.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Inst {
    pub(super) id: InstanceId,
    /// Its group.
    pub(super) gid: GroupId,
    /// The group's members in config order (this one included).
    pub(super) group: Vec<InstanceId>,
    /// What the newest leader answer said of the group (§15).
    pub(super) view: Option<super::health::LeaderView>,
    /// A Lock1, Demote or Restart was accepted since the last promotion or release (§15).
    pub(super) stepping_down: bool,
    /// Durable term and last applied stamp.
    pub(super) term: Term,
    pub(super) applied: CmdStamp,
    /// Accepted (durable or being written).
    pub(super) accepted: CmdStamp,
    pub(super) accepted_term: Term,
    pub(super) sampled: bool,
    /// The last sample was taken after the latest action completed (a stale "absent" after a
    /// start must not count as down).
    fresh: bool,
    pub(super) processes: Vec<ProcState>,
    /// Samples and queries requested before the latest action completed are stale.
    sample_floor: OpId,
    last_query_op: OpId,
    /// The status queries in flight and when each was sent (the newest [`QUERIES_KEPT`]): a
    /// sample is as old as its query, not its answer — an answer delayed by a host freeze
    /// carries streaming rows from before the freeze (§8's exception, §15's `/primary`).
    queries_sent: Vec<(OpId, Instant)>,
    /// Seen running since the agent last started it: its next start is a restart.
    seen_running: bool,
    /// A `Demote` (switchover) stopped it: the next start is planned, not a restart (§4.4
    /// counts crashes; a switchover's demotion counted would make repeated switchovers trigger
    /// the restart-count switchover, issue 11 defect 5).
    pub(super) planned_stop: bool,
    /// Started pending by this agent and not answered a status query since: until this
    /// instant (the start plus `dn_start_bound`) it is in its start — reported Pending and
    /// Starting, and its silence is no phony-dead hit (issue 18, defect 4).
    pub(super) start_until: Option<Instant>,
    pub(super) status: Option<DnStatus>,
    pub(super) status_at: Instant,
    query_ok: bool,
    actions: BTreeMap<OpId, ActionKind>,
    /// The actions in flight that are Builds (their outcome goes into `last_build`).
    build_ops: BTreeSet<OpId>,
    /// The outcome of the last Build, reported to the CMS.
    last_build: BuildOutcome,
    /// Actions waiting for the one in flight (FIFO): the DN driver serialises actions on one
    /// instance (a Build leaves it stopped; a start must come after it).
    queued: Vec<(DnAction, ActionKind)>,
    pub(super) fence: Fence,
    restarts: Vec<Instant>,
    /// Restarts since the agent started (a metric, §15).
    pub(super) restarts_total: u64,
    pub(super) manually_stopped: bool,
    pub(super) watch: Watch,
    pub(super) term_check: Option<TermCheck>,
    /// The role last written to the store: what a restarted agent knows of a DN whose status
    /// it cannot read yet (§3: the last known role is reported with an unknown state).
    pub(super) saved_role: Option<DnRole>,
    pub(super) last_promoted: Option<Term>,
    pub(super) next_phony: Instant,
    pub(super) phony_hits: u32,
    pub(super) phony_probe: Option<(OpId, Duration)>,
    pub(super) data_pct: u8,
    pub(super) log_pct: u8,
    pub(super) disk_probe: Option<(OpId, Instant)>,
    pub(super) disk_failures: u32,
    pub(super) disk_damaged: bool,
    /// The outstanding peer probe and when it is abandoned.
    pub(super) peers_probe: Option<(OpId, Instant)>,
}

impl Inst {
    pub(super) fn new(config: &ClusterConfig, id: InstanceId, saved: PersistedInstance) -> Self {
        let group = config
            .member(id)
            .map(|(g, _)| g.members.iter().map(|m| m.instance).collect())
            .unwrap_or_default();
        let gid = config.member(id).map_or(GroupId(0), |(g, _)| g.id);
        Self {
            id,
            gid,
            group,
            view: None,
            stepping_down: false,
            term: saved.term,
            applied: saved.last_applied,
            accepted: saved.last_applied,
            accepted_term: saved.term,
            sampled: false,
            fresh: false,
            processes: Vec::new(),
            sample_floor: OpId(0),
            last_query_op: OpId(0),
            queries_sent: Vec::new(),
            seen_running: false,
            planned_stop: false,
            start_until: None,
            status: None,
            status_at: Instant::ZERO,
            query_ok: false,
            actions: BTreeMap::new(),
            build_ops: BTreeSet::new(),
            last_build: BuildOutcome::default(),
            queued: Vec::new(),
            fence: Fence::None,
            restarts: Vec::new(),
            restarts_total: 0,
            manually_stopped: false,
            watch: Watch::default(),
            term_check: None,
            saved_role: saved.role,
            last_promoted: None,
            next_phony: Instant::ZERO,
            phony_hits: 0,
            phony_probe: None,
            data_pct: 0,
            log_pct: 0,
            disk_probe: None,
            disk_failures: 0,
            disk_damaged: false,
            peers_probe: None,
        }
    }

    /// The last status query succeeded.
    pub(super) fn query_ok(&self) -> bool {
        self.query_ok
    }

    pub(super) fn running(&self) -> bool {
        !self.processes.is_empty()
    }

    fn in_flight(&self, pred: impl Fn(ActionKind) -> bool) -> bool {
        self.actions.values().any(|&k| pred(k))
    }

    pub(super) fn starting(&self) -> bool {
        self.in_flight(|k| matches!(k, ActionKind::Start { .. }))
    }

    /// In its start at `now` (see `start_until`).
    pub(super) fn in_start(&self, now: Instant) -> bool {
        self.start_until.is_some_and(|until| now < until)
    }

    /// A start, stop or kill in flight or queued.
    fn lifecycle_busy(&self) -> bool {
        let lifecycle = |k: ActionKind| !matches!(k, ActionKind::Other);
        self.in_flight(lifecycle) || self.queued.iter().any(|&(_, k)| lifecycle(k))
    }

    /// Any action in flight or queued: the DN must not be started under it.
    fn busy(&self) -> bool {
        !self.actions.is_empty() || !self.queued.is_empty()
    }

    /// The last known role (kept while the process runs but its query fails, §3).
    /// The role of the newest status read by this agent, else the persisted one.
    pub(super) fn known_role(&self) -> Option<DnRole> {
        self.status.as_ref().map(|s| s.role).or(self.saved_role)
    }

    /// The role to persist: the newest successfully read one, else what is on disk.
    pub(super) fn role_to_save(&self) -> Option<DnRole> {
        match &self.status {
            Some(s) if self.query_ok => Some(s.role),
            _ => self.saved_role,
        }
    }

    /// A running primary not being killed: what the self-fence and the peer check guard.
    pub(super) fn is_live_primary(&self) -> bool {
        self.running() && self.fence == Fence::None && self.known_role() == Some(DnRole::Primary)
    }

    pub(super) fn disk_probe_deadline(&self) -> Option<Instant> {
        self.disk_probe.map(|(_, at)| at)
    }

    fn restarts_within(&self, now: Instant, window: Duration) -> u32 {
        let n = self.restarts.iter().filter(|&&t| now - t < window).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn reported_role_state(&self, now: Instant) -> (DnRole, DbState, LockState) {
        match (self.fence, self.running(), &self.status) {
            (Fence::Pending, _, _) => (DnRole::Unknown, DbState::Unknown, LockState::Unknown),
            (Fence::Confirmed, _, _) | (Fence::None, false, _) => {
                let state = if self.manually_stopped {
                    DbState::ManuallyStopped
                } else if self.disk_damaged {
                    DbState::DiskDamaged
                } else if self.starting() {
                    DbState::Starting
                } else {
                    DbState::Unknown
                };
                (DnRole::Down, state, LockState::Unknown)
            }
            (Fence::None, true, Some(s)) if self.query_ok => (s.role, s.db_state, s.lock),
            (Fence::None, true, Some(s)) => (s.role, DbState::Unknown, LockState::Unknown),
            // This agent started it pending and it has not answered since: it is pending,
            // whatever role it had before its restart (its stale role made the CMS take a
            // restarting old primary for a valid one and Build the standbys from it).
            (Fence::None, true, None) if self.in_start(now) => {
                (DnRole::Pending, DbState::Starting, LockState::Unknown)
            }
            (Fence::None, true, None) => (
                self.saved_role.unwrap_or(DnRole::Unknown),
                DbState::Unknown,
                LockState::Unknown,
            ),
        }
    }

    /// This DN's part of the agent report.
    pub(super) fn report(&self, now: Instant) -> DnReport {
        let mut r = DnReport::down(self.id);
        let (role, db_state, lock) = self.reported_role_state(now);
        r.role = role;
        r.db_state = db_state;
        r.lock = lock;
        if let (Some(s), DnRole::Primary | DnRole::Standby | DnRole::Pending) = (&self.status, role)
        {
            r.position = s.position;
            r.history = s.history.clone();
            r.upstream = s.upstream;
            r.downstreams = s.downstreams.clone();
            r.read_only = s.read_only;
            if self.query_ok {
                r.receiver_error = s.receiver_error.clone();
            }
        }
        r.term = self.term;
        r.last_applied = self.applied;
        r.phony_dead_hits = self.phony_hits;
        r.data_disk_pct = self.data_pct;
        r.log_disk_pct = self.log_pct;
        r.disk_damaged = self.disk_damaged;
        r.processes = self.processes.clone();
        r.restarts_10min = self.restarts_within(now, TEN_MINUTES);
        r.restarts_1h = self.restarts_within(now, ONE_HOUR);
        r.manually_stopped = self.manually_stopped;
        r.last_build = BuildOutcome {
            pending: self.build_pending(),
            ..self.last_build.clone()
        };
        r
    }

    /// A Build of this instance is queued behind another action or running (one accepted but
    /// not yet durable is in the agent's batch, not here).
    pub(super) fn build_pending(&self) -> bool {
        !self.build_ops.is_empty()
            || self
                .queued
                .iter()
                .any(|(a, _)| matches!(a, DnAction::Build { .. }))
    }

    /// Records a Build this agent refused as a finished, failed one.
    pub(super) fn refuse_build(&mut self, why: &str) {
        self.last_build
            .record(&Err(format!("the cm_agent refused the Build: {why}").into()));
    }

    pub(super) fn status(&self, now: Instant) -> InstanceStatus {
        InstanceStatus {
            instance: self.id,
            role: self.reported_role_state(now).0,
            processes: self.processes.clone(),
            term: self.term,
            last_applied: self.applied,
            phony_dead_hits: self.phony_hits,
            disk_damaged: self.disk_damaged,
            manually_stopped: self.manually_stopped,
            starting: self.starting(),
            fencing: self.fence == Fence::Pending,
        }
    }

    /// The phony-dead count belongs to one process (§6): once it is killed or gone, the next
    /// process starts from 0, or the CMS would restart it again after it wins its role back.
    fn forget_hangs(&mut self) {
        self.phony_hits = 0;
        self.phony_probe = None;
    }

    /// Whether a watched effect is reached by the current status; clears the watches reached.
    fn effect_reached(&mut self) -> bool {
        let Some(s) = self.status.as_ref().filter(|_| self.query_ok) else {
            return false;
        };
        let mut hit = false;
        if self.watch.prohibit && s.lock == LockState::Prohibit {
            self.watch.prohibit = false;
            hit = true;
        }
        if self.watch.primary && s.role == DnRole::Primary {
            self.watch.primary = false;
            hit = true;
        }
        if self.watch.read_only == Some(s.read_only) {
            self.watch.read_only = None;
            hit = true;
        }
        hit
    }
}

impl Agent {
    /// The DN status loop: sample every DN's processes, query its status, then report.
    pub(super) fn status_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let ids: Vec<InstanceId> = self.insts.keys().copied().collect();
        for instance in ids {
            let op = self.op();
            out.push(AgentCommand::SampleProcesses { op, instance });
            let op = self.op();
            out.push(AgentCommand::QueryDnStatus { op, instance });
            if let Some(inst) = self.insts.get_mut(&instance) {
                if inst.queries_sent.len() >= QUERIES_KEPT {
                    inst.queries_sent.remove(0);
                }
                inst.queries_sent.push((op, now));
            }
        }
        self.send_report(now, out);
    }

    pub(super) fn run_action(
        &mut self,
        instance: InstanceId,
        action: DnAction,
        kind: ActionKind,
        out: &mut Vec<AgentCommand>,
    ) {
        if let Some(inst) = self.insts.get_mut(&instance) {
            // Kill means fence: it preempts whatever runs (see `issue_next_action`).
            if !inst.actions.is_empty() && kind != ActionKind::Kill {
                inst.queued.push((action, kind));
                return;
            }
        }
        self.issue_action(instance, action, kind, out);
    }

    fn issue_action(
        &mut self,
        instance: InstanceId,
        action: DnAction,
        kind: ActionKind,
        out: &mut Vec<AgentCommand>,
    ) {
        let op = self.op();
        if let Some(inst) = self.insts.get_mut(&instance) {
            inst.actions.insert(op, kind);
            if matches!(action, DnAction::Build { .. }) {
                inst.build_ops.insert(op);
            }
        }
        out.push(AgentCommand::RunDnAction {
            op,
            instance,
            action,
        });
    }

    /// Kills every process of the instance (§3): reported stopped once a sample confirms it.
    pub(super) fn fence(&mut self, id: InstanceId, why: &str, out: &mut Vec<AgentCommand>) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        tracing::warn!(instance = %id, why, "killing the instance");
        inst.fence = Fence::Pending;
        // A promotion waiting for its term check must not run on the restarted DN: the CMS
        // takes the kill as proof that this member did not become primary.
        inst.term_check = None;
        inst.forget_hangs();
        // A queued stop is superseded by the kill; a start is decided again once it is gone.
        inst.queued.retain(|&(_, k)| matches!(k, ActionKind::Other));
        if !inst.in_flight(|k| k == ActionKind::Kill) {
            self.run_action(id, DnAction::Kill, ActionKind::Kill, out);
        }
    }

    pub(super) fn on_processes(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        processes: Vec<ProcState>,
        out: &mut Vec<AgentCommand>,
    ) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if op < inst.sample_floor {
            return;
        }
        inst.sampled = true;
        inst.fresh = true;
        inst.processes = processes;
        let running = inst.running();
        let term = inst.term;
        if !running {
            inst.status = None;
            inst.query_ok = false;
            inst.forget_hangs();
            // Nothing ordered of the process that is gone may act on the next one: a promotion
            // still waiting for its term check would promote a DN the CMS saw stop (and may
            // already have replaced), and watched effects belong to the old process.
            if inst.term_check.take().is_some() {
                tracing::info!(instance = %id, "DN process gone: pending promotion dropped");
            }
            inst.watch = Watch::default();
        }
        let only_d = inst.processes.iter().all(|p| *p == ProcState::DiskSleep);
        let mut rekill = false;
        match inst.fence {
            Fence::Pending if only_d => {
                inst.fence = if running {
                    Fence::Confirmed
                } else {
                    Fence::None
                };
                inst.status = None;
            }
            Fence::Pending => rekill = !inst.in_flight(|k| k == ActionKind::Kill),
            Fence::Confirmed if !running => inst.fence = Fence::None,
            Fence::None if running => inst.seen_running = true,
            _ => {}
        }
        if rekill {
            self.run_action(id, DnAction::Kill, ActionKind::Kill, out);
        }
        self.maybe_start(now, id, out);
        // After the step's decisions on the DN, before a possible Exit (always the last order).
        self.triggers.on_sample(id, running, term, out);
        self.check_cluster_stop_done(now, out);
    }

    /// Starts an absent DN as pending unless a rule forbids it (§1–3, §7.1).
    fn maybe_start(&mut self, now: Instant, id: InstanceId, out: &mut Vec<AgentCommand>) {
        let paused = self.paused(now);
        if !self.local_cms_lets_dns_start() {
            return;
        }
        let Some(flags) = &self.flags else {
            return;
        };
        if flags.keeps_stopped(id).is_some() || (paused && !flags.cluster_manual_starting) {
            return;
        }
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if !inst.sampled
            || inst.running()
            || inst.fence != Fence::None
            || inst.disk_damaged
            || inst.busy()
        {
            return;
        }
        let planned = core::mem::take(&mut inst.planned_stop);
        if core::mem::take(&mut inst.seen_running) && !planned {
            inst.restarts.retain(|&t| now - t < ONE_HOUR);
            inst.restarts.push(now);
            inst.restarts_total += 1;
        }
        inst.status = None;
        inst.query_ok = false;
        inst.start_until = Some(now + self.params.dn_start_bound());
        let kind = ActionKind::Start {
            under_starting_flag: paused,
        };
        self.run_action(id, DnAction::StartPending, kind, out);
    }

    pub(super) fn on_status(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        result: Result<DnStatus, String>,
        out: &mut Vec<AgentCommand>,
    ) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if op < inst.sample_floor || op < inst.last_query_op {
            return;
        }
        inst.last_query_op = op;
        // Unknown (older than every query kept): a sample of unknown age, so as good as none
        // for anything that needs it fresh.
        let sent = inst
            .queries_sent
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(Instant::ZERO, |(_, at)| *at);
        inst.queries_sent.retain(|(o, _)| *o > op);
        let mut seen_role = None;
        let term = inst.term;
        match result {
            Ok(s) => {
                seen_role = Some(s.role);
                inst.status = Some(s);
                inst.status_at = sent;
                inst.query_ok = true;
                inst.start_until = None;
            }
            Err(e) => {
                tracing::debug!(instance = %id, error = %e, "status query failed");
                inst.query_ok = false;
            }
        }
        if inst.effect_reached() {
            self.send_report(now, out);
        }
        if let Some(role) = seen_role {
            self.triggers.on_status(id, role, term, out);
        }
    }

    pub(super) fn on_flags(&mut self, now: Instant, flags: FlagSet, out: &mut Vec<AgentCommand>) {
        let ids: Vec<InstanceId> = self.insts.keys().copied().collect();
        for id in ids {
            let mode = flags.keeps_stopped(id);
            let Some(inst) = self.insts.get_mut(&id) else {
                continue;
            };
            inst.manually_stopped = mode.is_some();
            let Some(mode) = mode else { continue };
            if inst.running() && inst.fence == Fence::None && !inst.lifecycle_busy() {
                self.run_action(id, DnAction::Stop { mode }, ActionKind::Stop, out);
            }
        }
        self.flags = Some(flags);
        self.resources_on_flags(now);
        self.check_cluster_stop_done(now, out);
    }

    pub(super) fn on_action_completed(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        result: Result<(), ActionError>,
        out: &mut Vec<AgentCommand>,
    ) {
        let floor = OpId(self.next_op);
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        let Some(kind) = inst.actions.remove(&op) else {
            return;
        };
        inst.sample_floor = floor;
        inst.fresh = false;
        if let Err(e) = &result {
            tracing::warn!(instance = %id, kind = kind.name(), error = %e, "DN action failed");
        }
        if inst.build_ops.remove(&op) {
            inst.last_build.record(&result);
        } else if let Err(ActionError::HalfRewound(why)) = &result {
            // Its data was left half-rewound by a Build its host's crash cut short: reported
            // as a failed Build (naming the marker), the CMS's rule for a member whose last
            // Build failed builds it again, in full (issue 18 defect 2, review).
            inst.last_build.record_cut_short(why);
        }
        if kind
            == (ActionKind::Start {
                under_starting_flag: true,
            })
            && result.is_ok()
        {
            self.after_start_under_flag(out);
        }
        self.issue_next_action(id, out);
        self.check_cluster_stop_done(now, out);
    }

    /// Once nothing is in flight for the instance, the oldest queued action runs.
    ///
    /// Why a fencing Kill may run beside another action (and nothing else may): §3 "kill means
    /// fence" must not wait behind a slow action (a Build can take minutes, longer than the
    /// fencing floor). It is safe with the driver: a kill only signals the postmaster's process
    /// group, which a Build stops anyway, and it never starts anything; the start that follows a
    /// kill waits until every action in flight or queued is done (`busy`).
    fn issue_next_action(&mut self, id: InstanceId, out: &mut Vec<AgentCommand>) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if !inst.actions.is_empty() || inst.queued.is_empty() {
            return;
        }
        let (action, kind) = inst.queued.remove(0);
        self.issue_action(id, action, kind, out);
    }

    /// `cluster_manual_starting` is removed once the starts it allowed are done (§2).
    fn after_start_under_flag(&mut self, out: &mut Vec<AgentCommand>) {
        let more = self.insts.values().any(Inst::starting);
        let Some(flags) = self.flags.as_mut() else {
            return;
        };
        if !more && flags.cluster_manual_starting {
            flags.cluster_manual_starting = false;
            out.push(AgentCommand::RemoveFlag {
                flag: Flag::ClusterManualStarting,
            });
        }
    }

    /// Under `cluster_manual_start`, exits once every local DN is down and then the local CMS
    /// (§2), after a last report so the CMS sees them manually stopped.
    pub(super) fn check_cluster_stop_done(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let stopping = self
            .flags
            .as_ref()
            .is_some_and(|f| f.cluster_manual_start.is_some());
        if self.exit_sent || !stopping {
            return;
        }
        let all_down = self
            .insts
            .values()
            .all(|i| i.fresh && !i.running() && !i.lifecycle_busy())
            && self.resources_down();
        if all_down && self.stop_local_cms(now, out) {
            self.send_report(now, out);
            out.push(AgentCommand::Exit);
            self.exit_sent = true;
        }
    }
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
