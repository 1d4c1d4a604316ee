//! Database-instance (DN) facts and actions shared by the agent, the server, the drivers and
//! the simulator: the report an agent sends, the timeline history positions are compared along,
//! and the one [`DnAction`] enum every database driver implements.

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{CmdStamp, InstanceId, Lsn, Position, Term, Timeline};

/// A DN's dynamic role as the agent observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DnRole {
    /// Accepts writes.
    Primary,
    /// Recovering and following (or locked away from) a primary.
    Standby,
    /// Started as a standby with no upstream; waits for `Notify standby`.
    Pending,
    /// The process runs but its status could not be read, or the member timed out.
    Unknown,
    /// No process runs.
    Down,
}

/// A DN's HA state, as CM's `db_state` (shown in `cm_ctl query`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DbState {
    /// Healthy.
    Normal,
    /// Diverged from the primary; needs Build.
    NeedRepair,
    /// Starting up.
    Starting,
    /// Promotion in progress.
    Promoting,
    /// Demotion (switchover) in progress.
    Demoting,
    /// Build in progress.
    Building,
    /// Catching up with the primary.
    CatchUp,
    /// Stopped by an operator (manual-start flag).
    ManuallyStopped,
    /// The disk probe failed 3 times (§3).
    DiskDamaged,
    /// A Build failed.
    BuildFailed,
    /// The status query failed.
    Unknown,
}

impl DnRole {
    /// The role as `cm_ctl query` and progress lines print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Primary => "Primary",
            Self::Standby => "Standby",
            Self::Pending => "Pending",
            Self::Unknown => "Unknown",
            Self::Down => "Down",
        }
    }
}

impl core::fmt::Display for DnRole {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl DbState {
    /// The state as `cm_ctl query` and progress lines print it (CM's words).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::NeedRepair => "Need repair",
            Self::Starting => "Starting",
            Self::Promoting => "Promoting",
            Self::Demoting => "Demoting",
            Self::Building => "Building",
            Self::CatchUp => "Catchup",
            Self::ManuallyStopped => "Manually stopped",
            Self::DiskDamaged => "Disk damaged",
            Self::BuildFailed => "Build failed",
            Self::Unknown => "Unknown",
        }
    }
}

impl core::fmt::Display for DbState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The replication lock state of a DN (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockState {
    /// Normal following of the current primary.
    None,
    /// Lock1 took effect: no WAL receiver, empty upstream, local WAL exhausted.
    Prohibit,
    /// Lock2: follows only this instance.
    Specified(InstanceId),
    /// Not known (status query failed).
    Unknown,
}

/// The state of one OS process, as read from /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProcState {
    /// Running or sleeping (R/S/I).
    Running,
    /// Uninterruptible sleep (D).
    DiskSleep,
    /// Stopped (T), e.g. SIGSTOP.
    Stopped,
    /// Zombie (Z).
    Zombie,
}

/// Mode of a database stop (`cm_ctl stop -m`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, checkpoint, stop.
    #[default]
    Fast,
    /// Stop at once, without a checkpoint.
    Immediate,
}

impl StopMode {
    /// The name used by cm_ctl and in flag files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smart => "smart",
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }

    /// Parses `smart|fast|immediate` (and CM's one-letter forms `s|f|i`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "smart" | "s" => Some(Self::Smart),
            "fast" | "f" => Some(Self::Fast),
            "immediate" | "i" => Some(Self::Immediate),
            _ => None,
        }
    }
}

/// A timeline history: for each ancestor timeline, the LSN at which it ended (PostgreSQL's
/// `.history` file). Empty for timeline 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct History {
    /// The timeline this history leads to.
    pub timeline: Timeline,
    /// `(ancestor timeline, switch LSN)` in increasing timeline order.
    pub forks: Vec<(Timeline, Lsn)>,
}

impl History {
    /// The history of a first timeline.
    pub fn root(timeline: Timeline) -> Self {
        Self {
            timeline,
            forks: Vec::new(),
        }
    }

    /// Whether `pos` lies on this history: on the current timeline, or on an ancestor at or
    /// before the point where it was left. A position past an ancestor's fork point is diverged.
    pub fn contains(&self, pos: Position) -> bool {
        if pos.timeline == self.timeline {
            return true;
        }
        self.forks
            .iter()
            .any(|(tli, end)| *tli == pos.timeline && pos.lsn <= *end)
    }

