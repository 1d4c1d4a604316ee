//! `cm_local nemesis` (SPEC §18): three nodes on real PostgreSQL in synchronous mode, each in
//! its own network namespace, cgroup and size-limited filesystem ([`mod@env`]); a client with
//! sessions on every node ([`client`]); faults drawn from the seed ([`plan`]) one at a time,
//! each healed and the cluster's convergence awaited before the next; then the checks of
//! [`history`]: every acknowledged row on the final primary (S3), no acknowledgement from an
//! older timeline (S4), recovery per fault, convergence. A fault after which the cluster does
//! not converge within the liveness bound is reported with the fault, the node and the state
//! the cluster was stuck in (a scenario for the simulator), and ends the run.

pub mod client;
pub mod env;
pub mod history;
pub mod plan;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cm_core::config::ClusterConfig;
use cm_core::ctl::{ClusterStatus, CmsRole};
use cm_core::params::Profile;
use serde_json::json;

use self::client::Endpoint;
use self::env::Env;
use self::history::{FaultRecord, Op};
use self::plan::{FaultKind, Step, Target};
use super::cluster::{is_normal, output_with_timeout, primary_node};
use super::{NODES, Paths, Ports};

/// Options of a run.
#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// Minutes of faults (the last fault started within them still heals and converges).
    pub minutes: f64,
    /// The plan's seed.
    pub seed: u64,
    /// Parameter profile.
    pub profile: Profile,
    /// The fault kinds drawn from.
    pub faults: Vec<FaultKind>,
    /// The run directory (must not exist; removed at the end).
    pub dir: PathBuf,
    /// Where to write the JSON history.
    pub json: Option<PathBuf>,
    /// Size of each node's data filesystem, MB.
    pub disk_mb: u64,
    /// PostgreSQL binaries.
    pub pg_bin: PathBuf,
    /// The cluster manager's binaries.
    pub cm_bin: PathBuf,
    /// Asynchronous replication (`dn_sync_mode = off`): S3/S4 are reported, not enforced.
    pub async_mode: bool,
    /// Keep the directory (logs) at the end.
    pub keep: bool,
    /// Client sessions per node.
    pub sessions_per_node: u32,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The faults as they happened.
    pub faults: Vec<FaultRecord>,
    /// The client's history.
    pub ops: Vec<Op>,
    /// Ids of acknowledged writes missing on the final primary (S3).
    pub lost: Vec<i64>,
    /// S4 violations, described.
    pub s4: Vec<String>,
    /// Late answers (see [`history::late_acks`]).
    pub late_acks: usize,
    /// Dual-acknowledging milliseconds in total.
    pub dual_ms: u64,
    /// The final convergence problem, if any (anomalies of faults are in `faults`).
    pub final_problem: Option<String>,
    /// The table, as printed.
    pub table: String,
    /// Asynchronous mode (S3/S4 not enforced).
    pub async_mode: bool,
    /// What thawed old primaries acknowledged (issue 16 item 3).
    pub old_primary: history::OldPrimaryFreezes,
}

impl Report {
    /// Acknowledged writes.
    pub fn acks(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| o.acked_timeline().is_some())
            .count()
    }

    /// Whole-node freezes of the primary, with sessions kept open on it, in words.
    pub fn old_primary_line(&self) -> String {
        let o = &self.old_primary;
        format!(
            "freezes of the primary's node with sessions kept open on it: {}; writes a thawed \
             old primary acknowledged after the new primary had: {} ({} ms); late answers of \
             writes sent before: {}; its acknowledged writes lost: {}",
            o.freezes, o.dual_acks, o.dual_ms, o.late, o.lost
        )
    }

    /// Every failure: safety (sync mode) and convergence.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.async_mode {
            if !self.lost.is_empty() {
                out.push(format!(
                    "S3: {} acknowledged writes lost: ids {:?}",
                    self.lost.len(),
                    &self.lost[..self.lost.len().min(20)]
                ));
            }
            out.extend(self.s4.iter().take(20).map(|v| format!("S4: {v}")));
        }
        out.extend(self.faults.iter().filter_map(|f| {
            f.anomaly
                .as_ref()
                .map(|a| format!("convergence after {} of node {}: {a}", f.kind, f.node))
        }));
        out.extend(self.final_problem.clone());
        out
    }
}

