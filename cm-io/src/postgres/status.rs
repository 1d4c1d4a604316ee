//! The status query (§3, §9), the phony-dead probe (§6) and the streaming evidence (§8).

use std::net::{IpAddr, ToSocketAddrs as _};
use std::time::Duration;

use cm_core::dn::{DbState, DnRole, DnStatus, Downstream, LockState, ProcState, Upstream as Up};
use cm_core::{InstanceId, Lsn, Position, Timeline};
use tokio_postgres::Client;

use super::driver::{ConnectError, Instance, lock};
use super::settings::{Upstream, instance_name};
use super::wal;
use super::{DriverError, PgDriver, PhonyDeadProbe, ProbeConnect, Streaming};

/// The startup process's wait while it sleeps because no WAL source is available: with an
/// empty `primary_conninfo` and no `restore_command` this means local WAL is exhausted (§9).
const WAL_EXHAUSTED_WAIT: &str = "RecoveryRetrieveRetryInterval";

const STATUS_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END, \
    CASE WHEN pg_is_in_recovery() THEN NULL \
         ELSE substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8) END, \
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
    current_setting('primary_conninfo'), \
    current_setting('default_transaction_read_only') = 'on', \
    (SELECT wait_event::text FROM pg_stat_activity WHERE backend_type = 'startup' LIMIT 1), \
    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')";

const RECEIVER_SQL: &str = "SELECT status, received_tli, sender_host, sender_port, \
    EXTRACT(EPOCH FROM clock_timestamp() - last_msg_receipt_time)::float8 \
    FROM pg_stat_wal_receiver";

const REPLICATION_SQL: &str = "SELECT application_name, host(client_addr), state, \
    EXTRACT(EPOCH FROM clock_timestamp() - reply_time)::float8 FROM pg_stat_replication";

/// One row of `pg_stat_wal_receiver`.
struct Receiver {
    status: String,
    received_tli: i32,
    sender_host: Option<String>,
    sender_port: Option<i32>,
    last_msg_age_s: Option<f64>,
}

fn sql_err(instance: InstanceId) -> impl FnOnce(tokio_postgres::Error) -> DriverError {
    move |source| DriverError::Sql { instance, source }
}

fn bad(instance: InstanceId, what: impl Into<String>) -> DriverError {
    DriverError::BadStatus {
        instance,
        what: what.into(),
    }
}

fn age(seconds: Option<f64>) -> Duration {
    Duration::from_secs_f64(seconds.unwrap_or(f64::MAX).clamp(0.0, 1e9))
}

/// Whether an address seen by PostgreSQL is the configured member address (IPs compare as
/// IPs; a configured host name is resolved).
fn same_address(configured: &str, seen: &str) -> bool {
    if configured == seen {
        return true;
    }
    let Ok(seen) = seen.parse::<IpAddr>() else {
        return false;
    };
    match configured.parse::<IpAddr>() {
        Ok(c) => c == seen,
        Err(_) => (configured, 0u16)
            .to_socket_addrs()
            .map(|mut it| it.any(|a| a.ip() == seen))
            .unwrap_or(false),
    }
}

/// The newest line of a DN's log (its last 64 KiB) that says why WAL does not arrive or
/// replay: a walreceiver FATAL or a bad record, as PostgreSQL wrote it.
pub(super) fn last_replication_error(log: &std::path::Path) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.take(TAIL).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    const MARKS: [&str; 5] = [
        "invalid record",
        "could not receive data from WAL stream",
        "could not connect to the primary server",
        "terminating walreceiver",
        "highest timeline",
    ];
    text.lines()
        .rev()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_owned())
}

/// What a status query found about replication, before role and history are added.
struct Replication {
    position: Position,
    replay: Option<Lsn>,
    upstream: Option<Up>,
    receiver_error: Option<String>,
    downstreams: Vec<Downstream>,
    lock: LockState,
}

/// The lock state a standby reports (§4.1, §9). After Lock1 it is `Prohibit` only once its
/// upstream setting is empty, no WAL receiver runs and the startup process waits because local
/// WAL is exhausted — not on a stable replay position (replay can stall on a conflict with WAL
/// left) nor on receive = replay (the receive LSN is NULL after a restart). Until then `None`.
pub(super) fn standby_lock_state(
    intent: Upstream,
    conninfo_empty: bool,
    receiver_runs: bool,
    startup_wait: Option<&str>,
) -> LockState {
    match intent {
        Upstream::Lock1
            if conninfo_empty && !receiver_runs && startup_wait == Some(WAL_EXHAUSTED_WAIT) =>
        {
            LockState::Prohibit
        }
        Upstream::Follow {
            primary,
            locked: true,
        } => LockState::Specified(primary),
        _ => LockState::None,
    }
}

