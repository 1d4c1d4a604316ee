//! End-to-end tests of om_monitor and cm_agent as real processes on one node, without a
//! running cm_server (node 2 of the test config is the CMS node and nothing runs there).
//! Tests run one at a time (a lock), poll /proc with generous timeouts and assert no timing;
//! every process and directory is removed by [`Node`]'s `Drop`, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cm_core::NodeId;
use cm_core::config::ClusterConfig;
use cm_core::ctl::{MonitorReply, MonitorRequest};
use cm_core::dn::StopMode;
use cm_core::flags::Flag;
use cm_core::ids::QuorumTerm;
use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_daemons::common::{Identity, load_security};
use cm_daemons::local::tls_keys;
use cm_daemons::node::{Found, scan};
use cm_io::postgres::test_support::{BIN_DIR, free_port, postgres_available};
use cm_io::process::OsUser;
use cm_io::transport::{AddressBook, Limits, Transport, TransportConfig, certgen};

const WAIT: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `f` every 100 ms until it is true or `timeout` passed.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A temporary node 1 (optionally with DN 6001) of a two-node cluster whose CMS is node 2
/// (or node 1 itself with `cms_here`).
struct Node {
    root: PathBuf,
    config_path: PathBuf,
    config: ClusterConfig,
    children: Vec<Child>,
}

impl Node {
    fn new(tag: &str, with_dn: bool) -> Self {
        Self::with(tag, with_dn, false)
    }

