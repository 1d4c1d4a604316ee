//! End-to-end on real PostgreSQL and real daemons (SPEC.md §15): every agent's HTTP endpoints
//! on a primary, a standby and a stopped DN, and Debian's HAProxy routing writes by `/primary`
//! across a node crash.
//!
//! Same harness rules as `e2e_cluster.rs`: a temporary directory and free ports per test, the
//! [`LocalCluster`] guard (and HAProxy with it) torn down when dropped, also on failure; waits
//! bounded by a patience that only stops a broken test from hanging; no timing asserted.
//! The disk threshold is raised to 99 % so that a nearly full build machine does not make the
//! primary read-only (which `/primary` rightly refuses).

use std::path::Path;
use std::time::{Duration, Instant};

use cm_core::ctl::ClusterStatus;
use cm_daemons::local::bench::{connect, execute};
use cm_daemons::local::cluster::{primary_node, summary};
use cm_daemons::local::{DEFAULT_PG_BIN, HAPROXY_BIN, LocalCluster, LocalOptions, NODES};

const PATIENCE: Duration = Duration::from_secs(120);

struct Harness {
    c: LocalCluster,
    rt: tokio::runtime::Runtime,
    _root: tempfile::TempDir,
}

impl Harness {
    fn up() -> Option<Self> {
        Self::up_with(Vec::new(), LocalCluster::start_monitors)
    }

    /// A cluster with `params` added to the fast profile, its nodes started by `start`.
    fn up_with(
        params: Vec<(&str, &str)>,
        start: impl FnOnce(&mut LocalCluster) -> anyhow::Result<()>,
    ) -> Option<Self> {
        if !Path::new(DEFAULT_PG_BIN).join("initdb").exists() {
            eprintln!("skipped: no PostgreSQL in {DEFAULT_PG_BIN}");
            return None;
        }
        let root = tempfile::tempdir().expect("temp dir");
        let mut opts =
            LocalOptions::new(root.path().join("cluster"), cm_core::params::Profile::Fast);
        opts.extra_params = vec![("datastorage_threshold_value_check".into(), "99".into())];
        opts.extra_params
            .extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        let mut c = LocalCluster::create(opts).expect("create the local cluster");
        start(&mut c).expect("start om_monitors");
        let h = Self {
            c,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            _root: root,
        };
        h.c.wait_normal(PATIENCE, |_| {})
            .unwrap_or_else(|e| panic!("{e:#}\n{}", h.logs_tail()));
        Some(h)
    }

    /// The database password a client gives (§16).
    fn password(&self) -> String {
        self.c
            .db_password()
            .expect("the cluster's database password")
    }

    fn status(&self) -> ClusterStatus {
        self.c.query().expect("cm_ctl query")
    }

