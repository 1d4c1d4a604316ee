//! `cm_local`: a three-node cluster on this machine with one command (`up`), its teardown
//! (`down`, or Ctrl-C), and the node-crash failover benchmark (`bench`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use cm_core::ctl::CmsRole;
use cm_core::params::Profile;
use cm_daemons::local::cluster::{primary_node, summary};
use cm_daemons::local::{LocalCluster, LocalOptions, bench, check_prerequisites, nemesis, procs};

/// cm_local: run a three-node cluster on this machine for trying cm out (3 cm_server,
/// 3 om_monitor/cm_agent, one PostgreSQL group of 1 primary + 2 standbys), tear it down, or
/// benchmark failover. Run it as root (PostgreSQL runs as the `postgres` user).
#[derive(Debug, Parser)]
#[command(name = "cm_local", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProfileArg {
    Fast,
    Default,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Fast => Self::Fast,
            ProfileArg::Default => Self::Default,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create and start the cluster, then stay in the foreground until Ctrl-C.
    Up {
        /// The cluster directory.
        #[arg(long, default_value = "./.local-cluster")]
        dir: PathBuf,
        /// Parameter profile.
        #[arg(long, value_enum, default_value = "fast")]
        profile: ProfileArg,
        /// Directory of the PostgreSQL binaries.
        #[arg(long, default_value = cm_daemons::local::DEFAULT_PG_BIN)]
        pg_bin: PathBuf,
        /// Keep the directory (data, logs) after teardown.
        #[arg(long)]
        keep: bool,
        /// Also start Debian's HAProxy in front of the cluster (cm-daemons/dist/haproxy.cfg):
        /// a write port routed by the agents' /primary, a read port by /replica?lag=16MB.
        #[arg(long)]
        haproxy: bool,
    },
    /// Tear down the cluster of DIR (asks a running `cm_local up` to do it, or does it itself):
    /// every process started with the cluster's config, however it was started, is stopped.
    Down {
        /// The cluster directory.
        #[arg(long, default_value = "./.local-cluster")]
        dir: PathBuf,
        /// Keep the directory (data, logs), even if `up` was started without --keep.
        #[arg(long)]
        keep: bool,
    },
    /// Restart node N (1-3) of the cluster of DIR after it was killed: starts its om_monitor,
    /// which starts its cm_agent, cm_server and database.
    RestartNode {
        /// The node (1, 2 or 3).
        #[arg(value_parser = clap::value_parser!(u32).range(1..=3))]
        node: u32,
        /// The cluster directory.
        #[arg(long, default_value = "./.local-cluster")]
        dir: PathBuf,
    },
    /// Measure node-crash failover: kill every process of the primary's node, time the first
    /// INSERT on another node; default and fast profiles.
    Bench {
        /// Trials per profile.
        #[arg(long, default_value_t = 5)]
        trials: u32,
        /// Only this profile.
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// Where the trial clusters are created.
        #[arg(long, default_value = "/tmp/cm-local-bench")]
        dir: PathBuf,
        /// Directory of the PostgreSQL binaries.
        #[arg(long, default_value = cm_daemons::local::DEFAULT_PG_BIN)]
        pg_bin: PathBuf,
        /// Instead: the rejoin benchmark (issue 18) — durable data (fsync, checksums), a
        /// writing client, node crash / postmaster kill / whole-node freeze-thaw of the
        /// primary, each timed until a write commits and until the cluster is Normal again.
        #[arg(long)]
        rejoin: bool,
        /// With `--rejoin`: only this fault (node-crash, postmaster-kill, freeze).
        #[arg(long)]
        fault: Option<String>,
        /// Instead: the cost of the agents' HTTP endpoints (SPEC §15) — HTTPS `/primary` on
        /// the primary's agent at `--rate` per second, over a kept-alive connection and over a
        /// new connection per request, each beside a baseline server of the same stack;
        /// prints latency percentiles and the load average.
        #[arg(long)]
        http: bool,
        /// With `--http`: requests per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// With `--http`: how many requests.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Instead: the flood bench (issue 15) — on one cluster, the CMS leader's answers to a
        /// probe every heartbeat interval and node-crash failovers, without and with a flood of
        /// bad TLS connections at every cm_server port, side by side (`--profile`, default
        /// `default`).
        #[arg(long)]
        flood: bool,
        /// With `--flood`: rounds (each a calm and a flooded failover).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// With `--flood`: flooder tasks.
        #[arg(long, default_value_t = 4)]
        flooders: usize,
        /// Instead: the idle footprint (issue 16) — a default-profile cluster as `cm_local up`
        /// makes it, Normal and left alone; the CPU time and resident memory of every
        /// om_monitor, cm_agent and cm_server over the window (and PostgreSQL's, apart),
        /// beside the goals.
        #[arg(long)]
        footprint: bool,
        /// With `--footprint`: idle minutes measured (/proc counts CPU in 10 ms ticks: at
        /// least 10 for a figure to 0.01 s per minute).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// The nemesis (SPEC §18): three nodes in network namespaces on real PostgreSQL in
    /// synchronous mode, a writing client with sessions on every node, faults drawn from the
    /// seed (node kill and restart, whole-node freeze, postmaster SIGSTOP, partitions, CMS
    /// leader isolation, disk full), then the checks: every acknowledged write on the final
    /// primary (S3), no acknowledgement from an older timeline (S4), recovery per fault,
    /// convergence. Prints a table per fault kind; exits 1 on a safety or convergence failure.
    Nemesis {
        /// Minutes of faults.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        /// The seed of the fault plan.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Parameter profile.
        #[arg(long, value_enum, default_value = "fast")]
        profile: ProfileArg,
        /// Fault kinds, comma-separated (kill, restart, freeze, pm-stop, partition, one-way,
        /// isolate-leader, disk-full); all by default.
        #[arg(long)]
        faults: Option<String>,
        /// The run directory (created, removed at the end; kept after a failure).
        #[arg(long, default_value = "/tmp/cm-nemesis")]
        dir: PathBuf,
        /// Write the JSON history (every write, every fault) here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Size of each node's data filesystem (tmpfs), MB. Above the WAL PostgreSQL may keep
        /// by its own settings (max_wal_size 1 GB + wal_keep_size 256 MB + a dead member's slot
        /// up to max_slot_wal_keep_size 1 GB): with 1 GB, a 30-minute run's WAL alone crossed
        /// the read-only threshold and a standby at 82 % stayed read-only (above the 80 % clear
        /// level), which the run counted as not converged. tmpfs only uses what is written.
        #[arg(long, default_value_t = 3072)]
        disk_mb: u64,
        /// Asynchronous replication: lost and dual-acknowledged writes are reported, not
        /// failures.
        #[arg(long = "async")]
        async_mode: bool,
        /// Client sessions per node.
        #[arg(long, default_value_t = 2)]
        sessions: u32,
        /// Keep the run directory (data, logs) even after a passing run.
        #[arg(long)]
        keep: bool,
        /// Directory of the PostgreSQL binaries.
        #[arg(long, default_value = cm_daemons::local::DEFAULT_PG_BIN)]
        pg_bin: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up {
            dir,
            profile,
            pg_bin,
            keep,
            haproxy,
        } => {
            let mut opts = LocalOptions::new(dir, profile.into());
            opts.pg_bin = pg_bin;
            opts.keep = keep;
            opts.example_resource = true;
            up(opts, haproxy)
        }
        Cmd::Down { dir, keep } => down(&dir, keep),
        Cmd::RestartNode { node, dir } => restart_node(&dir, node),
        Cmd::Nemesis {
            minutes,
            seed,
            profile,
            faults,
            dir,
            json,
            disk_mb,
            async_mode,
            sessions,
            keep,
            pg_bin,
        } => {
            let faults = match faults.as_deref().map(nemesis::plan::parse_faults) {
                None => nemesis::plan::FaultKind::ALL.to_vec(),
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    eprintln!("--faults: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = nemesis::NemesisOptions {
                minutes,
                seed,
                profile: profile.into(),
                faults,
                dir,
                json,
                disk_mb,
                pg_bin,
                cm_bin: cm_daemons::local::sibling_bin_dir(),
                async_mode,
                keep,
                sessions_per_node: sessions.max(1),
            };
            run_nemesis(&opts)
        }
        Cmd::Bench {
            trials,
            profile,
            dir,
            pg_bin,
            rejoin,
            fault,
            http,
            rate,
            requests,
            flood,
            rounds,
            flooders,
            footprint,
            minutes,
        } => {
            let mut opts = LocalOptions::new(dir.clone(), Profile::Fast);
            opts.pg_bin = pg_bin;
            if let Err(e) = check_prerequisites(&opts) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            if http {
                opts.dir = dir.join("http");
                return match cm_daemons::local::http_bench::run(opts, requests, rate) {
                    Ok(b) => {
                        print!("{}", b.render());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("bench: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            if footprint {
                opts.dir = dir.join("footprint");
                let run = cm_daemons::local::footprint::run(opts, minutes, &mut |l| {
                    eprintln!("footprint: {l}");
                });
                return match run {
                    Ok(f) => {
                        print!("{}", f.render());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("bench: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            if flood {
                opts.dir = dir.join("flood");
                opts.profile = profile.map_or(Profile::Default, Into::into);
                let run = cm_daemons::local::flood_bench::run(opts, rounds, flooders);
                return match run {
                    Ok(b) => {
                        print!("{}", b.render());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("bench: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            if rejoin {
                let profile = profile.map_or(Profile::Fast, Into::into);
                let faults = match fault.as_deref().map(bench::Fault::parse) {
                    None => bench::Fault::ALL.to_vec(),
                    Some(Some(f)) => vec![f],
                    Some(None) => {
                        eprintln!("--fault: one of node-crash, postmaster-kill, freeze");
                        return ExitCode::from(2);
                    }
                };
                return match bench::run_rejoin(&dir, profile, trials, &opts, &faults) {
                    Ok(table) => {
                        print!("{table}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("bench: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            let profiles = match profile {
                Some(p) => vec![p.into()],
                None => vec![Profile::Default, Profile::Fast],
            };
            match bench::run(&dir, &profiles, trials, &opts) {
                Ok(r) => {
                    print!("{}", bench::render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_nemesis(opts: &nemesis::NemesisOptions) -> ExitCode {
    let missing = nemesis::check(opts);
    if !missing.is_empty() {
        eprintln!("cm_local nemesis cannot run:\n  {}", missing.join("\n  "));
        return ExitCode::from(2);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&cancel));
    let report = match nemesis::run(opts, cancel, &mut |l| println!("{l}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nemesis: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\nnemesis seed {} ({:?} profile, {}, faults {}): {} faults, {} writes acknowledged, \
         {} lost, {} S4 violations ({} ms dual-acknowledging), {} late answers of replicated \
         commits\n",
        opts.seed,
        opts.profile,
        if opts.async_mode {
            "asynchronous"
        } else {
            "synchronous"
        },
        opts.faults
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        report.faults.len(),
        report.acks(),
        report.lost.len(),
        report.s4.len(),
        report.dual_ms,
        report.late_acks
    );
    print!("{}", report.table);
    println!("{}", report.old_primary_line());
    if let Some(j) = &opts.json {
        println!("history: {}", j.display());
    }
    let failures = report.failures();
    if failures.is_empty() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        ExitCode::FAILURE
    }
}

/// Sets `flag` on SIGINT or SIGTERM (a thread with its own small runtime).
fn watch_signals(flag: Arc<AtomicBool>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            let _ = ready_tx.send(());
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
            }
        });
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
}

fn up(opts: LocalOptions, haproxy: bool) -> ExitCode {
    if let Err(e) = check_prerequisites(&opts) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&cancel));
    println!(
        "cm_local: creating the cluster in {} ...",
        opts.dir.display()
    );
    let mut c = match LocalCluster::create(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cm_local: {}", cm_daemons::common::error_text(&e));
            return ExitCode::FAILURE;
        }
    };
    c.cancel = Arc::clone(&cancel);
    let _ = std::fs::write(c.paths.pid_file(), std::process::id().to_string());
    let result = bring_up(&mut c, haproxy);
    if let Err(e) = &result {
        eprintln!("cm_local: {}", cm_daemons::common::error_text(e));
        eprintln!("logs: {}", c.paths.logs().display());
    } else {
        while !cancel.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let marker = c.paths.dir.join(cm_daemons::local::KEEP_MARKER);
    if marker.exists() {
        c.keep_dir();
        let _ = std::fs::remove_file(marker);
    }
    println!("\ncm_local: tearing down ...");
    for note in c.teardown() {
        println!("  {note}");
    }
    println!("cm_local: done");
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bring_up(c: &mut LocalCluster, haproxy: bool) -> anyhow::Result<()> {
    c.start_monitors()?;
    c.wait_monitors_listening(Duration::from_secs(30))?;
    println!("cm_local: om_monitor runs on every node; cm_ctl start:");
    let status = c.ctl_command(&["start", "-t", "120"]).status()?;
    if !status.success() {
        println!("cm_local: cm_ctl start ended with {status}; still waiting for Normal");
    }
    let started = Instant::now();
    let mut last = String::new();
    c.wait_normal(Duration::from_secs(120), |s| {
        if s != last {
            println!("  [{:>5.1} s] {s}", started.elapsed().as_secs_f64());
            last = s.to_owned();
        }
    })?;
    let out = c.ctl(&["query", "-Cv"], Duration::from_secs(20))?;
    print!("\n{}", String::from_utf8_lossy(&out.stdout));
    let proxy = if haproxy {
        Some(c.start_haproxy()?)
    } else {
        None
    };
    print_hints(c)?;
    if let Some((write, read)) = proxy {
        println!(
            "\nHAProxy ({cfg}) routes by the agents' answers:\n  \
             # writes: always the current primary\n  \
             psql 'host=127.0.0.1 port={write} user=postgres'\n  \
             # reads: streaming standbys within 16 MB\n  \
             psql 'host=127.0.0.1 port={read} user=postgres'",
            cfg = c.haproxy_config().display()
        );
    }
    Ok(())
}

fn print_hints(c: &LocalCluster) -> anyhow::Result<()> {
    let s = c.query()?;
    let p = primary_node(&s).unwrap_or(1);
    let other = if p == 2 { 3 } else { 2 };
    let cfg = c.paths.config();
    let ctl = c.opts.cm_bin.join("cm_ctl");
    let me = std::env::current_exe()?;
    let pm = c.data_dir(p).join("postmaster.pid");
    println!(
        "\nThe cluster is {}. Try, from another shell:\n\
         \n  # watch it\n  {ctl} -c {cfg} query -Cv\n\
         \n  # kill the primary's postmaster: the agent restarts it, the same node is primary again\n  \
         kill -9 $(head -1 {pm}); sleep 1; {ctl} -c {cfg} query -Cv\n\
         \n  # switch the primary over to node {other}\n  \
         {ctl} -c {cfg} switchover -n {other} -D {dd}\n\
         \n  # trip disk protection: threshold below the current usage makes the primary read-only\n  \
         {ctl} -c {cfg} set --param --server -k datastorage_threshold_value_check=1\n  \
         {ctl} -c {cfg} set --param --server -k datastorage_threshold_value_check=85\n\
         \n  # connect to the primary (with the cluster's generated password)\n  \
         PGPASSFILE={passfile} psql -h 127.0.0.1 -p {port} -U postgres\n\
         \n  # ask the agents (200 on the primary only; 503 + the reason elsewhere)\n{curl}\
         \n  # a node killed by hand stays down: start it again with\n  \
         {me} restart-node {p} --dir {dir}\n\
         \n  # stop everything (or press Ctrl-C here)\n  {me} down --dir {dir}\n\
         \nLogs: {logs}",
        summary(&s),
        ctl = ctl.display(),
        cfg = cfg.display(),
        pm = pm.display(),
        dd = c.data_dir(other).display(),
        port = c.dn_port(p),
        passfile = cm_io::postgres::credential::passfile_path(&c.paths.state_dir(1)).display(),
        curl = curl_lines(c),
        me = me.display(),
        dir = c.paths.dir.display(),
        logs = c.paths.logs().display(),
    );
    // Node N (1-based) runs the N-th cm_server, and its certificate names it nN.
    let leader_idx = s
        .cms
        .iter()
        .position(|r| r.role == CmsRole::Primary)
        .unwrap_or(0);
    let leader = u32::try_from(leader_idx + 1).unwrap_or(1);
    let leader_http = c.ports.cms_http.get(leader_idx).copied();
    if let Some(http) = leader_http {
        println!(
            "\n  # promotions so far, and the cm_server leader's metrics and cluster view
  \
             {ctl} -c {cfg} history
  \
             {curl} https://n{leader}:{http}/metrics
  {curl} https://n{leader}:{http}/cluster",
            ctl = ctl.display(),
            cfg = cfg.display(),
            curl = curl(c, leader, http),
        );
    }
    Ok(())
}

/// `curl` lines for the agents' HTTP endpoints (§15).
/// `curl` for node `n`'s HTTPS endpoint on 127.0.0.1:`port`: its certificate names it `nN`.
fn curl(c: &LocalCluster, n: u32, port: u16) -> String {
    format!(
        "curl -s --cacert {} --resolve n{n}:{port}:127.0.0.1",
        c.paths.tls_dir().join("ca.crt").display()
    )
}

fn curl_lines(c: &LocalCluster) -> String {
    let mut out = String::new();
    for n in 1..=cm_daemons::local::NODES {
        if let Some(port) = c.rest_port(n) {
            out.push_str(&format!(
                "  {} -w ' %{{http_code}}\\n' https://n{n}:{port}/primary   # node {n}\n",
                curl(c, n, port)
            ));
        }
    }
    if let Some(port) = c.rest_port(1) {
        let curl = curl(c, 1, port);
        out.push_str(&format!(
            "  {curl} 'https://n1:{port}/replica?lag=16MB'\n  \
             {curl} https://n1:{port}/cluster\n  {curl} https://n1:{port}/metrics\n"
        ));
    }
    out
}

fn restart_node(dir: &Path, node: u32) -> ExitCode {
    let opts = LocalOptions::new(dir.to_path_buf(), Profile::Fast);
    if let Err(e) = cm_daemons::local::root_check(nix::unistd::geteuid().is_root()) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let mut c = match LocalCluster::attach(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cm_local restart-node: {}",
                cm_daemons::common::error_text(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = c.start_monitor(node);
    // The om_monitor started here must outlive this command: forget the handle so that the
    // teardown of `c` (which only runs for a launcher) does not kill it.
    c.disown();
    match result {
        Ok(()) => {
            println!(
                "cm_local restart-node: om_monitor of node {node} started; it starts cm_agent, \
                 cm_server and the database. Watch with `cm_ctl -c {} query -Cv`",
                c.paths.config().display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "cm_local restart-node: {}",
                cm_daemons::common::error_text(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn down(dir: &Path, keep: bool) -> ExitCode {
    let pid_file = dir.join("cm_local.pid");
    let launcher = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("cm_local"))
        });
    if let Some(pid) = launcher {
        if keep && let Err(e) = std::fs::write(dir.join(cm_daemons::local::KEEP_MARKER), "") {
            eprintln!(
                "cm_local down: cannot ask the launcher to keep {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        println!("cm_local down: asking the launcher (pid {pid}) to tear down ...");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(150);
        while procs::pgrp_of(pid).is_some() {
            if Instant::now() > deadline {
                eprintln!("cm_local down: the launcher (pid {pid}) did not exit");
                return ExitCode::FAILURE;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("cm_local down: done");
        return ExitCode::SUCCESS;
    }
    let mut opts = LocalOptions::new(dir.to_path_buf(), Profile::Fast);
    opts.keep = keep;
    match LocalCluster::attach(opts) {
        Ok(mut c) => {
            for note in c.teardown() {
                println!("  {note}");
            }
            println!("cm_local down: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cm_local down: {}", cm_daemons::common::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn help_describes_cm_local_itself() {
        let about = Cli::command().get_about().unwrap().to_string();
        assert!(
            about.starts_with("cm_local: run a three-node cluster"),
            "{about}"
        );
    }

    #[test]
    fn restart_node_takes_a_node_of_the_local_cluster() {
        assert!(Cli::try_parse_from(["cm_local", "restart-node", "2"]).is_ok());
        assert!(Cli::try_parse_from(["cm_local", "restart-node", "4"]).is_err());
    }
}
