//! `cm_local bench`: the node-crash failover time on real PostgreSQL. Each trial brings up a
//! fresh local cluster, kills every process of the primary's node at once, and measures the
//! wall time until an INSERT commits on another node (tried every 20 ms). Figures, not a test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cm_core::params::Profile;
use tokio_postgres::NoTls;

use super::cluster::primary_node;
use super::{LocalCluster, LocalOptions, NODES};

/// A client session to a DN on 127.0.0.1 (as an application would connect), with the
/// cluster's database password ([`LocalCluster::db_password`]).
pub async fn connect(
    port: u16,
    password: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(super::DB_OS_USER)
        .password(password)
        .dbname("postgres")
        .connect_timeout(timeout);
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One statement on a fresh session; the error text when it fails. A statement still waiting
/// after 15 s (a commit waiting for a synchronous standby) counts as not acknowledged.
pub async fn execute(port: u16, password: &str, sql: &str) -> Result<u64, String> {
    let c = connect(port, password, Duration::from_millis(500)).await?;
    match tokio::time::timeout(Duration::from_secs(15), c.execute(sql, &[])).await {
        Ok(r) => r.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        }),
        Err(_) => Err(format!("`{sql}` not acknowledged within 15 s")),
    }
}

/// Per-profile results in seconds.
#[derive(Clone, Debug)]
pub struct ProfileResult {
    /// The profile.
    pub profile: Profile,
    /// Seconds from the kill to the first committed INSERT, per successful trial.
    pub trials: Vec<f64>,
    /// Trials that failed, with why.
    pub failures: Vec<String>,
}

impl ProfileResult {
    /// Median, min and max, when there is a figure.
    pub fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v = self.trials.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some((median, v[0], v[v.len() - 1]))
    }
}

/// A fresh cluster, Normal, with `table (at timestamptz DEFAULT now())` created on its
/// primary: the cluster, the primary's node and the database password.
pub fn normal_cluster_with_table(
    opts: LocalOptions,
    rt: &tokio::runtime::Runtime,
    table: &str,
) -> anyhow::Result<(LocalCluster, u32, String)> {
    let mut c = LocalCluster::create(opts)?;
    c.start_monitors()?;
    let s = c.wait_normal(Duration::from_secs(180), |_| {})?;
    let primary = primary_node(&s).context("no primary")?;
    let password = c.db_password()?;
    rt.block_on(execute(
        c.dn_port(primary),
        &password,
        &format!("CREATE TABLE {table} (at timestamptz DEFAULT now())"),
    ))
    .map_err(|e| anyhow::anyhow!("create table {table}: {e}"))?;
    Ok((c, primary, password))
}

