//! [`LocalCluster`]: one local cluster's directory, ports, om_monitor processes and teardown.
//! Dropping it tears the cluster down (also when a test panics).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cm_core::config::ClusterConfig;
use cm_core::ctl::{ClusterHealth, ClusterStatus};
use cm_core::dn::{DbState, DnRole};

use super::{LocalOptions, NODES, Paths, Ports, check_prerequisites, db, procs};

/// When set, a torn-down cluster's journals are copied under this directory (CI replays them).
pub const KEEP_JOURNALS_ENV: &str = "CM_KEEP_JOURNALS";

/// A local three-node cluster.
pub struct LocalCluster {
    /// How it was made.
    pub opts: LocalOptions,
    /// Its paths.
    pub paths: Paths,
    /// Its ports.
    pub ports: Ports,
    /// Its parsed config.
    pub config: ClusterConfig,
    /// Set (by a signal handler) to abandon waits.
    pub cancel: Arc<AtomicBool>,
    monitors: Vec<Option<Child>>,
    /// HAProxy in front of the cluster (`cm_local up --haproxy`).
    haproxy: Option<Child>,
    torn_down: bool,
}

/// Runs a command, killing it after `timeout`; output captured.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot spawn a command")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

impl LocalCluster {
    /// Checks prerequisites, writes the directory and config, and creates the databases. No
    /// daemon runs yet ([`LocalCluster::start_monitors`]).
    pub fn create(opts: LocalOptions) -> anyhow::Result<Self> {
        check_prerequisites(&opts)?;
        if opts.dir.join("cluster.toml").exists() {
            bail!(
                "{} already holds a cluster: stop it first with `cm_local down --dir {}`",
                opts.dir.display(),
                opts.dir.display()
            );
        }
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
        let dir = opts.dir.canonicalize()?;
        if let Some(a) = super::untraversable_ancestor(&dir) {
            bail!(
                "the database user `{}` cannot enter {} (no x permission for others), so it \
                 cannot reach {}: choose another --dir, e.g. /tmp/cm-local",
                super::DB_OS_USER,
                a.display(),
                dir.display()
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let paths = Paths { dir };
        let ports = Ports::pick()?;
        super::write_tls_material(&paths)?;
        let mut text = super::render_config(
            &paths,
            &ports,
            opts.profile,
            &opts.pg_bin,
            &opts.extra_params,
        );
        if opts.example_resource {
            let script = super::example_resource_script(&paths);
            std::fs::write(&script, super::EXAMPLE_RESOURCE_SCRIPT)?;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
            text += &super::render_example_resource(&paths);
        }
        let config = ClusterConfig::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("the generated config is invalid: {e}"))?;
        std::fs::write(paths.config(), text)?;
        for n in 1..=NODES {
            crate::node::ensure_state_dir(&paths.state_dir(n))?;
        }
        std::fs::create_dir_all(paths.logs())?;
        let cluster = Self {
            opts,
            paths,
            ports,
            config,
            cancel: Arc::new(AtomicBool::new(false)),
            monitors: (0..NODES).map(|_| None).collect(),
            haproxy: None,
            torn_down: false,
        };
        db::create_databases(
            &cluster.paths,
            &cluster.ports,
            &cluster.opts.pg_bin,
            cluster.opts.durable,
        )?;
        Ok(cluster)
    }

    /// A handle on an existing cluster directory (for `cm_local down` from another shell when
    /// the launcher is gone): its config is read back; it owns no om_monitor child.
    pub fn attach(mut opts: LocalOptions) -> anyhow::Result<Self> {
        let dir = opts
            .dir
            .canonicalize()
            .with_context(|| format!("no cluster directory {}", opts.dir.display()))?;
        let paths = Paths { dir };
        let config = crate::common::load_config(&paths.config())?;
        let ports = Ports {
            monitor: config.nodes.iter().map(|n| n.monitor_port).collect(),
            cms: config.nodes.iter().filter_map(|n| n.cms_port).collect(),
            cms_http: config
                .nodes
                .iter()
                .filter_map(|n| n.cms_http_port)
                .collect(),
            dn: config
                .groups
                .iter()
                .flat_map(|g| g.members.iter())
                .map(|m| m.port)
                .collect(),
            rest: config.nodes.iter().filter_map(|n| n.rest_port).collect(),
        };
        opts.dir = paths.dir.clone();
        Ok(Self {
            opts,
            paths,
            ports,
            config,
            cancel: Arc::new(AtomicBool::new(false)),
            monitors: (0..NODES).map(|_| None).collect(),
            haproxy: None,
            torn_down: false,
        })
    }

    /// The data directory of the DN on node `n`.
    pub fn data_dir(&self, n: u32) -> PathBuf {
        self.paths.data_dir(n)
    }

    /// The database port of the DN on node `n`.
    pub fn dn_port(&self, n: u32) -> u16 {
        self.ports.dn[n as usize - 1]
    }

    /// The HTTP port (§15) of node `n`'s cm_agent.
    pub fn rest_port(&self, n: u32) -> Option<u16> {
        self.ports.rest.get(n as usize - 1).copied()
    }

    /// How to reach node `n`'s HTTP endpoints: HTTPS verified with the cluster CA for the
    /// node's name (`n{n}`).
    pub fn http_tls(&self, n: u32) -> anyhow::Result<cm_io::http::ClientTls> {
        cm_io::http::ClientTls::from_ca_file(&self.paths.tls_dir().join("ca.crt"), &format!("n{n}"))
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Starts node `n`'s om_monitor (which starts its cm_agent, which starts the rest).
    pub fn start_monitor(&mut self, n: u32) -> anyhow::Result<()> {
        let log_path = self.paths.logs().join(format!("node{n}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(self.opts.cm_bin.join("om_monitor"));
        cmd.arg("-c")
            .arg(self.paths.config())
            .arg("-n")
            .arg(n.to_string())
            .env_remove("CM_CONFIG")
            .env_remove("CM_NODE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().context("cannot start om_monitor")?;
        self.monitors[n as usize - 1] = Some(child);
        Ok(())
    }

    /// Starts every node's om_monitor.
    pub fn start_monitors(&mut self) -> anyhow::Result<()> {
        (1..=NODES).try_for_each(|n| self.start_monitor(n))
    }

    /// The pid of node `n`'s om_monitor, if it runs.
    pub fn monitor_pid(&mut self, n: u32) -> Option<i32> {
        let slot = &mut self.monitors[n as usize - 1];
        match slot.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => slot.as_ref().map(|c| c.id() as i32),
            _ => None,
        }
    }

    /// Kills every process of node `n` at once (om_monitor, cm_agent, cm_server, postgres),
    /// as a node crash would. Returns the process groups that survived the wait.
    pub fn kill_node(&mut self, n: u32) -> Vec<i32> {
        let groups = procs::node_groups(self.monitor_pid(n), &[self.data_dir(n)]);
        let left = procs::kill_groups(&groups, Duration::from_secs(10));
        if let Some(mut c) = self.monitors[n as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        left
    }

    /// The HAProxy config of this cluster (written by [`LocalCluster::start_haproxy`]).
    pub fn haproxy_config(&self) -> PathBuf {
        self.paths.dir.join("haproxy.cfg")
    }

    /// Starts Debian's HAProxy in front of the cluster with the shipped config
    /// (`cm-daemons/dist/haproxy.cfg`) on two free loopback ports: writes go to the member
    /// whose agent answers `/primary`, reads to standbys answering `/replica?lag=16MB`.
    /// Returns (write port, read port) once both listen. Torn down with the cluster.
    pub fn start_haproxy(&mut self) -> anyhow::Result<(u16, u16)> {
        let bin = Path::new(super::HAPROXY_BIN);
        if !bin.exists() {
            bail!(
                "HAProxy is not installed ({} is missing).\n  Debian/Ubuntu:  sudo apt-get install haproxy",
                bin.display()
            );
        }
        let free = || -> std::io::Result<std::net::TcpListener> {
            std::net::TcpListener::bind("127.0.0.1:0")
        };
        let (w, r) = (free()?, free()?);
        let (write, read) = (w.local_addr()?.port(), r.local_addr()?.port());
        drop((w, r));
        let cfg = self.haproxy_config();
        std::fs::write(
            &cfg,
            super::render_haproxy(
                &self.ports,
                &self.paths.tls_dir().join("ca.crt"),
                write,
                read,
            ),
        )?;
        let log_path = self.paths.logs().join("haproxy.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start haproxy")?;
        self.haproxy = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [write, read] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    bail!(
                        "haproxy does not listen on {port} after 10 s; see {}",
                        log_path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // HAProxy before 3.1 takes every server for up until `fall` checks failed: let the
        // first checks mark the non-primaries down before anyone uses the write port.
        std::thread::sleep(super::HAPROXY_FIRST_CHECKS);
        Ok((write, read))
    }

    /// A `cm_ctl` command for this cluster.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.opts.cm_bin.join("cm_ctl"));
        cmd.arg("-c")
            .arg(self.paths.config())
            .args(args)
            .env_remove("CM_CONFIG");
        cmd
    }

    /// Runs `cm_ctl` (bounded by `timeout`), output captured.
    pub fn ctl(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        output_with_timeout(self.ctl_command(args), timeout)
    }

    /// `cm_ctl query --json`, parsed.
    pub fn query(&self) -> anyhow::Result<ClusterStatus> {
        let out = self.ctl(&["query", "--json"], Duration::from_secs(20))?;
        if !out.status.success() {
            bail!(
                "cm_ctl query: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "cm_ctl query --json printed no status: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Polls `query` every 250 ms until `accept` holds, `timeout` passes (an error with the
    /// last answer) or [`LocalCluster::cancel`] is set. `progress` sees each answer's summary.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut accept: impl FnMut(&ClusterStatus) -> bool,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<ClusterStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                bail!("interrupted while waiting for {what}");
            }
            let last = match self.query() {
                Ok(s) if accept(&s) => return Ok(s),
                Ok(s) => summary(&s),
                Err(e) => format!("{e:#}"),
            };
            progress(&last);
            if Instant::now() >= deadline {
                bail!("{what} not reached within {timeout:?}; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the cluster is Normal with a primary and every standby streaming.
    pub fn wait_normal(
        &self,
        timeout: Duration,
        progress: impl FnMut(&str),
    ) -> anyhow::Result<ClusterStatus> {
        self.wait_until("a Normal cluster", timeout, is_normal, progress)
    }

    /// Waits until every om_monitor's control port accepts connections.
    pub fn wait_monitors_listening(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for port in &self.ports.monitor {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if Instant::now() >= deadline || self.cancel.load(Ordering::SeqCst) {
                    bail!("om_monitor port {port} not listening within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Tears down: `cm_ctl stop` (if anything runs), then SIGKILL to every remaining process
    /// group of the cluster, then removes the directory unless `keep`. Idempotent.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut notes = Vec::new();
        let running = (1..=NODES).any(|n| self.monitor_pid(n).is_some())
            || !procs::cluster_groups(&self.paths.config(), &[]).is_empty();
        if running {
            match self.ctl(&["stop", "-t", "60"], Duration::from_secs(75)) {
                Ok(o) if o.status.success() => notes.push("cm_ctl stop: done".into()),
                Ok(o) => notes.push(format!(
                    "cm_ctl stop failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => notes.push(format!("cm_ctl stop: {e:#}")),
            }
        }
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let mut groups = procs::cluster_groups(&self.paths.config(), &self.data_dirs());
        // An HAProxy started by another `cm_local up` of this directory.
        let haproxy_cfg = self.haproxy_config().display().to_string();
        groups.extend(
            procs::snapshot()
                .iter()
                .filter(|p| p.cmdline.contains(&haproxy_cfg))
                .map(|p| p.pgrp),
        );
        for n in 1..=NODES {
            groups.extend(procs::node_groups(self.monitor_pid(n), &[]));
        }
        // The example resource's programs run in their own sessions: `cm_ctl stop` stopped
        // them; a pid file left behind (the stop failed) is killed here.
        if let Ok(files) = std::fs::read_dir(self.paths.dir.join("res")) {
            for f in files
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".pid"))
            {
                if let Some(pid) = std::fs::read_to_string(f.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                    // Only the example's own program, never a recycled pid.
                    .filter(|p| {
                        std::fs::read(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("2147483647"))
                    })
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let left = procs::kill_groups(&groups, Duration::from_secs(15));
        if !left.is_empty() {
            notes.push(format!(
                "process groups still alive after SIGKILL: {left:?}"
            ));
        }
        for m in self.monitors.iter_mut().filter_map(Option::take) {
            let mut m = m;
            let _ = m.kill();
            let _ = m.wait();
        }
        if let Some(root) = std::env::var_os(KEEP_JOURNALS_ENV) {
            match self.keep_journals(Path::new(&root)) {
                Ok(dest) => notes.push(format!("journals kept in {}", dest.display())),
                Err(e) => notes.push(format!("cannot keep the journals: {e}")),
            }
        }
        if !self.opts.keep
            && let Err(e) = std::fs::remove_dir_all(&self.paths.dir)
        {
            notes.push(format!("cannot remove {}: {e}", self.paths.dir.display()));
        }
        notes
    }

    /// Copies every daemon's journal (SPEC §17) to `<root>/<cluster>/node<n>/<daemon>/`, where
    /// `<cluster>` names the cluster's directory and its parent (numbered if taken), so that
    /// CI can replay them after the cluster is gone.
    fn keep_journals(&self, root: &Path) -> std::io::Result<PathBuf> {
        let part = |p: Option<&Path>| {
            p.and_then(Path::file_name).map_or_else(String::new, |n| {
                n.to_string_lossy().trim_start_matches('.').to_owned()
            })
        };
        let dir = &self.paths.dir;
        let base = format!(
            "{}-{}-{}",
            part(dir.parent()),
            part(Some(dir)),
            std::process::id()
        );
        let mut dest = root.join(&base);
        let mut i = 1;
        while dest.exists() {
            i += 1;
            dest = root.join(format!("{base}-{i}"));
        }
        for n in 1..=NODES {
            let src = self.paths.state_dir(n).join("journal");
            let Ok(daemons) = std::fs::read_dir(&src) else {
                continue;
            };
            for d in daemons.flatten() {
                let to = dest.join(format!("node{n}")).join(d.file_name());
                std::fs::create_dir_all(&to)?;
                for f in std::fs::read_dir(d.path())?.flatten() {
                    std::fs::copy(f.path(), to.join(f.file_name()))?;
                }
            }
        }
        Ok(dest)
    }

    /// Every DN data directory.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        (1..=NODES).map(|n| self.data_dir(n)).collect()
    }

    /// Lets go of the cluster: its processes keep running and dropping this handle tears
    /// nothing down (`cm_local restart-node` starts an om_monitor that must outlive it).
    pub fn disown(&mut self) {
        self.torn_down = true;
        for m in &mut self.monitors {
            // Dropping a `Child` neither kills nor waits for the process.
            drop(m.take());
        }
    }

    /// The database user's password (§16: created with the cluster, in every node's passfile):
    /// what a client connecting over TCP gives.
    pub fn db_password(&self) -> anyhow::Result<String> {
        let passfile = cm_io::postgres::credential::passfile_path(&self.paths.state_dir(1));
        Ok(cm_io::postgres::credential::read_password(
            &passfile,
            super::DB_OS_USER,
        )?)
    }

    /// Tells the teardown to keep the directory (logs for a failed test).
    pub fn keep_dir(&mut self) {
        self.opts.keep = true;
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("CM_TEST_KEEP").is_some() {
            self.opts.keep = true;
        }
        for note in self.teardown() {
            eprintln!("cm_local teardown: {note}");
        }
    }
}

/// Normal, with a Normal primary and every standby Normal in every group.
pub fn is_normal(s: &ClusterStatus) -> bool {
    s.state == ClusterHealth::Normal
        && s.groups.iter().all(|g| {
            g.members
                .iter()
                .filter(|m| m.role == DnRole::Primary)
                .count()
                == 1
                && g.members.iter().all(|m| {
                    m.state == DbState::Normal
                        && matches!(m.role, DnRole::Primary | DnRole::Standby)
                })
        })
}

/// The node of group 1's primary.
pub fn primary_node(s: &ClusterStatus) -> Option<u32> {
    s.groups
        .first()?
        .members
        .iter()
        .find(|m| m.role == DnRole::Primary)
        .map(|m| m.node.0)
}

/// One line: cluster state and each DN's role and state.
pub fn summary(s: &ClusterStatus) -> String {
    let dns: Vec<String> = s
        .groups
        .iter()
        .flat_map(|g| g.members.iter())
        .map(|m| format!("{}:{:?}/{:?}", m.instance.0, m.role, m.state))
        .collect();
    format!("{:?} [{}]", s.state, dns.join(" "))
}
