//! End-to-end: real `cm_server` processes on loopback, driven by the real `cm_ctl` binary.
//!
//! Every process and directory is owned by a guard that kills and removes it on drop, also when
//! a test fails. Waits are bounded by generous patience limits that only stop a broken test
//! from hanging; no test asserts a timing. Three-CMS tests run stand-in agents (they only
//! report, with no DNs) because a CMS leader that sees at most one agent steps down (§5.3).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cm_core::ctl::{ClusterStatus, CmsRole};
use cm_core::ids::{NodeId, QuorumTerm, ReportSeq};
use cm_core::msg::{AgentReport, Endpoint, Envelope, Msg};
use cm_daemons::common::{Identity, load_security};
use cm_daemons::local::tls_keys;
use cm_io::http::ClientTls;
use cm_io::transport::{AddressBook, Limits, Security, Transport, TransportConfig, certgen};

/// Bound on any wait; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(90);

/// Distinct free loopback ports: every listener is held until all are chosen, so the OS cannot
/// hand out the same port twice.
#[derive(Default)]
struct Ports(Vec<TcpListener>);

impl Ports {
    fn next(&mut self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        self.0.push(l);
        port
    }
}

/// A cluster of `n` CMS nodes in a temporary directory, with its processes.
struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    cms_ports: Vec<u16>,
    /// Each cm_server's `cms_http_port` (§15).
    http_ports: Vec<u16>,
    servers: Vec<Option<Child>>,
    agents: Option<Agents>,
}

impl Cluster {
    fn new(n: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let tls = dir.path().join("tls");
        certgen::write_cluster_material(&tls, "e2e", &names, certgen::today()).unwrap();
        let mut toml = format!("name = \"e2e\"\n{}", tls_keys(&tls));
        let mut cms_ports = Vec::new();
        let mut http_ports = Vec::new();
        let mut ports = Ports::default();
        for id in 1..=n {
            let port = ports.next();
            cms_ports.push(port);
            let http = ports.next();
            http_ports.push(http);
            toml.push_str(&format!(
                "[[node]]\nid = {id}\nname = \"n{id}\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
                 state_dir = \"{}\"\nmonitor_port = {}\ncms_port = {port}\ncms_http_port = {http}\n",
                dir.path().join(format!("n{id}")).display(),
                ports.next()
            ));
        }
        toml.push_str("[[group]]\nid = 1\n");
        for id in 1..=n {
            toml.push_str(&format!(
                "[[group.member]]\ninstance = {}\nnode = {id}\ndata_dir = \"/nonexistent/dn{id}\"\nport = {}\n",
                6000 + id,
                ports.next()
            ));
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).unwrap();
        let servers = (0..n).map(|_| None).collect();
        Self {
            dir,
            config,
            cms_ports,
            http_ports,
            servers,
            agents: None,
        }
    }

    fn log_path(&self, node: u32) -> PathBuf {
        self.dir.path().join(format!("cms{node}.log"))
    }

    fn store_path(&self, node: u32) -> PathBuf {
        self.dir
            .path()
            .join(format!("n{node}"))
            .join("cms_quorum.store")
    }

