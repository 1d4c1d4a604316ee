//! The database model: one simulated PostgreSQL instance per DN, enough to check "no
//! acknowledged write lost" and "one writable primary" (rust-anchors rule 38): role, term,
//! timeline + history, an LSN that grows with the client workload, streaming with lag from an
//! upstream, synchronous commit with `ANY k`, lock modes, promotion/rebuild delays (SPEC §12's
//! measured ones by default), read-only, and the answers to status queries.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::dn::{
    ActionError, DbState, DnAction, DnRole, DnStatus, Downstream, History, LockState, ProcState,
    StopMode, Upstream,
};
use cm_core::params::{Params, SyncMode};
use cm_core::rng::Prng;
use cm_core::{GroupId, InstanceId, Instant, Lsn, NodeId, Position, Term, Timeline};
use serde::{Deserialize, Serialize};

/// Delays of database operations, as `[min, max]` milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbTimings {
    /// Lock1 until `Prohibit` (SPEC §12: 0.25–0.45 s).
    pub lock1_ms: [f64; 2],
    /// Promotion (0.13–0.17 s).
    pub promote_ms: [f64; 2],
    /// Lock2, Unlock and Notify (0.12–0.15 s).
    pub lock2_ms: [f64; 2],
    /// Rewind / rebuild (0.8–1.4 s).
    pub rewind_ms: [f64; 2],
    /// Start of a stopped instance until it runs pending.
    pub start_ms: [f64; 2],
    /// Fast stop, and a switchover demotion.
    pub stop_ms: [f64; 2],
    /// Reload of a setting (read-only, sync standbys).
    pub reload_ms: [f64; 2],
    /// Status query round trip.
    pub query_ms: [f64; 2],
    /// Connect timeout of a status query to a hung instance.
    pub query_timeout_ms: f64,
}

impl Default for DbTimings {
    fn default() -> Self {
        Self {
            lock1_ms: [250.0, 450.0],
            promote_ms: [130.0, 170.0],
            lock2_ms: [120.0, 150.0],
            rewind_ms: [800.0, 1400.0],
            start_ms: [200.0, 500.0],
            stop_ms: [100.0, 300.0],
            reload_ms: [10.0, 40.0],
            query_ms: [1.0, 5.0],
            query_timeout_ms: 2000.0,
        }
    }
}

fn draw(rng: &mut Prng, range: [f64; 2]) -> Duration {
    let lo = Duration::from_secs_f64(range[0].max(0.0) / 1000.0);
    let hi = Duration::from_secs_f64(range[1].max(range[0]).max(0.0) / 1000.0);
    rng.duration_between(lo, hi)
}

/// Bytes of WAL one client write adds.
pub const WRITE_BYTES: u64 = 512;
/// LSN every instance starts at (after initdb).
pub const INITIAL_LSN: u64 = 0x0100_0000;

/// How often the startup process restarts a flapping WAL receiver
/// (`wal_retrieve_retry_interval`, PostgreSQL's default 5 s).
pub const FLAP_PERIOD: Duration = Duration::from_secs(5);
/// How long each retry of a flapping receiver streams before it dies: about one agent report
/// in five catches it streaming.
pub const FLAP_UP: Duration = Duration::from_secs(1);

/// A standby's running WAL receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receiver {
    /// The instance streamed from.
    pub upstream: InstanceId,
    /// When the last message passed (both directions are modelled as one contact time).
    pub last_contact: Instant,
}

/// A write the client sent that waits for its synchronous acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// Its WAL position on the primary.
    pub position: Position,
    /// When the primary accepted it.
    pub accepted_at: Instant,
}