/// One trial: fresh cluster, Normal, table created, kill the primary's node, time the first
/// INSERT elsewhere. The cluster is torn down before returning.
pub fn trial(opts: LocalOptions, rt: &tokio::runtime::Runtime) -> anyhow::Result<f64> {
    let (mut c, primary, password) = normal_cluster_with_table(opts, rt, "bench")?;
    let others: Vec<u16> = (1..=NODES)
        .filter(|n| *n != primary)
        .map(|n| c.dn_port(n))
        .collect();
    let t0 = Instant::now();
    let left = c.kill_node(primary);
    if !left.is_empty() {
        bail!("node {primary} survived the kill: groups {left:?}");
    }
    let limit = Duration::from_secs(120);
    loop {
        for port in &others {
            if rt
                .block_on(execute(
                    *port,
                    &password,
                    "INSERT INTO bench DEFAULT VALUES",
                ))
                .is_ok()
            {
                return Ok(t0.elapsed().as_secs_f64());
            }
        }
        if t0.elapsed() > limit {
            bail!("no INSERT succeeded within {limit:?} of the kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `trials` trials per profile, each in a fresh directory under `root`, printing as it
/// goes.
pub fn run(
    root: &Path,
    profiles: &[Profile],
    trials: u32,
    template: &LocalOptions,
) -> anyhow::Result<Vec<ProfileResult>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &profile in profiles {
        let mut r = ProfileResult {
            profile,
            trials: Vec::new(),
            failures: Vec::new(),
        };
        for i in 1..=trials {
            let mut opts = template.clone();
            opts.profile = profile;
            opts.dir = root.join(format!("{profile:?}-{i}").to_lowercase());
            opts.keep = false;
            match trial(opts, &rt) {
                Ok(t) => {
                    println!(
                        "{profile:?} trial {i}: writable on another node {t:.3} s after the node kill"
                    );
                    r.trials.push(t);
                }
                Err(e) => {
                    println!("{profile:?} trial {i}: FAILED: {e:#}");
                    r.failures.push(format!("{e:#}"));
                }
            }
        }
        results.push(r);
    }
    Ok(results)
}

/// The summary table.
pub fn render(results: &[ProfileResult]) -> String {
    let mut out = String::from("profile   trials  median_s  min_s   max_s   failed\n");
    for r in results {
        let (med, min, max) = r.stats().map_or_else(
            || ("-".into(), "-".into(), "-".into()),
            |(a, b, c)| (format!("{a:.3}"), format!("{b:.3}"), format!("{c:.3}")),
        );
        out.push_str(&format!(
            "{:<9} {:<7} {med:<9} {min:<7} {max:<7} {}\n",
            format!("{:?}", r.profile).to_lowercase(),
            r.trials.len(),
            r.failures.len()
        ));
    }
    out
}

/// A fault of the rejoin benchmark (issue 18's harness shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every process of the primary's node killed at once; the node restarts once another
    /// member accepts writes.
    NodeCrash,
    /// SIGKILL of the primary's postmaster alone, its agent alive.
    PostmasterKill,
    /// Every process of the primary's node SIGSTOPped (a VM pause); thawed once another member
    /// accepts writes.
    Freeze,
}

impl Fault {
    /// All three, in the order they run.
    pub const ALL: [Self; 3] = [Self::NodeCrash, Self::PostmasterKill, Self::Freeze];

    /// Parses `node-crash`, `postmaster-kill` or `freeze`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node-crash" => Some(Self::NodeCrash),
            "postmaster-kill" => Some(Self::PostmasterKill),
            "freeze" => Some(Self::Freeze),
            _ => None,
        }
    }
}

/// One rejoin trial's figures.
#[derive(Clone, Debug)]
pub struct RejoinTrial {
    /// Seconds from the fault to the first committed INSERT (any member).
    pub writable_s: f64,
    /// Seconds from the node's return (restart, thaw; the fault for a postmaster kill) until
    /// `cm_ctl query` shows the cluster Normal: every member streaming, commits acknowledged.
    pub rejoin_s: f64,
    /// How the old primary was rebuilt, if it was: "pg_rewind", "pg_basebackup" or "-".
    pub build: &'static str,
    /// Acknowledged writes missing on the final primary.
    pub lost: usize,
    /// The final primary is another node than the faulted one (for a postmaster kill, the
    /// restart in place that issue 18 expects did not happen).
    pub failover: bool,
    /// Where the trial's logs were kept (a postmaster kill that became a failover).
    pub kept: Option<PathBuf>,
}