fn lsn_at(row: &tokio_postgres::Row, idx: usize) -> Option<Lsn> {
    row.get::<_, Option<String>>(idx)
        .as_deref()
        .and_then(wal::parse_lsn)
}

impl PgDriver {
    /// The status query on the instance's kept session ([`PgDriver::status_lease`]). When the
    /// query fails on a reused session (its backend was terminated, the server restarted: the
    /// client may not have seen the connection close yet), it runs once more on a fresh
    /// connection; any failure drops the session.
    pub(super) async fn query_status(&self, inst: &Instance) -> Result<DnStatus, DriverError> {
        let lease = self.status_lease(inst).await?;
        let lease = match self.status_on(&lease.client, inst).await {
            Ok(s) => {
                self.give_back(inst, lease);
                return Ok(s);
            }
            // A fresh connection failed for itself; so did a query that the server refused.
            Err(e) if !(lease.reused && matches!(e, DriverError::Sql { .. })) => return Err(e),
            Err(e) => {
                tracing::debug!(instance = %inst.id, "status session closed, reconnecting: {e}");
                drop(lease);
                self.status_lease(inst).await?
            }
        };
        let status = self.status_on(&lease.client, inst).await?;
        self.give_back(inst, lease);
        Ok(status)
    }

    async fn status_on(&self, client: &Client, inst: &Instance) -> Result<DnStatus, DriverError> {
        let id = inst.id;
        let row = client
            .query_one(STATUS_SQL, &[])
            .await
            .map_err(sql_err(id))?;
        let in_recovery: bool = row.get(0);
        let desired = lock(&inst.desired).clone();
        let busy = *lock(&inst.busy);
        let repl = if in_recovery {
            self.standby_replication(client, inst, &row, desired.upstream)
                .await?
        } else {
            self.primary_replication(client, inst, &row).await?
        };
        let timeline = repl.position.timeline;
        let history = wal::read_history(&inst.data_dir.join("pg_wal"), timeline)
            .ok_or_else(|| bad(id, format!("no readable history for {timeline}")))?;
        let role = match (in_recovery, desired.pending) {
            (false, _) => DnRole::Primary,
            (true, true) => DnRole::Pending,
            (true, false) => DnRole::Standby,
        };
        Ok(DnStatus {
            role,
            db_state: busy.unwrap_or(DbState::Normal),
            position: repl.position,
            history,
            lock: repl.lock,
            upstream: repl.upstream,
            downstreams: repl.downstreams,
            read_only: row.get(6),
            receiver_error: repl.receiver_error,
            replay: repl.replay,
        })
    }

    async fn standby_replication(
        &self,
        client: &Client,
        inst: &Instance,
        row: &tokio_postgres::Row,
        intent: Upstream,
    ) -> Result<Replication, DriverError> {
        let (recv, replay) = (lsn_at(row, 3), lsn_at(row, 4));
        let conninfo: String = row.get(5);
        let startup_wait: Option<String> = row.get(7);
        let segsize: i64 = row.get(8);
        let receiver = self.receiver(client, inst.id).await?;
        let position = self.standby_position(inst, recv, replay, receiver.as_ref(), segsize)?;
        let lock = standby_lock_state(
            intent,
            conninfo.is_empty(),
            receiver.is_some(),
            startup_wait.as_deref(),
        );
        let upstream = receiver
            .as_ref()
            .filter(|r| r.status == "streaming")
            .and_then(|r| self.resolve_upstream(inst, &intent, r));
        let receiver_error = match (&intent, &upstream) {
            (Upstream::Follow { .. }, None) => {
                let state = receiver.as_ref().map_or_else(
                    || "no WAL receiver".to_owned(),
                    |r| format!("WAL receiver {}", r.status),
                );
                let log = inst.run_dir.join("postgres.log");
                Some(cm_core::dn::bounded_reason(
                    &match last_replication_error(&log) {
                        Some(line) => format!("{state}; {line}"),
                        None => state,
                    },
                ))
            }
            _ => None,
        };
        Ok(Replication {
            position,
            replay,
            upstream,
            receiver_error,
            downstreams: Vec::new(),
            lock,
        })
    }

