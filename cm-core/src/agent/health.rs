//! The conditions behind the agent's HTTP answers (SPEC.md §15) and the lease-and-role part of
//! `/primary` that §14's `with_primary_of` placement uses.
//!
//! Everything here is a pure function of a snapshot of the agent's state and a clock reading
//! `now` taken per request: the daemon publishes an [`AgentHealth`] after every step and the
//! HTTP server evaluates it, so a request costs no PostgreSQL connection and never waits for the
//! event loop. The simulator evaluates the same functions on its agents.
//!
//! # The write lease (§15 `/primary`, first part)
//!
//! An instance holds the write lease at `now` when
//! 1. it runs as primary (a process, no kill in progress, last known role Primary);
//! 2. the newest leader answer that carried a view of its group (a leasing CMS leader's
//!    [`crate::msg::GroupView`]) names this instance the group's primary, at a term equal to the
//!    instance's own durable CM term;
//! 3. the report that answer replied to was sent less than `agent_self_fence_timeout − 2 ×
//!    agent_report_interval` before `now` ([`lease_window`]) — or §8's streaming-quorum
//!    exception holds (the same rule the self-fence uses,
//!    [`crate::quorum_math::streaming_blocks_lock1`]).
//!
//! So the lease ends at least two report intervals before the self-fence would kill the DN
//! (which counts `agent_self_fence_timeout` from the newest answered send time, a time no older
//! than the one counted here), and a leader answer naming another primary or a newer term ends
//! it at once. `enable_self_fence = off` does not lengthen it: the fencing floor of §8 that keeps
//! two primaries apart assumes this bound.
//!
//! # `/primary` (whole)
//!
//! The write lease, AND the last status query succeeded, AND the DN is not read-only, AND no
//! `Lock1`, `Demote` or `Restart` has been accepted for it since it was last promoted or
//! released (Unlock, Lock2, NotifyStandby).

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Agent;
use super::instance::{Fence, Inst};
use crate::ctl::ClusterStatus;
use crate::dn::{DbState, DnRole, Downstream, Upstream};
use crate::ids::{InstanceId, Lsn, NodeId, Position, Term};
use crate::msg::GroupView;
use crate::params::Params;
use crate::time::Instant;

/// What the newest leader answer said of an instance's group, as the agent keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    /// Send time of the report that answer replied to (this host's clock).
    pub sent: Instant,
    /// The group's primary as the leader's committed state names it.
    pub primary: InstanceId,
    /// The group's committed term.
    pub term: Term,
    /// The primary's position and (on this host's clock, approximately: the reply's receipt
    /// less the age the leader stated) when the leader received it.
    pub primary_position: Option<(Position, Instant)>,
}

/// Why an instance does not hold the write lease or may not take writes (`/primary` 503).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotWritable {
    /// No such DN on this node.
    UnknownInstance,
    /// No process runs, or a kill (fence) is in progress.
    NotRunning,
    /// The DN's last known role is not Primary.
    NotPrimary {
        /// The last known role.
        role: Option<DnRole>,
    },
    /// No leader answer has carried a view of the group yet.
    NoLeaderView,
    /// The newest leader answer named another primary.
    OtherPrimary {
        /// The primary the leader named.
        primary: InstanceId,
        /// At this group term.
        term: Term,
    },
    /// The leader named this instance at a term other than the DN's own.
    TermMismatch {
        /// The DN's durable CM term.
        own: Term,
        /// The group's term as the leader holds it.
        group: Term,
    },
    /// The newest report that named it primary is too old and the streaming-quorum exception
    /// does not hold.
    LeaseExpired {
        /// How long ago that report was sent.
        sent_ago: Duration,
        /// The window it had to be within.
        window: Duration,
    },
    /// The DN's last status query failed.
    StatusQueryFailed,
    /// `default_transaction_read_only` is on.
    ReadOnly,
    /// A Lock1, Demote or Restart was accepted for it.
    SteppingDown,
}

