//! End-to-end tests of custom resources (SPEC §14) with real daemons and a real program: a
//! one-node cluster (om_monitor → cm_agent → cm_server on node 1, no DN) supervising a
//! `fixed` resource through the shipped `cm-daemons/dist/resource-example.sh`. Tests poll with
//! generous timeouts and assert no timing (they print what they measure); every process and
//! directory is removed by [`Node`]'s `Drop`, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cm_daemons::node::scan;
use cm_io::postgres::test_support::free_port;

const WAIT: Duration = Duration::from_secs(60);
const RES: u32 = 9001;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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

fn example_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/resource-example.sh")
}

/// Node 1 of a one-node cluster with the resource `web` (instance 9001): `sleep` kept alive by
/// the example script, its pid file in `<root>/res`.
struct Node {
    root: PathBuf,
    config_path: PathBuf,
    children: Vec<Child>,
}

impl Node {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("cm-e2e-res-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // Mutual TLS between the daemons (the shared secret is gone).
        let tls = root.join("tls");
        cm_io::transport::certgen::write_cluster_material(
            &tls,
            "e2e-res",
            &["n1"],
            cm_io::transport::certgen::today(),
        )
        .unwrap();
        // A sleep long and odd enough to be recognisable as this test's program.
        let program = format!("/bin/sleep {}", 900_000 + std::process::id() % 1000);
        let toml = format!(
            "name = \"e2e-res\"\n{tls}\
             [[node]]\nid = 1\nname = \"n1\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
             state_dir = \"{r}/state1\"\nmonitor_port = {}\ncms_port = {}\n\
             [[resource]]\nname = \"web\"\nscript = \"{script}\"\ntime_out = 5\n\
             instances = [{{ node = 1, id = {RES}, args = \"{r}/res {program}\" }}]\n\
             [params]\nprofile = \"fast\"\n",
            free_port(),
            free_port(),
            r = root.display(),
            tls = cm_daemons::local::tls_keys(&tls),
            script = example_script().display(),
        );
        let config_path = root.join("cluster.toml");
        std::fs::write(&config_path, toml).unwrap();
        Self {
            root,
            config_path,
            children: Vec::new(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.log"))
    }

    fn start_monitor(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_om_monitor"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg("1")
            .arg("--log")
            .arg("info")
            .arg("--agent-bin")
            .arg(env!("CARGO_BIN_EXE_cm_agent"))
            .arg("--server-bin")
            .arg(env!("CARGO_BIN_EXE_cm_server"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log("monitor")).unwrap())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// The resource program's pid, when its pid file names a live process.
    fn program_pid(&self) -> Option<i32> {
        let text =
            std::fs::read_to_string(self.root.join(format!("res/resource-{RES}.pid"))).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let alive =
            cm_io::process::proc_state(pid).is_some_and(|s| s != cm_core::dn::ProcState::Zombie);
        alive.then_some(pid)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cm_ctl"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// The state column of the resource table in `cm_ctl query`, if it has one for 9001.
    fn queried_state(&self) -> Option<String> {
        let out = self.ctl(&["query"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let table = &text[text.find("[  Resource State   ]")?..];
        table.lines().find_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells.len() == 4 && cells[2] == RES.to_string()).then(|| cells[3].to_owned())
        })
    }

    fn logs(&self) -> String {
        ["monitor", "agent", "server"]
            .iter()
            .map(|n| std::fs::read_to_string(self.log(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
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
        // The agent and server are the monitor's children, not ours.
        for a in scan("cm_agent", &self.config_path, 1) {
            sigkill(a.pid);
        }
        for s in scan("cm_server", &self.config_path, 1) {
            sigkill(s.pid);
        }
        if let Some(pid) = self.program_pid() {
            sigkill(pid);
        }
        if std::thread::panicking() || std::env::var_os("CM_TEST_LOGS").is_some() {
            eprintln!("logs of the test:\n{}", self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// §14: the agent starts a `fixed` resource, restarts it after a SIGKILL, shows it in
/// `cm_ctl query`, and `cm_ctl stop|start -I` stop and start it through its flag file.
#[test]
fn e2e_resources_a_fixed_resource_is_restarted_after_sigkill_and_obeys_cm_ctl() {
    let _s = serial();
    let mut node = Node::new("fixed");
    node.start_monitor();
    let mut first = None;
    assert!(
        wait_until(WAIT, || {
            first = node.program_pid();
            first.is_some()
        }),
        "the resource was never started\n{}",
        node.logs()
    );
    let first = first.unwrap();
    assert!(
        wait_until(WAIT, || node.queried_state().as_deref() == Some("Online")),
        "query never showed it Online: {:?}\n{}",
        node.queried_state(),
        node.logs()
    );

    let killed = Instant::now();
    sigkill(first);
    let mut second = None;
    assert!(
        wait_until(WAIT, || {
            second = node.program_pid().filter(|p| *p != first);
            second.is_some()
        }),
        "not restarted after SIGKILL\n{}",
        node.logs()
    );
    eprintln!(
        "measured: restarted {:?} after SIGKILL (restart_delay 1 s + check_interval 1 s + script time)",
        killed.elapsed()
    );

    let out = node.ctl(&["stop", "-I", "9001", "-t", "60"]);
    assert!(
        out.status.success(),
        "cm_ctl stop -I: {out:?}\n{}",
        node.logs()
    );
    assert_eq!(node.program_pid(), None, "stopped by -stop");
    assert_eq!(node.queried_state().as_deref(), Some("Stopped"));
    assert!(node.root.join("state1/instance_manual_start_9001").exists());
    // Not restarted while its flag exists.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        node.program_pid(),
        None,
        "restarted despite its manual-start flag"
    );

    let out = node.ctl(&["start", "-I", "9001", "-t", "60"]);
    assert!(
        out.status.success(),
        "cm_ctl start -I: {out:?}\n{}",
        node.logs()
    );
    assert!(node.program_pid().is_some(), "running again after start -I");
    assert!(!node.root.join("state1/instance_manual_start_9001").exists());
}

/// `cm_ctl res --list` and `res --check` on the shipped example script.
#[test]
fn e2e_resources_res_list_and_check_use_the_config_and_the_script() {
    let _s = serial();
    let node = Node::new("res");
    let out = node.ctl(&["res", "--list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("web") && text.contains("9001"),
        "{text}"
    );
    let out = node.ctl(&["res", "--check"]);
    assert!(out.status.success(), "{out:?}");
    // A script that is not executable fails the check, naming it.
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    let copy = node.root.join("copy.sh");
    std::fs::copy(example_script(), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = text.replace(
        &example_script().display().to_string(),
        &copy.display().to_string(),
    );
    std::fs::write(&node.config_path, text).unwrap();
    let out = node.ctl(&["res", "--check"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("not executable") && said.contains("copy.sh"),
        "{said}"
    );
}

mod pgbouncer {
    //! PgBouncer (Debian's package) as a `with_primary_of` resource of a real 1P2S PostgreSQL
    //! cluster (the `cm_local` library, fast profile): it runs only on the primary's node,
    //! pointing at the local primary; after that node is killed it runs only on the new
    //! primary's node and a client through it writes again.

    use std::path::Path;
    use std::time::Duration;

    use cm_core::ctl::ClusterStatus;
    use cm_core::resource::ResourceState;
    use cm_daemons::local::bench::execute;
    use cm_daemons::local::cluster::{is_normal, primary_node};
    use cm_daemons::local::{DEFAULT_PG_BIN, LocalCluster, LocalOptions, NODES};
    use cm_io::postgres::test_support::free_port;

    use super::{serial, sigkill, wait_until};

    const PATIENCE: Duration = Duration::from_secs(120);

    fn script() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/pgbouncer-resource.sh")
    }

    /// Kills every PgBouncer the test started (by pid file) when dropped, also on failure:
    /// they run in their own sessions, outside the cluster's process groups.
    struct Bouncers(std::path::PathBuf);

    impl Bouncers {
        fn pid(&self, n: u32) -> Option<i32> {
            let text =
                std::fs::read_to_string(self.0.join(format!("pgbouncer-{}.pid", 9000 + n))).ok()?;
            let pid: i32 = text.trim().parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.contains("pgbouncer").then_some(pid)
        }

        fn running(&self) -> Vec<u32> {
            (1..=NODES).filter(|n| self.pid(*n).is_some()).collect()
        }
    }

    impl Drop for Bouncers {
        fn drop(&mut self) {
            for n in 1..=NODES {
                if let Some(pid) = self.pid(n) {
                    sigkill(pid);
                }
            }
        }
    }

    fn state_on(s: &ClusterStatus, n: u32) -> Option<ResourceState> {
        s.resources.iter().find(|r| r.node.0 == n).map(|r| r.state)
    }

    #[test]
    fn e2e_resources_pgbouncer_follows_the_primary_across_a_node_kill() {
        let _s = serial();
        if !Path::new(DEFAULT_PG_BIN).join("initdb").exists() {
            eprintln!("skipped: no PostgreSQL in {DEFAULT_PG_BIN}");
            return;
        }
        assert!(
            Path::new("/usr/sbin/pgbouncer").exists(),
            "PgBouncer is missing: scripts/test.sh installs it (apt-get install pgbouncer)"
        );
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let dir = root.path().join("cluster");
        let run = root.path().join("pgbouncer");
        let opts = LocalOptions::new(dir, cm_core::params::Profile::Fast);
        // The PgBouncer ports; the DN ports are known once the cluster is created, so the
        // resource is appended to its config then, before any daemon starts.
        let ports: Vec<u16> = (1..=NODES).map(|_| free_port()).collect();
        let mut c = LocalCluster::create(opts).expect("create the local cluster");
        let instances: Vec<String> = (1..=NODES)
            .map(|n| {
                format!(
                    "{{ node = {n}, id = {}, args = \"{} {} {} postgres {}\" }}",
                    9000 + n,
                    run.display(),
                    ports[n as usize - 1],
                    c.dn_port(n),
                    cm_io::postgres::credential::passfile_path(&c.paths.state_dir(n)).display()
                )
            })
            .collect();
        // time_out 1 s: after a node kill the hand-over waits fencing floor + 2 × time_out ×
        // (1+ρ)/(1−ρ) ≈ 4.2 s (fast profile) from the dead node's last report.
        let resource = format!(
            "\n[[resource]]\nname = \"pgbouncer\"\nscript = \"{}\"\ntime_out = 1\n\
             placement = {{ with_primary_of = 1 }}\ninstances = [{}]\n",
            script().display(),
            instances.join(", ")
        );
        let config = c.paths.config();
        let mut text = std::fs::read_to_string(&config).unwrap();
        text += &resource;
        std::fs::write(&config, &text).unwrap();
        let bouncers = Bouncers(run);
        c.start_monitors().expect("start om_monitors");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let logs = |c: &LocalCluster| {
            (1..=NODES)
                .map(|n| {
                    let t = std::fs::read_to_string(c.paths.logs().join(format!("node{n}.log")))
                        .unwrap_or_default();
                    let lines: Vec<&str> = t.lines().collect();
                    lines[lines.len().saturating_sub(30)..].join("\n")
                })
                .collect::<Vec<_>>()
                .join("\n---\n")
        };

        // Normal, PgBouncer Online on the primary's node and Stopped on the others.
        let s = c
            .wait_until(
                "Normal with PgBouncer on the primary's node only",
                PATIENCE,
                |s| {
                    let Some(p) = primary_node(s) else {
                        return false;
                    };
                    is_normal(s)
                        && (1..=NODES).all(|n| {
                            let want = if n == p {
                                ResourceState::Online
                            } else {
                                ResourceState::Stopped
                            };
                            state_on(s, n) == Some(want)
                        })
                },
                |_| {},
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&c)));
        let p = primary_node(&s).unwrap();
        assert_eq!(bouncers.running(), vec![p], "PgBouncer processes");
        // PgBouncer trusts its local clients (the script's auth_type); the password is ignored.
        let via = |n: u32, sql: &str| rt.block_on(execute(ports[n as usize - 1], "", sql));
        via(p, "CREATE TABLE through_bouncer (x int)")
            .unwrap_or_else(|e| panic!("write through PgBouncer on node {p}: {e}\n{}", logs(&c)));
        via(p, "INSERT INTO through_bouncer VALUES (1)").unwrap();

        // The primary's node dies: its processes, PgBouncer included (a real crash takes it).
        let old = bouncers.pid(p).unwrap();
        let left = c.kill_node(p);
        sigkill(old);
        assert!(left.is_empty(), "survivors of the node kill: {left:?}");
        let killed = std::time::Instant::now();
        let s = c
            .wait_until(
                "a new primary with PgBouncer Online on its node",
                PATIENCE,
                |s| {
                    primary_node(s)
                        .is_some_and(|q| q != p && state_on(s, q) == Some(ResourceState::Online))
                },
                |_| {},
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&c)));
        let q = primary_node(&s).unwrap();
        eprintln!(
            "measured: PgBouncer Online on the new primary's node {q} {:?} after the node kill",
            killed.elapsed()
        );
        assert!(
            wait_until(PATIENCE, || via(
                q,
                "INSERT INTO through_bouncer VALUES (2)"
            )
            .is_ok()),
            "no write through PgBouncer on node {q}\n{}",
            logs(&c)
        );
        assert_eq!(
            bouncers.running(),
            vec![q],
            "PgBouncer runs only on the new primary's node"
        );
        let third = (1..=NODES).find(|n| *n != p && *n != q).unwrap();
        assert!(
            via(third, "SELECT 1").is_err(),
            "no PgBouncer on the standby's node"
        );
        drop(c);
        drop(bouncers);
    }
}
