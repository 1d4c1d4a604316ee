//! `cm_local bench --footprint` (issue 16 item 4): what an idle cluster costs. A fresh
//! default-profile local cluster as `cm_local up` makes it (TLS, the agents' HTTP endpoints,
//! journals, the example resource), Normal, left alone; then the CPU time (utime + stime from
//! /proc, in clock ticks) and the resident memory of every om_monitor, cm_agent and cm_server
//! over the idle window, per daemon kind and in total, beside the goals. PostgreSQL is shown
//! apart: its postmasters and their children, and the sessions opened during the window
//! (`pg_stat_database.sessions`: a backend forked per connection).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cm_core::params::Profile;

use super::{LocalCluster, LocalOptions, NODES};

/// Issue 16's goal for the whole idle cluster's daemons: CPU seconds per idle minute.
pub const GOAL_CPU_S_PER_MIN: f64 = 0.8;
/// Issue 16's goal for om_monitor + cm_agent of one node: resident MB.
pub const GOAL_RSS_MB_PER_NODE: f64 = 10.0;

/// How long the cluster is left alone after it is Normal before the window opens (the start's
/// own work — builds, first checkpoints, connections — is not idle cost).
const SETTLE: Duration = Duration::from_secs(20);

/// The daemons measured, by their process name.
pub const KINDS: [&str; 3] = ["om_monitor", "cm_agent", "cm_server"];

/// One process's counters from /proc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// utime + stime, clock ticks.
    pub ticks: u64,
    /// cutime + cstime (children it waited for), clock ticks.
    pub child_ticks: u64,
    /// Resident set, kB.
    pub rss_kb: u64,
}

/// utime, stime, cutime and cstime from the text of `/proc/<pid>/stat` (fields 14–17).
pub fn parse_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match f[..] {
        [u, s, cu, cs] => Some((u + s, cu + cs)),
        _ => None,
    }
}

/// `VmRSS` in kB from the text of `/proc/<pid>/status` (0 for a zombie).
pub fn parse_rss_kb(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn counters(pid: i32) -> Option<Counters> {
    let (ticks, child_ticks) =
        parse_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let rss_kb = parse_rss_kb(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?);
    Some(Counters {
        ticks,
        child_ticks,
        rss_kb,
    })
}

/// What a process is to the bench.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Role {
    /// `om_monitor`, `cm_agent`, `cm_server`, `postmaster` or `postgres child`.
    pub kind: String,
    /// Its node (1-based).
    pub node: u32,
}

/// Every process of the cluster now: the daemons of each node (by name and `--config`/`--node`)
/// and each DN's postmaster (`postmaster.pid`) with its children.
fn cluster_processes(c: &LocalCluster) -> BTreeMap<(i32, u64), Role> {
    let mut out = BTreeMap::new();
    let config = c.paths.config();
    for n in 1..=NODES {
        for kind in KINDS {
            for f in crate::node::scan(kind, &config, n) {
                if let Some(t) = cm_io::process::start_ticks(f.pid) {
                    out.insert(
                        (f.pid, t),
                        Role {
                            kind: kind.into(),
                            node: n,
                        },
                    );
                }
            }
        }
        let Some(pm) = cm_io::process::PostmasterPid::read(&c.data_dir(n)) else {
            continue;
        };
        for pid in cm_io::process::all_pids() {
            let Some(st) = cm_io::process::read_stat(pid) else {
                continue;
            };
            let kind = if pid == pm.pid {
                "postmaster"
            } else if st.ppid == pm.pid {
                "postgres child"
            } else {
                continue;
            };
            out.insert(
                (pid, st.starttime),
                Role {
                    kind: kind.into(),
                    node: n,
                },
            );
        }
    }
    out
}

/// The figures of one kind over the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Processes of this kind at the end.
    pub processes: usize,
    /// CPU seconds per idle minute (own utime + stime).
    pub cpu_s_per_min: f64,
    /// CPU seconds per idle minute of the children it reaped (resource scripts, backends).
    pub child_cpu_s_per_min: f64,
    /// Resident MB at the end, summed over its processes.
    pub rss_mb: f64,
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Footprint {
    /// The idle window, seconds.
    pub window_s: f64,
    /// One row per kind (daemons, then PostgreSQL).
    pub rows: BTreeMap<String, Row>,
    /// om_monitor + cm_agent resident MB per node (the largest sample of the window).
    pub monitor_agent_rss_mb: BTreeMap<u32, f64>,
    /// Daemon processes that started or ended during the window (it was not idle then).
    pub restarts: Vec<String>,
    /// PostgreSQL sessions opened during the window, per DN (`pg_stat_database.sessions`).
    pub sessions: BTreeMap<u32, i64>,
    /// `/proc/loadavg` before and after.
    pub load: (String, String),
}

impl Footprint {
    /// The daemons' CPU seconds per idle minute.
    pub fn daemons_cpu(&self) -> f64 {
        KINDS
            .iter()
            .filter_map(|k| self.rows.get(*k))
            .map(|r| r.cpu_s_per_min)
            .sum()
    }