    fn server_command(&self, node: u32) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cm_server"));
        c.arg("-c")
            .arg(&self.config)
            .arg("-n")
            .arg(node.to_string())
            .env_remove("CM_LOG_JSON")
            .env("CM_LOG", "info,cm_io=debug")
            .stdin(Stdio::null());
        c
    }

    fn start(&mut self, node: u32) {
        let log = std::fs::File::create(self.log_path(node)).unwrap();
        let child = self
            .server_command(node)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.servers[node as usize - 1] = Some(child);
    }

    fn start_all(&mut self) {
        for n in 1..=self.servers.len() as u32 {
            self.start(n);
        }
    }

    fn kill(&mut self, node: u32) {
        if let Some(mut c) = self.servers[node as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with(&self.config, args)
    }

    fn ctl_with(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cm_ctl"))
            .arg("-c")
            .arg(config)
            .args(args)
            .env_remove("CM_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Polls `cm_ctl query --json` until `accept` holds; panics with the last output after
    /// [`PATIENCE`].
    fn wait_status(
        &mut self,
        what: &str,
        accept: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < PATIENCE {
            for (i, c) in self.servers.iter_mut().enumerate() {
                if let Some(status) = c.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!(
                        "cm_server {} exited ({status}) while waiting for {what}",
                        i + 1
                    );
                }
            }
            let out = self.ctl(&["query", "--json"]);
            if out.status.success() {
                let s: ClusterStatus = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "query --json is not a ClusterStatus: {e}\n{}",
                        text(&out.stdout)
                    )
                });
                if accept(&s) {
                    return s;
                }
                last = text(&out.stdout);
            } else {
                last = text(&out.stderr);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "gave up waiting for {what}; last output:\n{last}\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.servers.len() as u32 {
            let log = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s.push_str(&format!("--- cms{n} log (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Runs stand-in agents for every node (see the module docs).
    fn run_agents(&mut self) {
        self.agents = Some(Agents::start(
            self.servers.len() as u32,
            &self.cms_ports,
            &self.config,
        ));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agents = None;
        for n in 1..=self.servers.len() as u32 {
            self.kill(n);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn primaries(s: &ClusterStatus) -> Vec<NodeId> {
    s.cms
        .iter()
        .filter(|r| r.role == CmsRole::Primary)
        .map(|r| r.node)
        .collect()
}

/// Agents that only report (no DNs) to every CMS, on their own runtime thread.
struct Agents {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agents {
    fn start(nodes: u32, cms_ports: &[u16], config: &Path) -> Self {
        let cfg = cm_daemons::common::load_config(config).unwrap();
        let security: Vec<Security> = (1..=nodes)
            .map(|n| load_security(config, &cfg, &Identity::Node(NodeId(n))).unwrap())
            .collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ports = cms_ports.to_vec();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut book = AddressBook::new();
                for (i, p) in ports.iter().enumerate() {
                    book.insert(
                        Endpoint::server(NodeId(i as u32 + 1)),
                        format!("127.0.0.1:{p}"),
                    );
                }
                let mut agents = Vec::new();
                for n in 1..=nodes {
                    let (t, rx) = Transport::start(TransportConfig {
                        local: Endpoint::agent(NodeId(n)),
                        security: security[n as usize - 1].clone(),
                        listen: None,
                        addresses: book.clone(),
                        limits: Limits::default(),
                    })
                    .await
                    .unwrap();
                    for s in 1..=ports.len() as u32 {
                        t.connect(Endpoint::server(NodeId(s)));
                    }
                    // Replies are not needed; the receiver is kept so events are not refused.
                    agents.push((t, rx));
                }
                let report = async {
                    let mut seq = 0u64;
                    loop {
                        seq += 1;
                        for (t, rx) in &mut agents {
                            while rx.try_recv().is_ok() {}
                            for s in 1..=ports.len() as u32 {
                                let _ = t.send(&Envelope {
                                    from: t.local(),
                                    to: Endpoint::server(NodeId(s)),
                                    quorum_term: QuorumTerm(0),
                                    msg: Msg::AgentReport(AgentReport {
                                        seq: ReportSeq(seq),
                                        dns: Vec::new(),
                                        cms_process: None,
                                        normal_start: true,
                                        resources: Vec::new(),
                                    }),
                                });
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                };
                tokio::select! {
                    () = report => {}
                    _ = stopped => {}
                }
                for (t, _) in &agents {
                    t.shutdown().await;
                }
            });
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn e2e_srv_one_cms_leads_and_pause_is_committed() {
    let mut c = Cluster::new(1);
    c.start_all();
    let s = c.wait_status("a leader", |s| primaries(s).len() == 1);
    assert_eq!(primaries(&s), vec![NodeId(1)]);
    assert!(!s.paused);

    let out = c.ctl(&["pause"]);
    assert!(out.status.success(), "pause: {}", text(&out.stderr));
    let s = c.wait_status("paused", |s| s.paused);
    assert_eq!(s.cms.len(), 1);
    let out = c.ctl(&["query", "-C", "-v"]);
    let shown = text(&out.stdout);
    // Exit 1 exactly when the cluster is Unavailable (documented in `cm_ctl query --help`).
    assert_eq!(
        out.status.success(),
        !shown.contains("cluster_state   : Unavailable"),
        "{shown}{}",
        text(&out.stderr)
    );
    assert!(shown.contains("paused          : Yes"), "{shown}");
    assert!(shown.contains("Primary"), "{shown}");

    let out = c.ctl(&["list", "--param"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("fence_command"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn e2e_srv_three_cms_elect_one_leader_and_another_after_it_dies() {
    let mut c = Cluster::new(3);
    c.run_agents();
    c.start_all();
    let s = c.wait_status("exactly one leader", |s| primaries(s).len() == 1);
    assert_eq!(s.cms.len(), 3);
    let out = c.ctl(&["pause"]);
    assert!(out.status.success(), "pause: {}", text(&out.stderr));
    c.wait_status("paused", |s| s.paused);

    let first = c.wait_status("a leader", |s| primaries(s).len() == 1);
    let dead = primaries(&first)[0];
    c.kill(dead.0);
    let s = c.wait_status("a new leader", |s| {
        let p = primaries(s);
        p.len() == 1 && p[0] != dead
    });
    // Pause lives in the replicated state: the new leader has it.
    assert!(s.paused, "the new leader lost the committed pause");
}

/// Opens a link to node 1's cm_server claiming to be `ep`; true when it was accepted.
async fn claim(security: &Security, port: u16, ep: Endpoint) -> bool {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    cm_io::transport::handshake::client(security, tcp, ep, Endpoint::server(NodeId(1)))
        .await
        .is_ok()
}

#[test]
fn e2e_srv_foreign_misnamed_and_plaintext_peers_are_refused_and_logged() {
    let mut c = Cluster::new(1);
    c.start_all();
    c.wait_status("a leader", |s| primaries(s).len() == 1);
    let tls = c.dir.path().join("tls");
    let today = certgen::today();
    // Another CA, with certificates that name our nodes and our operator.
    let foreign = c.dir.path().join("foreign");
    certgen::write_cluster_material(&foreign, "foreign", &["n1"], today).unwrap();
    let cfg_text = std::fs::read_to_string(&c.config).unwrap();

    // cm_ctl with a foreign operator certificate: it refuses the material itself (it does
    // not chain to the configured CA) and says so, before connecting.
    let bad = c.dir.path().join("foreign.toml");
    let foreign_op = cfg_text
        .replace(
            &tls.join("operator.crt").display().to_string(),
            &foreign.join("operator.crt").display().to_string(),
        )
        .replace(
            &tls.join("operator.key").display().to_string(),
            &foreign.join("operator.key").display().to_string(),
        );
    std::fs::write(&bad, foreign_op).unwrap();
    let out = c.ctl_with(&bad, &["query"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("TLS material"), "{err}");
    assert!(err.contains("not issued by a CA of the CA file"), "{err}");

    // Raw links to the real server: a foreign certificate (loaded unchecked, trusting our CA
    // so that only the server can refuse it), plaintext bytes, a node certificate claiming
    // another node, a cm_ctl claim with a node certificate.
    let foreign_n1 = Security::Tls(std::sync::Arc::new(
        cm_io::transport::tls::Tls::load(
            cm_io::transport::tls::TlsFiles {
                ca: tls.join("ca.crt"),
                cert: foreign.join("n1.crt"),
                key: foreign.join("n1.key"),
            },
            [(NodeId(1), "n1".to_owned())].into(),
        )
        .unwrap(),
    ));
    let port = c.cms_ports[0];
    let cfg = cm_daemons::common::load_config(&c.config).unwrap();
    let n1 = load_security(&c.config, &cfg, &Identity::Node(NodeId(1))).unwrap();
    let ctl = Endpoint {
        node: NodeId(99),
        role: cm_core::msg::Role::Ctl,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"CMH1\x03\x00\x00\x00\x01").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await;
        assert!(!claim(&foreign_n1, port, Endpoint::agent(NodeId(1))).await);
        assert!(!claim(&n1, port, Endpoint::agent(NodeId(7))).await);
        assert!(!claim(&n1, port, ctl).await);
    });
    // The refusal is logged just after the connection closes: poll the log.
    let start = Instant::now();
    for reason in ["Untrusted", "NotTls", "UnknownNode", "WrongName"] {
        let needle = format!("reason={reason}");
        while !std::fs::read_to_string(c.log_path(1))
            .unwrap()
            .contains(&needle)
        {
            assert!(
                start.elapsed() < PATIENCE,
                "no refusal {reason} logged:\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The server is unharmed: it still answers the real cm_ctl.
    assert!(c.ctl(&["query", "--json"]).status.success());
}

#[test]
fn e2e_srv_usage_errors_exit_2() {
    let c = Cluster::new(1);
    let out = c.ctl(&["stop", "-n", "99"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("-n 99"), "{}", text(&out.stderr));
    let out = c.ctl(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn e2e_srv_no_server_means_cannot_connect_and_exit_1() {
    let c = Cluster::new(1);
    let out = c.ctl(&["query"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("can't connect to cm_server"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn e2e_srv_corrupt_store_stops_the_start_naming_the_file() {
    let c = Cluster::new(1);
    let store = c.store_path(1);
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, b"this is not a quorum store").unwrap();
    let mut child = c
        .server_command(1)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("cm_server with a corrupt store did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn e2e_srv_malformed_input_without_auth_is_refused_without_harm() {
    use std::io::{Read, Write};
    let mut c = Cluster::new(1);
    c.start_all();
    c.wait_status("a leader", |s| primaries(s).len() == 1);
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", c.cms_ports[0])).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    // A frame header with a huge length, then garbage, instead of the handshake.
    let mut junk = b"CM\x01\x00\xff\xff\xff\xff".to_vec();
    junk.extend(std::iter::repeat_n(0xAB, 4096));
    let _ = raw.write_all(&junk);
    let mut buf = Vec::new();
    // The server closes the connection (EOF or reset) without ever accepting it.
    let _ = raw.read_to_end(&mut buf);
    assert!(
        !buf.ends_with(&[0xA5]),
        "the server accepted an unauthenticated peer"
    );
    let out = c.ctl(&["query", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: ClusterStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(primaries(&s), vec![NodeId(1)]);
}

#[test]
fn e2e_srv_sigterm_exits_cleanly_and_check_sees_the_process() {
    let mut c = Cluster::new(1);
    c.start_all();
    c.wait_status("a leader", |s| primaries(s).len() == 1);
    let cfg = c.config.display().to_string();
    let out = c.ctl(&["check", "-B", "cm_server", "-T", &cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut child = c.servers[0].take().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("cm_server ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(c.store_path(1).exists(), "the quorum store was not written");
    let out = c.ctl(&["check", "-B", "cm_server", "-T", &cfg]);
    assert_eq!(out.status.code(), Some(1));
}

/// One HTTPS GET to 127.0.0.1:`port`, verified with `tls`: (status, body).
fn http_get(tls: &ClientTls, port: u16, path: &str) -> (u16, String) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cm_io::http::request(addr, Some(tls), "GET", path, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"))
}

/// §15: a real cm_server serves `/metrics` on its `cms_http_port`, parsed by a Prometheus
/// text parser, and `/cluster` (the `cm_ctl query --json` object) as leader; `cm_ctl history`
/// prints the history that object carries.
#[test]
fn e2e_srv_metrics_and_cluster_on_the_cms_http_port() {
    let mut c = Cluster::new(1);
    c.start_all();
    c.wait_status("a leader", |s| primaries(s).len() == 1);
    let port = c.http_ports[0];
    let tls = ClientTls::from_ca_file(&c.dir.path().join("tls").join("ca.crt"), "n1").unwrap();
    // §16: plain HTTP on the TLS port gets no HTTP answer (and is counted below).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let plain = cm_io::http::request(addr, None, "GET", "/metrics", Duration::from_secs(10));
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let mut leader = None;
    let mut handshake_refusals = None;
    for _ in 0..50 {
        let (status, body) = http_get(&tls, port, "/metrics");
        assert_eq!(status, 200, "{body}");
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        assert!(
            scrape.docs.contains_key("cm_server_leader"),
            "{:?}",
            scrape.docs
        );
        leader = scrape
            .samples
            .iter()
            .find(|s| s.metric == "cm_server_leader")
            .map(|s| s.value.clone());
        handshake_refusals = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "cm_server_connections_refused_total"
                    && s.labels.get("reason") == Some("http_handshake")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            });
        if leader == Some(prometheus_parse::Value::Gauge(1.0)) {
            break;
        }
        // Published at most once a second.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        leader,
        Some(prometheus_parse::Value::Gauge(1.0)),
        "{}",
        c.logs()
    );
    assert_eq!(
        handshake_refusals,
        Some(1.0),
        "the plain-HTTP connection is counted"
    );
    let (status, body) = http_get(&tls, port, "/cluster");
    assert_eq!(status, 200, "{body}");
    let cluster: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cluster["cluster"], "e2e");
    assert!(cluster["history"].is_array(), "{body}");
    assert_eq!(http_get(&tls, port, "/nothing").0, 404);

    let out = c.ctl(&["history", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed.is_array(), "{}", text(&out.stdout));
    let out = c.ctl(&["history"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// One connection through a [`RecordingRelay`]: the bytes each way, as forwarded.
#[derive(Clone, Debug, Default)]
struct Captured {
    /// Client to server.
    up: Vec<u8>,
    /// Server to client.
    down: Vec<u8>,
}

/// A TCP relay on loopback that forwards every connection to `to` and records what it forwards
/// (the eavesdropper of issue 15's "no plaintext on the wire" check). Its threads end when the
/// relay is dropped (the listener) and when either side closes (the pumps).
struct RecordingRelay {
    port: u16,
    captured: std::sync::Arc<std::sync::Mutex<Vec<Captured>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl RecordingRelay {
    fn start(to: u16) -> Self {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let captured = Arc::new(Mutex::new(Vec::<Captured>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (record, halt) = (Arc::clone(&captured), Arc::clone(&stop));
        let acceptor = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let inbound = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => return,
                };
                inbound.set_nonblocking(false).unwrap();
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(Captured::default());
                    all.len() - 1
                };
                let pump =
                    |mut from: std::net::TcpStream, mut to: std::net::TcpStream, up: bool| {
                        let record = Arc::clone(&record);
                        std::thread::spawn(move || {
                            use std::io::{Read as _, Write as _};
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                // Recorded before it is forwarded: whatever the far end may have
                                // read is in the capture when the test looks.
                                {
                                    let mut all = record.lock().unwrap();
                                    let c = &mut all[index];
                                    if up { &mut c.up } else { &mut c.down }
                                        .extend_from_slice(&buf[..n]);
                                }
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            let _ = from.shutdown(std::net::Shutdown::Both);
                        });
                    };
                pump(
                    inbound.try_clone().unwrap(),
                    outbound.try_clone().unwrap(),
                    true,
                );
                pump(outbound, inbound, false);
            }
        });
        Self {
            port,
            captured,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn captured(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for RecordingRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A value only this test sends: cm_ctl carries it to cm_server in a `set` request and reads
/// it back in the parameter list.
const NEEDLE: &str = "/opt/relay-needle/fence-7f3a9c";

/// Runs a one-node cluster (TLS, or `allow_plaintext`), puts a recording relay in front of its
/// cm_server and drives the real cm_ctl through it (`set`, `list --param`, `query --json`); returns
/// what the relay forwarded.
fn ctl_traffic_through_a_relay(plaintext: bool) -> Vec<Captured> {
    let mut c = Cluster::new(1);
    if plaintext {
        let cfg = std::fs::read_to_string(&c.config).unwrap();
        let cfg = cfg.replacen(
            "name = \"e2e\"\n",
            "name = \"e2e\"\nallow_plaintext = true\n",
            1,
        );
        std::fs::write(&c.config, cfg).unwrap();
    }
    c.start_all();
    c.wait_status("a leader", |s| primaries(s).len() == 1);
    let relay = RecordingRelay::start(c.cms_ports[0]);
    // cm_ctl's copy of the config names the relay as node 1's cm_server.
    let cfg = std::fs::read_to_string(&c.config).unwrap();
    let real = format!("cms_port = {}\n", c.cms_ports[0]);
    assert!(cfg.contains(&real), "{cfg}");
    let relayed = c.dir.path().join("relayed.toml");
    std::fs::write(
        &relayed,
        cfg.replace(&real, &format!("cms_port = {}\n", relay.port)),
    )
    .unwrap();
    let set = format!("fence_command={NEEDLE}");
    let out = c.ctl_with(&relayed, &["set", "--param", "--server", "-k", &set]);
    assert!(out.status.success(), "set: {}", text(&out.stderr));
    let out = c.ctl_with(&relayed, &["list", "--param"]);
    assert!(out.status.success(), "list: {}", text(&out.stderr));
    // The value went to cm_server and came back, through the relay.
    assert!(text(&out.stdout).contains(NEEDLE), "{}", text(&out.stdout));
    let out = c.ctl_with(&relayed, &["query", "--json"]);
    assert!(out.status.success(), "query: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("127.0.0.1"),
        "{}",
        text(&out.stdout)
    );
    let captured = relay.captured();
    assert!(captured.len() >= 3, "cm_ctl did not go through the relay");
    captured
}

/// Issue 15's "done when": a recording relay between two real components (cm_ctl and
/// cm_server) captures no plaintext of a known request or reply field under TLS, and does
/// capture it with `allow_plaintext` (so this test can fail).
#[test]
fn e2e_srv_a_relay_between_cm_ctl_and_cm_server_sees_no_plaintext_under_tls() {
    // Fields of the request (the parameter's value), of the replies (the parameter's name
    // in the list, the node's address and name in the status) and the plaintext hello.
    let fields: [&[u8]; 4] = [NEEDLE.as_bytes(), b"fence_command", b"127.0.0.1", b"CMH1"];
    let tls = ctl_traffic_through_a_relay(false);
    for (i, conn) in tls.iter().enumerate() {
        // Every connection opens with a TLS handshake record (ClientHello: 0x16 0x03 0x01),
        // and the server answers with one (ServerHello: 0x16 0x03 0x03).
        assert!(
            conn.up.starts_with(&[0x16, 0x03]),
            "connection {i} did not open with a TLS handshake: {:02x?}",
            &conn.up[..conn.up.len().min(16)]
        );
        assert!(
            conn.down.starts_with(&[0x16, 0x03]),
            "connection {i}: the server did not answer with TLS: {:02x?}",
            &conn.down[..conn.down.len().min(16)]
        );
        for f in fields {
            assert!(
                !contains(&conn.up, f) && !contains(&conn.down, f),
                "connection {i} carried `{}` in the clear under TLS",
                String::from_utf8_lossy(f)
            );
        }
    }
    // The control: without TLS the same traffic shows every field.
    let plain = ctl_traffic_through_a_relay(true);
    for f in fields {
        assert!(
            plain
                .iter()
                .any(|c| contains(&c.up, f) || contains(&c.down, f)),
            "the plaintext control did not show `{}`: the test could not fail",
            String::from_utf8_lossy(f)
        );
    }
    assert!(plain.iter().all(|c| !c.up.starts_with(&[0x16, 0x03])));
}
