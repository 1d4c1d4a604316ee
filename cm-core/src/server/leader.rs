//! The CMS leader's decisions (everything §4, §6, §7.2, §8 and §10 leave to it), composed from
//! the per-group [`GroupArbiter`], [`phony_dead`], the
//! [`ReadOnlyChecker`], [`Switchovers`] and the cm_ctl requests.
//!
//! Driving contract: the `Server` calls these only while it leads with a lease, starting with
//! [`Leader::on_elected`] and ending with [`Leader::on_deposed`]; `now` never goes backwards
//! (asserted); proposals go to the [`ReplicatedState`] and their outcomes come back through
//! [`Leader::on_outcomes`]. Outputs are returned in the order they must be executed.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ClusterConfig;
use crate::ctl::{self, CtlReply, CtlRequest, Refusal, SwitchoverRefused, SwitchoverStarted};
use crate::ids::{ClientId, GroupId, InstanceId, NodeId, ProposalId, QuorumTerm, ReportSeq};
use crate::msg::{self, CmsCommand};
use crate::params::{ParamSide, Params};
use crate::state::{self, Change, ClusterState, Conflict, OutcomeError, ReplicatedState};
use crate::time::{Instant, MonotonicGuard, WallMillis};

use super::arbiter::{Ctx, DeadlineSpans, GroupArbiter};
use super::outbox::Outbox;
use super::read_only::ReadOnlyChecker;
use super::switchover::Switchovers;
use super::{phony_dead, status};

pub use super::outbox::LeaderOutput;

/// A cm_ctl client waiting for proposals to commit.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct CtlWait {
    client: ClientId,
    pending: BTreeSet<ProposalId>,
    refusal: Option<Refusal>,
    /// `switchover -a`: the switchovers proposed (moved to `refused` when their proposal
    /// fails), replied once all settled.
    all: Option<SwitchoverAllWait>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SwitchoverAllWait {
    started: Vec<(ProposalId, SwitchoverStarted)>,
    refused: Vec<SwitchoverRefused>,
}

impl SwitchoverAllWait {
    fn reply(self) -> CtlReply {
        CtlReply::SwitchoverAll {
            started: self.started.into_iter().map(|(_, s)| s).collect(),
            refused: self.refused,
        }
    }
}

/// The leader-side components, apart from what every handler borrows (params, outbox).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Core {
    groups: BTreeMap<GroupId, GroupArbiter>,
    read_only: ReadOnlyChecker,
    switchovers: Switchovers,
    waits: Vec<CtlWait>,
}

/// Everything the CMS leader decides. See the module documentation for the driving contract.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Leader {
    placement: BTreeMap<InstanceId, (GroupId, NodeId)>,
    config: ClusterConfig,
    params: Params,
    applied_overrides: BTreeMap<String, String>,
    cms_count: usize,
    elected: bool,
    guard: MonotonicGuard,
    last_wall: WallMillis,
    out: Outbox,
    core: Core,
    /// Per agent: the newest report's sequence number and receipt, to drop reports that arrive
    /// after a newer one (a delayed frame from before a reconnection).
    last_report: BTreeMap<NodeId, (ReportSeq, Instant)>,
}