/// One simulated database instance.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its id.
    pub id: InstanceId,
    /// Its group.
    pub group: GroupId,
    /// Its node.
    pub node: NodeId,
    /// A postmaster exists.
    pub running: bool,
    /// Scheduler state of its processes (faults set T/D/Z).
    pub proc_state: ProcState,
    /// Bumps at every start and kill; completions of older incarnations are dropped.
    pub incarnation: u64,
    /// Dynamic role while running.
    pub role: DnRole,
    /// HA state.
    pub db_state: DbState,
    /// Timeline history of its current timeline.
    pub history: History,
    /// End of its flushed WAL.
    pub lsn: Lsn,
    /// The CM term of its last promotion.
    pub term: Term,
    /// `primary_conninfo` (Lock2 / Unlock / Notify set it; Lock1 clears it).
    pub upstream_setting: Option<InstanceId>,
    /// Lock state once effective.
    pub lock: LockState,
    /// The WAL receiver, when one runs.
    pub receiver: Option<Receiver>,
    /// `default_transaction_read_only`.
    pub read_only: bool,
    /// `ANY k (members)` on this instance.
    pub sync_k: u32,
    /// The member list of the sync setting.
    pub sync_members: Vec<InstanceId>,
    /// Writes waiting for their acknowledgement.
    pub pending: Vec<PendingWrite>,
    /// Last time its WAL changed (the phony-dead check's newest-WAL-file age).
    pub last_wal_change: Instant,
    /// Number of times it was started (for the restart counters of reports).
    pub starts: u32,
    /// Its local WAL is broken (fault `break_stream`, issue 18): the WAL receiver connects to
    /// its upstream and dies over a bad record again and again, so nothing new is received or
    /// replayed, until a Build replaces its data.
    pub stream_broken: bool,
    /// Its replay is stuck on a record it cannot apply (fault `flap_stream`, review of issue
    /// 18 on real PostgreSQL: `invalid record length` / `terminating walreceiver process`
    /// every 5 s): the startup process restarts its WAL receiver every
    /// [`FLAP_PERIOD`]; each retry streams from the upstream for [`FLAP_UP`] (the receive
    /// position catches up) and dies. Until a Build replaces its data.
    pub stream_flaps: bool,
    /// When the current retry of a flapping receiver began.
    pub flap_since: Instant,
    /// Its local WAL diverged from its upstream's at the same timeline (fault `diverge_wal`,
    /// issue 18 on real PostgreSQL: a standby rewound after a failover replays a record with an
    /// incorrect prev-link): its WAL receiver never comes up again — no stream, no refusal the
    /// CMS could read as `NeedRepair`, only the database's log line — until a Build replaces
    /// its data.
    pub wal_diverged: bool,
    /// The WAL its stream must start from is gone from every upstream (fault `remove_wal`,
    /// issue 18 on real PostgreSQL: `requested WAL segment ... has already been removed`, or a
    /// timeline the primary never had): its receiver is refused every time. A Build by
    /// pg_rewind leaves it so; only a full copy (`Build { full: true }`) cures it.
    pub wal_removed: bool,
    /// Its next Build loses its source mid-copy (fault `break_build`, nemesis issue 16 on real
    /// PostgreSQL: pg_rewind's source was demoted while it fetched the file list, the full copy
    /// then found the source shutting down): the Build fails and leaves the data unable to
    /// start ([`Instance::unstartable`]).
    pub build_breaks: bool,
    /// Its data cannot start (on real PostgreSQL: `requested timeline N does not contain
    /// minimum recovery point … on timeline M`): every start exits at once, until a Build
    /// replaces its data.
    pub unstartable: bool,
    /// A Build was cut short (its host crashed mid-Build) and left cm-io's rewind marker
    /// beside the data directory: every start, and every Build ordered to rewind it, is
    /// refused ([`cm_core::dn::ActionError::HalfRewound`]); only a Build the CMS orders as a
    /// full copy replaces it.
    pub half_rewound: bool,
    /// Its data cannot reach a consistent state (fault `stall_recovery`, nemesis issue 16 on
    /// real PostgreSQL: after a pg_rewind, a standby's recovery waits for good on a local
    /// record with an incorrect prev-link before its backup end point): it runs, but answers
    /// every connection `the database system is starting up` — no status, no action but a
    /// stop or kill. A rewind leaves it so; only a full copy (`Build { full: true }`) cures it.
    pub recovery_stalls: bool,
}

impl Instance {
    /// Its (timeline, LSN).
    pub fn position(&self) -> Position {
        Position {
            timeline: self.history.timeline,
            lsn: self.lsn,
        }
    }