    fn poll(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {PATIENCE:?}\n{}",
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A request to node `n`'s agent: (status, body).
    fn get(&self, n: u32, target: &str) -> (u16, String) {
        let port = self.c.rest_port(n).expect("the node has a rest_port");
        http(self, n, port, "GET", target)
    }

    fn logs_tail(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = (1..=NODES).map(|n| format!("node{n}.log")).collect();
        files.push("haproxy.log".into());
        for f in files {
            let p = self.c.paths.logs().join(f);
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            out.push_str(&format!(
                "--- {} (tail)\n{}\n",
                p.display(),
                lines[from..].join("\n")
            ));
        }
        out
    }
}

/// One HTTPS request to node `n`'s agent on `port` on a fresh connection (closed after the
/// answer), verified with the cluster CA for the node's name: (status, body). Status 0 when
/// the connection or the handshake fails.
fn http(h: &Harness, n: u32, port: u16, method: &str, target: &str) -> (u16, String) {
    let tls = h.c.http_tls(n).expect("the cluster CA");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cm_io::http::request(addr, Some(&tls), method, target, Duration::from_secs(5))
        .unwrap_or((0, String::new()))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn primary_of(s: &ClusterStatus) -> u32 {
    primary_node(s).unwrap_or_else(|| panic!("no primary: {}", summary(s)))
}

#[test]
fn e2e_http_endpoints_answer_on_the_primary_a_standby_and_a_stopped_dn() {
    let Some(h) = Harness::up() else { return };
    let p = primary_of(&h.status());
    let s = if p == 1 { 2 } else { 1 };
    let instance = |n: u32| 6000 + u64::from(n);
    h.poll("/primary 200 on the primary", || {
        h.get(p, "/primary").0 == 200
    });
    let (_, body) = h.get(p, "/read-write");
    let v = json(&body);
    assert_eq!(v["role"], "primary", "{body}");
    assert_eq!(v["write_lease"], true, "{body}");
    assert_eq!(v["group_primary"], instance(p), "{body}");
    assert_eq!(v["reason"], serde_json::Value::Null, "{body}");
    for n in (1..=NODES).filter(|&n| n != p) {
        let (code, body) = h.get(n, "/primary");
        assert_eq!(code, 503, "node {n}: {body}");
        assert_eq!(json(&body)["role"], "standby", "{body}");
        h.poll(&format!("/replica?lag=16MB 200 on node {n}"), || {
            h.get(n, "/replica?lag=16MB").0 == 200
        });
        assert_eq!(h.get(n, "/replica").0, 200);
        assert_eq!(h.get(n, "/read-only").0, 200);
        assert_eq!(h.get(n, "/readiness").0, 200);
        let (_, body) = h.get(n, "/replica?lag=16MB");
        assert_eq!(json(&body)["upstream"], instance(p), "{body}");
    }
    assert_eq!(h.get(p, "/replica").0, 503);
    for path in ["/health", "/liveness", "/readiness", "/read-only"] {
        assert_eq!(h.get(p, path).0, 200, "{path}");
    }
    h.poll("/cluster 200", || h.get(s, "/cluster").0 == 200);
    let (_, body) = h.get(s, "/cluster");
    let cluster = json(&body);
    assert_eq!(cluster["groups"][0]["group"], 1, "{body}");
    let (code, body) = h.get(s, "/history");
    assert_eq!(code, 200);
    assert!(json(&body).is_array(), "{body}");
    let (code, metrics) = h.get(p, "/metrics");
    assert_eq!(code, 200);
    let want = format!(
        "cm_agent_dn_role{{instance=\"{}\",role=\"primary\"}} 1",
        instance(p)
    );
    assert!(metrics.contains(&want), "{metrics}");
    // HEAD: the status without a body; other methods: 405.
    let port = h.c.rest_port(p).expect("rest port");
    assert_eq!(http(&h, p, port, "HEAD", "/primary"), (200, String::new()));
    assert_eq!(http(&h, p, port, "POST", "/primary").0, 405);
    // §16: plain HTTP on the agent's TLS port gets no HTTP answer, and the agent counts it.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let plain = cm_io::http::request(addr, None, "GET", "/primary", Duration::from_secs(5));
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    h.poll("the failed handshake in /metrics", || {
        h.get(p, "/metrics")
            .1
            .contains("cm_agent_http_handshakes_failed_total 1")
    });
    assert_eq!(h.get(p, "/primary?instance=9").0, 404);

    // A stopped DN: not healthy, not a replica, and its role says so.
    let dir = h.c.data_dir(s).display().to_string();
    let out =
        h.c.ctl(
            &["stop", "-n", &s.to_string(), "-D", &dir],
            Duration::from_secs(120),
        )
        .expect("cm_ctl stop runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.poll("/health 503 on the stopped DN", || {
        h.get(s, "/health").0 == 503
    });
    let (code, body) = h.get(s, "/replica");
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["role"], "down", "{body}");
    assert_eq!(h.get(s, "/primary").0, 503);
    assert_eq!(h.get(s, "/liveness").0, 200, "the agent itself still runs");
}

