//! The nemesis's client: sessions pinned to each node (so a session stays open on the old
//! primary through a freeze or a partition, SPEC §18's S4 condition), each writing rows with
//! unique ids and recording every write's outcome with the timeline it was written on.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{AsyncMessage, NoTls};

use super::history::{Op, Outcome};

/// How long one INSERT may wait (a frozen primary keeps the session waiting; it stays open).
pub const STATEMENT_WAIT: Duration = Duration::from_secs(90);

/// The table the client writes.
pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS nemesis_rows (id bigint PRIMARY KEY, session int NOT NULL)";

/// The write: the row, and the timeline its WAL went to (the first 8 hex digits of the WAL
/// file name of the insert position: on a primary the timeline cannot change under a running
/// transaction, so the commit is on it too).
const INSERT: &str = "INSERT INTO nemesis_rows (id, session) VALUES ($1, $2) \
                      RETURNING substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)";

/// What the sessions share.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the run.
    pub start: Instant,
    /// The next row id.
    pub next_id: AtomicI64,
    /// Completed writes.
    pub ops: Mutex<Vec<Op>>,
    /// Set to stop the sessions.
    pub stop: AtomicBool,
}

impl Shared {
    /// Starting now.
    pub fn new(start: Instant) -> Arc<Self> {
        Arc::new(Self {
            start,
            next_id: AtomicI64::new(1),
            ops: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A copy of the history so far.
    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Where a session connects.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The node.
    pub node: u32,
    /// Its address.
    pub host: String,
    /// Its DN port.
    pub port: u16,
}

/// Opens a session; the connection's notices are watched for a cancelled synchronous
/// replication wait (PostgreSQL then still returns COMMIT, with a WARNING: not an
/// acknowledgement, SPEC §13 S3), which sets `sync_cancelled`.
pub async fn connect(
    ep: &Endpoint,
    password: &str,
    sync_cancelled: Arc<AtomicBool>,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&ep.host)
        .port(ep.port)
        .user(super::super::DB_OS_USER)
        .password(password)
        .dbname("postgres")
        .application_name("nemesis")
        .connect_timeout(Duration::from_secs(2));
    let connecting = cfg.connect(NoTls);
    let (client, mut conn) = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notice(n)) if n.message().contains("synchronous replication") => {
                    sync_cancelled.store(true, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// Parses the 8 hex digits of a timeline.
pub fn parse_timeline(hex: &str) -> Option<u32> {
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

/// One session: writes to `ep` until stopped, reconnecting when its connection breaks.
pub async fn session(shared: Arc<Shared>, no: u32, ep: Endpoint, password: String) {
    let mut client: Option<tokio_postgres::Client> = None;
    let cancelled = Arc::new(AtomicBool::new(false));
    while !shared.stop.load(Ordering::SeqCst) {
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => {
                cancelled.store(false, Ordering::SeqCst);
                match connect(&ep, &password, Arc::clone(&cancelled)).await {
                    Ok(c) => c,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let invoked_ms = shared.now_ms();
        let session_no = i32::try_from(no).unwrap_or(i32::MAX);
        let r =
            tokio::time::timeout(STATEMENT_WAIT, c.query_one(INSERT, &[&id, &session_no])).await;
        let completed_ms = shared.now_ms();
        let (outcome, keep, pause) = match r {
            Ok(Ok(row)) => {
                let tl: Option<String> = row.try_get(0).ok();
                match tl.as_deref().and_then(parse_timeline) {
                    _ if cancelled.swap(false, Ordering::SeqCst) => (
                        Outcome::Unknown("synchronous replication wait cancelled".into()),
                        true,
                        10,
                    ),
                    Some(timeline) => (Outcome::Ack { timeline }, true, 10),
                    None => (Outcome::Unknown(format!("timeline {tl:?}")), true, 10),
                }
            }
            Ok(Err(e)) => match e.as_db_error() {
                // An ERROR aborts the statement's transaction: nothing committed.
                Some(d) if d.severity() == "ERROR" => {
                    (Outcome::Fail(d.message().to_owned()), !c.is_closed(), 50)
                }
                _ => (Outcome::Unknown(e.to_string()), false, 100),
            },
            Err(_) => (
                Outcome::Unknown(format!("no answer within {STATEMENT_WAIT:?}")),
                false,
                100,
            ),
        };
        if let Ok(mut ops) = shared.ops.lock() {
            ops.push(Op {
                id,
                session: no,
                node: ep.node,
                invoked_ms,
                completed_ms,
                outcome,
            });
        }
        if keep {
            client = Some(c);
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_parse_from_wal_file_name_prefixes() {
        assert_eq!(parse_timeline("00000001"), Some(1));
        assert_eq!(parse_timeline("0000001A"), Some(26));
        assert_eq!(parse_timeline("0000001"), None);
        assert_eq!(parse_timeline("zzzzzzzz"), None);
    }
}