impl Leader {
    /// A leader component for `config` (inactive until [`Leader::on_elected`]).
    pub fn new(config: &ClusterConfig) -> Self {
        let groups = config
            .groups
            .iter()
            .map(|g| (g.id, GroupArbiter::new(config, g, Instant::ZERO)))
            .collect();
        // Instance → (group, node), so a report of many DNs costs O(DNs · log), not O(DNs · groups).
        let placement = config
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(move |m| (m.instance, (g.id, m.node))))
            .collect();
        Self {
            config: config.clone(),
            placement,
            params: config.params.clone(),
            applied_overrides: BTreeMap::new(),
            cms_count: config.cms_nodes().len().max(1),
            elected: false,
            guard: MonotonicGuard::default(),
            last_wall: WallMillis(0),
            out: Outbox::default(),
            core: Core {
                groups,
                ..Core::default()
            },
            last_report: BTreeMap::new(),
        }
    }

    /// The effective parameters (config plus committed `cm_ctl set --server` overrides).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The group arbiters (read-only view, for status and tests).
    pub fn groups(&self) -> &BTreeMap<GroupId, GroupArbiter> {
        &self.core.groups
    }

    /// Whether this component is active.
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    fn enter(&mut self, now: Instant, state: &dyn ReplicatedState) {
        self.guard.observe(now);
        let overrides = &state.committed().param_overrides;
        if *overrides != self.applied_overrides {
            let mut p = self.config.params.clone();
            for (k, v) in overrides {
                // Values were validated before they were proposed.
                let _ = p.set_text(k, v);
            }
            self.params = p;
            self.applied_overrides = overrides.clone();
        }
    }

    /// This node just became leader (with a lease) at `now`, in `quorum_term`: every agent's
    /// newest receipt := now (§8); command sequence numbers restart under the new quorum term.
    /// Committed but unanswered Failovers are re-driven by arbitration itself: the candidate
    /// (the committed static primary) is locked again and promoted with a fresh term.
    pub fn on_elected(
        &mut self,
        now: Instant,
        wall: WallMillis,
        quorum_term: QuorumTerm,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        self.last_wall = self.last_wall.max(wall);
        self.elected = true;
        self.last_report.clear();
        self.out.start_term(quorum_term);
        for arb in self.core.groups.values_mut() {
            arb.reset(now, state.committed().groups.get(&arb.id));
        }
        self.core.switchovers.reset();
        self.core.waits.clear();
        let ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        self.core.read_only.on_elected(&ctx);
        self.out.take()
    }

    /// Leadership lost: forget per-term bookkeeping (pending proposals are dropped by the
    /// state; waiting cm_ctl clients time out and retry against the new leader).
    pub fn on_deposed(&mut self) {
        self.elected = false;
        let last = self.guard.last();
        for arb in self.core.groups.values_mut() {
            arb.reset(last, None);
        }
        self.core.read_only.on_deposed();
        self.core.switchovers.reset();
        self.core.waits.clear();
        self.out.take();
    }

    /// An agent's report arrived from node `from`.
    pub fn on_report(
        &mut self,
        now: Instant,
        wall: WallMillis,
        from: NodeId,
        report: &msg::AgentReport,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        self.last_wall = self.last_wall.max(wall);
        if !self.elected {
            return Vec::new();
        }
        // A report older than the newest one from the same agent is stale: acting on it would
        // undo what the newer one said (seed 226: a delayed "Standby" after "Primary" made the
        // group fail over again under its fresh primary). A restarted agent counts from 1
        // again, so an older number is only dropped within the resend interval of the newest.
        if let Some(&(seq, at)) = self.last_report.get(&from)
            && report.seq <= seq
            && now.saturating_since(at) < super::arbiter::resend_interval(&self.params)
        {
            return Vec::new();
        }
        self.last_report.insert(from, (report.seq, now));
        let mut ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        let mut touched = BTreeSet::new();
        for dn in &report.dns {
            let Some(&(gid, node)) = self.placement.get(&dn.instance) else {
                continue;
            };
            if node != from {
                continue; // An agent speaks only for its own node's instances.
            }
            let Some(arb) = self.core.groups.get_mut(&gid) else {
                continue;
            };
            let Some(idx) = arb.index_of(dn.instance) else {
                continue;
            };
            let halted = ctx.halted();
            arb.record_report(idx, dn.clone(), now, halted);
            phony_dead::on_report(arb, idx, &mut ctx);
            self.core.read_only.on_report(&mut ctx, arb, idx);
            touched.insert(gid);
        }
        for gid in touched {
            self.core.step_group(&mut ctx, gid, false);
        }
        self.out.take()
    }

    /// Time passed: heartbeat timeouts, deadlines, the read-only check.
    pub fn on_tick(
        &mut self,
        now: Instant,
        wall: WallMillis,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        self.last_wall = self.last_wall.max(wall);
        if !self.elected {
            return Vec::new();
        }
        let mut ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        let wishes = self.core.read_only.on_tick(&mut ctx, &mut self.core.groups);
        for w in wishes {
            if let Some(arb) = self.core.groups.get(&w.group) {
                // A refusal (busy, paused, no valid primary) just means: not now.
                let _ = self.core.switchovers.begin(&mut ctx, arb, w.target, false);
            }
        }
        let ids: Vec<GroupId> = self.core.groups.keys().copied().collect();
        for gid in ids {
            self.core.step_group(&mut ctx, gid, true);
        }
        self.out.take()
    }

    /// Outcomes of proposals (committed, refused by their compare-and-set, or dropped).
    pub fn on_outcomes(
        &mut self,
        now: Instant,
        wall: WallMillis,
        outcomes: Vec<state::Outcome>,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        self.last_wall = self.last_wall.max(wall);
        if !self.elected {
            return Vec::new();
        }
        let mut ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        for o in &outcomes {
            self.core.settle_wait(&mut ctx, o);
            match &o.change {
                Change::Promote { group, .. } => {
                    if let Some(arb) = self.core.groups.get_mut(group) {
                        arb.on_promote_outcome(&mut ctx, o);
                    }
                }
                Change::ReadOnly { .. } => {
                    self.core
                        .read_only
                        .on_outcome(&mut ctx, &mut self.core.groups, o);
                }
                Change::BeginSwitchover { .. }
                | Change::RenewSwitchoverTerm { .. }
                | Change::EndSwitchover { .. }
                | Change::AbortSwitchover { .. } => {
                    self.core
                        .switchovers
                        .on_outcome(&mut ctx, &mut self.core.groups, o);
                }
                Change::RecordTimeline { group, .. } if o.result.is_err() => {
                    if let Some(arb) = self.core.groups.get_mut(group) {
                        arb.timeline_proposed = None;
                    }
                }
                Change::RecordPromotion(p) if o.result.is_err() => {
                    if let Some(arb) = self.core.groups.get_mut(&p.group) {
                        arb.promotion_proposed = None;
                    }
                }
                _ => {}
            }
        }
        let ids: Vec<GroupId> = self.core.groups.keys().copied().collect();
        for gid in ids {
            self.core.step_group(&mut ctx, gid, false);
        }
        self.out.take()
    }

    /// A cm_ctl request. Some replies come only after the change committed.
    pub fn on_ctl(
        &mut self,
        now: Instant,
        wall: WallMillis,
        client: ClientId,
        req: CtlRequest,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        self.last_wall = self.last_wall.max(wall);
        if !self.elected {
            return vec![LeaderOutput::Reply {
                client,
                reply: CtlReply::Refused(Refusal::NotLeader { leader: None }),
            }];
        }
        if req == CtlRequest::Query {
            let status = self.status(state.committed(), Vec::new(), self.out.quorum_term());
            self.out.reply(client, CtlReply::Status(Box::new(status)));
            return self.out.take();
        }
        if req == CtlRequest::ListParams {
            let list = self
                .params
                .list()
                .into_iter()
                .map(|(n, s, v)| (n.to_owned(), s, v))
                .collect();
            self.out.reply(client, CtlReply::Params(list));
            return self.out.take();
        }
        let mut ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        if req == CtlRequest::SwitchoverAll {
            match self.core.switchover_all(&mut ctx) {
                Err(r) => ctx.out.reply(client, CtlReply::Refused(r)),
                Ok(all) if all.started.is_empty() => ctx.out.reply(client, all.reply()),
                Ok(all) => self.core.waits.push(CtlWait {
                    client,
                    pending: all.started.iter().map(|(id, _)| *id).collect(),
                    refusal: None,
                    all: Some(all),
                }),
            }
            return self.out.take();
        }
        let result = self.core.ctl(&mut ctx, &self.config, req);
        match result {
            Ok(ids) if ids.is_empty() => ctx.out.reply(client, CtlReply::Accepted),
            Ok(ids) => self.core.waits.push(CtlWait {
                client,
                pending: ids.into_iter().collect(),
                refusal: None,
                all: None,
            }),
            Err(r) => ctx.out.reply(client, CtlReply::Refused(r)),
        }
        self.out.take()
    }

    /// The fence command of §8 finished.
    pub fn on_fence_command_done(
        &mut self,
        now: Instant,
        group: GroupId,
        success: bool,
        state: &mut dyn ReplicatedState,
    ) -> Vec<LeaderOutput> {
        self.enter(now, state);
        if !self.elected {
            return Vec::new();
        }
        // No wall clock comes with this input: the last one seen stands in for it.
        let wall = self.last_wall;
        let mut ctx = Ctx {
            now,
            wall,
            params: &self.params,
            cms_count: self.cms_count,
            state,
            out: &mut self.out,
        };
        if let Some(arb) = self.core.groups.get_mut(&group) {
            arb.on_fence_command_done(success);
            arb.arbitrate(&mut ctx);
        }
        self.out.take()
    }

    /// When the leader next wants a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.elected {
            return None;
        }
        let last = self.guard.last();
        let mut next: Option<Instant> = None;
        let mut consider = |d: Instant| {
            if d > last && next.is_none_or(|n| d < n) {
                next = Some(d);
            }
        };
        let spans = DeadlineSpans::new(&self.params, self.cms_count);
        for g in self.core.groups.values() {
            g.each_deadline(&spans, &mut consider);
        }
        if let Some(d) = self.core.read_only.next_check() {
            consider(d);
        }
        if self.core.switchovers.any_pending() {
            consider(last + core::time::Duration::from_secs(1));
        }
        next
    }

    /// The status `cm_ctl query` shows.
    pub fn status(
        &self,
        state: &ClusterState,
        cms: Vec<ctl::CmsRow>,
        quorum_term: QuorumTerm,
    ) -> ctl::ClusterStatus {
        status::cluster_status(
            &self.config,
            &self.core.groups,
            state,
            &self.params,
            self.guard.last(),
            cms,
            quorum_term,
        )
    }
}