impl fmt::Display for NotWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownInstance => f.write_str("no such instance on this node"),
            Self::NotRunning => f.write_str("the instance is not running or is being killed"),
            Self::NotPrimary { role: Some(r) } => {
                let role = format!("{r:?}").to_ascii_lowercase();
                write!(f, "the instance is {role}, not primary")
            }
            Self::NotPrimary { role: None } => f.write_str("the instance's role is not known"),
            Self::NoLeaderView => {
                f.write_str("no CMS leader has named the group's primary to this agent yet")
            }
            Self::OtherPrimary { primary, term } => {
                write!(
                    f,
                    "the CMS leader names {primary} the primary at term {term}"
                )
            }
            Self::TermMismatch { own, group } => {
                write!(
                    f,
                    "the instance's term {own} is not the group's term {group}"
                )
            }
            Self::LeaseExpired { sent_ago, window } => write!(
                f,
                "the newest leader-answered report was sent {:.3} s ago (lease window {:.3} s) \
                 and no streaming quorum protects it",
                sent_ago.as_secs_f64(),
                window.as_secs_f64()
            ),
            Self::StatusQueryFailed => f.write_str("the last status query failed"),
            Self::ReadOnly => f.write_str("the instance is read-only"),
            Self::SteppingDown => {
                f.write_str("a Lock1, Demote or Restart was accepted for the instance")
            }
        }
    }
}

/// How long after its send time a report whose answer named the instance primary keeps the
/// write lease: `agent_self_fence_timeout − 2 × agent_report_interval` (§15).
pub fn lease_window(params: &Params) -> Duration {
    params
        .self_fence_timeout()
        .saturating_sub(params.report_interval() * 2)
}

/// §8's streaming-quorum exception: fresh downstream rows (reply age, aged further by the time
/// since the sample, under `staleness`) from distinct valid members other than `me` number more
/// than n − 1 − q.
pub(super) fn streaming_quorum(
    me: InstanceId,
    group: &[InstanceId],
    downstreams: &[Downstream],
    sample_age: Duration,
    staleness: Duration,
) -> bool {
    let fresh: std::collections::BTreeSet<InstanceId> = downstreams
        .iter()
        .filter(|d| d.instance != me && group.contains(&d.instance))
        .filter(|d| d.reply_age.saturating_add(sample_age) < staleness)
        .map(|d| d.instance)
        .collect();
    crate::quorum_math::streaming_blocks_lock1(fresh.len(), group.len())
}

/// One DN as the HTTP conditions need it (plain data, a snapshot of the agent's state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHealth {
    /// The instance.
    pub instance: InstanceId,
    /// Its group's members in config order (itself included).
    pub group: Vec<InstanceId>,
    /// A process runs.
    pub running: bool,
    /// A kill is in progress or not yet confirmed.
    pub fencing: bool,
    /// The last known role.
    pub role: Option<DnRole>,
    /// The HA state of the newest status read (None: never read, or the DN is down).
    pub db_state: Option<DbState>,
    /// The DN's durable CM term.
    pub term: Term,
    /// The last status query succeeded.
    pub query_ok: bool,
    /// `default_transaction_read_only` is on (as last read).
    pub read_only: bool,
    /// A Lock1, Demote or Restart was accepted for it since its last promotion or release.
    pub stepping_down: bool,
    /// Its position as last read.
    pub position: Option<Position>,
    /// Its WAL receiver as last read.
    pub upstream: Option<Upstream>,
    /// Standbys streaming from it as last read.
    pub downstreams: Vec<Downstream>,
    /// When the newest status was read.
    pub status_at: Instant,
    /// What the newest leader answer said of its group.
    pub view: Option<LeaderView>,
    /// Phony-dead hits (§6).
    pub phony_dead_hits: u32,
    /// Data path usage, percent.
    pub data_disk_pct: u8,
    /// Log path usage, percent.
    pub log_disk_pct: u8,
    /// The disk probe failed 3 times (§3).
    pub disk_damaged: bool,
    /// Restarts since the agent started.
    pub restarts_total: u64,
    /// A standby's replay position as last read (what `/replica?lag=` measures).
    pub replay: Option<Lsn>,
}

