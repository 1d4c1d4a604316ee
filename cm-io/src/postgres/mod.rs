//! The database driver trait (DESIGN.md "DN actions") and its PostgreSQL implementation (SPEC.md
//! §9). The agent's core decides; a [`DatabaseDriver`] carries out one [`DnAction`] for one
//! local instance, answers status queries with a [`DnStatus`], runs the phony-dead probe of §6
//! and reads the streaming evidence of §8.
//!
//! [`PgDriver`] manages PostgreSQL instances as an unprivileged OS user, started as direct
//! children of the agent in their own process group. Its settings live in a file outside the
//! data directory (`config_file` on the command line) so that neither `ALTER SYSTEM` nor a
//! rewind or base backup copying the source's files can change them.

use std::future::Future;
use std::time::Duration;

use cm_core::InstanceId;
use cm_core::dn::{DnAction, DnStatus, Downstream, ProcState, Upstream as UpstreamStatus};

mod actions;
pub mod credential;
mod driver;
mod owned_file;
pub mod settings;
mod status;
mod swap;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod wal;

pub use driver::{PgDriver, PgOptions};

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node is not in the cluster config.
    #[error("node {0} is not in the cluster config")]
    UnknownNode(cm_core::NodeId),
    /// The instance is not configured on this node.
    #[error("instance {0} is not managed by this node's driver")]
    UnknownInstance(InstanceId),
    /// An instance named in an action is not in the cluster config.
    #[error("instance {0} is not a member of the cluster config")]
    UnknownPeer(InstanceId),
    /// The action needs a running instance.
    #[error("instance {0} is not running")]
    NotRunning(InstanceId),
    /// The action needs a stopped instance.
    #[error("instance {0} is already running")]
    AlreadyRunning(InstanceId),
    /// The instance is in a role the action does not apply to.
    #[error("instance {instance}: {what}")]
    WrongRole {
        /// The instance.
        instance: InstanceId,
        /// What did not fit.
        what: String,
    },
    /// The postmaster exited while starting; the log tail says why.
    #[error("instance {instance} exited during start: {log_tail}")]
    StartFailed {
        /// The instance.
        instance: InstanceId,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A wait for an effect ran out.
    #[error("instance {instance}: timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The instance.
        instance: InstanceId,
        /// What was awaited.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// A PostgreSQL tool (initdb, pg_rewind, pg_basebackup) failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The tool.
        tool: String,
        /// Its exit status.
        status: String,
        /// The end of its error output.
        stderr: String,
    },
    /// A Build failed both with pg_rewind and pg_basebackup.
    #[error("build of instance {instance} failed: {reason}")]
    BuildFailed {
        /// The instance.
        instance: InstanceId,
        /// Why the last attempt failed.
        reason: String,
        /// The data directory is left half-rewound (a pg_rewind stopped partway, then the
        /// full copy failed): the agent is told [`cm_core::dn::ActionError::HalfRewound`], so
        /// the CMS orders a full copy next.
        half_rewound: bool,
    },
    /// A Build ordered to rewind (pg_rewind first) a data directory that an earlier pg_rewind
    /// left half-rewound: refused before anything is touched. A second pg_rewind would start
    /// from a state neither side knows; only a full copy cures it, and the method is the
    /// CMS's choice (it orders one when told of this refusal).
    #[error(
        "instance {instance}: pg_rewind refused: the data directory {data} is half-rewound (a pg_rewind stopped partway; marker {marker}); only a full copy cures it (cm_ctl build --full)"
    )]
    RewindRefused {
        /// The instance.
        instance: InstanceId,
        /// Its data directory.
        data: String,
        /// The marker.
        marker: String,
    },
    /// The data directory was left half-rewound by a pg_rewind that stopped partway (its
    /// marker beside the data directory says so): it is not started; a Build copies it in full.
    #[error(
        "instance {instance}: not started: the data directory {data} is half-rewound (a pg_rewind stopped partway; marker {marker}); the next Build copies it in full (cm_ctl build)"
    )]
    HalfRewound {
        /// The instance.
        instance: InstanceId,
        /// Its data directory.
        data: String,
        /// The marker.
        marker: String,
    },
    /// SQL or connection error (with PostgreSQL's own message, [`pg_error`]).
    #[error("instance {instance}: {}", pg_error(.source))]
    Sql {
        /// The instance.
        instance: InstanceId,
        /// The client error.
        source: tokio_postgres::Error,
    },
    /// The status query returned something the driver cannot read.
    #[error("instance {instance}: unexpected status: {what}")]
    BadStatus {
        /// The instance.
        instance: InstanceId,
        /// What was wrong.
        what: String,
    },
    /// Process control failed.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// The kill could not be confirmed.
    #[error(transparent)]
    Kill(#[from] crate::process::KillError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the agent is told of a failed action: a start or a rewind refused for half-rewound
/// data, or a Build that failed and left it so, is its own kind (the agent reports it as a
/// failed Build that left the data half-rewound, so the CMS builds the member again, in full).
impl From<DriverError> for cm_core::dn::ActionError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::HalfRewound { .. }
            | DriverError::RewindRefused { .. }
            | DriverError::BuildFailed {
                half_rewound: true, ..
            } => Self::HalfRewound(e.to_string()),
            _ => Self::Failed(e.to_string()),
        }
    }
}