    /// A primary's position: (current timeline, `pg_current_wal_flush_lsn()`), the timeline
    /// from the current WAL file name (`pg_control_checkpoint()` lags after a promotion).
    async fn primary_replication(
        &self,
        client: &Client,
        inst: &Instance,
        row: &tokio_postgres::Row,
    ) -> Result<Replication, DriverError> {
        let tli = row
            .get::<_, Option<String>>(2)
            .and_then(|t| u32::from_str_radix(&t, 16).ok());
        let (Some(lsn), Some(tli)) = (lsn_at(row, 1), tli) else {
            return Err(bad(inst.id, "primary without a flush position"));
        };
        Ok(Replication {
            position: Position {
                timeline: Timeline(tli),
                lsn,
            },
            replay: None,
            upstream: None,
            receiver_error: None,
            downstreams: self.downstreams(client, inst).await?,
            lock: LockState::None,
        })
    }

    /// §9: max(receive, replay); the timeline from `received_tli` while streaming, otherwise
    /// from the segment file in `pg_wal` holding that LSN.
    fn standby_position(
        &self,
        inst: &Instance,
        recv: Option<Lsn>,
        replay: Option<Lsn>,
        receiver: Option<&Receiver>,
        segsize: i64,
    ) -> Result<Position, DriverError> {
        let lsn = recv.max(replay).unwrap_or_default();
        let streaming_tli = receiver
            .filter(|r| r.status == "streaming" && r.received_tli > 0 && recv >= replay)
            .map(|r| Timeline(r.received_tli as u32));
        let timeline = match streaming_tli {
            Some(t) => t,
            None => wal::timeline_of_lsn_in(&inst.data_dir.join("pg_wal"), lsn, segsize as u64)
                .ok_or_else(|| bad(inst.id, format!("no WAL segment holds {lsn:?}")))?,
        };
        Ok(Position { timeline, lsn })
    }

    async fn receiver(
        &self,
        client: &Client,
        id: InstanceId,
    ) -> Result<Option<Receiver>, DriverError> {
        let row = client
            .query_opt(RECEIVER_SQL, &[])
            .await
            .map_err(sql_err(id))?;
        Ok(row.map(|r| Receiver {
            status: r.get::<_, Option<String>>(0).unwrap_or_default(),
            received_tli: r.get::<_, Option<i32>>(1).unwrap_or(0),
            sender_host: r.get(2),
            sender_port: r.get(3),
            last_msg_age_s: r.get(4),
        }))
    }

    fn resolve_upstream(&self, inst: &Instance, desired: &Upstream, r: &Receiver) -> Option<Up> {
        let by_address = self.peers(inst.id).into_iter().find(|p| {
            r.sender_port == Some(i32::from(p.port))
                && r.sender_host
                    .as_deref()
                    .is_some_and(|h| same_address(&p.address, h))
        });
        let instance = match (by_address, desired) {
            (Some(p), _) => p.instance,
            (None, Upstream::Follow { primary, .. }) => *primary,
            (None, _) => return None,
        };
        Some(Up {
            instance,
            last_msg_age: age(r.last_msg_age_s),
        })
    }

    /// `pg_stat_replication` rows in state `streaming` whose name and address are a member's.
    async fn downstreams(
        &self,
        client: &Client,
        inst: &Instance,
    ) -> Result<Vec<Downstream>, DriverError> {
        let rows = client
            .query(REPLICATION_SQL, &[])
            .await
            .map_err(sql_err(inst.id))?;
        let peers = self.peers(inst.id);
        let mut out = Vec::new();
        for r in rows {
            let name: Option<String> = r.get(0);
            let addr: Option<String> = r.get(1);
            let state: Option<String> = r.get(2);
            if state.as_deref() != Some("streaming") {
                continue;
            }
            let member = peers.iter().find(|p| {
                name.as_deref() == Some(instance_name(p.instance).as_str())
                    && addr.as_deref().is_some_and(|a| same_address(&p.address, a))
            });
            if let Some(p) = member {
                out.push(Downstream {
                    instance: p.instance,
                    reply_age: age(r.get(3)),
                });
            }
        }
        out.sort_by_key(|d| d.instance);
        Ok(out)
    }

    /// The streaming evidence, on the status session too.
    pub(super) async fn query_streaming(&self, inst: &Instance) -> Result<Streaming, DriverError> {
        let lease = self.status_lease(inst).await?;
        let streaming = self.streaming_on(&lease.client, inst).await?;
        self.give_back(inst, lease);
        Ok(streaming)
    }