/// The agent as the HTTP endpoints and the agent's metrics see it: published by the daemon after
/// every step, evaluated per request with a fresh clock reading.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentHealth {
    /// This node.
    pub node: NodeId,
    /// The agent's parameters.
    pub params: Params,
    /// The time of the agent's latest step (`/liveness`).
    pub stepped_at: Instant,
    /// The CMS whose latest reply was `Leader`.
    pub leader: Option<NodeId>,
    /// Send time of the newest report a leader answered.
    pub answered_send: Option<Instant>,
    /// Self-fences since the agent started.
    pub self_fences: u64,
    /// Local DNs.
    pub instances: Vec<InstanceHealth>,
    /// The newest cluster status from the leader (`cm_ctl query --json`'s object) and when it
    /// arrived.
    pub cluster: Option<(Instant, Arc<ClusterStatus>)>,
    /// Local resource instances and their states, in config order (§14; metrics, §15).
    pub resources: Vec<crate::resource::ResourceReport>,
}

impl InstanceHealth {
    /// The write lease at `now` (see the module documentation).
    pub fn write_lease(&self, params: &Params, now: Instant) -> Result<(), NotWritable> {
        self.lease_inputs().write_lease(params, now)
    }

    /// `/primary` at `now` (see the module documentation).
    pub fn primary(&self, params: &Params, now: Instant) -> Result<(), NotWritable> {
        self.lease_inputs().primary(params, now)
    }

    fn lease_inputs(&self) -> LeaseInputs<'_> {
        LeaseInputs {
            instance: self.instance,
            group: &self.group,
            running: self.running,
            fencing: self.fencing,
            role: self.role,
            term: self.term,
            view: self.view,
            query_ok: self.query_ok,
            read_only: self.read_only,
            stepping_down: self.stepping_down,
            downstreams: &self.downstreams,
            status_at: self.status_at,
        }
    }
}

/// What the write lease and `/primary` read of one DN, borrowed: from a published
/// [`InstanceHealth`] (the daemon's HTTP answers) or from the agent's own state
/// ([`Agent::writable`], which the simulator asks after every event), so both evaluate the
/// same rule.
struct LeaseInputs<'a> {
    instance: InstanceId,
    group: &'a [InstanceId],
    running: bool,
    fencing: bool,
    role: Option<DnRole>,
    term: Term,
    view: Option<LeaderView>,
    query_ok: bool,
    read_only: bool,
    stepping_down: bool,
    downstreams: &'a [Downstream],
    status_at: Instant,
}

impl LeaseInputs<'_> {
    fn write_lease(&self, params: &Params, now: Instant) -> Result<(), NotWritable> {
        if !self.running || self.fencing {
            return Err(NotWritable::NotRunning);
        }
        if self.role != Some(DnRole::Primary) {
            return Err(NotWritable::NotPrimary { role: self.role });
        }
        let view = self.view.ok_or(NotWritable::NoLeaderView)?;
        if view.primary != self.instance {
            return Err(NotWritable::OtherPrimary {
                primary: view.primary,
                term: view.term,
            });
        }
        if view.term != self.term {
            return Err(NotWritable::TermMismatch {
                own: self.term,
                group: view.term,
            });
        }
        let window = lease_window(params);
        let sent_ago = now.saturating_since(view.sent);
        if sent_ago < window || self.streaming_quorum(params, now) {
            return Ok(());
        }
        Err(NotWritable::LeaseExpired { sent_ago, window })
    }

    fn primary(&self, params: &Params, now: Instant) -> Result<(), NotWritable> {
        self.write_lease(params, now)?;
        if !self.query_ok {
            return Err(NotWritable::StatusQueryFailed);
        }
        if self.read_only {
            return Err(NotWritable::ReadOnly);
        }
        if self.stepping_down {
            return Err(NotWritable::SteppingDown);
        }
        Ok(())
    }

    fn streaming_quorum(&self, params: &Params, now: Instant) -> bool {
        streaming_quorum(
            self.instance,
            self.group,
            self.downstreams,
            now.saturating_since(self.status_at),
            params.streaming_reply_staleness(),
        )
    }
}