    /// Whether its processes can run at all (a frozen host is checked by the caller).
    pub fn responsive(&self) -> bool {
        self.running && self.proc_state == ProcState::Running
    }

    /// Whether it accepts writes (the host is assumed thawed).
    pub fn accepts_writes(&self) -> bool {
        self.responsive()
            && self.role == DnRole::Primary
            && !self.read_only
            && !matches!(self.db_state, DbState::Promoting | DbState::Demoting)
    }
}

/// An action that has begun and completes later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begun {
    /// When it completes, from now.
    pub after: Duration,
    /// The incarnation it belongs to.
    pub incarnation: u64,
}

/// A write that got its acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The group.
    pub group: GroupId,
    /// The primary that acknowledged it.
    pub instance: InstanceId,
    /// Its position.
    pub position: Position,
    /// When it was accepted.
    pub accepted_at: Instant,
}

/// A promotion that took effect (for S5 and the timings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    /// The group.
    pub group: GroupId,
    /// The new primary.
    pub instance: InstanceId,
    /// Its position just before the new timeline began.
    pub before: Position,
    /// Its new history.
    pub history: History,
}

/// Every instance of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Databases {
    /// Instances by id.
    pub instances: BTreeMap<InstanceId, Instance>,
    /// Delays.
    pub timings: DbTimings,
    /// Freshness timeout of the WAL receiver and sender.
    pub wal_timeout: Duration,
    /// Highest timeline each group ever used (a promotion takes the next one).
    max_timeline: BTreeMap<GroupId, Timeline>,
    /// Promotions that happened since the last call to [`Databases::take_promotions`].
    promotions: Vec<Promotion>,
}

impl Databases {
    /// Every member of `config`, stopped, at timeline 1 and the initial LSN.
    pub fn new(config: &ClusterConfig, timings: DbTimings) -> Self {
        let p: &Params = &config.params;
        let mut instances = BTreeMap::new();
        let mut max_timeline = BTreeMap::new();
        for g in &config.groups {
            let n = g.members.len() as u32;
            let q = n.div_ceil(2).max(1);
            let k = match p.dn_sync_mode {
                SyncMode::Quorum if n > 1 => n - q,
                _ => 0,
            };
            let members: Vec<InstanceId> = g.members.iter().map(|m| m.instance).collect();
            max_timeline.insert(g.id, Timeline(1));
            for m in &g.members {
                instances.insert(
                    m.instance,
                    Instance {
                        id: m.instance,
                        group: g.id,
                        node: m.node,
                        running: false,
                        proc_state: ProcState::Running,
                        incarnation: 0,
                        role: DnRole::Down,
                        db_state: DbState::Normal,
                        history: History::root(Timeline(1)),
                        lsn: Lsn(INITIAL_LSN),
                        term: Term(0),
                        upstream_setting: None,
                        lock: LockState::None,
                        receiver: None,
                        read_only: false,
                        sync_k: k,
                        sync_members: members.clone(),
                        pending: Vec::new(),
                        last_wal_change: Instant::ZERO,
                        starts: 0,
                        stream_broken: false,
                        stream_flaps: false,
                        flap_since: Instant::ZERO,
                        wal_diverged: false,
                        wal_removed: false,
                        build_breaks: false,
                        recovery_stalls: false,
                        unstartable: false,
                        half_rewound: false,
                    },
                );
            }
        }
        Self {
            instances,
            timings,
            wal_timeout: p.freshness_window(),
            max_timeline,
            promotions: Vec::new(),
        }
    }

    /// One instance.
    pub fn get(&self, id: InstanceId) -> Option<&Instance> {
        self.instances.get(&id)
    }