/// Writes through HAProxy's write port: before the crash they land on the primary; after the
/// primary's whole node is killed, a client that reconnects writes again, on the new primary.
#[test]
fn e2e_haproxy_client_writes_to_the_new_primary_after_the_primary_node_is_killed() {
    if !Path::new(HAPROXY_BIN).exists() {
        eprintln!("skipped: no HAProxy at {HAPROXY_BIN} (apt-get install haproxy)");
        return;
    }
    let Some(mut h) = Harness::up() else { return };
    let p = primary_of(&h.status());
    let (write, read) = h.c.start_haproxy().expect("haproxy starts");
    let pw = h.password();
    let through = |sql: &str| -> Result<u64, String> { h.rt.block_on(execute(write, &pw, sql)) };
    h.poll("a write through HAProxy", || {
        through("CREATE TABLE IF NOT EXISTS w (id int, port int)").is_ok()
    });
    let port_of = |port: u16| -> Result<(i32, bool), String> {
        h.rt.block_on(async {
            let c = connect(port, &pw, Duration::from_secs(2)).await?;
            let row = c
                .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok((row.get(0), row.get(1)))
        })
    };
    assert_eq!(port_of(write), Ok((i32::from(h.c.dn_port(p)), false)));
    h.poll("a read through HAProxy on a standby", || {
        port_of(read).is_ok_and(|(_, standby)| standby)
    });
    through("INSERT INTO w VALUES (1, inet_server_port())").expect("write before the crash");

    let left = h.c.kill_node(p);
    assert!(left.is_empty(), "survivors of the node kill: {left:?}");
    let mut i = 2;
    h.poll("a write through HAProxy after the crash", || {
        i += 1;
        through(&format!("INSERT INTO w VALUES ({i}, inet_server_port())")).is_ok()
    });
    let q = primary_of(&h.status());
    assert_ne!(q, p);
    let (port, standby) = port_of(write).expect("the write port answers");
    assert_eq!((port, standby), (i32::from(h.c.dn_port(q)), false));
    // Every row written through HAProxy is on the new primary (the one from before the crash
    // was replicated synchronously), and each was written there or on the old primary only.
    let rows: Vec<(i32, i32)> = h.rt.block_on(async {
        let c = connect(h.c.dn_port(q), &pw, Duration::from_secs(2))
            .await
            .expect("connect to the new primary");
        c.query("SELECT id, port FROM w ORDER BY id", &[])
            .await
            .expect("select")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    });
    let old = i32::from(h.c.dn_port(p));
    let new = i32::from(h.c.dn_port(q));
    assert_eq!(rows.first(), Some(&(1, old)), "{rows:?}");
    assert_eq!(rows.last(), Some(&(i, new)), "{rows:?}");
    assert!(
        rows.iter().skip(1).all(|&(_, port)| port == new),
        "a write after the crash reached another member: {rows:?}"
    );
}

/// Sessions PostgreSQL has started on node `n`'s DN since its start (all databases), read on
/// the test's own session `c` after its statistics snapshot is dropped.
fn sessions(h: &Harness, c: &tokio_postgres::Client) -> i64 {
    h.rt.block_on(async {
        c.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .expect("clear the stats snapshot");
        c.query_one("SELECT sum(sessions)::bigint FROM pg_stat_database", &[])
            .await
            .expect("pg_stat_database")
            .get(0)
    })
}

/// The sessions node `c`'s DN starts while `during` runs, counted after PostgreSQL flushed
/// its statistics (backends flush at least once a second).
fn sessions_during(h: &Harness, c: &tokio_postgres::Client, during: impl FnOnce()) -> i64 {
    std::thread::sleep(Duration::from_millis(1500));
    let before = sessions(h, c);
    during();
    std::thread::sleep(Duration::from_millis(1500));
    sessions(h, c) - before
}

