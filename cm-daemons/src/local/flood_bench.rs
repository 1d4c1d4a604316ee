//! `cm_local bench --flood` (issue 15 item 6): on one running local cluster, the CMS leader's
//! responsiveness and the node-crash failover time, without and with a flood of bad
//! connections at the cm_servers' ports, side by side in one run.
//!
//! Each round runs two halves, calm then flooded, each the same:
//!
//! 1. **Heartbeat probe**: an established operator link (cm_ctl's certificate) to the CMS
//!    leader sends a `TermCheck` every `quorum_heartbeat_interval_ms` for [`PROBE`]; the leader
//!    answers from the event loop that also sends the quorum's heartbeats. Measured: the
//!    interval between answers (nominal: the heartbeat interval) and the round trip.
//! 2. **Node-crash failover**: every process of the primary's node is killed at once; the time
//!    until an INSERT commits on another node (tried every 20 ms), as `cm_local bench`. When
//!    that node hosted the CMS leader too, an election comes first and the failover is longer:
//!    the halves are compared kind by kind.
//! 3. The node is restarted and the cluster waited for until Normal (not timed).
//!
//! The flooded half runs `cm_io::transport::flood` (the same flooder as
//! `cargo run -p cm-io --example flood_bench`) against every node's cm_server port — so
//! whichever cm_server leads, also after the failover's election, is under the flood — from
//! the probe's start to the failover's end. Loopback only, bounded by count and time.
//! Figures, not a test: the machine's other load shows in them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cm_core::ctl::{ClusterStatus, CmsRole};
use cm_core::ids::{NodeId, QuorumTerm};
use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_io::transport::flood::{Flood, FloodSpec, foreign_security};
use cm_io::transport::{AddressBook, Limits, Security, Transport, TransportConfig};

use super::bench::{ProfileResult, execute};
use super::cluster::primary_node;
use super::{LocalCluster, LocalOptions, NODES};

/// How long each half's heartbeat probe runs.
pub const PROBE: Duration = Duration::from_secs(10);
/// Bound on one flood: far beyond a probe and a failover, so the count bound and the bench's
/// own stop end it.
const FLOOD_MAX: Duration = Duration::from_secs(300);
/// How long after the probe the leader's refusal counter is read (`/metrics` is published at
/// most once a second).
const METRICS_LAG: Duration = Duration::from_millis(1500);
/// Flood connections per flooder per half, at most.
const FLOOD_MAX_CONNECTIONS: u64 = 200_000;

/// One half of the bench (calm or flooded), over every round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Half {
    /// Intervals between the leader's answers to the probe, ms.
    pub intervals_ms: Vec<f64>,
    /// Probe round trips, ms.
    pub rtts_ms: Vec<f64>,
    /// Probes sent and not answered within the phase (+1 s).
    pub unanswered: u64,
    /// The node-crash failovers.
    pub failovers: Vec<Failover>,
    /// Failovers that did not complete, with why.
    pub failures: Vec<String>,
    /// Flood connections opened.
    pub flood_connections: u64,
    /// Connections the probed leader refused during the probe and `METRICS_LAG` after it
    /// (its `/metrics`).
    pub leader_refusals: u64,
}

/// One node-crash failover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Failover {
    /// Seconds from the node kill to the first committed INSERT on another node.
    pub seconds: f64,
    /// The killed node hosted the CMS leader too.
    pub with_leader: bool,
}

/// The whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct FloodBench {
    /// The nominal heartbeat interval.
    pub heartbeat: Duration,
    /// Rounds run.
    pub rounds: u32,
    /// Flooder tasks.
    pub flooders: usize,
    /// Without the flood.
    pub calm: Half,
    /// With the flood.
    pub flooded: Half,
}

/// Nearest-rank quantile (NaN when empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn median(v: &[f64]) -> Option<f64> {
    ProfileResult {
        profile: cm_core::params::Profile::Default,
        trials: v.to_vec(),
        failures: Vec::new(),
    }
    .stats()
    .map(|(m, _, _)| m)
}

/// The two kinds of node crash: the primary's node alone, or the primary's node hosting the
/// CMS leader too (a quorum election comes first, about 2 s more with the default profile).
/// Which one a round gets depends on where the leader and the primary happen to be, so the
/// halves are compared kind by kind.
const KINDS: [(bool, &str); 2] = [(false, "primary only"), (true, "primary + CMS leader")];