    /// The printed table.
    pub fn render(&self) -> String {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut out = format!(
            "Idle footprint of a default-profile 3-node local cluster (TLS, HTTP endpoints, \
             journals, the example resource), {:.1} idle minutes\n\
             load average before {}, after {}\n\
             {:<16} {:>5} {:>14} {:>20} {:>10}\n",
            self.window_s / 60.0,
            self.load.0,
            self.load.1,
            "kind",
            "procs",
            "CPU s/idle min",
            "reaped children s/min",
            "RSS MB"
        );
        let daemons = KINDS.iter().map(|k| (*k, self.rows.get(*k)));
        let pg = ["postmaster", "postgres child"]
            .into_iter()
            .map(|k| (k, self.rows.get(k)));
        for (kind, row) in daemons.clone() {
            let r = row.cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{kind:<16} {:>5} {:>14.3} {:>20.3} {:>10.1}",
                r.processes, r.cpu_s_per_min, r.child_cpu_s_per_min, r.rss_mb
            );
        }
        let total = self.daemons_cpu();
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:>14.3} {:>20} {:>10}  goal <= {GOAL_CPU_S_PER_MIN} s: {}",
            "daemons total",
            daemons
                .filter_map(|(_, r)| r)
                .map(|r| r.processes)
                .sum::<usize>(),
            total,
            "",
            "",
            verdict(total <= GOAL_CPU_S_PER_MIN)
        );
        for (kind, row) in pg {
            let r = row.cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{kind:<16} {:>5} {:>14.3} {:>20.3} {:>10.1}",
                r.processes, r.cpu_s_per_min, r.child_cpu_s_per_min, r.rss_mb
            );
        }
        for (n, mb) in &self.monitor_agent_rss_mb {
            let _ = writeln!(
                out,
                "node {n}: om_monitor + cm_agent {mb:.1} MB resident (largest sample)  goal <= \
                 {GOAL_RSS_MB_PER_NODE} MB: {}",
                verdict(*mb <= GOAL_RSS_MB_PER_NODE)
            );
        }
        let per_min = |n: i64| n as f64 * 60.0 / self.window_s.max(1.0);
        for (n, s) in &self.sessions {
            let _ = writeln!(
                out,
                "DN of node {n}: {s} PostgreSQL sessions opened in the window ({:.2} per minute)",
                per_min(*s)
            );
        }
        if self.restarts.is_empty() {
            out.push_str("no daemon started or ended during the window\n");
        } else {
            let _ = writeln!(
                out,
                "NOT IDLE: processes started or ended during the window: {}",
                self.restarts.join(", ")
            );
        }
        out
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Sessions ever opened on every DN (`sum(pg_stat_database.sessions)`), on one kept client
/// per DN (itself opened before the first read).
struct SessionCounter {
    rt: tokio::runtime::Runtime,
    clients: BTreeMap<u32, tokio_postgres::Client>,
}

impl SessionCounter {
    fn open(c: &LocalCluster) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let password = c.db_password()?;
        let mut clients = BTreeMap::new();
        for n in 1..=NODES {
            let client = rt
                .block_on(super::bench::connect(
                    c.dn_port(n),
                    &password,
                    Duration::from_secs(5),
                ))
                .map_err(|e| anyhow::anyhow!("DN of node {n}: {e}"))?;
            clients.insert(n, client);
        }
        Ok(Self { rt, clients })
    }

    fn read(&self) -> BTreeMap<u32, i64> {
        let mut out = BTreeMap::new();
        for (n, client) in &self.clients {
            let q = client.query_one(
                "SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database",
                &[],
            );
            if let Ok(Ok(row)) = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), q).await })
            {
                out.insert(*n, row.get(0));
            }
        }
        out
    }
}

