//! End-to-end tests of the PostgreSQL driver against real PostgreSQL 15 (SPEC.md §9). They skip
//! (with a message) only when no PostgreSQL binaries are installed. Every test owns a
//! [`TestCluster`], whose drop kills every process group and removes every directory.

use std::future::Future;
use std::time::Duration;

use cm_core::dn::{DnAction, DnRole, DnStatus, LockState, ProcState};
use cm_core::params::SyncMode;
use cm_core::{InstanceId, Term};
use cm_io::disk::{DiskProber, ProbeOutcome};
use cm_io::postgres::test_support::TestCluster;
use cm_io::postgres::{DatabaseDriver, ProbeConnect};
use cm_io::postgres::{PgDriver, PgOptions};
use cm_io::process::{OsUser, PostmasterPid};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_postgres::error::SqlState;

/// Polls `f` until it returns `Some` (generous bound: these are not timing assertions).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn status(c: &TestCluster, i: usize) -> DnStatus {
    c.driver(i).status(c.id(i)).await.expect("status")
}

async fn act(c: &TestCluster, i: usize, action: DnAction) {
    let what = format!("{action:?} on {}", c.id(i));
    c.driver(i)
        .run(c.id(i), action)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Until member `i` streams from `primary`, and `primary` lists it as a streaming downstream.
async fn wait_streaming(c: &TestCluster, i: usize, primary: usize) {
    let (me, up) = (c.id(i), c.id(primary));
    eventually("streaming", || async {
        let st = c.driver(i).status(me).await.ok()?;
        let pst = c.driver(primary).status(up).await.ok()?;
        let ok = st.upstream.map(|u| u.instance) == Some(up)
            && pst.downstreams.iter().any(|d| d.instance == me);
        ok.then_some(())
    })
    .await;
}

/// A primary (member 0, promoted from pending) with members 1.. built from it and notified.
async fn primary_with_standbys(c: &TestCluster) {
    c.initdb(0).expect("initdb");
    act(c, 0, DnAction::StartPending).await;
    let st = status(c, 0).await;
    assert_eq!((st.role, st.lock), (DnRole::Pending, LockState::None));
    act(c, 0, DnAction::Promote { term: Term(1) }).await;
    let st = status(c, 0).await;
    assert_eq!(st.role, DnRole::Primary);
    assert!(
        st.position.timeline.0 >= 2,
        "promotion starts a timeline: {st:?}"
    );
    assert_eq!(st.history.forks.len() as u32, st.position.timeline.0 - 1);
    for i in 1..c.drivers.len() {
        act(
            c,
            i,
            DnAction::Build {
                source: c.id(0),
                full: false,
            },
        )
        .await;
        act(c, i, DnAction::StartPending).await;
        assert_eq!(status(c, i).await.role, DnRole::Pending);
        act(c, i, DnAction::NotifyStandby { primary: c.id(0) }).await;
    }
    for i in 1..c.drivers.len() {
        wait_streaming(c, i, 0).await;
        let st = status(c, i).await;
        assert_eq!(st.role, DnRole::Standby);
        // A standby reports its replay position (what /replica?lag= measures), never beyond
        // its position (max of receive and replay); a primary reports none.
        let replay = st.replay.expect("a standby's replay position");
        assert!(replay <= st.position.lsn, "{st:?}");
    }
    assert_eq!(status(c, 0).await.replay, None);
}

/// The agent's disk prober of a data directory (as the agent builds it: owned by `postgres`),
/// probing every 20 ms until stopped.
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<ProbeOutcome>>,
}

impl Prober {
    fn start(data_dir: &std::path::Path) -> Self {
        let user = OsUser::lookup("postgres").expect("postgres user");
        let prober =
            DiskProber::for_data_dir(data_dir, Duration::from_secs(5), (user.uid, user.gid));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                outcomes.push(prober.probe().await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        });
        Self { stop, task }
    }

    /// Stops it; every probe it ran succeeded.
    async fn stop_ok(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcomes = self.task.await.expect("prober task");
        assert!(!outcomes.is_empty());
        assert!(
            outcomes.iter().all(|o| *o == ProbeOutcome::Ok),
            "{outcomes:?}"
        );
    }
}

/// Runs a test body with an overall bound, so a hang fails (and unwinds through the cluster's
/// drop guard) instead of being killed from outside with its processes left behind.
async fn bounded(body: impl Future<Output = ()>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(tracing_subscriber::filter::Targets::new().with_target("cm_io", tracing::Level::INFO))
        .try_init();
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test body finished within its bound");
}