impl Half {
    /// The failover times of one kind.
    fn of_kind(&self, with_leader: bool) -> Vec<f64> {
        self.failovers
            .iter()
            .filter(|f| f.with_leader == with_leader)
            .map(|f| f.seconds)
            .collect()
    }
}

impl FloodBench {
    /// The side-by-side table and the two goals of issue 15.
    pub fn render(&self) -> String {
        let nominal = self.heartbeat.as_secs_f64() * 1000.0;
        let mut out = format!(
            "flood bench: heartbeat interval {nominal:.0} ms, {} rounds, {} flooders on every \
             cm_server port, probe {} s per half\n\
             | half | answers | interval p50 ms | interval p99 ms | interval max ms | rtt p50 ms | rtt p99 ms | unanswered | failover median s: primary only (n) | primary + CMS leader (n) | failed | flood connections | leader refusals |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.rounds,
            self.flooders,
            PROBE.as_secs()
        );
        for (name, h) in [("no flood", &self.calm), ("flood", &self.flooded)] {
            let kind = |with_leader: bool| {
                let v = h.of_kind(with_leader);
                median(&v).map_or_else(|| "-".to_owned(), |m| format!("{m:.3} ({})", v.len()))
            };
            out.push_str(&format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
                h.rtts_ms.len(),
                quantile(&h.intervals_ms, 0.5),
                quantile(&h.intervals_ms, 0.99),
                quantile(&h.intervals_ms, 1.0),
                quantile(&h.rtts_ms, 0.5),
                quantile(&h.rtts_ms, 0.99),
                h.unanswered,
                kind(false),
                kind(true),
                h.failures.len(),
                h.flood_connections,
                h.leader_refusals,
            ));
        }
        let p99 = quantile(&self.flooded.intervals_ms, 0.99);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        out.push_str(&format!(
            "goal: flooded interval p99 within 2x nominal ({:.0} ms): {:.1} ms, {}\n",
            2.0 * nominal,
            p99,
            verdict(p99 <= 2.0 * nominal)
        ));
        let mut compared = false;
        for (with_leader, what) in KINDS {
            let calm = median(&self.calm.of_kind(with_leader));
            let flooded = median(&self.flooded.of_kind(with_leader));
            if let (Some(c), Some(f)) = (calm, flooded) {
                compared = true;
                out.push_str(&format!(
                    "goal: flooded failover within 10 % of unflooded ({what}): {:+.1} %, {}\n",
                    (f / c - 1.0) * 100.0,
                    verdict(f <= c * 1.1)
                ));
            }
        }
        if !compared {
            out.push_str(
                "goal: flooded failover within 10 % of unflooded: no kind of crash in both halves \
                 (run more --rounds)\n",
            );
        }
        out
    }
}

/// The CMS leader of a status.
fn cms_leader(s: &ClusterStatus) -> Option<NodeId> {
    s.cms
        .iter()
        .find(|r| r.role == CmsRole::Primary)
        .map(|r| r.node)
}

/// What one probe phase saw.
#[derive(Debug, Default)]
struct Probed {
    intervals_ms: Vec<f64>,
    rtts_ms: Vec<f64>,
    unanswered: u64,
}

/// Sends a `TermCheck` every `every` for [`PROBE`] to `leader` on an established operator
/// link; records when each answer arrives.
async fn probe(
    security: Security,
    leader: NodeId,
    port: u16,
    every: Duration,
) -> anyhow::Result<Probed> {
    let local = Endpoint {
        node: NodeId(0x00f1_0000 + std::process::id()),
        role: Role::Ctl,
    };
    let to = Endpoint::server(leader);
    let mut book = AddressBook::new();
    book.insert(to, format!("127.0.0.1:{port}"));
    let (t, mut rx) = Transport::start(TransportConfig {
        local,
        security,
        listen: None,
        addresses: book,
        limits: Limits {
            idle_timeout: None,
            ..Limits::default()
        },
    })
    .await?;
    t.connect(to);
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Some(NetEvent::Connected { .. }) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    if !matches!(connected, Ok(true)) {
        t.shutdown().await;
        bail!("the probe could not connect to the leader (node {leader})");
    }
    let mut sent: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
    let mut arrivals = Vec::new();
    let mut rtts_ms = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    let end = start + PROBE;
    let drain = end + Duration::from_secs(1);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick(), if tokio::time::Instant::now() < end => {
                nonce += 1;
                let env = Envelope {
                    from: local,
                    to,
                    quorum_term: QuorumTerm(0),
                    msg: Msg::TermCheck { nonce },
                };
                if t.send(&env).is_ok() {
                    sent.insert(nonce, tokio::time::Instant::now());
                }
            }
            ev = rx.recv() => match ev {
                Some(NetEvent::FrameReceived { envelope, .. }) => {
                    if let Msg::TermCheckReply { nonce, .. } = envelope.msg
                        && let Some(at) = sent.remove(&nonce)
                    {
                        let now = tokio::time::Instant::now();
                        rtts_ms.push((now - at).as_secs_f64() * 1000.0);
                        arrivals.push(now);
                    }
                }
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(drain) => break,
        }
        if tokio::time::Instant::now() >= end && sent.is_empty() {
            break;
        }
    }
    t.shutdown().await;
    let intervals_ms = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    Ok(Probed {
        intervals_ms,
        rtts_ms,
        unanswered: sent.len() as u64,
    })
}