/// SPEC §15, a lagging standby: with replay paused on a standby while the primary writes, it
/// still streams (`/replica` 200) but fails the lag bound (`/replica?lag=1MB` 503, its replay
/// lag in the body and in `/metrics`), and passes it again once replay resumes. And health
/// requests cost no PostgreSQL connection: hundreds of them start no more sessions on the DNs
/// than an idle period as long (the agent's own probes), as the answer comes from its state.
#[test]
fn e2e_http_a_lagging_standby_fails_only_the_lag_bound_and_requests_cost_no_connection() {
    let Some(h) = Harness::up() else { return };
    let p = primary_of(&h.status());
    let s = if p == 1 { 2 } else { 1 };
    let pw = h.password();
    h.poll("/replica?lag=1MB 200 on the standby", || {
        h.get(s, "/replica?lag=1MB").0 == 200
    });
    let on = |n: u32| {
        h.rt.block_on(connect(h.c.dn_port(n), &pw, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("connect to node {n}'s DN: {e}"))
    };
    let (primary, standby) = (on(p), on(s));

    // Health requests open no PostgreSQL connection.
    let burst = || {
        let started = Instant::now();
        for i in 0..100 {
            for (n, path) in [(p, "/primary"), (s, "/replica?lag=16MB"), (s, "/health")] {
                let code = h.get(n, path).0;
                assert_eq!(code, 200, "request {i}: {path} on node {n}");
            }
        }
        started.elapsed()
    };
    let mut took = Duration::ZERO;
    let with = [p, s].map(|n| {
        let c = if n == p { &primary } else { &standby };
        sessions_during(&h, c, || took += burst())
    });
    let idle = [p, s].map(|n| {
        let c = if n == p { &primary } else { &standby };
        sessions_during(&h, c, || std::thread::sleep(took / 2))
    });
    eprintln!("sessions started during 300 requests: {with:?}; idle as long: {idle:?}");
    for k in 0..2 {
        assert!(
            with[k] <= idle[k] + idle[k] / 2 + 3,
            "300 health requests started {} sessions, an idle period as long {}",
            with[k],
            idle[k]
        );
    }

    // Replay paused on the standby; the primary writes ~7 MB of WAL, which the standby still
    // receives (and flushes: synchronous commits still return) but does not apply.
    h.rt.block_on(standby.batch_execute("SELECT pg_wal_replay_pause()"))
        .expect("pause replay");
    h.rt.block_on(primary.batch_execute(
        "CREATE TABLE lag_filler AS SELECT g, repeat('x', 100) AS pad \
         FROM generate_series(1, 50000) g",
    ))
    .expect("write on the primary");
    h.poll("/replica?lag=1MB 503 on the paused standby", || {
        h.get(s, "/replica?lag=1MB").0 == 503
    });
    let (code, body) = h.get(s, "/replica?lag=1MB");
    let v = json(&body);
    assert_eq!(code, 503, "{body}");
    let lag = v["lag_bytes"].as_u64().expect("lag_bytes");
    assert!(lag > 1 << 20, "{body}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("replay lag ")),
        "{body}"
    );
    assert!(
        v["lsn"].as_u64() > v["replay_lsn"].as_u64(),
        "it received beyond what it replayed: {body}"
    );
    assert_eq!(h.get(s, "/replica").0, 200, "it still streams");
    assert_eq!(h.get(s, "/replica?lag=1GB").0, 200);
    assert_eq!(h.get(s, "/health").0, 200);
    let metric = format!("cm_agent_dn_replay_lag_bytes{{instance=\"{}\"}} ", 6000 + s);
    h.poll("the replay lag in /metrics", || {
        h.get(s, "/metrics").1.lines().any(|l| {
            l.strip_prefix(&metric)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v > f64::from(1u32 << 20))
        })
    });

    h.rt.block_on(standby.batch_execute("SELECT pg_wal_replay_resume()"))
        .expect("resume replay");
    h.poll("/replica?lag=1MB 200 once replay resumed", || {
        h.get(s, "/replica?lag=1MB").0 == 200
    });
}

/// The cgroup v2 hierarchy the isolation rules match sockets by (a hybrid host mounts it here;
/// nft names a cgroup by its path below /sys/fs/cgroup).
const CGROUP2: &str = "/sys/fs/cgroup/unified";

/// One cgroup per node for this test's processes and an nftables table cutting one node off;
/// removed when dropped (also on a panic): the table deleted, this process moved back to the
/// root cgroup, whatever still runs in the node cgroups killed, the cgroups removed.
struct Isolation {
    table: String,
    cgroups: Vec<std::path::PathBuf>,
}