/// Inserts into `bench_acked` on whichever member accepts, until `stop`; the acknowledged ids.
async fn write_until(
    ports: Vec<u16>,
    password: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<i64> {
    use std::sync::atomic::Ordering;
    let mut acked = Vec::new();
    let mut next = 1i64;
    let mut session: Option<tokio_postgres::Client> = None;
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if session.is_none() {
            turn += 1;
            // A frozen member accepts the TCP connection and never answers the handshake.
            let attempt = connect(
                ports[turn % ports.len()],
                &password,
                Duration::from_millis(500),
            );
            session = tokio::time::timeout(Duration::from_secs(2), attempt)
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(c) = &session else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
        let insert = c.execute("INSERT INTO bench_acked VALUES ($1)", &params);
        match tokio::time::timeout(Duration::from_secs(5), insert).await {
            Ok(Ok(_)) => acked.push(next),
            _ => {
                session = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        next += 1;
    }
    acked
}

fn node_log(c: &LocalCluster, n: u32) -> String {
    std::fs::read_to_string(c.paths.logs().join(format!("node{n}.log"))).unwrap_or_default()
}

/// One rejoin trial: a durable cluster (fsync, data checksums) under a writing client, the
/// fault on the primary's node, then the time until a write commits and until the cluster is
/// Normal again with the old primary streaming. The cluster is torn down before returning.
pub fn rejoin_trial(
    opts: LocalOptions,
    rt: &tokio::runtime::Runtime,
    fault: Fault,
) -> anyhow::Result<RejoinTrial> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = LocalCluster::create(opts)?;
    c.start_monitors()?;
    let s = c.wait_normal(Duration::from_secs(180), |_| {})?;
    let p = primary_node(&s).context("no primary")?;
    let password = c.db_password()?;
    rt.block_on(execute(
        c.dn_port(p),
        &password,
        "CREATE TABLE bench_acked (id bigint PRIMARY KEY)",
    ))
    .map_err(|e| anyhow::anyhow!("create table: {e}"))?;
    let ports: Vec<u16> = (1..=NODES).map(|n| c.dn_port(n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn(write_until(
        ports.clone(),
        password.clone(),
        Arc::clone(&stop),
    ));
    std::thread::sleep(Duration::from_secs(2));
    let groups = super::procs::node_groups(c.monitor_pid(p), &[c.data_dir(p)]);
    let t0 = Instant::now();
    match fault {
        Fault::NodeCrash => {
            let left = c.kill_node(p);
            if !left.is_empty() {
                bail!("node {p} survived the kill: groups {left:?}");
            }
        }
        Fault::PostmasterKill => {
            let pm = super::procs::postmaster_pid(&c.data_dir(p)).context("no postmaster")?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pm),
                nix::sys::signal::Signal::SIGKILL,
            )?;
        }
        Fault::Freeze => {
            for g in &groups {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*g),
                    nix::sys::signal::Signal::SIGSTOP,
                );
            }
        }
    }
    let thaw = |groups: &std::collections::BTreeSet<i32>| {
        for g in groups {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*g),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    };
    let limit = Duration::from_secs(120);
    let writable_s = loop {
        let ok = ports.iter().any(|port| {
            let insert = execute(
                *port,
                &password,
                "INSERT INTO bench_acked VALUES (-1) ON CONFLICT DO NOTHING",
            );
            // A frozen member's handshake never ends: bound every attempt.
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), insert).await })
                .is_ok_and(|r| r.is_ok())
        });
        if ok {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > limit {
            thaw(&groups);
            bail!("no INSERT committed within {limit:?} of the fault");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if fault != Fault::PostmasterKill {
        // Whatever took over must be another node before the old one returns.
        let s = c.wait_until(
            "another primary",
            limit,
            |s| primary_node(s).is_some_and(|q| q != p),
            |_| {},
        );
        if let Err(e) = s {
            thaw(&groups);
            return Err(e);
        }
    }
    let t1 = Instant::now();
    match fault {
        Fault::NodeCrash => c.start_monitor(p)?,
        Fault::Freeze => thaw(&groups),
        Fault::PostmasterKill => {}
    }
    let back = if fault == Fault::PostmasterKill {
        t0
    } else {
        t1
    };
    let s = match c.wait_until(
        "Normal again",
        Duration::from_secs(300),
        super::cluster::is_normal,
        |_| {},
    ) {
        Ok(s) => s,
        Err(e) => {
            // Kept for a post-mortem: the logs say which member did not stream and why.
            stop.store(true, Ordering::SeqCst);
            let detail = c
                .query()
                .map(|s| format!("{:?}", s.groups))
                .unwrap_or_default();
            c.keep_dir();
            return Err(e.context(format!(
                "kept {} for a post-mortem; {detail}",
                c.paths.logs().display()
            )));
        }
    };
    let rejoin_s = back.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let acked = rt.block_on(writer)?;
    let q = primary_node(&s).context("no primary")?;
    let present: std::collections::BTreeSet<i64> = rt.block_on(async {
        let client = connect(c.dn_port(q), &password, Duration::from_secs(2))
            .await
            .map_err(anyhow::Error::msg)?;
        let rows = client.query("SELECT id FROM bench_acked", &[]).await?;
        anyhow::Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    })?;
    let lost = acked.iter().filter(|i| !present.contains(i)).count();
    let failover = q != p;
    // A postmaster kill is to be restarted in place: keep the logs of one that failed over.
    let kept = (failover && fault == Fault::PostmasterKill).then(|| {
        c.keep_dir();
        c.paths.logs()
    });
    let log = node_log(&c, p);
    let build = if log.contains("rebuilt by pg_basebackup") {
        "pg_basebackup"
    } else if log.contains("rebuilt by pg_rewind") {
        "pg_rewind"
    } else {
        "-"
    };
    Ok(RejoinTrial {
        writable_s,
        rejoin_s,
        build,
        lost,
        failover,
        kept,
    })
}

/// Runs `trials` rejoin trials of every fault with `profile`, printing each, and returns the
/// summary table (median and max of each figure, trials without recovery counted).
pub fn run_rejoin(
    root: &Path,
    profile: Profile,
    trials: u32,
    template: &LocalOptions,
    faults: &[Fault],
) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut out = String::from(
        "fault           ok/trials  writable_med_s writable_max_s rejoin_med_s rejoin_max_s  rewind basebackup lost_acks primary_moved\n",
    );
    for &fault in faults {
        let mut got = Vec::new();
        for i in 1..=trials {
            let mut opts = template.clone();
            opts.profile = profile;
            opts.durable = true;
            opts.dir = root.join(format!("{fault:?}-{i}").to_lowercase());
            opts.keep = false;
            match rejoin_trial(opts, &rt, fault) {
                Ok(t) => {
                    println!(
                        "{fault:?} trial {i}: writable {:.3} s, rejoined {:.3} s, build {}, lost {}, primary moved {}{}",
                        t.writable_s,
                        t.rejoin_s,
                        t.build,
                        t.lost,
                        t.failover,
                        t.kept
                            .as_ref()
                            .map(|d| format!(" (logs kept in {})", d.display()))
                            .unwrap_or_default()
                    );
                    got.push(t);
                }
                Err(e) => println!("{fault:?} trial {i}: NO RECOVERY: {e:#}"),
            }
        }
        let stat = |v: Vec<f64>| {
            ProfileResult {
                profile,
                trials: v,
                failures: Vec::new(),
            }
            .stats()
            .map_or_else(
                || ("-".to_owned(), "-".to_owned()),
                |(m, _, x)| (format!("{m:.3}"), format!("{x:.3}")),
            )
        };
        let (wm, wx) = stat(got.iter().map(|t| t.writable_s).collect());
        let (rm, rx) = stat(got.iter().map(|t| t.rejoin_s).collect());
        out.push_str(&format!(
            "{:<15} {:<10} {wm:<14} {wx:<14} {rm:<12} {rx:<13} {:<6} {:<10} {:<9} {}\n",
            format!("{fault:?}"),
            format!("{}/{trials}", got.len()),
            got.iter().filter(|t| t.build == "pg_rewind").count(),
            got.iter().filter(|t| t.build == "pg_basebackup").count(),
            got.iter().map(|t| t.lost).sum::<usize>(),
            got.iter().filter(|t| t.failover).count(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_or_the_mean_of_the_two_middles() {
        let r = |v: Vec<f64>| ProfileResult {
            profile: Profile::Fast,
            trials: v,
            failures: vec![],
        };
        assert_eq!(r(vec![3.0, 1.0, 2.0]).stats(), Some((2.0, 1.0, 3.0)));
        assert_eq!(r(vec![4.0, 1.0, 2.0, 3.0]).stats(), Some((2.5, 1.0, 4.0)));
        assert_eq!(r(vec![]).stats(), None);
    }
}