async fn count_rows(c: &TestCluster, i: usize) -> Option<i64> {
    let client = c.client(i).await.ok()?;
    let row = client.query_one("SELECT count(*) FROM t", &[]).await.ok()?;
    Some(row.get(0))
}

/// Lock1 → Prohibit; the member neither receives nor reconnects while the primary writes;
/// Unlock resumes streaming.
async fn lock1_holds_until_unlock(c: &TestCluster) {
    let p0 = c.client(0).await.expect("client");
    act(c, 1, DnAction::Lock1).await;
    let locked = status(c, 1).await;
    assert_eq!((locked.lock, locked.upstream), (LockState::Prohibit, None));
    for v in 2..20 {
        p0.execute("INSERT INTO t VALUES ($1)", &[&v])
            .await
            .expect("insert, acknowledged by the other standby");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let still = status(c, 1).await;
    assert_eq!((still.lock, still.upstream), (LockState::Prohibit, None));
    assert_eq!(
        still.position, locked.position,
        "nothing received while locked"
    );
    assert!(status(c, 0).await.position > still.position);
    act(c, 1, DnAction::Unlock { primary: c.id(0) }).await;
    wait_streaming(c, 1, 0).await;
}

/// The primary crashes (kill -9 of the postmaster alone); both standbys get Lock1, the one with
/// the greater position is promoted, the other follows it with Lock2, and a write commits.
/// Returns the new primary's index.
async fn fail_over_after_crash(c: &TestCluster) -> usize {
    let pm = PostmasterPid::read(&c.data_dir(0)).expect("postmaster.pid");
    kill(Pid::from_raw(pm.pid), Signal::SIGKILL).expect("kill -9");
    let (a, b) = tokio::join!(
        c.driver(1).run(c.id(1), DnAction::Lock1),
        c.driver(2).run(c.id(2), DnAction::Lock1)
    );
    a.expect("lock1 on 6002");
    b.expect("lock1 on 6003");
    let (s1, s2) = (status(c, 1).await, status(c, 2).await);
    assert_eq!(
        (s1.lock, s2.lock),
        (LockState::Prohibit, LockState::Prohibit)
    );
    let (new, other) = if s2.position > s1.position {
        (2, 1)
    } else {
        (1, 2)
    };
    act(c, new, DnAction::Promote { term: Term(2) }).await;
    let np = status(c, new).await;
    assert_eq!(np.role, DnRole::Primary);
    assert_eq!(np.position.timeline.0, s1.position.timeline.0 + 1);
    assert!(np.history.contains(s1.position) && np.history.contains(s2.position));

    act(c, other, DnAction::Lock2 { primary: c.id(new) }).await;
    wait_streaming(c, other, new).await;
    let os = status(c, other).await;
    assert_eq!(os.lock, LockState::Specified(c.id(new)));
    let writer = c.client(new).await.expect("client");
    writer
        .execute("INSERT INTO t VALUES (100)", &[])
        .await
        .expect("write on the new primary, acknowledged by the Lock2'd standby");
    assert_eq!(
        status(c, other).await.position.timeline,
        np.position.timeline
    );
    new
}

/// The old primary rejoins: Build (rewind) from the new primary, start pending, follow it.
async fn rejoin_by_rewind(c: &TestCluster, new: usize) {
    // A rewind rewrites files in place, a base backup recreates them: the inode tells which ran.
    let inode = || {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(c.data_dir(0).join("PG_VERSION"))
            .map(|m| m.ino())
            .expect("PG_VERSION")
    };
    let before = inode();
    // The agents' disk probers keep probing both members through the Build (issue 18: their
    // files, written as root inside the data directories, made every pg_rewind fail: it copied
    // the source's and could not open the target's).
    let probers = [
        Prober::start(&c.data_dir(0)),
        Prober::start(&c.data_dir(new)),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    act(
        c,
        0,
        DnAction::Build {
            source: c.id(new),
            full: false,
        },
    )
    .await;
    for p in probers {
        p.stop_ok().await;
    }
    assert_eq!(inode(), before, "pg_rewind did the Build, not a full copy");
    act(c, 0, DnAction::StartPending).await;
    act(c, 0, DnAction::NotifyStandby { primary: c.id(new) }).await;
    wait_streaming(c, 0, new).await;
    let rejoined = status(c, 0).await;
    assert_eq!(rejoined.role, DnRole::Standby);
    assert_eq!(
        rejoined.history.timeline,
        status(c, new).await.position.timeline
    );
    let want = count_rows(c, new).await.expect("rows on primary");
    eventually("old primary caught up", || async {
        (count_rows(c, 0).await? == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_lock1_failover_lock2_and_rewind_rejoin() {
    let Some(c) = TestCluster::new("failover", 3, SyncMode::Quorum) else {
        return;
    };
    bounded(async {
        primary_with_standbys(&c).await;
        // A physical slot per member on every member, a standby included.
        let standby = c.client(1).await.expect("client");
        let slots: Vec<String> = standby
            .query(
                "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
                &[],
            )
            .await
            .expect("slots")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(slots, ["dn_6001", "dn_6003"]);
        let p0 = c.client(0).await.expect("client");
        p0.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
            .await
            .expect("sync commit with ANY 1 and two standbys");
        lock1_holds_until_unlock(&c).await;
        let new = fail_over_after_crash(&c).await;
        rejoin_by_rewind(&c, new).await;
    })
    .await;
}

/// SetReadOnly on → a new session's INSERT is refused; off → accepted.
async fn read_only_toggles(c: &TestCluster) {
    act(c, 0, DnAction::SetReadOnly { on: true }).await;
    assert!(status(c, 0).await.read_only);
    let s = c.client(0).await.expect("client");
    let err = s
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect_err("read-only");
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    act(c, 0, DnAction::SetReadOnly { on: false }).await;
    let s = c.client(0).await.expect("client");
    s.execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("writable again");
}

/// ANY 1 with no standby streaming: the commit waits for a standby. (statement_timeout cannot
/// show it: PostgreSQL disables it before the commit. A cancel ends the wait; the row is then
/// committed locally but not acknowledged.)
async fn sync_standbys_make_commits_wait(c: &TestCluster) {
    let members = vec![InstanceId(6001), InstanceId(6002)];
    act(c, 0, DnAction::SetSyncStandbys { k: 1, members }).await;
    let s = c.client(0).await.expect("client");
    let cancel = s.cancel_token();
    let insert = tokio::spawn(async move { s.execute("INSERT INTO t VALUES (2)", &[]).await });
    let watcher = c.client(0).await.expect("client");
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'";
    eventually("a commit waiting on SyncRep", || async {
        let row = watcher.query_one(sql, &[]).await.ok()?;
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    assert!(!insert.is_finished(), "the commit waits for a standby");
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    insert
        .await
        .expect("join")
        .expect("cancelled wait: committed locally with a warning");
    let none = DnAction::SetSyncStandbys {
        k: 0,
        members: vec![],
    };
    act(c, 0, none).await;
    let s = c.client(0).await.expect("client");
    s.execute("INSERT INTO t VALUES (3)", &[])
        .await
        .expect("asynchronous again");
}

/// ALTER SYSTEM of a managed key does not survive a start: postgresql.auto.conf is stripped.
async fn alter_system_of_managed_keys_is_undone_at_start(c: &TestCluster) {
    let s = c.client(0).await.expect("client");
    for stmt in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "ALTER SYSTEM SET work_mem = '5MB'",
    ] {
        s.batch_execute(stmt).await.expect("alter system");
    }
    let before = instance_processes(c, 0);
    act(c, 0, DnAction::Kill).await;
    assert_no_process_left(&before);
    drop(s);
    assert!(!c.driver(0).is_running(c.id(0)).expect("running?"));
    act(c, 0, DnAction::StartPending).await;
    assert!(!status(c, 0).await.read_only, "managed key removed");
    let auto = std::fs::read_to_string(c.data_dir(0).join("postgresql.auto.conf")).expect("auto");
    assert!(auto.contains("work_mem") && !auto.contains("default_transaction_read_only"));
}

/// The postmaster of member `i` and every process it forked, as (pid, start time). The
/// children are SIGSTOPped: a stopped process cannot notice its postmaster's death and exit
/// by itself, so only a Kill that reaches it ends it (a frozen backend, deterministically).
fn instance_processes(c: &TestCluster, i: usize) -> Vec<(i32, u64)> {
    use cm_io::process as p;
    let pm = PostmasterPid::read(&c.data_dir(i))
        .expect("postmaster.pid")
        .pid;
    let all: Vec<_> = p::all_pids()
        .into_iter()
        .filter_map(p::read_stat)
        .filter(|st| st.pid == pm || st.ppid == pm)
        .collect();
    for st in all.iter().filter(|st| st.pid != pm) {
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGSTOP);
    }
    all.iter().map(|st| (st.pid, st.starttime)).collect()
}

/// SPEC §3: after Kill no process of the instance runs (each is gone or a zombie). The
/// postmaster's children lead sessions of their own, so a SIGKILL to its group alone missed
/// them. `before` is [`instance_processes`] taken just before the Kill.
fn assert_no_process_left(before: &[(i32, u64)]) {
    assert!(
        before.len() > 2,
        "the postmaster and its children: {before:?}"
    );
    let left: Vec<_> = before
        .iter()
        .filter_map(|(pid, start)| {
            cm_io::process::read_stat(*pid).filter(|s| s.starttime == *start)
        })
        .filter(|s| s.state != 'Z')
        .collect();
    assert!(
        left.is_empty(),
        "processes of the killed instance still run: {left:?}"
    );
}

/// An agent restart: a fresh driver adopts the running postmaster and can fence it.
async fn restarted_agent_adopts_and_kills(c: &TestCluster) {
    let again = PgDriver::new(
        std::sync::Arc::clone(&c.config),
        cm_core::NodeId(1),
        c.driver(0).options().clone(),
    )
    .expect("driver");
    assert!(again.is_running(c.id(0)).expect("adopted"));
    let st = again.status(c.id(0)).await.expect("status");
    assert_eq!(st.role, DnRole::Pending, "desired state restored from disk");
    // A client session open: its backend must die with the instance.
    let _session = c.client(0).await.expect("a session");
    let before = instance_processes(c, 0);
    again
        .run(c.id(0), DnAction::Kill)
        .await
        .expect("kill adopted");
    assert_no_process_left(&before);
    assert!(!c.driver(0).is_running(c.id(0)).expect("running?"));
    assert!(
        !c.data_dir(0).join("postmaster.pid").exists(),
        "stale lock removed"
    );
    act(c, 0, DnAction::StartPending).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_read_only_sync_standbys_auto_conf_and_adoption() {
    let Some(c) = TestCluster::new("settings", 1, SyncMode::Off) else {
        return;
    };
    bounded(async {
        c.initdb(0).expect("initdb");
        act(&c, 0, DnAction::StartPending).await;
        act(&c, 0, DnAction::Promote { term: Term(1) }).await;
        let s = c.client(0).await.expect("client");
        s.batch_execute("CREATE TABLE t (v int)")
            .await
            .expect("create");
        read_only_toggles(&c).await;
        sync_standbys_make_commits_wait(&c).await;
        alter_system_of_managed_keys_is_undone_at_start(&c).await;
        restarted_agent_adopts_and_kills(&c).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_sigstopped_postmaster_fails_the_probe_while_proc_shows_stopped() {
    let Some(c) = TestCluster::new("sigstop", 1, SyncMode::Off) else {
        return;
    };
    bounded(async {
        c.initdb(0).expect("initdb");
        act(&c, 0, DnAction::StartPending).await;
        let d = c.driver(0);
        // Every slot taken (a hot standby must keep initdb's max_connections, 100).
        let mut sessions = Vec::new();
        for _ in 0..100 {
            sessions.push(c.client(0).await.expect("a slot"));
        }
        let full = d
            .phony_dead_probe(c.id(0), Duration::from_secs(5))
            .await
            .expect("probe");
        assert_eq!(full.connect, ProbeConnect::TooManyClients);
        assert!(
            !full.is_hit(Duration::from_secs(1)),
            "too many clients is not a hit"
        );
        drop(sessions);
        // The backends of the dropped sessions exit asynchronously: until they have, a fresh
        // connection may still find every slot taken.
        let ok = eventually("a free connection slot", || async {
            let p = d
                .phony_dead_probe(c.id(0), Duration::from_secs(5))
                .await
                .expect("probe");
            (p.connect != ProbeConnect::TooManyClients).then_some(p)
        })
        .await;
        assert_eq!(ok.connect, ProbeConnect::Answered);
        assert!(!ok.is_hit(Duration::from_secs(1)));

        let pm = PostmasterPid::read(&c.data_dir(0)).expect("postmaster.pid");
        kill(Pid::from_raw(pm.pid), Signal::SIGSTOP).expect("SIGSTOP");
        // The stop takes effect when the postmaster is next scheduled.
        eventually("the postmaster in state T", || async {
            let states = d.processes(c.id(0)).ok()?;
            states.contains(&ProcState::Stopped).then_some(())
        })
        .await;
        let probe = d
            .phony_dead_probe(c.id(0), Duration::from_secs(1))
            .await
            .expect("probe");
        assert!(
            matches!(probe.connect, ProbeConnect::Failed(_)),
            "{probe:?}"
        );
        assert!(
            d.status(c.id(0)).await.is_err(),
            "status query times out too"
        );

        kill(Pid::from_raw(pm.pid), Signal::SIGCONT).expect("SIGCONT");
        let probe = d
            .phony_dead_probe(c.id(0), Duration::from_secs(5))
            .await
            .expect("probe");
        assert_eq!(probe.connect, ProbeConnect::Answered);
        assert!(
            !d.processes(c.id(0))
                .expect("processes")
                .contains(&ProcState::Stopped)
        );
    })
    .await;
}

fn inode_of(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|m| m.ino()).expect("inode")
}

/// A bin directory with the real PostgreSQL tools except a `pg_basebackup` that fails the way
/// a real one does, with its message on stderr.
fn bin_dir_with_failing_basebackup(c: &TestCluster) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = c.root.join("failing-bin");
    std::fs::create_dir_all(&dir).expect("bin dir");
    for tool in [
        "postgres",
        "pg_rewind",
        "pg_ctl",
        "initdb",
        "pg_controldata",
    ] {
        let real = std::path::Path::new(cm_io::postgres::test_support::BIN_DIR).join(tool);
        std::os::unix::fs::symlink(real, dir.join(tool)).expect("symlink");
    }
    let script = dir.join("pg_basebackup");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'pg_basebackup: error: could not connect: simulated refusal' >&2\nexit 1\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Issue 18, defect 2: a Build whose pg_rewind is impossible (the target is another system)
/// copies into a fresh directory beside the data directory. A failed copy leaves the data
/// directory exactly as it was and reports pg_basebackup's own message; a successful one is
/// swapped in, keeps the old data aside until the new copy has started as a standby, and
/// streams afterwards. The disk prober runs throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_full_copy_is_built_beside_and_keeps_the_old_data_until_started() {
    let Some(c) = TestCluster::new("fullcopy", 2, SyncMode::Off) else {
        return;
    };
    bounded(async {
        c.initdb(0).expect("initdb");
        act(&c, 0, DnAction::StartPending).await;
        act(&c, 0, DnAction::Promote { term: Term(1) }).await;
        let p0 = c.client(0).await.expect("client");
        p0.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
            .await
            .expect("write");
        // A database error reads as PostgreSQL wrote it, not "db error" (issue 17).
        let e = p0
            .batch_execute("CREATE TABLE u (v int PRIMARY KEY); INSERT INTO u VALUES (1), (1)")
            .await
            .expect_err("a duplicate key");
        assert_eq!(
            cm_io::postgres::pg_error(&e),
            "ERROR 23505: duplicate key value violates unique constraint \"u_pkey\"; \
             detail: Key (v)=(1) already exists."
        );
        // Member 1 holds another system's data: pg_rewind refuses it.
        c.initdb(1).expect("initdb of another system");
        let data = c.data_dir(1);
        std::fs::write(data.join("cm_test_marker"), "old").expect("marker");
        let version_inode = inode_of(&data.join("PG_VERSION"));
        let fresh = c.root.join("data2.cm_build");
        let old = c.root.join("data2.cm_old");
        let prober = Prober::start(&data);

        let failing = PgDriver::new(
            std::sync::Arc::clone(&c.config),
            cm_core::NodeId(2),
            PgOptions {
                bin_dir: bin_dir_with_failing_basebackup(&c),
                sync_data: false,
                ..PgOptions::from_config(&c.config)
            },
        )
        .expect("driver");
        let err = failing
            .run(
                c.id(1),
                DnAction::Build {
                    source: c.id(0),
                    full: false,
                },
            )
            .await
            .expect_err("the copy fails")
            .to_string();
        assert!(err.contains("simulated refusal"), "{err}");
        assert!(err.contains("pg_rewind"), "{err}");
        assert_eq!(inode_of(&data.join("PG_VERSION")), version_inode);
        assert!(data.join("cm_test_marker").exists(), "old data untouched");
        assert!(!fresh.exists() && !old.exists());

        // pg_rewind ran and failed, so the directory carries the rewind marker: the agent
        // reports the failed Build as half-rewound and the CMS orders a full copy (issue 18:
        // the core chooses the method). A rewind ordered now is refused before anything is
        // touched.
        let refused = c
            .driver(1)
            .run(
                c.id(1),
                DnAction::Build {
                    source: c.id(0),
                    full: false,
                },
            )
            .await
            .expect_err("a rewind of half-rewound data is refused")
            .to_string();
        assert!(refused.contains("half-rewound"), "{refused}");
        assert_eq!(inode_of(&data.join("PG_VERSION")), version_inode);
        assert!(data.join("cm_test_marker").exists(), "old data untouched");
        act(
            &c,
            1,
            DnAction::Build {
                source: c.id(0),
                full: true,
            },
        )
        .await;
        assert_ne!(
            inode_of(&data.join("PG_VERSION")),
            version_inode,
            "a full copy"
        );
        assert!(!data.join("cm_test_marker").exists());
        assert!(old.join("cm_test_marker").exists(), "old data kept aside");
        assert!(!fresh.exists());
        act(&c, 1, DnAction::StartPending).await;
        assert!(!old.exists(), "removed once the copy started as a standby");
        prober.stop_ok().await;
        act(&c, 1, DnAction::NotifyStandby { primary: c.id(0) }).await;
        wait_streaming(&c, 1, 0).await;
        assert_eq!(count_rows(&c, 1).await, Some(1));
        assert_eq!(status(&c, 1).await.receiver_error, None);

        // `cm_ctl build --full` of a healthy standby: pg_rewind would leave its files in place
        // (nothing to rewind); the full copy recreates them.
        let copied = inode_of(&data.join("PG_VERSION"));
        act(
            &c,
            1,
            DnAction::Build {
                source: c.id(0),
                full: true,
            },
        )
        .await;
        assert_ne!(
            inode_of(&data.join("PG_VERSION")),
            copied,
            "a full copy, not pg_rewind"
        );
        act(&c, 1, DnAction::StartPending).await;
        act(&c, 1, DnAction::NotifyStandby { primary: c.id(0) }).await;
        wait_streaming(&c, 1, 0).await;
        assert_eq!(count_rows(&c, 1).await, Some(1));

        // Its stream breaks (the primary is gone): the standby says so, with PostgreSQL's
        // reason (issue 18, defect 3).
        act(&c, 0, DnAction::Kill).await;
        let why = eventually("a receiver error", || async {
            let st = c.driver(1).status(c.id(1)).await.ok()?;
            st.receiver_error
                .filter(|e| e.contains("could not connect"))
        })
        .await;
        assert!(
            why.starts_with("no WAL receiver") || why.starts_with("WAL receiver"),
            "{why}"
        );
        assert!(why.len() <= cm_core::dn::REASON_MAX_LEN);
    })
    .await;
}

/// Issue 18 ("a Build must never leave a member worse than it found it"): a Build of a
/// streaming standby from a source that cannot be reached (its primary is down, or the
/// standby is cut off from it) fails before it touches the standby, which keeps running on
/// the same postmaster with its data directory as it was. Before, the Build stopped the
/// standby first and then failed to connect, leaving it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_a_build_from_an_unreachable_source_leaves_the_standby_running() {
    let Some(c) = TestCluster::new("nosource", 2, SyncMode::Off) else {
        return;
    };
    bounded(async {
        primary_with_standbys(&c).await;
        wait_streaming(&c, 1, 0).await;
        let data = c.data_dir(1);
        let pm = PostmasterPid::read(&data).expect("the standby's postmaster.pid");
        let version_inode = inode_of(&data.join("PG_VERSION"));
        act(&c, 0, DnAction::Kill).await;
        let err = c
            .driver(1)
            .run(
                c.id(1),
                DnAction::Build {
                    source: c.id(0),
                    full: false,
                },
            )
            .await
            .expect_err("no source to build from")
            .to_string();
        assert!(!err.is_empty());
        assert_eq!(
            c.driver(1).is_running(c.id(1)).ok(),
            Some(true),
            "the standby was stopped by a Build that failed: {err}"
        );
        let now = PostmasterPid::read(&data).expect("postmaster.pid after the Build");
        assert_eq!(now.pid, pm.pid, "the same postmaster still runs");
        assert_eq!(inode_of(&data.join("PG_VERSION")), version_inode);
        let st = status(&c, 1).await;
        assert_eq!(st.role, DnRole::Standby, "{st:?}");
    })
    .await;
}

/// §16, PostgreSQL's own door: the standby streams and was built with the cluster's password
/// from its passfile; a TCP connection as the database user without the password, or with a
/// wrong one, is refused; with it, accepted. The managed pg_hba.conf trusts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_tcp_connections_need_the_clusters_password() {
    let Some(c) = TestCluster::new("password", 2, SyncMode::Quorum) else {
        return;
    };
    bounded(async {
        // pg_basebackup (Build) and the WAL receiver authenticate through passfile=.
        primary_with_standbys(&c).await;
        for i in 0..2 {
            let err = c
                .client_with(i, None)
                .await
                .err()
                .unwrap_or_else(|| panic!("member {i} accepted a connection without password"));
            let text = cm_io::postgres::pg_error(&err);
            assert!(text.contains("password missing"), "member {i}: {text}");
            let err = c
                .client_with(i, Some("not-the-password"))
                .await
                .err()
                .unwrap_or_else(|| panic!("member {i} accepted a wrong password"));
            assert_eq!(
                err.code(),
                Some(&SqlState::INVALID_PASSWORD),
                "member {i}: {err}"
            );
            let ok = c
                .client(i)
                .await
                .expect("the cluster's password is accepted");
            let method: String = ok
                .query_one(
                    "SELECT auth_method FROM pg_hba_file_rules \
                     WHERE type = 'host' AND 'replication' = ANY(database) LIMIT 1",
                    &[],
                )
                .await
                .expect("hba rules")
                .get(0);
            assert_eq!(method, "scram-sha-256");
            let trusting: i64 = ok
                .query_one(
                    "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'",
                    &[],
                )
                .await
                .expect("hba rules")
                .get(0);
            assert_eq!(trusting, 0, "member {i}: no rule trusts");
        }
    })
    .await;
}

/// The pids of the driver's idle sessions on member `i` (`application_name` cm_agent), seen
/// from a session of the test's own.
async fn agent_backends(c: &TestCluster, i: usize) -> Vec<i32> {
    let client = c.client(i).await.expect("a test session");
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'cm_agent' ORDER BY pid",
            &[],
        )
        .await
        .expect("pg_stat_activity");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Issue 16 item 4: the status query keeps one session open (PostgreSQL forks no backend per
/// query), reconnects after its backend was terminated, and a stop closes it (a smart
/// shutdown would otherwise wait for it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_pg_status_query_keeps_its_session_and_reconnects() {
    let Some(c) = TestCluster::new("session", 1, SyncMode::Off) else {
        return;
    };
    bounded(async {
        c.initdb(0).expect("initdb");
        act(&c, 0, DnAction::StartPending).await;
        let d = c.driver(0);
        status(&c, 0).await;
        let first = agent_backends(&c, 0).await;
        assert_eq!(first.len(), 1, "one kept status session: {first:?}");
        for _ in 0..5 {
            status(&c, 0).await;
        }
        d.streaming(c.id(0)).await.expect("streaming");
        assert_eq!(
            agent_backends(&c, 0).await,
            first,
            "the same backend answered"
        );

        let admin = c.client(0).await.expect("a test session");
        let killed: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&first[0]])
            .await
            .expect("terminate")
            .get(0);
        assert!(killed);
        // The backend exits asynchronously; the next status query must answer all the same.
        let st = status(&c, 0).await;
        assert_eq!(st.role, DnRole::Pending);
        let second = eventually("the terminated backend gone", || async {
            let now = agent_backends(&c, 0).await;
            (!now.contains(&first[0])).then_some(now)
        })
        .await;
        status(&c, 0).await;
        assert_eq!(second.len(), 1, "a new kept session: {second:?}");
        assert_ne!(second, first);

        // A smart stop ends once no session is left: the kept one must not hold it up.
        drop(admin);
        act(
            &c,
            0,
            DnAction::Stop {
                mode: cm_core::dn::StopMode::Smart,
            },
        )
        .await;
        assert!(!d.is_running(c.id(0)).expect("is_running"));
    })
    .await;
}