    /// The history a promotion at `at` on this history's timeline creates, to timeline `next`.
    pub fn branch(&self, at: Lsn, next: Timeline) -> Self {
        let mut forks = self.forks.clone();
        forks.push((self.timeline, at));
        Self {
            timeline: next,
            forks,
        }
    }
}

/// A standby's WAL receiver, as seen on the standby (`pg_stat_wal_receiver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// The instance it streams from (resolved by the driver from the conninfo).
    pub instance: InstanceId,
    /// Age of the last message received from it.
    pub last_msg_age: Duration,
}

/// One downstream standby streaming from a primary (`pg_stat_replication`, state `streaming`,
/// name and address of a valid member).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downstream {
    /// The standby.
    pub instance: InstanceId,
    /// Age of its last reply (`reply_time`).
    pub reply_age: Duration,
}

/// What a DN status query returned (the driver's answer to the agent's status probe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnStatus {
    /// Dynamic role.
    pub role: DnRole,
    /// HA state.
    pub db_state: DbState,
    /// (timeline, LSN) per §9.
    pub position: Position,
    /// The timeline history of the current timeline.
    pub history: History,
    /// Lock state (§4.1, §9).
    pub lock: LockState,
    /// The WAL receiver on a standby.
    pub upstream: Option<Upstream>,
    /// Streaming standbys on a primary.
    pub downstreams: Vec<Downstream>,
    /// `default_transaction_read_only` is on.
    pub read_only: bool,
    /// A standby told to follow whose WAL receiver does not stream: why, as the database says
    /// it (bounded to [`REASON_MAX_LEN`] bytes). `None` otherwise.
    #[serde(default)]
    pub receiver_error: Option<String>,
    /// A standby's replay position (`pg_last_wal_replay_lsn()`): what `/replica?lag=` measures
    /// (§15), while `position` is max(receive, replay) as §9 orders candidates. `None` on a
    /// primary, or when the standby has replayed nothing yet.
    #[serde(default)]
    pub replay: Option<Lsn>,
}

/// Longest `receiver_error` kept (longer ones are cut at a character boundary).
pub const REASON_MAX_LEN: usize = 240;

/// `text` cut to at most [`REASON_MAX_LEN`] bytes at a character boundary.
pub fn bounded_reason(text: &str) -> String {
    let mut end = text.len().min(REASON_MAX_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One DN's part of an agent report (DESIGN.md "DN report"). Ages, never timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnReport {
    /// The instance.
    pub instance: InstanceId,
    /// Dynamic role (`Down` when no process runs).
    pub role: DnRole,
    /// HA state.
    pub db_state: DbState,
    /// The CM term the agent recorded for this instance (from its state directory).
    pub term: Term,
    /// (timeline, LSN).
    pub position: Position,
    /// Timeline history of the instance's timeline.
    pub history: History,
    /// Lock state.
    pub lock: LockState,
    /// The stamp of the last CMS command the agent applied to this instance.
    pub last_applied: CmdStamp,
    /// WAL receiver (standby).
    pub upstream: Option<Upstream>,
    /// Streaming standbys (primary).
    pub downstreams: Vec<Downstream>,
    /// `default_transaction_read_only` is on.
    pub read_only: bool,
    /// A standby whose WAL receiver does not stream: why (see [`DnStatus::receiver_error`]).
    #[serde(default)]
    pub receiver_error: Option<String>,
    /// Consecutive phony-dead hits (§6).
    pub phony_dead_hits: u32,
    /// Data path usage in percent.
    pub data_disk_pct: u8,
    /// Log path usage in percent.
    pub log_disk_pct: u8,
    /// The disk probe failed 3 times in a row.
    pub disk_damaged: bool,
    /// States of the instance's processes (empty when none runs).
    pub processes: Vec<ProcState>,
    /// Restarts of this instance by the agent within the last 10 minutes.
    pub restarts_10min: u32,
    /// Restarts within the last hour.
    pub restarts_1h: u32,
    /// An operator stopped it (`instance_manual_start_<id>` or `cluster_manual_start`).
    pub manually_stopped: bool,
    /// The outcome of the agent's last Build of this instance (issue 17 item 1).
    #[serde(default)]
    pub last_build: BuildOutcome,
}

/// The outcome of an agent's last Build of one instance: how many builds finished since the
/// agent started (`count`, 0 = none), and the error of the last one (`None` = it succeeded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildOutcome {
    /// Builds finished (succeeded or failed) since the agent started.
    pub count: u64,
    /// Why the last one failed, cut to [`REASON_MAX_LEN`]; `None` when it succeeded.
    pub error: Option<String>,
    /// A Build of the instance is queued or running on the agent now.
    #[serde(default)]
    pub pending: bool,
    /// The reporting cm_agent's incarnation, an id it drew at random when it started (`None`
    /// in a status no agent report filled in). Another value means the agent restarted: its
    /// count began again at 0 and a Build it was running is lost (`cm_ctl build` fails at
    /// once). (It replaced the agent's start time, which came from its monotonic clock: the
    /// same place in the encoding, the old name still read from JSON.)
    #[serde(default, alias = "agent_started_ms")]
    pub agent_incarnation: Option<u64>,
    /// The last one failed because the data directory is half-rewound
    /// ([`ActionError::HalfRewound`]: a pg_rewind stopped partway): only a full copy cures it,
    /// and the CMS orders the next Build as one (issue 18: the method is the core's choice).
    #[serde(default)]
    pub half_rewound: bool,
}