impl Isolation {
    /// Creates the node cgroups, or `None` when this host has no writable cgroup v2 or no nft.
    fn prepare() -> Option<Self> {
        let tag = format!("cm-e2e-{}", std::process::id());
        let available = Path::new(CGROUP2).join("cgroup.procs").exists()
            && std::process::Command::new("nft")
                .args(["list", "tables"])
                .output()
                .is_ok_and(|o| o.status.success());
        if !available {
            return None;
        }
        let mut iso = Self {
            table: tag.replace('-', "_"),
            cgroups: Vec::new(),
        };
        for n in 1..=NODES {
            let cg = Path::new(CGROUP2).join(format!("{tag}-n{n}"));
            std::fs::create_dir(&cg).ok()?;
            iso.cgroups.push(cg);
        }
        Some(iso)
    }

    /// The nft name of node `n`'s cgroup.
    fn cgroup_name(&self, n: u32) -> String {
        let cg = &self.cgroups[n as usize - 1];
        cg.strip_prefix("/sys/fs/cgroup")
            .expect("below /sys/fs/cgroup")
            .display()
            .to_string()
    }

    /// Starts every node's om_monitor inside its node's cgroup (this process joins the cgroup
    /// for the fork, so the node's whole process tree is born there, then leaves it).
    fn start_nodes(&self, c: &mut LocalCluster) -> anyhow::Result<()> {
        for n in 1..=NODES {
            join_cgroup(&self.cgroups[n as usize - 1]);
            let started = c.start_monitor(n);
            join_cgroup(Path::new(CGROUP2));
            started?;
        }
        Ok(())
    }

    /// Cuts node `n` off the CMS quorum and off its standbys, leaving it reachable by clients
    /// and HAProxy: its CMS port is dropped both ways; its processes' packets to the other
    /// CMSs are dropped; the standbys' WAL receivers (the database user) cannot reach its DN.
    fn cut(&self, c: &LocalCluster, n: u32) {
        let i = n as usize - 1;
        let others: Vec<String> = (0..NODES as usize)
            .filter(|&k| k != i)
            .map(|k| c.ports.cms[k].to_string())
            .collect();
        let rules = format!(
            "table inet {t} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
             tcp dport {cms} drop\n    tcp sport {cms} drop\n    \
             socket cgroupv2 level 1 \"{cg}\" tcp dport {{ {others} }} drop\n    \
             meta skuid \"{user}\" tcp dport {dn} drop\n  }}\n}}\n",
            t = self.table,
            cms = c.ports.cms[i],
            cg = self.cgroup_name(n),
            others = others.join(", "),
            user = cm_daemons::local::DB_OS_USER,
            dn = c.ports.dn[i],
        );
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs");
        use std::io::Write as _;
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("rules written");
        assert!(nft.wait().expect("nft").success(), "nft refused:\n{rules}");
    }
}