/// Starts a fresh cluster in `opts.dir` (default profile, as `cm_local up`), waits until it is
/// Normal and has settled, measures `minutes` of idleness, tears it down.
pub fn run(
    mut opts: LocalOptions,
    minutes: f64,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Footprint> {
    opts.profile = Profile::Default;
    opts.example_resource = true;
    let _ = std::fs::remove_dir_all(&opts.dir);
    let mut c = LocalCluster::create(opts)?;
    let result = measure(&mut c, minutes, progress);
    c.teardown();
    result
}

fn measure(
    c: &mut LocalCluster,
    minutes: f64,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Footprint> {
    c.start_monitors()?;
    c.wait_normal(Duration::from_secs(180), |_| {})?;
    progress(&format!("Normal; settling {} s", SETTLE.as_secs()));
    std::thread::sleep(SETTLE);
    let sessions = SessionCounter::open(c).context("cannot count the DNs' sessions")?;
    let window = Duration::from_secs_f64((minutes * 60.0).max(1.0));
    let load_before = loadavg();
    let before = cluster_processes(c);
    let sessions_before = sessions.read();
    let start_counters: BTreeMap<(i32, u64), Counters> = before
        .keys()
        .filter_map(|k| Some((*k, counters(k.0)?)))
        .collect();
    let started = Instant::now();
    let mut rss_peak: BTreeMap<u32, f64> = BTreeMap::new();
    let mut last_note = Instant::now();
    loop {
        // A sample every 10 s for the resident memory's largest value.
        let now = cluster_processes(c);
        let mut per_node: BTreeMap<u32, u64> = BTreeMap::new();
        for (k, role) in &now {
            if role.kind == "om_monitor" || role.kind == "cm_agent" {
                *per_node.entry(role.node).or_default() += counters(k.0).map_or(0, |x| x.rss_kb);
            }
        }
        for (n, kb) in per_node {
            let mb = kb as f64 / 1024.0;
            let e = rss_peak.entry(n).or_default();
            *e = e.max(mb);
        }
        let left = window.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(60) {
            progress(&format!("{:.0} s of the window left", left.as_secs_f64()));
            last_note = Instant::now();
        }
        std::thread::sleep(left.min(Duration::from_secs(10)));
    }
    let after = cluster_processes(c);
    let end_counters: BTreeMap<(i32, u64), Counters> = after
        .keys()
        .filter_map(|k| Some((*k, counters(k.0)?)))
        .collect();
    let window_s = started.elapsed().as_secs_f64();
    let sessions_after = sessions.read();
    let tck = procfs::ticks_per_second() as f64;
    let per_min = |ticks: u64| ticks as f64 / tck * 60.0 / window_s;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (k, role) in &after {
        let Some(end) = end_counters.get(k) else {
            continue;
        };
        // A process born in the window counts from zero.
        let start = start_counters.get(k).copied().unwrap_or_default();
        let r = rows.entry(role.kind.clone()).or_default();
        r.processes += 1;
        r.cpu_s_per_min += per_min(end.ticks.saturating_sub(start.ticks));
        r.child_cpu_s_per_min += per_min(end.child_ticks.saturating_sub(start.child_ticks));
        r.rss_mb += end.rss_kb as f64 / 1024.0;
    }
    let daemon = |r: &Role| KINDS.contains(&r.kind.as_str());
    let mut restarts: Vec<String> = before
        .iter()
        .filter(|(k, r)| daemon(r) && !after.contains_key(k))
        .map(|(k, r)| format!("{} of node {} (pid {}) ended", r.kind, r.node, k.0))
        .collect();
    restarts.extend(
        after
            .iter()
            .filter(|(k, r)| daemon(r) && !before.contains_key(k))
            .map(|(k, r)| format!("{} of node {} (pid {}) started", r.kind, r.node, k.0)),
    );
    let opened = sessions_after
        .iter()
        .filter_map(|(n, a)| Some((*n, a - sessions_before.get(n)?)))
        .collect();
    Ok(Footprint {
        window_s,
        rows,
        monitor_agent_rss_mb: rss_peak,
        restarts,
        sessions: opened,
        load: (load_before, loadavg()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_fields_14_to_17_after_the_name() {
        let stat = "77 (cm agent (x)) S 1 77 77 0 -1 4194560 10 20 0 0 150 25 7 3 20 0 4 0 999";
        assert_eq!(parse_times(stat), Some((175, 10)));
        assert_eq!(parse_times("77 (x) S 1 77"), None);
    }

    #[test]
    fn rss_is_vmrss_in_kb() {
        let status = "Name:\tcm_agent\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kb(status), 4321);
        assert_eq!(parse_rss_kb("Name:\tzombie\n"), 0);
    }

    #[test]
    fn the_table_judges_both_goals() {
        let row = |cpu: f64, rss: f64| Row {
            processes: 3,
            cpu_s_per_min: cpu,
            child_cpu_s_per_min: 0.0,
            rss_mb: rss,
        };
        let mut f = Footprint {
            window_s: 600.0,
            rows: BTreeMap::from([
                ("om_monitor".into(), row(0.1, 15.0)),
                ("cm_agent".into(), row(0.3, 20.0)),
                ("cm_server".into(), row(0.2, 18.0)),
            ]),
            monitor_agent_rss_mb: BTreeMap::from([(1, 9.5), (2, 10.5)]),
            restarts: Vec::new(),
            sessions: BTreeMap::from([(1, 60)]),
            load: ("0.1 0.2 0.3".into(), "0.1 0.2 0.3".into()),
        };
        assert!((f.daemons_cpu() - 0.6).abs() < 1e-9);
        let t = f.render();
        assert!(t.contains("goal <= 0.8 s: met"), "{t}");
        assert!(t.contains("node 1: om_monitor + cm_agent 9.5 MB"), "{t}");
        assert!(t.contains("node 2: om_monitor + cm_agent 10.5 MB resident (largest sample)  goal <= 10 MB: MISSED"), "{t}");
        assert!(
            t.contains("60 PostgreSQL sessions opened in the window (6.00 per minute)"),
            "{t}"
        );
        f.rows.get_mut("cm_agent").unwrap().cpu_s_per_min = 0.6;
        f.restarts.push("cm_agent of node 1 (pid 5) started".into());
        let t = f.render();
        assert!(t.contains("goal <= 0.8 s: MISSED"), "{t}");
        assert!(t.contains("NOT IDLE"), "{t}");
    }
}