impl Core {
    /// Arbitration, then the switchover, then a restart-count switchover if one is due.
    fn step_group(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, tick: bool) {
        let Some(arb) = self.groups.get_mut(&gid) else {
            return;
        };
        if tick {
            arb.on_tick(ctx);
        } else {
            arb.arbitrate(ctx);
        }
        self.switchovers.drive(ctx, arb);
        let Some(g) = ctx.group(gid) else { return };
        if g.switchover.is_some() || ctx.halted() {
            return;
        }
        if arb.restart_switchover_wanted(ctx, &g).is_some()
            && let Some(t) = arb.restart_switchover_target(ctx, &g)
        {
            let _ = self.switchovers.begin(ctx, arb, t, false);
        }
    }

    fn settle_wait(&mut self, ctx: &mut Ctx<'_>, o: &state::Outcome) {
        let Some(i) = self.waits.iter().position(|w| w.pending.contains(&o.id)) else {
            return;
        };
        let w = &mut self.waits[i];
        w.pending.remove(&o.id);
        if let Err(e) = &o.result {
            let refusal = match e {
                OutcomeError::Dropped => Refusal::NotLeader { leader: None },
                OutcomeError::Conflict(Conflict::Busy) => {
                    Refusal::Busy("another switchover is pending".into())
                }
                OutcomeError::Conflict(c) => Refusal::Busy(c.to_string()),
            };
            if let Some(all) = &mut w.all {
                if let Some(k) = all.started.iter().position(|(id, _)| *id == o.id) {
                    let (_, s) = all.started.remove(k);
                    all.refused.push(SwitchoverRefused {
                        group: s.group,
                        target: s.target,
                        refusal,
                    });
                }
            } else {
                w.refusal.get_or_insert(refusal);
            }
        }
        if w.pending.is_empty() {
            let w = self.waits.remove(i);
            let reply = match w.all {
                Some(all) => all.reply(),
                None => w.refusal.map_or(CtlReply::Accepted, CtlReply::Refused),
            };
            ctx.out.reply(w.client, reply);
        }
    }