    /// Members of a group, in id order.
    pub fn group_members(&self, group: GroupId) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(move |i| i.group == group)
    }

    /// Promotions since the last call.
    pub fn take_promotions(&mut self) -> Vec<Promotion> {
        std::mem::take(&mut self.promotions)
    }

    /// SIGKILL of every process: the instance is gone at once; unacknowledged writes stay in
    /// its local WAL (so a restarted old primary may have diverged).
    pub fn kill(&mut self, id: InstanceId) {
        if let Some(i) = self.instances.get_mut(&id) {
            i.running = false;
            i.incarnation += 1;
            i.role = DnRole::Down;
            i.receiver = None;
            i.pending.clear();
            i.proc_state = ProcState::Running;
            i.lock = LockState::None;
            // A Build cut short (its host crashed) leaves cm-io's `<data>.cm_rewinding` marker
            // (written before pg_rewind starts, removed only once the data directory is whole):
            // the driver refuses to start that data until a Build replaces it. (A full copy cut
            // short leaves the old data startable on real PostgreSQL; the model is harsher.)
            if i.db_state == DbState::Building {
                i.half_rewound = true;
            }
            if i.db_state != DbState::NeedRepair {
                i.db_state = DbState::Normal;
            }
        }
    }

    /// Kills every instance of a node (host crash).
    pub fn crash_node(&mut self, node: NodeId) {
        let ids: Vec<InstanceId> = self
            .instances
            .values()
            .filter(|i| i.node == node)
            .map(|i| i.id)
            .collect();
        for id in ids {
            self.kill(id);
        }
    }

    /// Starts an action at `now`. Immediate effects happen here; the rest at
    /// [`Databases::finish`] after `after`. `Err` when the action cannot start at all.
    pub fn begin(
        &mut self,
        id: InstanceId,
        action: &DnAction,
        rng: &mut Prng,
    ) -> Result<Begun, ActionError> {
        let t = self.timings.clone();
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or_else(|| format!("no instance {id}"))?;
        let after = match action {
            DnAction::Kill => {
                self.kill(id);
                Duration::from_millis(1)
            }
            // The driver runs one lifecycle action per instance at a time: a start waits for a
            // rebuild (which ends with the instance started) and is refused meanwhile.
            DnAction::StartPending if inst.db_state == DbState::Building => {
                return Err(format!("instance {id} is being rebuilt").into());
            }
            // cm-io refuses to start data a pg_rewind left half-rewound (its marker is there).
            DnAction::StartPending if inst.half_rewound => {
                return Err(ActionError::HalfRewound(format!(
                    "instance {id}: not started: the data directory is half-rewound (a \
                     pg_rewind stopped partway; marker <data>.cm_rewinding); the next Build \
                     copies it in full (cm_ctl build)"
                )));
            }
            // cm-io refuses to rewind half-rewound data: the CMS chooses the method, and it
            // orders a full copy once told of the refusal (issue 18).
            DnAction::Build { full: false, .. } if inst.half_rewound => {
                return Err(ActionError::HalfRewound(format!(
                    "instance {id}: pg_rewind refused: the data directory is half-rewound (a \
                     pg_rewind stopped partway; marker <data>.cm_rewinding); only a full copy \
                     cures it (cm_ctl build --full)"
                )));
            }
            DnAction::StartPending if inst.unstartable => {
                return Err(format!(
                    "instance {id} exited during start: requested timeline does not contain \
                     minimum recovery point"
                )
                .into());
            }
            DnAction::StartPending => draw(rng, t.start_ms),
            // The driver builds a stopped DN as well (it stops a running one first).
            DnAction::Build { .. } if !inst.running => {
                inst.db_state = DbState::Building;
                inst.pending.clear();
                draw(rng, t.rewind_ms)
            }
            _ if !inst.running => return Err(format!("instance {id} is not running").into()),
            _ if inst.recovery_stalls
                && !matches!(action, DnAction::Stop { .. } | DnAction::Build { .. }) =>
            {
                return Err(format!(
                    "instance {id}: FATAL 57P03: the database system is starting up"
                )
                .into());
            }
            DnAction::Stop { mode } => match mode {
                StopMode::Immediate => draw(rng, [5.0, 20.0]),
                _ => draw(rng, t.stop_ms),
            },
            DnAction::Lock1 => {
                inst.upstream_setting = None;
                inst.receiver = None;
                draw(rng, t.lock1_ms)
            }
            DnAction::Lock2 { .. } | DnAction::Unlock { .. } | DnAction::NotifyStandby { .. } => {
                draw(rng, t.lock2_ms)
            }
            DnAction::Promote { .. } => {
                if inst.role == DnRole::Primary {
                    return Err(format!("instance {id} is already primary").into());
                }
                inst.db_state = DbState::Promoting;
                inst.receiver = None;
                draw(rng, t.promote_ms)
            }
            DnAction::Demote => {
                inst.db_state = DbState::Demoting;
                draw(rng, t.stop_ms)
            }
            DnAction::Build { .. } => {
                inst.db_state = DbState::Building;
                inst.receiver = None;
                inst.running = false;
                inst.role = DnRole::Down;
                inst.pending.clear();
                draw(rng, t.rewind_ms)
            }
            DnAction::SetReadOnly { .. } | DnAction::SetSyncStandbys { .. } => {
                draw(rng, t.reload_ms)
            }
        };
        let incarnation = self.instances.get(&id).map_or(0, |i| i.incarnation);
        Ok(Begun { after, incarnation })
    }

    /// Completes an action begun in `incarnation`. A hung instance (T/D/Z) completes only kills.
    pub fn finish(
        &mut self,
        now: Instant,
        id: InstanceId,
        action: &DnAction,
        incarnation: u64,
    ) -> Result<(), String> {
        let max_tli = self.max_timeline_of(id);
        let source = match action {
            DnAction::Build { source, .. } => self.instances.get(source).cloned(),
            _ => None,
        };
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or_else(|| format!("no instance {id}"))?;
        if matches!(action, DnAction::Kill) {
            return Ok(());
        }
        if inst.incarnation != incarnation {
            return Err(format!("instance {id} restarted meanwhile"));
        }
        if inst.running && inst.proc_state != ProcState::Running {
            // The driver's action failed (its SQL session timed out): a state that lasts only
            // while the action runs ends with it, as cm-io reports Promoting/Demoting only
            // while its action is busy. Left set, a promotion that hit a hung standby made it
            // report Promoting for good and the CMS waited on it forever (swarm seed 5623).
            if matches!(action, DnAction::Promote { .. } | DnAction::Demote)
                && matches!(inst.db_state, DbState::Promoting | DbState::Demoting)
            {
                inst.db_state = DbState::Normal;
            }
            return Err(format!("instance {id} does not respond"));
        }
        match action {
            DnAction::Kill => {}
            DnAction::StartPending => start_pending(inst, now),
            DnAction::Stop { .. } => {
                inst.running = false;
                inst.incarnation += 1;
                inst.role = DnRole::Down;
                inst.receiver = None;
                inst.pending.clear();
            }
            DnAction::Lock1 => {
                if inst.role == DnRole::Primary {
                    return Err("Lock1 on a primary".into());
                }
                inst.upstream_setting = None;
                inst.receiver = None;
                inst.lock = LockState::Prohibit;
            }
            DnAction::Lock2 { primary } => {
                inst.upstream_setting = Some(*primary);
                inst.lock = LockState::Specified(*primary);
            }
            DnAction::Unlock { primary } => {
                if inst.role != DnRole::Primary {
                    inst.upstream_setting = Some(*primary);
                }
                inst.lock = LockState::None;
            }
            DnAction::NotifyStandby { primary } => {
                if inst.role == DnRole::Primary {
                    return Err("Notify standby on a primary".into());
                }
                inst.role = DnRole::Standby;
                inst.upstream_setting = Some(*primary);
                inst.lock = LockState::None;
            }
            DnAction::Promote { term } => {
                let before = inst.position();
                let next = Timeline(max_tli.0 + 1);
                inst.history = inst.history.branch(inst.lsn, next);
                inst.role = DnRole::Primary;
                inst.db_state = DbState::Normal;
                inst.term = *term;
                inst.upstream_setting = None;
                inst.lock = LockState::None;
                inst.receiver = None;
                inst.last_wal_change = now;
                let promo = Promotion {
                    group: inst.group,
                    instance: id,
                    before,
                    history: inst.history.clone(),
                };
                self.max_timeline.insert(promo.group, next);
                self.promotions.push(promo);
            }
            DnAction::Demote => self.demote(id),
            DnAction::Build { full, .. } => {
                let src = source.ok_or("no such source")?;
                let inst = self.instances.get_mut(&id).ok_or("gone")?;
                if core::mem::take(&mut inst.build_breaks) {
                    inst.unstartable = true;
                    inst.db_state = DbState::Normal;
                    return Err(format!(
                        "build of instance {id} failed: the source {} closed the connection",
                        src.id
                    ));
                }
                // Only a full copy reaches here on half-rewound data (a rewind of it is
                // refused at the start, as cm-io does); it replaces the data whole.
                let full = *full;
                inst.half_rewound = false;
                inst.unstartable = false;
                inst.history = src.history.clone();
                inst.lsn = src.lsn;
                inst.stream_broken = false;
                inst.stream_flaps = false;
                inst.wal_diverged = false;
                inst.wal_removed &= !full;
                inst.recovery_stalls &= !full;
                start_pending(inst, now);
                inst.role = DnRole::Standby;
                inst.upstream_setting = Some(src.id);
            }
            DnAction::SetReadOnly { on } => inst.read_only = *on,
            DnAction::SetSyncStandbys { k, members } => {
                inst.sync_k = *k;
                inst.sync_members = members.clone();
            }
        }
        Ok(())
    }

    /// Ends a Build begun in `incarnation` whose source could not be reached (pg_rewind and
    /// pg_basebackup both fail): the data directory is left as it was (cm-io swaps a full copy
    /// in only once it succeeded), the instance stays down and still needs its rebuild.
    pub fn fail_build(
        &mut self,
        id: InstanceId,
        source: InstanceId,
        incarnation: u64,
    ) -> Result<(), String> {
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or_else(|| format!("no instance {id}"))?;
        if inst.incarnation != incarnation {
            return Err(format!("instance {id} restarted meanwhile"));
        }
        if inst.db_state == DbState::Building {
            inst.db_state = DbState::NeedRepair;
        }
        Err(format!(
            "build of {id} failed: its source {source} is unreachable"
        ))
    }

    fn max_timeline_of(&self, id: InstanceId) -> Timeline {
        self.instances
            .get(&id)
            .and_then(|i| self.max_timeline.get(&i.group))
            .copied()
            .unwrap_or(Timeline(1))
    }

    /// Switchover's first half: WAL up to the shutdown checkpoint reaches every streaming
    /// standby, then the instance stops.
    fn demote(&mut self, id: InstanceId) {
        let Some(primary) = self.instances.get(&id).cloned() else {
            return;
        };
        for s in self.instances.values_mut() {
            if s.receiver.is_some_and(|r| r.upstream == id)
                && s.history.timeline == primary.history.timeline
            {
                s.lsn = s.lsn.max(primary.lsn);
            }
        }
        if let Some(p) = self.instances.get_mut(&id) {
            p.running = false;
            p.incarnation += 1;
            p.role = DnRole::Down;
            p.db_state = DbState::Normal;
            p.pending.clear();
        }
    }

    /// The answer to a status query at `now`: `Err` when it is refused or times out, with the
    /// delay after which the agent learns it.
    pub fn query(
        &self,
        now: Instant,
        id: InstanceId,
        host_frozen: bool,
        rng: &mut Prng,
    ) -> (Duration, Result<DnStatus, String>) {
        let t = &self.timings;
        let Some(inst) = self.instances.get(&id) else {
            return (Duration::ZERO, Err("no such instance".into()));
        };
        if !inst.running {
            return (draw(rng, t.query_ms), Err("connection refused".into()));
        }
        if host_frozen || inst.proc_state != ProcState::Running {
            let timeout = Duration::from_secs_f64(t.query_timeout_ms / 1000.0);
            return (timeout, Err("timeout expired".into()));
        }
        if inst.recovery_stalls {
            let e = "FATAL 57P03: the database system is starting up";
            return (draw(rng, t.query_ms), Err(e.into()));
        }
        (draw(rng, t.query_ms), Ok(self.status_of(now, inst)))
    }

    /// What a status query of a responsive instance returns.
    pub fn status_of(&self, now: Instant, inst: &Instance) -> DnStatus {
        let upstream = inst.receiver.map(|r| Upstream {
            instance: r.upstream,
            last_msg_age: now - r.last_contact,
        });
        let downstreams = if inst.role == DnRole::Primary {
            self.instances
                .values()
                .filter_map(|s| {
                    let r = s.receiver?;
                    (r.upstream == inst.id && s.running).then(|| Downstream {
                        instance: s.id,
                        reply_age: now - r.last_contact,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        DnStatus {
            role: inst.role,
            db_state: inst.db_state,
            position: inst.position(),
            history: inst.history.clone(),
            lock: if inst.role == DnRole::Primary {
                LockState::None
            } else {
                inst.lock
            },
            upstream,
            downstreams,
            read_only: inst.read_only,
            receiver_error: (inst.role == DnRole::Standby
                && inst.lock != LockState::Prohibit
                && inst.upstream_setting.is_some())
            .then(|| {
                if inst.wal_diverged {
                    Some("no WAL receiver; LOG:  record with incorrect prev-link".to_owned())
                } else if inst.wal_removed {
                    Some(
                        "no WAL receiver; FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment has already been removed"
                            .to_owned(),
                    )
                } else {
                    None
                }
            })
            .flatten(),
            // The model replays what it receives at once.
            replay: (inst.role != DnRole::Primary).then_some(inst.lsn),
        }
    }

    /// Process states an agent samples from /proc: empty when none runs.
    pub fn processes(&self, id: InstanceId) -> Vec<ProcState> {
        match self.instances.get(&id) {
            Some(i) if i.running => vec![i.proc_state; 3],
            _ => Vec::new(),
        }
    }

    /// One replication step at `now`: receivers (re)connect or time out, standbys catch up with
    /// their upstream's WAL as of the previous step, and synchronous acknowledgements are
    /// counted. `talk(a, b)` says whether nodes a and b exchange packets (link up, not frozen).
    pub fn replicate(&mut self, now: Instant, talk: &dyn Fn(NodeId, NodeId) -> bool) -> Vec<Ack> {
        // Only standbys and pending instances change below, and a standby streams only from a
        // primary, so every upstream read here is as of the previous step without a snapshot.
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in &ids {
            let Some(s) = self.instances.get(id) else {
                continue;
            };
            if !s.responsive() || !matches!(s.role, DnRole::Standby | DnRole::Pending) {
                continue;
            }
            if !talk(s.node, s.node) {
                continue; // frozen host
            }
            let target = match s.lock {
                LockState::Prohibit => None,
                _ => s.upstream_setting,
            };
            let up = target.and_then(|t| self.instances.get(&t)).map(|u| {
                let reachable = u.responsive() && u.role == DnRole::Primary && talk(s.node, u.node);
                let repair = !u.history.contains(s.position())
                    || (s.history.timeline == u.history.timeline && s.lsn > u.lsn);
                let history = (reachable
                    && !repair
                    && !s.wal_diverged
                    && s.receiver.is_none_or(|r| Some(r.upstream) != target))
                .then(|| u.history.clone());
                (u.id, u.lsn, reachable, repair, history)
            });
            let Some(s) = self.instances.get_mut(id) else {
                continue;
            };
            if s.receiver.is_some_and(|r| Some(r.upstream) != target) {
                s.receiver = None;
            }
            if s.stream_flaps {
                if now.saturating_since(s.flap_since) >= FLAP_PERIOD {
                    s.flap_since = now;
                }
                if now.saturating_since(s.flap_since) >= FLAP_UP {
                    s.receiver = None;
                    continue;
                }
            }
            if s.wal_diverged || s.wal_removed || s.recovery_stalls {
                // The startup process stops at the bad record before asking for a stream, or
                // the upstream refuses the stream it asks for (or, stalled, keeps none).
                s.receiver = None;
                continue;
            }
            let Some((uid, ulsn, reachable, repair, history)) = up else {
                continue;
            };
            if !reachable {
                if s.receiver
                    .is_some_and(|r| now - r.last_contact > self.wal_timeout)
                {
                    s.receiver = None;
                }
                continue;
            }
            if s.receiver.is_none() {
                if repair {
                    s.db_state = DbState::NeedRepair;
                    continue;
                }
                if let Some(h) = history {
                    s.history = h;
                }
                s.db_state = DbState::Normal;
            }
            s.receiver = Some(Receiver {
                upstream: uid,
                last_contact: now,
            });
            if s.stream_broken {
                continue;
            }
            if ulsn > s.lsn {
                s.lsn = ulsn;
                s.last_wal_change = now;
            }
        }
        self.acknowledge()
    }

    /// Acknowledges every pending write of every primary that `ANY k` of its sync members hold.
    fn acknowledge(&mut self) -> Vec<Ack> {
        let mut acks = Vec::new();
        let primaries: Vec<InstanceId> = self
            .instances
            .values()
            .filter(|i| i.role == DnRole::Primary && !i.pending.is_empty())
            .map(|i| i.id)
            .collect();
        for pid in primaries {
            let p = &self.instances[&pid];
            let holders: Vec<Lsn> = self
                .instances
                .values()
                .filter(|s| {
                    s.id != pid
                        && p.sync_members.contains(&s.id)
                        && s.receiver.is_some_and(|r| r.upstream == pid)
                        && s.history.timeline == p.history.timeline
                })
                .map(|s| s.lsn)
                .collect();
            let k = p.sync_k as usize;
            let group = p.group;
            let Some(inst) = self.instances.get_mut(&pid) else {
                continue;
            };
            inst.pending.retain(|w| {
                let have = holders.iter().filter(|l| **l >= w.position.lsn).count();
                if have >= k {
                    acks.push(Ack {
                        group,
                        instance: pid,
                        position: w.position,
                        accepted_at: w.accepted_at,
                    });
                    false
                } else {
                    true
                }
            });
        }
        acks
    }

    /// The client writes once to `id` (which must accept writes): the WAL grows and the write
    /// waits for its acknowledgement (immediate with `k = 0`).
    pub fn write(&mut self, now: Instant, id: InstanceId) -> Vec<Ack> {
        let Some(p) = self.instances.get_mut(&id) else {
            return Vec::new();
        };
        if !p.accepts_writes() {
            return Vec::new();
        }
        p.lsn = Lsn(p.lsn.0 + WRITE_BYTES);
        p.last_wal_change = now;
        p.pending.push(PendingWrite {
            position: p.position(),
            accepted_at: now,
        });
        if p.sync_k == 0 {
            self.acknowledge()
        } else {
            Vec::new()
        }
    }

    /// Members of `group` that could acknowledge a commit right now (S4): accepting writes and,
    /// in synchronous mode, with at least k sync members streaming from it.
    pub fn can_acknowledge(
        &self,
        group: GroupId,
        frozen: &dyn Fn(NodeId) -> bool,
    ) -> Vec<InstanceId> {
        self.acknowledgers(group, frozen).collect()
    }

    /// [`Databases::can_acknowledge`] without collecting (checked after every event).
    pub fn acknowledgers<'a>(
        &'a self,
        group: GroupId,
        frozen: &'a dyn Fn(NodeId) -> bool,
    ) -> impl Iterator<Item = InstanceId> + 'a {
        self.group_members(group)
            .filter(move |p| p.accepts_writes() && !frozen(p.node))
            .filter(move |p| {
                let streaming = self
                    .instances
                    .values()
                    .filter(|s| {
                        s.id != p.id
                            && p.sync_members.contains(&s.id)
                            && s.responsive()
                            && s.receiver.is_some_and(|r| r.upstream == p.id)
                    })
                    .count();
                streaming >= p.sync_k as usize
            })
            .map(|p| p.id)
    }
}

fn start_pending(inst: &mut Instance, now: Instant) {
    if inst.running {
        return;
    }
    inst.running = true;
    inst.incarnation += 1;
    inst.proc_state = ProcState::Running;
    inst.role = DnRole::Pending;
    inst.upstream_setting = None;
    inst.lock = LockState::None;
    inst.receiver = None;
    inst.pending.clear();
    inst.last_wal_change = now;
    inst.starts += 1;
    if inst.db_state != DbState::NeedRepair {
        inst.db_state = DbState::Normal;
    }
}

#[cfg(test)]
#[path = "db_tests.rs"]
pub(crate) mod tests;