impl BuildOutcome {
    /// Records one more finished build.
    pub fn record(&mut self, result: &Result<(), ActionError>) {
        self.count = self.count.saturating_add(1);
        self.error = result
            .as_ref()
            .err()
            .map(|e| bounded_reason(&e.to_string()));
        self.half_rewound = matches!(result, Err(ActionError::HalfRewound(_)));
    }

    /// Records a start refused because a Build was cut short ([`ActionError::HalfRewound`]) as
    /// a failed Build, so the CMS builds the member again (an agent that restarted since has
    /// forgotten that Build). Counted once: the same refusal repeated by every start attempt is
    /// not another Build.
    pub fn record_cut_short(&mut self, why: &str) {
        if self.error.as_deref() != Some(bounded_reason(why).as_str()) || !self.half_rewound {
            self.record(&Err(ActionError::HalfRewound(why.to_owned())));
        }
    }
}

impl DnReport {
    /// A report of an instance with no process and nothing known.
    pub fn down(instance: InstanceId) -> Self {
        Self {
            instance,
            role: DnRole::Down,
            db_state: DbState::Unknown,
            term: Term(0),
            position: Position::default(),
            history: History::default(),
            lock: LockState::Unknown,
            last_applied: CmdStamp::default(),
            upstream: None,
            downstreams: Vec::new(),
            read_only: false,
            receiver_error: None,
            phony_dead_hits: 0,
            data_disk_pct: 0,
            log_disk_pct: 0,
            disk_damaged: false,
            processes: Vec::new(),
            restarts_10min: 0,
            restarts_1h: 0,
            manually_stopped: false,
            last_build: BuildOutcome::default(),
        }
    }
}

/// Why a [`DnAction`] failed, as the driver reports it to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ActionError {
    /// It failed; the driver's message (PostgreSQL's own where it has one).
    #[error("{0}")]
    Failed(String),
    /// A start refused because the data directory was left half-rewound: a pg_rewind stopped
    /// partway (its host or agent crashed) and left its marker beside the data directory. The
    /// data never starts again; only a Build, which then copies it in full, cures it. The
    /// message names the marker. The agent reports it as a failed Build (issue 18: after a
    /// restart the agent has forgotten the Build the crash cut short).
    #[error("{0}")]
    HalfRewound(String),
}