/// The liveness bound of SPEC §13 for this config, plus slack for a loaded machine.
pub fn liveness_bound(config: &ClusterConfig) -> Duration {
    let p = &config.params;
    let sbt = p.split_brain_timeout(config.cms_nodes().len()) + 2 * p.election_timeout_max();
    Duration::from_secs(60).max(sbt) + Duration::from_secs(30)
}

/// Rewrites `cm_local`'s config for the namespaces: node N at its own address and its data
/// directory on its own filesystem.
pub fn namespace_config(text: &str, data_dir: impl Fn(u32) -> PathBuf) -> String {
    let mut out = String::new();
    let mut node = 0u32;
    let mut member = 0u32;
    for line in text.lines() {
        let t = line.trim();
        if t == "[[node]]" {
            node += 1;
        }
        if t == "[[group.member]]" {
            member += 1;
        }
        if t.starts_with("address = ") && node > 0 {
            let _ = writeln!(out, "address = \"{}\"", env::node_addr(node));
        } else if t.starts_with("data_dir = ") && member > 0 {
            let _ = writeln!(out, "data_dir = \"{}\"", data_dir(member).display());
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// How long the cluster must stay converged to count as converged (measured from the first
/// converged answer, which is the time reported).
pub const STABLE: Duration = Duration::from_secs(3);

/// The run's state between faults.
struct Run<'a> {
    opts: &'a NemesisOptions,
    env: Env,
    paths: Paths,
    config: ClusterConfig,
    ports: Ports,
    start: Instant,
    cancel: Arc<AtomicBool>,
    log: &'a mut dyn FnMut(&str),
}

impl Run<'_> {
    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn say(&mut self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        (self.log)(&format!("[{t:7.1}s] {what}"));
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn sleep(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.cancelled() {
                bail!("interrupted");
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
        }
        Ok(())
    }

    fn query(&self) -> anyhow::Result<ClusterStatus> {
        let mut cmd = Command::new(self.opts.cm_bin.join("cm_ctl"));
        cmd.arg("-c")
            .arg(self.paths.config())
            .args(["query", "--json"])
            .env_remove("CM_CONFIG");
        let out = output_with_timeout(cmd, Duration::from_secs(10))?;
        if !out.status.success() {
            bail!(
                "cm_ctl query: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn start_node(&mut self, n: u32) -> anyhow::Result<()> {
        let args = vec![
            "-c".into(),
            self.paths.config().display().to_string(),
            "-n".into(),
            n.to_string(),
        ];
        let log = self.paths.logs().join(format!("node{n}.log"));
        let bin = self.opts.cm_bin.join("om_monitor");
        self.env.start_node(n, &bin, &args, &log)
    }

    /// Converged: Normal, commits acknowledged, nothing read-only.
    fn converged(s: &ClusterStatus) -> bool {
        is_normal(s)
            && s.groups
                .iter()
                .all(|g| g.commits_acknowledged && g.members.iter().all(|m| !m.read_only))
    }

    /// Waits for convergence, held for [`STABLE`] (right after a restart the leader may not
    /// have noticed anything yet); the last state in words when it does not come.
    fn wait_converged(&mut self, bound: Duration) -> anyhow::Result<Result<u64, String>> {
        let deadline = Instant::now() + bound;
        let mut since: Option<Instant> = None;
        loop {
            if self.cancelled() {
                bail!("interrupted");
            }
            let last = match self.query() {
                Ok(s) if Self::converged(&s) => {
                    let t = *since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= STABLE {
                        let at = t.saturating_duration_since(self.start).as_millis();
                        return Ok(Ok(u64::try_from(at).unwrap_or(u64::MAX)));
                    }
                    describe(&s)
                }
                Ok(s) => {
                    since = None;
                    describe(&s)
                }
                Err(e) => {
                    since = None;
                    format!("{e:#}")
                }
            };
            if Instant::now() > deadline {
                return Ok(Err(format!(
                    "not converged within {} s; last state: {last}",
                    bound.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node a target names now, and its role in words.
    fn resolve(&self, target: Target) -> anyhow::Result<(u32, String)> {
        let s = self.query()?;
        let primary = primary_node(&s).context("no primary")?;
        let leader = s
            .cms
            .iter()
            .find(|r| r.role == CmsRole::Primary)
            .map(|r| r.node.0);
        let node = match target {
            Target::Primary => primary,
            Target::Standby(i) => {
                let others: Vec<u32> = (1..=NODES).filter(|n| *n != primary).collect();
                others[usize::from(i) % others.len()]
            }
            Target::CmsLeader => leader.context("no CMS leader")?,
        };
        let mut role = if node == primary {
            "primary".to_owned()
        } else {
            "standby".to_owned()
        };
        if leader == Some(node) {
            role += " + cms leader";
        }
        Ok((node, role))
    }

    fn peers(n: u32) -> Vec<u32> {
        (1..=NODES).filter(|p| *p != n).collect()
    }

    /// Applies a fault, holds it, heals it. Returns (started, healed) in run milliseconds.
    fn inject(&mut self, step: &Step, n: u32) -> anyhow::Result<(u64, u64)> {
        let mut pm = None;
        match step.kind {
            FaultKind::Kill | FaultKind::Restart => self.env.kill_node(n)?,
            FaultKind::Freeze => self.env.freeze(n)?,
            FaultKind::PmStop => {
                let p = super::procs::postmaster_pid(&self.env.data_dir(n))
                    .context("no postmaster to stop")?;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGSTOP,
                )?;
                pm = Some(p);
            }
            FaultKind::Partition | FaultKind::IsolateLeader => {
                self.env.partition(n, &Self::peers(n), true)?;
            }
            FaultKind::OneWay => self.env.partition(n, &Self::peers(n), false)?,
            FaultKind::DiskFull => {
                let pct = self.env.fill_disk(n, 92)?;
                self.say(&format!("node {n}'s data filesystem at {pct} %"));
            }
        }
        // From the moment the fault is in effect (applying it takes a few ms: nsenter, nft).
        let started = self.ms();
        let held = self.sleep(step.hold);
        // Heal even when interrupted (cleanup would remove it anyway).
        match step.kind {
            FaultKind::Kill | FaultKind::Restart => self.start_node(n)?,
            FaultKind::Freeze => self.env.thaw(n)?,
            FaultKind::PmStop => {
                if let Some(p) = pm {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGCONT,
                    );
                }
                self.env.cont_all(n);
            }
            FaultKind::Partition | FaultKind::IsolateLeader | FaultKind::OneWay => {
                self.env.heal_net(n)?;
            }
            FaultKind::DiskFull => self.env.free_disk(n)?,
        }
        held?;
        Ok((started, self.ms()))
    }

    /// The last warnings and errors of node `n`'s log (for an anomaly report).
    fn log_tail(&self, n: u32) -> String {
        let text = std::fs::read_to_string(self.paths.logs().join(format!("node{n}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        lines[lines.len().saturating_sub(6)..].join("\n    ")
    }
}

/// A status in words: CMS roles, and per DN its role, state, read-only, streaming, last build.
pub fn describe(s: &ClusterStatus) -> String {
    let cms: Vec<String> = s
        .cms
        .iter()
        .map(|r| format!("n{}:{:?}", r.node.0, r.role))
        .collect();
    let mut t = format!("{:?}; cms [{}]", s.state, cms.join(" "));
    for g in &s.groups {
        let _ = write!(
            t,
            "; group {} term {} commits_acknowledged={}",
            g.group.0, g.term.0, g.commits_acknowledged
        );
        for m in &g.members {
            let _ = write!(
                t,
                "; dn {} (node {}): {:?}/{:?} lsn {}",
                m.instance.0, m.node.0, m.role, m.state, m.lsn
            );
            if m.read_only {
                t += " read-only";
            }
            if let Some(ms) = m.not_streaming_ms {
                let _ = write!(t, " not streaming for {ms} ms");
            }
            let _ = write!(t, " last build {:?}", m.last_build);
        }
    }
    t
}

/// Prerequisites in words (empty when the run can start).
pub fn check(opts: &NemesisOptions) -> Vec<String> {
    let mut out = env::missing_prerequisites(nix::unistd::geteuid().is_root());
    let mut lo = super::LocalOptions::new(opts.dir.clone(), opts.profile);
    lo.pg_bin.clone_from(&opts.pg_bin);
    lo.cm_bin.clone_from(&opts.cm_bin);
    if out.is_empty()
        && let Err(e) = super::check_prerequisites(&lo)
    {
        out.push(e.to_string());
    }
    out
}

/// Runs the nemesis. `log` sees progress lines. Everything is removed before it returns.
pub fn run(
    opts: &NemesisOptions,
    cancel: Arc<AtomicBool>,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Report> {
    let missing = check(opts);
    if !missing.is_empty() {
        bail!("{}", missing.join("\n"));
    }
    for note in env::reap_orphans() {
        log(&format!("an interrupted earlier run's leftovers: {note}"));
    }
    let mut env = Env::new(opts.dir.clone(), opts.disk_mb, NODES);
    env.keep = opts.keep;
    env.create()?;
    env.enter_hub()?;
    let paths = Paths {
        dir: env.dir.clone(),
    };
    let ports = Ports::pick()?;
    super::write_tls_material(&paths)?;
    let mut extra = Vec::new();
    if opts.async_mode {
        extra.push(("dn_sync_mode".to_owned(), "\"off\"".to_owned()));
    }
    let text = super::render_config(&paths, &ports, opts.profile, &opts.pg_bin, &extra);
    let text = namespace_config(&text, |n| env.data_dir(n));
    let config = ClusterConfig::from_toml_str(&text)
        .map_err(|e| anyhow::anyhow!("the generated config is invalid: {e}"))?;
    std::fs::write(paths.config(), &text)?;
    for n in 1..=NODES {
        crate::node::ensure_state_dir(&paths.state_dir(n))?;
    }
    std::fs::create_dir_all(paths.logs())?;
    create_databases(&env, &paths, &ports, &opts.pg_bin)?;
    let mut run = Run {
        opts,
        env,
        paths,
        config,
        ports,
        start: Instant::now(),
        cancel,
        log,
    };
    let result = run_faults(&mut run);
    // Logs and journals stay for a post-mortem of any failure (the data directories are on
    // the tmpfs mounts, which go).
    let failed = result.as_ref().map_or(true, |r| !r.failures().is_empty());
    if failed || opts.keep {
        run.env.keep = true;
        run.say(&format!(
            "kept {} for a post-mortem",
            run.paths.dir.display()
        ));
    }
    let notes = run.env.cleanup();
    for n in notes {
        run.say(&format!("cleanup: {n}"));
    }
    result
}

/// `cm_local`'s databases, with the data directories on the node filesystems, and the hub's
/// address let in (the client connects from it).
fn create_databases(env: &Env, paths: &Paths, ports: &Ports, pg_bin: &Path) -> anyhow::Result<()> {
    let user = cm_io::process::OsUser::lookup(super::DB_OS_USER)?;
    let root = paths.data_root();
    std::fs::create_dir_all(&root)?;
    for n in 1..=NODES {
        let d = env.data_dir(n);
        std::fs::create_dir(&d)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        user.chown(&d)?;
        user.chown(&env.fs_dir(n))?;
        std::os::unix::fs::symlink(&d, paths.data_dir(n))?;
    }
    let made = super::db::create_databases(paths, ports, pg_bin, true);
    std::fs::remove_dir_all(&root)?;
    made?;
    for n in 1..=NODES {
        let hba = env.data_dir(n).join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)?;
        let _ = writeln!(
            text,
            "# cm_local nemesis: the client, on the hub\nhost all {} {}/32 scram-sha-256",
            super::DB_OS_USER,
            env::HUB_ADDR
        );
        std::fs::write(&hba, text)?;
    }
    Ok(())
}

fn run_faults(run: &mut Run<'_>) -> anyhow::Result<Report> {
    let opts = run.opts;
    for n in 1..=NODES {
        run.start_node(n)?;
    }
    let bound = liveness_bound(&run.config);
    run.say(&format!(
        "cluster starting in {}; to look: nsenter --net=/run/netns/{} {} -c {} query",
        run.paths.dir.display(),
        run.env.hub(),
        opts.cm_bin.join("cm_ctl").display(),
        run.paths.config().display()
    ));
    if let Err(e) = run.wait_converged(Duration::from_secs(180))? {
        bail!("the cluster never became Normal: {e}");
    }
    let s = run.query()?;
    let primary = primary_node(&s).context("no primary")?;
    let password = {
        let pf = cm_io::postgres::credential::passfile_path(&run.paths.state_dir(1));
        cm_io::postgres::credential::read_password(&pf, super::DB_OS_USER)?
    };
    let endpoints: Vec<Endpoint> = (1..=NODES)
        .map(|n| Endpoint {
            node: n,
            host: env::node_addr(n),
            port: run.ports.dn[n as usize - 1],
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ep = &endpoints[primary as usize - 1];
        let c = client::connect(ep, &password, Arc::new(AtomicBool::new(false))).await?;
        c.batch_execute(client::CREATE_TABLE)
            .await
            .map_err(|e| e.to_string())
    })
    .map_err(|e| anyhow::anyhow!("cannot create the table on node {primary}: {e}"))?;
    let shared = client::Shared::new(run.start);
    let mut sessions = Vec::new();
    for (i, ep) in endpoints
        .iter()
        .cycle()
        .take(endpoints.len() * opts.sessions_per_node as usize)
        .enumerate()
    {
        let no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        sessions.push(rt.spawn(client::session(
            Arc::clone(&shared),
            no,
            ep.clone(),
            password.clone(),
        )));
    }
    run.say(&format!(
        "Normal, primary on node {primary}; {} client sessions writing; faults for {} min \
         (seed {}, {:?} profile, liveness bound {} s)",
        sessions.len(),
        opts.minutes,
        opts.seed,
        opts.profile,
        bound.as_secs()
    ));
    let budget = Duration::from_secs_f64(opts.minutes * 60.0);
    let mut faults: Vec<FaultRecord> = Vec::new();
    let plan = plan::generate(opts.seed, &opts.faults, 10_000);
    let mut interrupted = false;
    for step in &plan {
        if run.start.elapsed() >= budget {
            break;
        }
        if run.sleep(step.gap).is_err() {
            interrupted = true;
            break;
        }
        let (n, role) = match run.resolve(step.target) {
            Ok(x) => x,
            Err(e) => bail!("cannot resolve {:?}: {e:#}", step.target),
        };
        run.say(&format!(
            "{} node {n} ({role}) for {:.1} s",
            step.kind.name(),
            step.hold.as_secs_f64()
        ));
        let (started, healed) = match run.inject(step, n) {
            Ok(x) => x,
            Err(e) if run.cancelled() => {
                let _ = e;
                interrupted = true;
                break;
            }
            Err(e) => return Err(e.context(format!("{} of node {n}", step.kind.name()))),
        };
        let waited = run.wait_converged(bound);
        let mut rec = FaultRecord {
            kind: step.kind.name(),
            node: n,
            role,
            started_ms: started,
            healed_ms: healed,
            converged_ms: None,
            anomaly: None,
        };
        match waited {
            Ok(Ok(at)) => {
                rec.converged_ms = Some(at);
                let ops = shared.history();
                run.say(&format!(
                    "  healed; writes back after {} s, converged {} s after healing",
                    rec.write_recovery_ms(&ops)
                        .map_or_else(|| "-".into(), |m| format!("{:.1}", m as f64 / 1000.0)),
                    rec.converge_ms()
                        .map_or_else(|| "-".into(), |m| format!("{:.1}", m as f64 / 1000.0)),
                ));
                faults.push(rec);
            }
            Ok(Err(stuck)) => {
                let tail = run.log_tail(n);
                let text = format!(
                    "ANOMALY after fault #{} ({} of node {n}, {}, held {:.1} s, healed at \
                     {:.1} s): {stuck}\n    node {n}'s last warnings:\n    {tail}",
                    faults.len() + 1,
                    step.kind.name(),
                    rec.role,
                    step.hold.as_secs_f64(),
                    healed as f64 / 1000.0
                );
                run.say(&text);
                rec.anomaly = Some(stuck);
                faults.push(rec);
                break;
            }
            Err(_) => {
                faults.push(rec);
                interrupted = true;
                break;
            }
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for s in sessions {
            // A session stuck on a frozen node's answer is abandoned: its write is unknown.
            let _ = tokio::time::timeout(Duration::from_secs(3), s).await;
        }
    });
    let ops = shared.history();
    if interrupted {
        bail!("interrupted after {} faults", faults.len());
    }
    // Final checks on the final primary.
    let mut final_problem = None;
    let mut present = HashSet::new();
    if faults.iter().all(|f| f.anomaly.is_none()) {
        match final_rows(run, &rt, &password, &endpoints) {
            Ok(p) => present = p,
            Err(e) => final_problem = Some(format!("{e:#}")),
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let checked = final_problem.is_none() && faults.iter().all(|f| f.anomaly.is_none());
    let lost: Vec<&Op> = if checked {
        history::lost_acks(&ops, &present)
    } else {
        Vec::new()
    };
    let s4 = history::s4_violations(&ops);
    let late = history::late_acks(&ops).len();
    let rows = history::table(&faults, &ops, &lost, &s4);
    let old_primary = history::old_primary_freezes(&faults, &ops, &lost, &s4);
    let table = history::render_table(&rows);
    let report = Report {
        lost: lost.iter().map(|o| o.id).collect(),
        s4: s4
            .iter()
            .map(|v| {
                format!(
                    "row {} acknowledged by node {} on timeline {} at {} ms (sent at {} ms), after \
                     timeline {} acknowledged on node {} at {} ms",
                    v.op.id,
                    v.op.node,
                    v.timeline,
                    v.op.completed_ms,
                    v.op.invoked_ms,
                    v.newer_timeline,
                    v.newer_node,
                    v.newer_first_ack_ms
                )
            })
            .collect(),
        dual_ms: history::dual_writable_ms(&s4),
        late_acks: late,
        final_problem,
        table,
        faults,
        ops,
        async_mode: opts.async_mode,
        old_primary,
    };
    if let Some(path) = &opts.json {
        write_json(path, opts, &report, checked)?;
    }
    Ok(report)
}

/// After the last fault: the final primary's rows, once every standby holds the same rows.
fn final_rows(
    run: &mut Run<'_>,
    rt: &tokio::runtime::Runtime,
    password: &str,
    endpoints: &[Endpoint],
) -> anyhow::Result<HashSet<i64>> {
    let s = run.query()?;
    let primary = primary_node(&s).context("no primary at the end")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fingerprints: Vec<Result<(i64, i64), String>> = rt.block_on(async {
            let mut out = Vec::new();
            for ep in endpoints {
                let r = async {
                    let c =
                        client::connect(ep, password, Arc::new(AtomicBool::new(false))).await?;
                    let row = c
                        .query_one(
                            "SELECT count(*)::bigint, coalesce(sum(id), 0)::bigint FROM nemesis_rows",
                            &[],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((row.get(0), row.get(1)))
                };
                out.push(tokio::time::timeout(Duration::from_secs(10), r).await.unwrap_or_else(
                    |_| Err("no answer".into()),
                ));
            }
            out
        });
        let want = &fingerprints[primary as usize - 1];
        if want.is_ok() && fingerprints.iter().all(|f| f == want) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the members' rows differ 60 s after the last fault (count, sum of ids per node \
                 1..3, primary {primary}): {fingerprints:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ep = &endpoints[primary as usize - 1];
    rt.block_on(async {
        let c = client::connect(ep, password, Arc::new(AtomicBool::new(false)))
            .await
            .map_err(anyhow::Error::msg)?;
        let rows = c.query("SELECT id FROM nemesis_rows", &[]).await?;
        anyhow::Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    })
}

fn write_json(path: &Path, opts: &NemesisOptions, r: &Report, checked: bool) -> anyhow::Result<()> {
    let faults: Vec<serde_json::Value> = r
        .faults
        .iter()
        .map(|f| {
            json!({
                "kind": f.kind, "node": f.node, "role": f.role,
                "started_ms": f.started_ms, "healed_ms": f.healed_ms,
                "converged_ms": f.converged_ms,
                "write_recovery_ms": f.write_recovery_ms(&r.ops),
                "anomaly": f.anomaly,
            })
        })
        .collect();
    let v = json!({
        "seed": opts.seed,
        "minutes": opts.minutes,
        "profile": format!("{:?}", opts.profile).to_lowercase(),
        "faults_drawn_from": opts.faults.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "synchronous": !opts.async_mode,
        "acks": r.acks(),
        "s3_checked": checked,
        "lost_acks": r.lost,
        "s4_violations": r.s4,
        "late_acks": r.late_acks,
        "old_primary_freezes": {
            "freezes": r.old_primary.freezes, "dual_acks": r.old_primary.dual_acks,
            "dual_ms": r.old_primary.dual_ms, "late_acks": r.old_primary.late,
            "lost_acks": r.old_primary.lost,
        },
        "dual_writable_ms": r.dual_ms,
        "final_problem": r.final_problem,
        "faults": faults,
        "ops": r.ops.iter().map(Op::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_vec(&v)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(async_mode: bool, lost: Vec<i64>, anomaly: Option<&str>) -> Report {
        Report {
            faults: vec![FaultRecord {
                kind: "freeze",
                node: 1,
                role: "primary".into(),
                started_ms: 0,
                healed_ms: 10,
                converged_ms: anomaly.is_none().then_some(20),
                anomaly: anomaly.map(str::to_owned),
            }],
            ops: Vec::new(),
            lost,
            s4: Vec::new(),
            late_acks: 0,
            dual_ms: 0,
            final_problem: None,
            table: String::new(),
            async_mode,
            old_primary: history::OldPrimaryFreezes::default(),
        }
    }

    #[test]
    fn a_run_fails_on_lost_writes_in_sync_mode_only_and_on_convergence_always() {
        assert!(report(false, vec![], None).failures().is_empty());
        let f = report(false, vec![7], None).failures();
        assert!(
            f.len() == 1 && f[0].starts_with("S3: 1 acknowledged"),
            "{f:?}"
        );
        // Asynchronous mode reports lost writes (the table) but does not fail on them.
        assert!(report(true, vec![7], None).failures().is_empty());
        let f = report(true, vec![], Some("stuck Degraded")).failures();
        assert_eq!(f, ["convergence after freeze of node 1: stuck Degraded"]);
    }

    #[test]
    fn the_namespace_config_moves_each_node_and_data_directory() {
        let paths = Paths {
            dir: PathBuf::from("/tmp/x"),
        };
        let ports = Ports {
            monitor: vec![1, 2, 3],
            cms: vec![4, 5, 6],
            cms_http: vec![7, 8, 9],
            dn: vec![10, 11, 12],
            rest: vec![13, 14, 15],
        };
        let text = super::super::render_config(
            &paths,
            &ports,
            Profile::Fast,
            Path::new("/usr/lib/postgresql/15/bin"),
            &[],
        );
        let out = namespace_config(&text, |n| PathBuf::from(format!("/tmp/x/fs{n}/dn{n}")));
        let cfg = ClusterConfig::from_toml_str(&out).unwrap();
        let addrs: Vec<&str> = cfg.nodes.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(addrs, ["10.77.0.1", "10.77.0.2", "10.77.0.3"]);
        let dirs: Vec<String> = cfg.groups[0]
            .members
            .iter()
            .map(|m| m.data_dir.clone())
            .collect();
        assert_eq!(dirs, ["/tmp/x/fs1/dn1", "/tmp/x/fs2/dn2", "/tmp/x/fs3/dn3"]);
        assert!(!out.contains("127.0.0.1"));
    }
}