impl Inst {
    /// What [`InstanceHealth::primary`] reads, borrowed from the live state (the same values
    /// [`Inst::health`] copies).
    fn lease_inputs(&self) -> LeaseInputs<'_> {
        let status = self.status.as_ref();
        LeaseInputs {
            instance: self.id,
            group: &self.group,
            running: self.running(),
            fencing: self.fence != Fence::None,
            role: self.known_role(),
            term: self.term,
            view: self.view,
            query_ok: self.query_ok(),
            read_only: status.is_some_and(|s| s.read_only),
            stepping_down: self.stepping_down,
            downstreams: status.map_or(&[], |s| &s.downstreams[..]),
            status_at: self.status_at,
        }
    }

    /// This DN's health snapshot.
    pub(super) fn health(&self) -> InstanceHealth {
        let status = self.status.as_ref();
        InstanceHealth {
            instance: self.id,
            group: self.group.clone(),
            running: self.running(),
            fencing: self.fence != Fence::None,
            role: self.known_role(),
            db_state: status.map(|s| s.db_state),
            term: self.term,
            query_ok: self.query_ok(),
            read_only: status.is_some_and(|s| s.read_only),
            stepping_down: self.stepping_down,
            position: status.map(|s| s.position),
            upstream: status.and_then(|s| s.upstream),
            downstreams: status.map(|s| s.downstreams.clone()).unwrap_or_default(),
            status_at: self.status_at,
            view: self.view,
            phony_dead_hits: self.phony_hits,
            data_disk_pct: self.data_pct,
            log_disk_pct: self.log_pct,
            disk_damaged: self.disk_damaged,
            restarts_total: self.restarts_total,
            replay: status.and_then(|s| s.replay),
        }
    }
}

impl Agent {
    /// The lease-and-role part of `/primary` (§15) for a local DN at `now`; what §14's
    /// `with_primary_of` placement uses. See the module documentation.
    pub fn write_lease(&self, instance: InstanceId, now: Instant) -> Result<(), NotWritable> {
        self.instance_health(instance)?
            .write_lease(&self.params, now)
    }

    /// `/primary` (§15) for a local DN at `now`. See the module documentation.
    pub fn primary(&self, instance: InstanceId, now: Instant) -> Result<(), NotWritable> {
        self.instance_health(instance)?.primary(&self.params, now)
    }

    /// The snapshot the HTTP endpoints answer from (see [`AgentHealth`]).
    pub fn health(&self) -> AgentHealth {
        AgentHealth {
            node: self.node,
            params: self.params.clone(),
            stepped_at: self.guard.last(),
            leader: self.cms.leader,
            answered_send: self.cms.answered_send,
            self_fences: self.self_fences,
            instances: self.insts.values().map(Inst::health).collect(),
            cluster: self.cluster.clone(),
            resources: self.res.iter().map(super::ResInst::report).collect(),
        }
    }

    /// The local DNs for which `/primary` answers 200 at `now` (the simulator's check that no
    /// two members of a group answer it at once).
    pub fn writable(&self, now: Instant) -> Vec<InstanceId> {
        self.writable_iter(now).collect()
    }

    /// [`Agent::writable`] without collecting (the simulator asks after every event).
    pub fn writable_iter(&self, now: Instant) -> impl Iterator<Item = InstanceId> + '_ {
        self.insts
            .values()
            // Cheap first: only a live primary can answer 200.
            .filter(move |i| {
                i.is_live_primary() && i.lease_inputs().primary(&self.params, now).is_ok()
            })
            .map(|i| i.id)
    }

    /// The health snapshot of one local DN.
    pub fn instance_health(&self, instance: InstanceId) -> Result<InstanceHealth, NotWritable> {
        self.insts
            .get(&instance)
            .map(Inst::health)
            .ok_or(NotWritable::UnknownInstance)
    }

    /// Records the views of a leader answer to the report sent at `sent`, received at `now`:
    /// each local DN of a named group keeps the view of the newest report (by send time).
    pub(super) fn note_group_views(&mut self, now: Instant, sent: Instant, groups: &[GroupView]) {
        for gv in groups {
            for inst in self.insts.values_mut() {
                if inst.gid != gv.group || inst.view.is_some_and(|v| v.sent > sent) {
                    continue;
                }
                inst.view = Some(LeaderView {
                    sent,
                    primary: gv.primary,
                    term: gv.term,
                    primary_position: gv
                        .primary_position
                        .map(|(p, age)| (p, now.saturating_sub(age))),
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