    fn with(tag: &str, with_dn: bool, cms_here: bool) -> Self {
        let root = std::env::temp_dir().join(format!("cm-e2e-node-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let tls = root.join("tls");
        certgen::write_cluster_material(&tls, "e2e", &["n1", "n2"], certgen::today()).unwrap();
        let mut toml = format!(
            "name = \"e2e\"\n{}\
             [[node]]\nid = 1\nname = \"n1\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
             state_dir = \"{r}/state1\"\nmonitor_port = {}\n{cms1}\
             [[node]]\nid = 2\nname = \"n2\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
             state_dir = \"{r}/state2\"\nmonitor_port = {}\n{cms2}",
            tls_keys(&tls),
            free_port(),
            free_port(),
            r = root.display(),
            cms1 = if cms_here {
                format!("cms_port = {}\n", free_port())
            } else {
                String::new()
            },
            cms2 = if cms_here {
                String::new()
            } else {
                format!("cms_port = {}\n", free_port())
            },
        );
        if with_dn {
            toml += &format!(
                "[[group]]\nid = 1\n[[group.member]]\ninstance = 6001\nnode = 1\n\
                 data_dir = \"{}/data\"\nport = {}\n",
                root.display(),
                free_port()
            );
        }
        toml += &format!("[database]\nbin_dir = \"{BIN_DIR}\"\n[params]\nprofile = \"fast\"\n");
        let config = ClusterConfig::from_toml_str(&toml).unwrap();
        let config_path = root.join("cluster.toml");
        std::fs::write(&config_path, toml).unwrap();
        Self {
            root,
            config_path,
            config,
            children: Vec::new(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("state1")
    }

    /// The node's passfile (the database password a TCP client gives).
    fn passfile(&self) -> PathBuf {
        cm_io::postgres::credential::passfile_path(&self.state_dir())
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    fn command(&self, bin: &str, log: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg("1")
            .arg("--log")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log(log)).unwrap());
        cmd
    }

    /// Starts om_monitor (tracked for cleanup); returns its pid.
    fn start_monitor(&mut self, log: &str) -> u32 {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_om_monitor"), log);
        cmd.arg("--agent-bin")
            .arg(env!("CARGO_BIN_EXE_cm_agent"))
            .arg("--server-bin")
            .arg(env!("CARGO_BIN_EXE_cm_server"));
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts cm_agent directly (tracked for cleanup).
    fn start_agent(&mut self) -> &mut Child {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_cm_agent"), "agent");
        cmd.arg("--server-bin").arg("/nonexistent/cm_server");
        self.children.push(cmd.spawn().unwrap());
        self.children.last_mut().unwrap()
    }

    fn agents(&self) -> Vec<Found> {
        scan("cm_agent", &self.config_path, 1)
    }

    fn logs(&self) -> String {
        ["monitor", "agent"]
            .iter()
            .map(|n| std::fs::read_to_string(self.log(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Sends one control request to node 1's om_monitor, as cm_ctl does.
    fn control(&self, req: MonitorRequest) -> MonitorReply {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (t, mut events) = Transport::start(TransportConfig {
                local: Endpoint {
                    node: NodeId(1),
                    role: Role::Ctl,
                },
                security: load_security(
                    &self.config_path,
                    &self.config,
                    &Identity::Operator {
                        cert: None,
                        key: None,
                    },
                )
                .unwrap(),
                listen: None,
                addresses: AddressBook::from_config(&self.config),
                limits: Limits::default(),
            })
            .await
            .unwrap();
            let monitor = Endpoint::monitor(NodeId(1));
            t.connect(monitor);
            let reply = tokio::time::timeout(WAIT, async {
                while let Some(ev) = events.recv().await {
                    match ev {
                        NetEvent::Connected { .. } => t
                            .send(&Envelope {
                                from: t.local(),
                                to: monitor,
                                quorum_term: QuorumTerm(0),
                                msg: Msg::MonitorRequest {
                                    id: 7,
                                    req: req.clone(),
                                },
                            })
                            .unwrap(),
                        NetEvent::FrameReceived { envelope, .. } => {
                            if let Msg::MonitorReply { id: 7, reply } = envelope.msg {
                                return reply;
                            }
                        }
                        _ => {}
                    }
                }
                panic!("transport closed");
            })
            .await
            .expect("a control reply");
            t.shutdown().await;
            reply
        })
    }
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Agents started by a monitor are not our children.
        for a in self.agents() {
            sigkill(a.pid);
        }
        for s in scan("cm_server", &self.config_path, 1) {
            sigkill(s.pid);
        }
        if let Some((pm, _)) = cm_io::process::adopt_postmaster(&self.data_dir()) {
            let _ = pm.kill_group(Duration::from_secs(5));
        }
        if std::thread::panicking() || std::env::var_os("CM_TEST_LOGS").is_some() {
            eprintln!("logs of the test:\n{}", self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The agent om_monitor `monitor` started, once there is exactly one.
fn monitors_agent(node: &Node, monitor: u32) -> Option<i32> {
    match node.agents().as_slice() {
        [a] if a.ppid == monitor as i32 => Some(a.pid),
        _ => None,
    }
}

#[test]
fn e2e_node_monitor_starts_the_agent_and_restarts_it_after_kill_9() {
    let _s = serial();
    let mut node = Node::new("restart", false);
    let monitor = node.start_monitor("monitor");
    let mut first = None;
    assert!(
        wait_until(WAIT, || {
            first = monitors_agent(&node, monitor);
            first.is_some()
        }),
        "om_monitor did not start cm_agent:\n{}",
        node.logs()
    );
    let first = first.unwrap();
    sigkill(first);
    assert!(
        wait_until(WAIT, || monitors_agent(&node, monitor)
            .is_some_and(|p| p != first)),
        "om_monitor did not restart cm_agent after kill -9:\n{}",
        node.logs()
    );
}

#[test]
fn e2e_node_manual_start_flag_keeps_a_killed_agent_down_until_removed() {
    let _s = serial();
    let mut node = Node::new("manual", false);
    let monitor = node.start_monitor("monitor");
    assert!(wait_until(WAIT, || monitors_agent(&node, monitor).is_some()));
    let reply = node.control(MonitorRequest::WriteFlag {
        flag: Flag::ClusterManualStart,
        mode: StopMode::Fast,
    });
    assert_eq!(reply, MonitorReply::Done);
    assert!(node.state_dir().join("cluster_manual_start").exists());
    // Kill the agent until none is left: an agent killed by a signal may be restarted up to
    // 3 times to finish an interrupted stop (SPEC §2); with no DN it then exits by itself.
    assert!(
        wait_until(WAIT, || {
            node.agents().iter().for_each(|a| sigkill(a.pid));
            std::thread::sleep(Duration::from_secs(2));
            node.agents().is_empty()
        }),
        "agents kept running under cluster_manual_start:\n{}",
        node.logs()
    );
    // No restart while the flag is there (the monitor checks every second).
    std::thread::sleep(Duration::from_secs(5));
    assert!(node.agents().is_empty(), "{}", node.logs());
    let MonitorReply::Status {
        agent_running,
        flags,
        ..
    } = node.control(MonitorRequest::Status)
    else {
        panic!("not a status reply");
    };
    assert!(!agent_running);
    assert_eq!(flags.cluster_manual_start, Some(StopMode::Fast));
    assert_eq!(
        node.control(MonitorRequest::RemoveAllManualStart),
        MonitorReply::Done
    );
    assert!(
        wait_until(WAIT, || monitors_agent(&node, monitor).is_some()),
        "om_monitor did not start cm_agent after the flag was removed:\n{}",
        node.logs()
    );
}

#[test]
fn e2e_node_a_second_monitor_exits_because_of_the_lock() {
    let _s = serial();
    let mut node = Node::new("lock", false);
    let first = node.start_monitor("monitor");
    assert!(wait_until(WAIT, || monitors_agent(&node, first).is_some()));
    let out = node
        .command(env!("CARGO_BIN_EXE_om_monitor"), "monitor2")
        .arg("--agent-bin")
        .arg(env!("CARGO_BIN_EXE_cm_agent"))
        .status()
        .unwrap();
    assert!(out.success(), "{out}");
    let log = std::fs::read_to_string(node.log("monitor2")).unwrap();
    assert!(log.contains("om_monitor.lock"), "{log}");
    // The first monitor's agent is untouched.
    assert!(monitors_agent(&node, first).is_some());
}

/// SPEC §1: a cm_agent of this node that this om_monitor did not start is SIGKILLed. A second
/// agent started by hand beside the monitor's waits for the node's agent lock (up to 10 s, then
/// it would exit 1); the monitor sees it waiting in /proc/locks at its next check and kills it,
/// so it dies of SIGKILL, not of the wait, and the monitor's own agent runs on untouched.
#[test]
fn e2e_node_a_foreign_agent_waiting_for_the_lock_is_killed_and_the_monitors_agent_stays() {
    let _s = serial();
    let mut node = Node::new("foreign", false);
    let monitor = node.start_monitor("monitor");
    let mut mine = None;
    assert!(
        wait_until(WAIT, || {
            mine = monitors_agent(&node, monitor);
            mine.is_some()
        }),
        "om_monitor did not start cm_agent:\n{}",
        node.logs()
    );
    let mine = mine.unwrap();
    let foreign = node.start_agent();
    let status = foreign.wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "the foreign agent was not killed: {status}\n{}",
        node.logs()
    );
    assert_eq!(
        monitors_agent(&node, monitor),
        Some(mine),
        "{}",
        node.logs()
    );
    // The monitor logs the kill just after sending it.
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(node.log("monitor"))
            .is_ok_and(|l| l.contains("cm_agent killed"))),
        "{}",
        node.logs()
    );
}

/// SPEC §1 after an om_monitor restart: the agent left running by the previous monitor holds
/// the lock and is not the new monitor's child, so the new monitor kills it and starts its own,
/// which takes the lock once the old one is gone: exactly one agent, the new monitor's.
#[test]
fn e2e_node_a_new_monitor_replaces_the_agent_its_predecessor_left() {
    let _s = serial();
    let mut node = Node::new("replace", false);
    let first = node.start_monitor("monitor");
    let mut old = None;
    assert!(
        wait_until(WAIT, || {
            old = monitors_agent(&node, first);
            old.is_some()
        }),
        "om_monitor did not start cm_agent:\n{}",
        node.logs()
    );
    let old = old.unwrap();
    // SIGKILL the monitor alone: its agent keeps running (own process group).
    let m = node.children.iter_mut().find(|c| c.id() == first).unwrap();
    m.kill().unwrap();
    m.wait().unwrap();
    assert!(node.agents().iter().any(|a| a.pid == old));
    let second = node.start_monitor("monitor2");
    assert!(
        wait_until(WAIT, || monitors_agent(&node, second).is_some()),
        "the new om_monitor did not replace the old agent:\n{}\n{}",
        node.logs(),
        std::fs::read_to_string(node.log("monitor2")).unwrap_or_default()
    );
    assert!(node.agents().iter().all(|a| a.pid != old));
}

#[test]
fn e2e_node_agent_with_a_corrupt_store_exits_naming_the_file() {
    let _s = serial();
    let mut node = Node::new("corrupt", false);
    std::fs::create_dir_all(node.state_dir()).unwrap();
    std::fs::write(node.state_dir().join("cma.store"), b"not a store").unwrap();
    let child = node.start_agent();
    let mut status = None;
    assert!(wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert!(!status.unwrap().success());
    let log = std::fs::read_to_string(node.log("agent")).unwrap();
    assert!(log.contains("cma.store"), "{log}");
}

/// The node's database with the cluster's password (§16): the passfile in its state directory
/// (what `cm_local` writes on every node), initdb with that password, peer authentication on
/// the socket and SCRAM over TCP.
fn initdb(node: &Node) {
    use cm_io::postgres::credential;
    let data = node.data_dir();
    let user = OsUser::lookup("postgres").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    user.chown(&data).unwrap();
    let state = node.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(
        &state,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o711),
    )
    .unwrap();
    let password = credential::new_password().unwrap();
    credential::write_passfile(&node.passfile(), "postgres", &password, &user).unwrap();
    let pwfile = node.root.join("initdb.pw");
    std::fs::write(&pwfile, format!("{password}\n")).unwrap();
    user.chown(&pwfile).unwrap();
    let mut cmd = Command::new(Path::new(BIN_DIR).join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--no-instructions",
        ])
        .current_dir("/");
    user.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(&pwfile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nfsync = off\n");
    std::fs::write(conf, text).unwrap();
}

#[test]
fn e2e_node_agent_starts_its_dn_pending_as_the_postgres_user() {
    let _s = serial();
    if !postgres_available() {
        return;
    }
    let mut node = Node::new("dn", true);
    initdb(&node);
    node.start_agent();
    let port = node.config.groups[0].members[0].port.to_string();
    let passfile = node.passfile();
    let pg = |tool: &str| {
        let mut c = Command::new(Path::new(BIN_DIR).join(tool));
        c.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .env("PGPASSFILE", &passfile);
        c
    };
    assert!(
        wait_until(WAIT, || pg("pg_isready")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())),
        "the DN never accepted connections:\n{}",
        node.logs()
    );
    let out = pg("psql")
        .args(["-d", "postgres", "-Atc", "select pg_is_in_recovery()"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{out:?}");
    let pm = cm_io::process::PostmasterPid::read(&node.data_dir()).expect("postmaster.pid");
    let uid = procfs::process::Process::new(pm.pid)
        .unwrap()
        .uid()
        .unwrap();
    assert_eq!(uid, OsUser::lookup("postgres").unwrap().uid.as_raw());

    // SIGTERM: the agent exits 0 and its DN keeps running (SPEC §1) ...
    let agent = node.children.last_mut().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", node.logs());
    assert!(cm_io::process::proc_state(pm.pid).is_some());
    // ... and the next agent adopts it instead of starting another postmaster.
    node.start_agent();
    std::thread::sleep(Duration::from_secs(5));
    let again = cm_io::process::PostmasterPid::read(&node.data_dir()).expect("postmaster.pid");
    assert_eq!(again.pid, pm.pid, "{}", node.logs());
    assert!(
        pg("pg_isready")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn e2e_node_one_node_cluster_under_om_monitor_promotes_its_dn() {
    let _s = serial();
    if !postgres_available() {
        return;
    }
    // om_monitor → cm_agent → cm_server (started by the agent on this CMS node) → leader →
    // the pending DN is promoted: the whole chain of SPEC §1 on one node.
    let mut node = Node::with("stack", true, true);
    initdb(&node);
    node.start_monitor("monitor");
    let port = node.config.groups[0].members[0].port.to_string();
    let in_recovery = || {
        Command::new(Path::new(BIN_DIR).join("psql"))
            .env("PGPASSFILE", node.passfile())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-Atc", "select pg_is_in_recovery()"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    assert!(
        wait_until(WAIT, || in_recovery().as_deref() == Some("f")),
        "the DN was never promoted:\n{}",
        node.logs()
    );
    assert_eq!(scan("cm_server", &node.config_path, 1).len(), 1);
}

#[test]
fn e2e_node_a_crash_looping_agent_is_logged_once_and_its_error_is_served() {
    let _s = serial();
    let mut node = Node::new("crashloop", false);
    let monitor = node.start_monitor("monitor");
    let mut first = None;
    assert!(
        wait_until(WAIT, || {
            first = monitors_agent(&node, monitor);
            first.is_some()
        }),
        "om_monitor did not start cm_agent:\n{}",
        node.logs()
    );
    // The config breaks under a running node; the next agent cannot start.
    let good = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, format!("{good}\nbogus_key = 1\n")).unwrap();
    sigkill(first.unwrap());
    let mut error = None;
    assert!(
        wait_until(WAIT, || {
            if let MonitorReply::Status {
                agent_running: false,
                agent_error: Some(e),
                ..
            } = node.control(MonitorRequest::Status)
                && e.contains("bogus_key")
            {
                error = Some(e);
            }
            error.is_some()
        }),
        "om_monitor never served the agent's error:\n{}",
        node.logs()
    );
    let error = error.unwrap();
    assert!(error.contains("bogus_key"), "{error}");
    // Several restarts fail (1, 2, 3, then 5 checks later): the error is logged once.
    std::thread::sleep(Duration::from_secs(6));
    let log = std::fs::read_to_string(node.log("monitor")).unwrap();
    assert_eq!(
        log.matches("bogus_key: unknown parameter; om_monitor restarts it")
            .count(),
        1,
        "the error is logged once at ERROR:\n{log}"
    );
    assert!(
        !log.contains("\u{1b}["),
        "no colour codes in a log file:\n{log}"
    );
}

/// Kills the process groups whose leaders wrote their pid into `file` (the hanging trigger of
/// the test), when dropped: a test failure must not leave them sleeping.
struct KillGroupsIn(PathBuf);

impl Drop for KillGroupsIn {
    fn drop(&mut self) {
        for pid in std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// SPEC §15: real trigger scripts run by a real cm_agent with (event, instance, role, term);
/// `on_start` never returns (it sleeps in its own process group), and the DN is promoted all
/// the same — a trigger never blocks a decision. The promotion is the cluster's first primary:
/// a start, not a failover, so `on_role_change` runs and `on_failover` does not.
#[test]
fn e2e_node_event_triggers_run_real_scripts_with_their_arguments() {
    let _s = serial();
    if !postgres_available() {
        return;
    }
    let mut node = Node::with("triggers", true, true);
    let hooks = node.root.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let args = node.root.join("trigger-args");
    let pids = node.root.join("trigger-pids");
    let write = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let p = hooks.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let hang = write(
        "start.sh",
        &format!(
            "echo \"$@\" >> {a}\necho $$ >> {p}\nexec sleep 600",
            a = args.display(),
            p = pids.display()
        ),
    );
    let record = write("record.sh", &format!("echo \"$@\" >> {}", args.display()));
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    let text = format!(
        "event_triggers = {{ on_start = \"{}\", on_failover = \"{r}\", \
         on_role_change = \"{r}\" }}\n{text}",
        hang.display(),
        r = record.display()
    );
    node.config = ClusterConfig::from_toml_str(&text).unwrap();
    std::fs::write(&node.config_path, text).unwrap();
    let _kill = KillGroupsIn(pids.clone());
    initdb(&node);
    node.start_monitor("monitor");
    let lines = || {
        std::fs::read_to_string(&args)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(WAIT, || lines()
            .iter()
            .any(|l| l.starts_with("on_role_change"))),
        "no on_role_change trigger ran: {:?}\n{}",
        lines(),
        node.logs()
    );
    // Triggers of one step start together: give a wrongly fired on_failover time to write.
    std::thread::sleep(Duration::from_secs(2));
    let got = lines();
    assert!(
        got.contains(&"on_start 6001 unknown 0".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"on_role_change 6001 primary 1".to_string()),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|l| l.starts_with("on_failover")),
        "the cluster's first primary is no failover: {got:?}"
    );
    // The start trigger still sleeps: it was not waited for.
    let pid: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        cm_io::process::proc_state(pid).is_some(),
        "the hanging trigger runs"
    );
}