/// A PostgreSQL client error as an operator needs it: what the server said (severity, SQLSTATE,
/// message, detail, hint) when it answered with an error, else the client's error and its cause
/// (tokio_postgres's own `Display` says only "db error" or "error connecting to server").
/// One line: detail and hint follow after "; ".
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    use std::fmt::Write as _;
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                let _ = write!(s, "; detail: {detail}");
            }
            if let Some(hint) = db.hint() {
                let _ = write!(s, "; hint: {hint}");
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                let _ = write!(s, ": {c}");
                cause = c.source();
            }
            s
        }
    }
}

/// How the fresh connection of a phony-dead probe (§6) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeConnect {
    /// Connected and the status query answered.
    Answered,
    /// Refused with "too many clients" (SQLSTATE 53300): alive, not a hit.
    TooManyClients,
    /// Timed out or failed otherwise.
    Failed(String),
}

/// The facts of one phony-dead probe. The hit decision (with the process states) belongs to the
/// agent's core; [`PhonyDeadProbe::is_hit`] is the §6 rule for the query part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhonyDeadProbe {
    /// The fresh connection's outcome.
    pub connect: ProbeConnect,
    /// Age of the newest file in `pg_wal` (`None`: unreadable or empty).
    pub newest_wal_age: Option<Duration>,
}

impl PhonyDeadProbe {
    /// §6: a failed connection is a hit only if the WAL directory is also older than the check
    /// interval; "too many clients" never is.
    pub fn is_hit(&self, interval: Duration) -> bool {
        matches!(self.connect, ProbeConnect::Failed(_))
            && self.newest_wal_age.is_none_or(|age| age > interval)
    }
}

/// Streaming evidence (§8): on a standby its WAL receiver, on a primary its streaming standbys
/// that are valid members (name and address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Streaming {
    /// The standby's WAL receiver, while its state is `streaming`.
    pub upstream: Option<UpstreamStatus>,
    /// The primary's streaming member standbys with the age of their last reply.
    pub downstreams: Vec<Downstream>,
}

/// A database driver: the DN actions of DESIGN.md for the instances of one node.
///
/// Calls for one instance are expected one at a time from the agent (an action and a status
/// query may overlap; two actions should not). Every method resolves instances through the
/// cluster config. Futures are `Send` so the agent can run them on its runtime's tasks.
pub trait DatabaseDriver: Send + Sync {
    /// Carries out one action. Returns once its effect is reached where that is observable
    /// (Lock1: `Prohibit`; Promote: out of recovery; SetReadOnly/SetSyncStandbys: visible to a
    /// new session; Start: accepting connections; Stop/Kill: processes gone); Lock2, Unlock and
    /// Notify return after the reload. Build leaves the instance stopped, to be started pending.
    fn run(
        &self,
        instance: InstanceId,
        action: DnAction,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// The status query of §3 (connect timeout from the driver's options).
    fn status(
        &self,
        instance: InstanceId,
    ) -> impl Future<Output = Result<DnStatus, DriverError>> + Send;

    /// The phony-dead probe of §6 with connect timeout min(5 s, `interval`).
    fn phony_dead_probe(
        &self,
        instance: InstanceId,
        interval: Duration,
    ) -> impl Future<Output = Result<PhonyDeadProbe, DriverError>> + Send;

    /// The streaming evidence of §8.
    fn streaming(
        &self,
        instance: InstanceId,
    ) -> impl Future<Output = Result<Streaming, DriverError>> + Send;

    /// The states of every process of the instance, from /proc (empty when none runs).
    fn processes(&self, instance: InstanceId) -> Result<Vec<ProcState>, DriverError>;

    /// Whether the instance's postmaster runs. After an agent restart this adopts a postmaster
    /// found through `postmaster.pid` and its /proc start time (§1).
    fn is_running(&self, instance: InstanceId) -> Result<bool, DriverError>;
}

#[cfg(test)]
mod tests {
    use super::pg_error;

    /// A client-side error keeps its cause (tokio_postgres's `Display` drops it).
    #[test]
    fn a_client_error_carries_its_cause() {
        let e = "port=notanumber"
            .parse::<tokio_postgres::Config>()
            .expect_err("a bad port");
        assert_eq!(e.to_string(), "invalid connection string");
        let text = pg_error(&e);
        assert!(text.starts_with("invalid connection string: "), "{text}");
        assert!(text.contains("port"), "{text}");
    }
}