impl From<String> for ActionError {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

impl From<&str> for ActionError {
    fn from(reason: &str) -> Self {
        Self::Failed(reason.to_owned())
    }
}

/// Everything a database driver can be asked to do (DESIGN.md "DN actions"). The agent emits
/// them, cm-io's database trait implements them, the simulator's database model executes them.
/// Instances are named by id; the driver resolves them to addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnAction {
    /// Start as a standby with no upstream ("pending", §1).
    StartPending,
    /// Stop with a mode.
    Stop {
        /// How.
        mode: StopMode,
    },
    /// SIGKILL every process of the instance (fence, §3).
    Kill,
    /// Stop replicating from any primary and never reconnect (§4.1).
    Lock1,
    /// Follow only this primary.
    Lock2 {
        /// The chosen primary.
        primary: InstanceId,
    },
    /// Normal following of the current primary.
    Unlock {
        /// The current primary.
        primary: InstanceId,
    },
    /// Turn a pending DN into a standby of the current primary.
    NotifyStandby {
        /// The current primary.
        primary: InstanceId,
    },
    /// Promote to primary; `term` has already been persisted by the agent.
    Promote {
        /// The new CM term.
        term: Term,
    },
    /// Switchover, old primary's half: fast shutdown (WAL shipped up to the shutdown checkpoint).
    Demote,
    /// Resynchronise from the primary (rewind, else full copy; `full`: full copy only).
    Build {
        /// The primary to copy from.
        source: InstanceId,
        /// Skip pg_rewind: a full base backup (`cm_ctl build --full`).
        #[serde(default)]
        full: bool,
    },
    /// `default_transaction_read_only` on/off.
    SetReadOnly {
        /// On or off.
        on: bool,
    },
    /// `synchronous_standby_names = 'ANY k (members…)'` (k = 0: asynchronous).
    SetSyncStandbys {
        /// How many standbys must acknowledge.
        k: u32,
        /// The member names, in config order.
        members: Vec<InstanceId>,
    },
}

/// Plain values for logs: `unlock primary=6001`, `promote term=3`, `stop mode=fast` (an agent
/// logs `action=%action`).
impl core::fmt::Display for DnAction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::StartPending => f.write_str("start_pending"),
            Self::Stop { mode } => write!(f, "stop mode={}", mode.as_str()),
            Self::Kill => f.write_str("kill"),
            Self::Lock1 => f.write_str("lock1"),
            Self::Lock2 { primary } => write!(f, "lock2 primary={}", primary.0),
            Self::Unlock { primary } => write!(f, "unlock primary={}", primary.0),
            Self::NotifyStandby { primary } => write!(f, "notify_standby primary={}", primary.0),
            Self::Promote { term } => write!(f, "promote term={}", term.0),
            Self::Demote => f.write_str("demote"),
            Self::Build { source, full } => write!(f, "build source={} full={full}", source.0),
            Self::SetReadOnly { on } => write!(f, "set_read_only on={on}"),
            Self::SetSyncStandbys { k, members } => {
                write!(f, "set_sync_standbys k={k} members=")?;
                for (i, m) in members.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{}", m.0)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_actions_display_as_plain_values() {
        let p = InstanceId(6001);
        let cases = [
            (DnAction::StartPending, "start_pending"),
            (
                DnAction::Stop {
                    mode: StopMode::Fast,
                },
                "stop mode=fast",
            ),
            (DnAction::Kill, "kill"),
            (DnAction::Lock1, "lock1"),
            (DnAction::Lock2 { primary: p }, "lock2 primary=6001"),
            (DnAction::Unlock { primary: p }, "unlock primary=6001"),
            (
                DnAction::NotifyStandby { primary: p },
                "notify_standby primary=6001",
            ),
            (DnAction::Promote { term: Term(3) }, "promote term=3"),
            (DnAction::Demote, "demote"),
            (
                DnAction::Build {
                    source: p,
                    full: true,
                },
                "build source=6001 full=true",
            ),
            (
                DnAction::SetReadOnly { on: false },
                "set_read_only on=false",
            ),
            (
                DnAction::SetSyncStandbys {
                    k: 1,
                    members: vec![InstanceId(6001), InstanceId(6002)],
                },
                "set_sync_standbys k=1 members=6001,6002",
            ),
        ];
        for (action, want) in cases {
            assert_eq!(action.to_string(), want);
        }
    }

    #[test]
    fn history_contains_positions_before_the_fork_only() {
        let h1 = History::root(Timeline(1));
        let h2 = h1.branch(Lsn(100), Timeline(2));
        let h3 = h2.branch(Lsn(250), Timeline(3));
        assert!(h3.contains(Position::new(3, 9999)));
        assert!(h3.contains(Position::new(2, 250)));
        assert!(
            !h3.contains(Position::new(2, 251)),
            "past the fork point: diverged"
        );
        assert!(h3.contains(Position::new(1, 100)));
        assert!(!h3.contains(Position::new(1, 101)));
        assert!(!h2.contains(Position::new(3, 1)));
    }

    #[test]
    fn stop_mode_parses_cm_forms() {
        for m in [StopMode::Smart, StopMode::Fast, StopMode::Immediate] {
            assert_eq!(StopMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(StopMode::parse("i"), Some(StopMode::Immediate));
        assert_eq!(StopMode::parse("x"), None);
    }
}