fn join_cgroup(cg: &Path) {
    std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("join {}: {e}", cg.display()));
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
        let _ = std::fs::write(
            Path::new(CGROUP2).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for cg in &self.cgroups {
            let _ = std::fs::write(cg.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(cg.join("cgroup.procs"))
                .is_ok_and(|p| !p.trim().is_empty())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// The postmaster of node `n`'s DN, from its `postmaster.pid`.
fn postmaster(h: &Harness, n: u32) -> Option<i32> {
    std::fs::read_to_string(h.c.data_dir(n).join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// SPEC §15 with a fenced-but-alive old primary behind HAProxy: the primary's node is cut off
/// the CMS quorum and its standbys (nftables, matching its processes by cgroup) while HAProxy
/// and clients still reach it. Its agent's `/primary` turns 503 before the agent fences
/// (kills) its DN, HAProxy routes no connection to it from before the fence on, and a new
/// primary takes the write port; the old node's agent still answers.
///
/// The margin between the 503 and the fence is 2 × `agent_report_interval`; the shipped
/// HAProxy config marks a server down within about 0.75 s (inter 500 ms, then fastinter 250
/// ms, fall 2), so the test runs with the default profile's report interval (1 s, a 2 s
/// margin) on the otherwise fast profile.
#[test]
fn e2e_haproxy_routes_no_write_to_a_fenced_but_alive_old_primary() {
    if !Path::new(HAPROXY_BIN).exists() {
        eprintln!("skipped: no HAProxy at {HAPROXY_BIN} (apt-get install haproxy)");
        return;
    }
    let Some(iso) = Isolation::prepare() else {
        eprintln!("skipped: no writable cgroup v2 at {CGROUP2} or no nft");
        return;
    };
    let params = vec![
        ("agent_report_interval", "1.0"),
        ("agent_self_fence_timeout", "3.5"),
        ("instance_heartbeat_timeout", "4.0"),
    ];
    let Some(mut h) = Harness::up_with(params, |c| iso.start_nodes(c)) else {
        return;
    };
    let p = primary_of(&h.status());
    let (write, _) = h.c.start_haproxy().expect("haproxy starts");
    let pw = h.password();
    let port_p = i32::from(h.c.dn_port(p));
    // The server a new connection through HAProxy's write port lands on, if any.
    let routed = |h: &Harness| -> Option<(i32, bool)> {
        h.rt.block_on(async {
            let c = connect(write, &pw, Duration::from_millis(800)).await.ok()?;
            let q = c.query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[]);
            let row = tokio::time::timeout(Duration::from_millis(800), q)
                .await
                .ok()?
                .ok()?;
            Some((row.get(0), row.get(1)))
        })
    };
    h.poll("HAProxy's write port on the primary", || {
        routed(&h) == Some((port_p, false))
    });
    h.poll("/primary 200 on the primary", || {
        h.get(p, "/primary").0 == 200
    });
    let pm = postmaster(&h, p).expect("the primary's postmaster pid");

    iso.cut(&h.c, p);
    let cut = Instant::now();
    let alive = |pid: i32| {
        cm_io::process::proc_state(pid).is_some_and(|s| s != cm_core::dn::ProcState::Zombie)
    };
    let (mut t503, mut fenced) = (None, None);
    // Where each new connection through the write port landed: (time, port).
    let mut routes: Vec<(Duration, Option<i32>)> = Vec::new();
    let mut new_primary = None;
    while new_primary.is_none() || fenced.is_none() {
        assert!(
            cut.elapsed() < PATIENCE,
            "503 at {t503:?}, fence at {fenced:?}, new primary {new_primary:?}, routes \
             {routes:?}\n{}",
            h.logs_tail()
        );
        if t503.is_none() && h.get(p, "/primary").0 == 503 {
            t503 = Some(cut.elapsed());
        }
        if fenced.is_none() && !alive(pm) {
            fenced = Some(cut.elapsed());
        }
        let r = routed(&h);
        routes.push((cut.elapsed(), r.map(|(port, _)| port)));
        if let Some((port, false)) = r
            && port != port_p
        {
            new_primary = Some(port);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (t503, fenced) = (t503.expect("a 503"), fenced.expect("the fence"));
    // From when on HAProxy routed nothing more to the old primary.
    let last_on_p = routes
        .iter()
        .rev()
        .find(|(_, port)| *port == Some(port_p))
        .map(|(t, _)| *t);
    let off = routes
        .iter()
        .find(|(t, port)| last_on_p.is_none_or(|l| *t > l) && *port != Some(port_p))
        .map(|(t, _)| *t);
    eprintln!(
        "after the cut: /primary 503 at {t503:?}, HAProxy off the old primary at {off:?} \
         (last routed to it at {last_on_p:?}), its DN fenced at {fenced:?}, new primary on \
         port {new_primary:?}"
    );
    assert!(
        t503 < fenced,
        "/primary turned 503 at {t503:?}, after the fence at {fenced:?}"
    );
    let off = off.expect("an observation after the last one routed to the old primary");
    assert!(
        off < fenced,
        "HAProxy still routed to the old primary until {last_on_p:?}, first off it at {off:?}, \
         not before its fence at {fenced:?}: {routes:?}"
    );
    assert_ne!(new_primary, Some(port_p));
    // Fenced but alive: its agent runs and answers, and still refuses /primary.
    assert_eq!(h.get(p, "/liveness").0, 200);
    assert_eq!(h.get(p, "/primary").0, 503);
}