/// The sum of `cm_server_connections_refused_total` on node `n`'s `/metrics` (0 when it
/// cannot be read).
fn refusals(c: &LocalCluster, n: u32) -> u64 {
    let port = c.ports.cms_http[n as usize - 1];
    let Ok(tls) = c.http_tls(n) else { return 0 };
    let Ok((200, body)) = get(port, Some(&tls), "/metrics") else {
        return 0;
    };
    body.lines()
        .filter(|l| l.starts_with("cm_server_connections_refused_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Kills the primary's node, times the first INSERT committed on another node, restarts the
/// node and waits until the cluster is Normal again.
fn failover(
    c: &mut LocalCluster,
    rt: &tokio::runtime::Runtime,
    password: &str,
) -> anyhow::Result<Failover> {
    let s = c.wait_normal(Duration::from_secs(180), |_| {})?;
    let p = primary_node(&s).context("no primary")?;
    let with_leader = cms_leader(&s) == Some(NodeId(p));
    let others: Vec<u16> = (1..=NODES)
        .filter(|n| *n != p)
        .map(|n| c.dn_port(n))
        .collect();
    let t0 = Instant::now();
    let left = c.kill_node(p);
    if !left.is_empty() {
        bail!("node {p} survived the kill: groups {left:?}");
    }
    let limit = Duration::from_secs(120);
    let took = 'found: loop {
        for port in &others {
            let insert = execute(*port, password, "INSERT INTO flood_bench DEFAULT VALUES");
            if rt.block_on(insert).is_ok() {
                break 'found t0.elapsed().as_secs_f64();
            }
        }
        if t0.elapsed() > limit {
            bail!("no INSERT committed within {limit:?} of the kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Failover {
        seconds: took,
        with_leader,
    })
}

/// Restarts node `n` and waits for Normal.
fn rejoin(c: &mut LocalCluster, n: u32) -> anyhow::Result<()> {
    c.start_monitor(n)?;
    c.wait_normal(Duration::from_secs(300), |_| {})?;
    Ok(())
}

/// The nodes not running (killed by the last failover).
fn down_nodes(c: &mut LocalCluster) -> Vec<u32> {
    (1..=NODES)
        .filter(|n| c.monitor_pid(*n).is_none())
        .collect()
}

/// One half of one round: probe, failover, rejoin; flooded when `flood` is given.
fn half(
    c: &mut LocalCluster,
    rt: &tokio::runtime::Runtime,
    password: &str,
    operator: &Security,
    flood: Option<&FloodSpec>,
    out: &mut Half,
) -> anyhow::Result<()> {
    let s = c.wait_normal(Duration::from_secs(300), |_| {})?;
    let leader = cms_leader(&s).context("no CMS leader")?;
    let before = refusals(c, leader.0);
    let running = match flood {
        Some(spec) => {
            let _guard = rt.enter();
            Some(Flood::start(spec.clone())?)
        }
        None => None,
    };
    let every = c.config.params.quorum_heartbeat_interval();
    let port = c.ports.cms[leader.0 as usize - 1];
    let probed = rt.block_on(probe(operator.clone(), leader, port, every));
    // cm_server publishes its metrics at most once a second.
    std::thread::sleep(METRICS_LAG);
    out.leader_refusals += refusals(c, leader.0).saturating_sub(before);
    let result = probed.and_then(|p| {
        out.intervals_ms.extend(p.intervals_ms);
        out.rtts_ms.extend(p.rtts_ms);
        out.unanswered += p.unanswered;
        failover(c, rt, password)
    });
    if let Some(f) = running {
        out.flood_connections += rt.block_on(f.stop());
    }
    match result {
        Ok(f) => {
            println!(
                "{}: writable on another node {:.3} s after the node kill ({})",
                if flood.is_some() { "flood" } else { "no flood" },
                f.seconds,
                if f.with_leader {
                    "primary + CMS leader"
                } else {
                    "primary only"
                }
            );
            out.failovers.push(f);
        }
        Err(e) => {
            println!("failover FAILED: {e:#}");
            out.failures.push(format!("{e:#}"));
        }
    }
    for n in down_nodes(c) {
        rejoin(c, n)?;
    }
    Ok(())
}

/// Brings up a cluster in `opts.dir`, runs `rounds` rounds (calm half, flooded half) with
/// `flooders` flooder tasks, tears the cluster down and returns the figures.
pub fn run(opts: LocalOptions, rounds: u32, flooders: usize) -> anyhow::Result<FloodBench> {
    let _ = std::fs::remove_dir_all(&opts.dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mut c, _, password) = super::bench::normal_cluster_with_table(opts, &rt, "flood_bench")?;
    let config_path = c.paths.config();
    let operator = crate::common::load_security(
        &config_path,
        &c.config,
        &crate::common::Identity::Operator {
            cert: None,
            key: None,
        },
    )?;
    let names: BTreeMap<NodeId, String> = c
        .config
        .nodes
        .iter()
        .map(|n| (n.id, n.name.clone()))
        .collect();
    // The flood claims to be node 1's agent with a certificate of another CA naming `n1`.
    let foreign = foreign_security(
        &c.paths.dir.join("flood"),
        &c.paths.tls_dir().join("ca.crt"),
        names,
        "n1",
    )?;
    let spec = FloodSpec {
        targets: (1..=NODES)
            .map(|n| {
                let port = c.ports.cms[n as usize - 1];
                (([127, 0, 0, 1], port).into(), Endpoint::server(NodeId(n)))
            })
            .collect(),
        claim: Endpoint::agent(NodeId(1)),
        foreign,
        flooders,
        max_connections: FLOOD_MAX_CONNECTIONS,
        max_duration: FLOOD_MAX,
    };
    let mut bench = FloodBench {
        heartbeat: c.config.params.quorum_heartbeat_interval(),
        rounds,
        flooders,
        calm: Half::default(),
        flooded: Half::default(),
    };
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        half(&mut c, &rt, &password, &operator, None, &mut bench.calm)?;
        half(
            &mut c,
            &rt,
            &password,
            &operator,
            Some(&spec),
            &mut bench.flooded,
        )?;
    }
    c.teardown();
    Ok(bench)
}

/// One HTTPS GET on loopback `port`: (status, body).
fn get(
    port: u16,
    tls: Option<&cm_io::http::ClientTls>,
    target: &str,
) -> anyhow::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Ok(cm_io::http::request(
        addr,
        tls,
        "GET",
        target,
        Duration::from_secs(5),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64, with_leader: bool) -> Failover {
        Failover {
            seconds,
            with_leader,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_and_the_goals_are_judged_from_the_figures() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
        let mut b = FloodBench {
            heartbeat: Duration::from_millis(200),
            rounds: 1,
            flooders: 4,
            calm: Half {
                intervals_ms: vec![200.0; 10],
                rtts_ms: vec![1.0; 11],
                failovers: vec![at(8.0, false), at(10.0, true)],
                ..Half::default()
            },
            flooded: Half {
                intervals_ms: vec![210.0, 390.0],
                rtts_ms: vec![2.0; 3],
                failovers: vec![at(8.4, false)],
                ..Half::default()
            },
        };
        let r = b.render();
        assert!(
            r.contains("within 2x nominal (400 ms): 390.0 ms, met"),
            "{r}"
        );
        assert!(r.contains("(primary only): +5.0 %, met"), "{r}");
        // A kind seen in one half only is not compared.
        assert!(!r.contains("(primary + CMS leader):"), "{r}");
        assert!(r.contains("| 8.000 (1) | 10.000 (1) |"), "{r}");
        b.flooded.intervals_ms.push(401.0);
        b.flooded.failovers = vec![at(9.0, false), at(10.5, true)];
        let r = b.render();
        assert!(r.contains("401.0 ms, MISSED"), "{r}");
        assert!(r.contains("(primary only): +12.5 %, MISSED"), "{r}");
        assert!(r.contains("(primary + CMS leader): +5.0 %, met"), "{r}");
        b.calm.failovers.clear();
        assert!(b.render().contains("no kind of crash in both halves"));
    }
}