    /// Handles a state-changing request: the proposals to wait for, or a refusal.
    fn ctl(
        &mut self,
        ctx: &mut Ctx<'_>,
        config: &ClusterConfig,
        req: CtlRequest,
    ) -> Result<Vec<ProposalId>, Refusal> {
        let propose = |ctx: &mut Ctx<'_>, c: Change| {
            ctx.state
                .propose(c)
                .ok_or(Refusal::NotLeader { leader: None })
        };
        match req {
            CtlRequest::Query | CtlRequest::ListParams => Ok(Vec::new()),
            CtlRequest::Pause | CtlRequest::Resume => {
                let paused = matches!(req, CtlRequest::Pause);
                let at = ctx.wall;
                Ok(vec![propose(ctx, Change::SetPausedAt { paused, at })?])
            }
            CtlRequest::ClusterStarting { timeout_s } => {
                let until = ctx
                    .wall
                    .saturating_add(core::time::Duration::from_secs(u64::from(timeout_s)));
                Ok(vec![
                    propose(ctx, Change::SetStopping(false))?,
                    propose(ctx, Change::SetStarting(Some(until)))?,
                ])
            }
            CtlRequest::ClusterStopping => Ok(vec![
                propose(ctx, Change::SetStarting(None))?,
                propose(ctx, Change::SetStopping(true))?,
            ]),
            CtlRequest::SetParam { side, name, value } => {
                set_param(ctx, side, &name, &value).and_then(|c| Ok(vec![propose(ctx, c)?]))
            }
            CtlRequest::Switchover { instance, fast } => {
                let (gcfg, _) = config
                    .member(instance)
                    .ok_or_else(|| Refusal::Invalid(format!("no instance {instance}")))?;
                let arb = self
                    .groups
                    .get(&gcfg.id)
                    .ok_or_else(|| Refusal::Invalid(format!("no {}", gcfg.id)))?;
                Ok(vec![self.switchovers.begin(ctx, arb, instance, fast)?])
            }
            CtlRequest::SwitchoverAll => {
                let all = self.switchover_all(ctx)?;
                Ok(all.started.into_iter().map(|(id, _)| id).collect())
            }
            CtlRequest::Build { instance, full } => self.build(ctx, config, instance, full),
            CtlRequest::ReaddCms { node } => {
                readd_cms(ctx, config, node).and_then(|c| Ok(vec![propose(ctx, c)?]))
            }
        }
    }

    /// `switchover -a`: a switchover to the install-time primary in every group off it; the
    /// ones proposed and the groups refused, each with its reason (refused as a whole only
    /// when paused).
    fn switchover_all(&mut self, ctx: &mut Ctx<'_>) -> Result<SwitchoverAllWait, Refusal> {
        if ctx.committed().paused {
            return Err(Refusal::Paused);
        }
        let mut all = SwitchoverAllWait {
            started: Vec::new(),
            refused: Vec::new(),
        };
        for arb in self.groups.values() {
            let Some(g) = ctx.group(arb.id) else { continue };
            if g.static_primary == g.initial_primary {
                continue;
            }
            let target = g.initial_primary;
            match self.switchovers.begin(ctx, arb, target, false) {
                Ok(id) => all.started.push((
                    id,
                    SwitchoverStarted {
                        group: arb.id,
                        target,
                        term: g.term,
                    },
                )),
                Err(refusal) => all.refused.push(SwitchoverRefused {
                    group: arb.id,
                    target,
                    refusal,
                }),
            }
        }
        Ok(all)
    }

    fn build(
        &mut self,
        ctx: &mut Ctx<'_>,
        config: &ClusterConfig,
        instance: InstanceId,
        full: bool,
    ) -> Result<Vec<ProposalId>, Refusal> {
        if ctx.committed().paused {
            return Err(Refusal::Paused);
        }
        let (gcfg, _) = config
            .member(instance)
            .ok_or_else(|| Refusal::Invalid(format!("no instance {instance}")))?;
        let arb = self
            .groups
            .get_mut(&gcfg.id)
            .ok_or_else(|| Refusal::Invalid(format!("no {}", gcfg.id)))?;
        let g = ctx
            .group(gcfg.id)
            .ok_or_else(|| Refusal::Invalid(format!("no {}", gcfg.id)))?;
        let p = arb
            .valid_primary(ctx, &g)
            .ok_or_else(|| Refusal::Invalid(format!("{} has no valid primary", gcfg.id)))?;
        let source = arb.members[p].instance;
        if source == instance {
            return Err(Refusal::Invalid(format!(
                "instance {instance} is the primary; only standbys are built"
            )));
        }
        let i = arb
            .index_of(instance)
            .ok_or_else(|| Refusal::Invalid(format!("no instance {instance}")))?;
        arb.members[i].send(ctx.out, ctx.now, CmsCommand::Build { source, full });
        Ok(Vec::new())
    }
}