    async fn streaming_on(
        &self,
        client: &Client,
        inst: &Instance,
    ) -> Result<Streaming, DriverError> {
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(sql_err(inst.id))?
            .get(0);
        if in_recovery {
            let desired = lock(&inst.desired).upstream;
            let upstream = self
                .receiver(client, inst.id)
                .await?
                .filter(|r| r.status == "streaming")
                .and_then(|r| self.resolve_upstream(inst, &desired, &r));
            Ok(Streaming {
                upstream,
                downstreams: Vec::new(),
            })
        } else {
            Ok(Streaming {
                upstream: None,
                downstreams: self.downstreams(client, inst).await?,
            })
        }
    }

    /// §6: a fresh connection and a status query, both within min(5 s, interval); plus the age
    /// of the newest file in `pg_wal`.
    pub(super) async fn probe(&self, inst: &Instance, interval: Duration) -> PhonyDeadProbe {
        let timeout = interval.min(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let connect = match self.connect(inst, timeout).await {
            Err(ConnectError::TooManyClients) => ProbeConnect::TooManyClients,
            Err(ConnectError::TimedOut) => {
                ProbeConnect::Failed(format!("connect timed out after {timeout:?}"))
            }
            Err(ConnectError::Other(e)) => ProbeConnect::Failed(super::pg_error(&e)),
            Err(ConnectError::Passfile(e)) => ProbeConnect::Failed(e.to_string()),
            Ok(client) => {
                let left = timeout.saturating_sub(started.elapsed());
                match tokio::time::timeout(
                    left,
                    client.query_one("SELECT pg_is_in_recovery()", &[]),
                )
                .await
                {
                    Ok(Ok(_)) => ProbeConnect::Answered,
                    Ok(Err(e)) => ProbeConnect::Failed(super::pg_error(&e)),
                    Err(_) => ProbeConnect::Failed(format!("query timed out after {timeout:?}")),
                }
            }
        };
        PhonyDeadProbe {
            connect,
            newest_wal_age: wal::newest_file_age(&inst.data_dir.join("pg_wal")),
        }
    }

    /// Process states for the report: the whole group while the postmaster runs; after it died,
    /// whatever of its group still runs (orphaned backends still hold shared memory).
    pub(super) fn process_states(&self, inst: &Instance) -> Vec<ProcState> {
        if let Some(pm) = self.running(inst) {
            return pm.group().into_iter().map(|m| m.state).collect();
        }
        let last = lock(&inst.proc).clone();
        last.map(|pm| {
            pm.group()
                .into_iter()
                .map(|m| m.state)
                .filter(|s| *s != ProcState::Zombie)
                .collect()
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: InstanceId = InstanceId(6001);

    #[test]
    fn prohibit_needs_empty_conninfo_no_receiver_and_exhausted_local_wal() {
        let wait = Some(WAL_EXHAUSTED_WAIT);
        let lock1 = Upstream::Lock1;
        assert_eq!(
            standby_lock_state(lock1, true, false, wait),
            LockState::Prohibit
        );
        assert_eq!(
            standby_lock_state(lock1, false, false, wait),
            LockState::None,
            "reload pending"
        );
        assert_eq!(
            standby_lock_state(lock1, true, true, wait),
            LockState::None,
            "receiver alive"
        );
        assert_eq!(
            standby_lock_state(lock1, true, false, None),
            LockState::None,
            "startup still replaying local WAL"
        );
        assert_eq!(
            standby_lock_state(lock1, true, false, Some("RecoveryConflictSnapshot")),
            LockState::None,
            "replay stalled on a conflict"
        );
    }

    #[test]
    fn lock2_reports_the_named_primary_and_unlock_nothing() {
        let lock2 = Upstream::Follow {
            primary: P,
            locked: true,
        };
        let unlock = Upstream::Follow {
            primary: P,
            locked: false,
        };
        assert_eq!(
            standby_lock_state(lock2, false, true, None),
            LockState::Specified(P)
        );
        assert_eq!(
            standby_lock_state(unlock, false, true, None),
            LockState::None
        );
        assert_eq!(
            standby_lock_state(Upstream::None, true, false, None),
            LockState::None
        );
    }

    #[test]
    fn addresses_compare_as_ips() {
        assert!(same_address("127.0.0.1", "127.0.0.1"));
        assert!(same_address("::1", "0:0:0:0:0:0:0:1"));
        assert!(!same_address("10.0.0.1", "10.0.0.2"));
        assert!(!same_address("10.0.0.1", "not-an-ip"));
    }
}