/// `cms --readd NODE` (§5.1): the change that makes a non-voter CMS vote again. The operator
/// re-adds a node once the cluster has moved past every term its lost store may have voted in
/// (the quorum documents why).
fn readd_cms(ctx: &Ctx<'_>, config: &ClusterConfig, node: NodeId) -> Result<Change, Refusal> {
    match config.node(node) {
        None => return Err(Refusal::Invalid(format!("no node {}", node.0))),
        Some(n) if n.cms_port.is_none() => {
            return Err(Refusal::Invalid(format!(
                "node {} runs no cm_server (it has no cms_port)",
                node.0
            )));
        }
        Some(_) => {}
    }
    if !ctx.committed().non_voters.contains(&node) {
        return Err(Refusal::Invalid(format!(
            "node {} is a voter already; only a CMS that rejoined after losing its store is re-added",
            node.0
        )));
    }
    Ok(Change::SetVoter { node, voter: true })
}

/// Validates `cm_ctl set` and returns the change to commit.
fn set_param(ctx: &Ctx<'_>, side: ParamSide, name: &str, value: &str) -> Result<Change, Refusal> {
    let canon = Params::canonical(name)
        .ok_or_else(|| Refusal::Invalid(format!("unknown parameter `{name}`")))?;
    let actual = Params::side_of(canon).unwrap_or(ParamSide::Both);
    if actual != ParamSide::Both && actual != side {
        return Err(Refusal::Invalid(format!(
            "`{canon}` is a {actual} parameter; use --{actual}"
        )));
    }
    let mut probe = ctx.params.clone();
    probe
        .set_text(canon, value)
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    Ok(Change::SetParam {
        name: canon.to_owned(),
        value: value.to_owned(),
    })
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
