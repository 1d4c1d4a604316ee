//! cm_agent's HTTP endpoints (SPEC.md §15) on the node's `rest_port`: cm-core decides every
//! answer ([`cm_core::agent::answer`]) from the snapshot the event loop publishes after each
//! step and a fresh clock reading per request; this file only renders JSON and the metrics.
//! A request costs no PostgreSQL connection and never waits for the event loop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm_core::agent::{AgentHealth, RestBody};
use cm_core::dn::DnRole;
use cm_core::resource::ResourceState;
use cm_core::time::Instant;
use cm_io::event_loop::Clock;
use cm_io::http::{self, HttpLimits, HttpRequest, HttpResponse, HttpStats};
use cm_io::transport::Security;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The published snapshot.
pub(crate) type Snapshot = watch::Receiver<Arc<AgentHealth>>;

/// How long to wait before binding the port again after it failed (in use, say): the agent
/// keeps supervising its DNs meanwhile.
const REBIND_DELAY: Duration = Duration::from_secs(5);

/// OpenMetrics text, what prometheus-client writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP endpoints' own thread; dropping it stops the server and joins the thread.
pub(crate) struct RestThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RestThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the endpoints on their own thread with a single-threaded runtime, so a health check
/// never waits behind the agent's own work (a status query, a report, a journal write): the
/// answer reads the published snapshot only. The thread sleeps while no request comes.
pub(crate) fn spawn_thread(
    addr: SocketAddr,
    snapshot: Snapshot,
    security: Security,
    counters: Counters,
) -> anyhow::Result<RestThread> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP endpoints' runtime: {e}"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cm_agent-http".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    () = serve(addr, snapshot, security, counters) => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP endpoints' thread: {e}"))?;
    Ok(RestThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Serves the endpoints on `addr` until the task is dropped; retries the bind every
/// [`REBIND_DELAY`] while it fails.
pub(crate) async fn serve(
    addr: SocketAddr,
    snapshot: Snapshot,
    security: Security,
    counters: Counters,
) {
    let stats = Arc::new(HttpStats::default());
    let handler = Arc::new(Handler::new(
        snapshot,
        Clock::process(),
        Arc::clone(&stats),
        &counters,
    ));
    loop {
        match http::bind(addr).await {
            Ok(listener) => {
                let scheme = match security {
                    Security::Tls(_) => "https",
                    Security::Plaintext => "http",
                };
                tracing::info!(%addr, scheme, "HTTP endpoints (§15) listening");
                let h = Arc::clone(&handler);
                let handle = move |req: &HttpRequest| h.handle(req);
                let never = std::future::pending::<()>();
                http::serve_secure(
                    listener,
                    HttpLimits::default(),
                    Arc::new(handle),
                    stats,
                    never,
                    security,
                )
                .await;
                return;
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for the HTTP endpoints; retrying");
                tokio::time::sleep(REBIND_DELAY).await;
            }
        }
    }
}

/// The counters the executor keeps and /metrics shows (shared with [`super::exec::AgentExec`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// Event triggers.
    pub(crate) triggers: Arc<super::triggers::TriggerStats>,
    /// Resource scripts.
    pub(crate) scripts: Arc<super::exec::ScriptStats>,
    /// The node's TLS material (none with `allow_plaintext`), for the certificate expiry gauge.
    pub(crate) tls: Option<Arc<cm_io::transport::Tls>>,
    /// The agent's journal statistics (none with `journal_max_mb = 0`).
    pub(crate) journal: Option<Arc<cm_io::journal::JournalStats>>,
}

/// Answers one request from the latest snapshot.
pub(crate) struct Handler {
    snapshot: Snapshot,
    clock: Clock,
    metrics: Mutex<AgentMetrics>,
    stats: Arc<HttpStats>,
}

impl Handler {
    pub(crate) fn new(
        snapshot: Snapshot,
        clock: Clock,
        stats: Arc<HttpStats>,
        counters: &Counters,
    ) -> Self {
        Self {
            snapshot,
            clock,
            metrics: Mutex::new(AgentMetrics::new(counters)),
            stats,
        }
    }

    pub(crate) fn handle(&self, req: &HttpRequest) -> HttpResponse {
        let health = Arc::clone(&self.snapshot.borrow());
        let now = self.clock.now();
        if req.path == "/metrics" {
            let text = match self.metrics.lock() {
                Ok(mut m) => m.render(&health, now, &self.stats),
                Err(_) => return HttpResponse::text(500, "metrics unavailable\n"),
            };
            return HttpResponse {
                status: 200,
                content_type: METRICS_CONTENT_TYPE,
                body: text.into_bytes(),
            };
        }
        let answer = cm_core::agent::answer(&health, now, &req.path, &req.query);
        HttpResponse::json(answer.status, render(&answer.body))
    }
}

/// The JSON of a body. `/history` serves the `history` array of the leader's cluster status,
/// as the leader sends it; a leader that sends none yields `[]`.
pub(crate) fn render(body: &RestBody) -> Vec<u8> {
    let value = match body {
        RestBody::Member(m) => serde_json::to_value(m),
        RestBody::Cluster(s) => serde_json::to_value(&**s),
        RestBody::History(s) => serde_json::to_value(&**s).map(|v| {
            v.get("history")
                .cloned()
                .unwrap_or_else(|| serde_json::Value::Array(Vec::new()))
        }),
        RestBody::Liveness { stepped_ms_ago } => {
            Ok(serde_json::json!({ "stepped_ms_ago": stepped_ms_ago }))
        }
        RestBody::Error(e) => Ok(serde_json::json!({ "error": e })),
    };
    let mut out = value
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render: {e}\"}}").into_bytes());
    out.push(b'\n');
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Inst {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstState {
    instance: String,
    state: String,
}

/// Every resource state, as `cm_agent_resource_state`'s `state` label.
const RESOURCE_STATES: [ResourceState; 5] = [
    ResourceState::Online,
    ResourceState::Offline,
    ResourceState::Unknown,
    ResourceState::Stopped,
    ResourceState::Abnormal,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstRole {
    instance: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstPath {
    instance: String,
    path: String,
}

const ROLES: [(Option<DnRole>, &str); 5] = [
    (Some(DnRole::Primary), "primary"),
    (Some(DnRole::Standby), "standby"),
    (Some(DnRole::Pending), "pending"),
    (Some(DnRole::Down), "down"),
    (None, "unknown"),
];

/// The agent's metrics (§15), in a registry of its own (no global one), set from the snapshot
/// at each scrape. Counters count from the agent's start.
pub(crate) struct AgentMetrics {
    registry: Registry,
    role: Family<InstRole, Gauge>,
    term: Family<Inst, Gauge>,
    timeline: Family<Inst, Gauge>,
    lsn: Family<Inst, Gauge>,
    lag: Family<Inst, Gauge>,
    streaming: Family<Inst, Gauge>,
    read_only: Family<Inst, Gauge>,
    write_lease: Family<Inst, Gauge>,
    phony: Family<Inst, Gauge>,
    disk: Family<InstPath, Gauge>,
    restarts: Family<Inst, Counter>,
    answered_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    self_fences: Counter,
    http_requests: Counter,
    http_refused: Counter,
    http_handshake_failed: Counter,
    resource_state: Family<InstState, Gauge>,
    cert_remaining: Gauge,
    tls: Option<Arc<cm_io::transport::Tls>>,
    journal: crate::common::JournalCounters,
}

impl AgentMetrics {
    pub(crate) fn new(counters: &Counters) -> Self {
        let m = Self {
            registry: Registry::default(),
            role: Family::default(),
            term: Family::default(),
            timeline: Family::default(),
            lsn: Family::default(),
            lag: Family::default(),
            streaming: Family::default(),
            read_only: Family::default(),
            write_lease: Family::default(),
            phony: Family::default(),
            disk: Family::default(),
            restarts: Family::default(),
            answered_age: Gauge::default(),
            self_fences: Counter::default(),
            http_requests: Counter::default(),
            http_refused: Counter::default(),
            http_handshake_failed: Counter::default(),
            resource_state: Family::default(),
            cert_remaining: Gauge::default(),
            tls: counters.tls.clone(),
            journal: crate::common::JournalCounters::default(),
        };
        let mut m = m.register();
        let sub = m.registry.sub_registry_with_prefix("cm_agent");
        counters.triggers.register(sub);
        counters.scripts.register(sub);
        m.journal.register(sub);
        if let Some(j) = &counters.journal {
            m.journal.attach(Arc::clone(j));
        }
        m
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "cm_agent_dn_role",
            "The DN's role as the agent last knew it (1 for the current role)",
            self.role.clone(),
        );
        r.register(
            "cm_agent_dn_term",
            "The DN's durable CM term",
            self.term.clone(),
        );
        r.register(
            "cm_agent_dn_timeline",
            "Timeline of the DN's position",
            self.timeline.clone(),
        );
        r.register(
            "cm_agent_dn_lsn_bytes",
            "LSN of the DN's position (primary: flush; standby: max of receive and replay)",
            self.lsn.clone(),
        );
        r.register(
            "cm_agent_dn_replay_lag_bytes",
            "A standby's bytes behind the primary position the CMS leader sent (absent when unknown)",
            self.lag.clone(),
        );
        r.register(
            "cm_agent_dn_streaming_peers",
            "Standbys streaming from the DN as last read",
            self.streaming.clone(),
        );
        r.register(
            "cm_agent_dn_read_only",
            "default_transaction_read_only is on (1) or off (0)",
            self.read_only.clone(),
        );
        r.register(
            "cm_agent_dn_write_lease",
            "The lease-and-role part of /primary holds (1) or not (0)",
            self.write_lease.clone(),
        );
        r.register(
            "cm_agent_dn_phony_dead_hits",
            "Consecutive phony-dead hits of the DN",
            self.phony.clone(),
        );
        r.register(
            "cm_agent_dn_disk_usage_percent",
            "Usage of the DN's data and log paths, percent",
            self.disk.clone(),
        );
        r.register(
            "cm_agent_dn_restarts",
            "Restarts of the DN by this agent since it started",
            self.restarts.clone(),
        );
        r.register(
            "cm_agent_leader_answered_report_age_seconds",
            "Seconds since the send time of the newest report a CMS leader answered (absent: none yet)",
            self.answered_age.clone(),
        );
        r.register(
            "cm_agent_self_fences",
            "Primaries this agent killed by the self-fence since it started",
            self.self_fences.clone(),
        );
        r.register(
            "cm_agent_http_requests",
            "HTTP requests answered",
            self.http_requests.clone(),
        );
        r.register(
            "cm_agent_http_connections_refused",
            "HTTP connections closed at once because too many were open, in all or from the client's address",
            self.http_refused.clone(),
        );
        r.register(
            "cm_agent_http_handshakes_failed",
            "HTTP connections closed because their TLS handshake failed or was not done within 5 s (plain HTTP on the TLS port, say)",
            self.http_handshake_failed.clone(),
        );
        r.register(
            "cm_agent_resource_state",
            "1 for the state each local resource instance is in (SPEC 14), 0 for the others",
            self.resource_state.clone(),
        );
        if self.tls.is_some() {
            r.register(
                "cm_agent_cert_min_remaining_seconds",
                "Seconds until the first certificate this agent uses (its own or a CA) expires, by the wall clock",
                self.cert_remaining.clone(),
            );
        }
        self
    }

    /// Sets every metric from `h` at `now` and encodes the registry.
    pub(crate) fn render(&mut self, h: &AgentHealth, now: Instant, stats: &HttpStats) -> String {
        for i in &h.instances {
            let inst = Inst {
                instance: i.instance.to_string(),
            };
            for (role, name) in ROLES {
                let label = InstRole {
                    instance: inst.instance.clone(),
                    role: name.into(),
                };
                let current = if i.running {
                    i.role
                } else {
                    Some(DnRole::Down)
                };
                self.role
                    .get_or_create(&label)
                    .set(i64::from(current == role));
            }
            self.term.get_or_create(&inst).set(gauge(i.term.0));
            if let Some(p) = i.position {
                self.timeline
                    .get_or_create(&inst)
                    .set(i64::from(p.timeline.0));
                self.lsn.get_or_create(&inst).set(gauge(p.lsn.0));
            }
            let lag = (i.role == Some(DnRole::Standby))
                .then(|| lag_of(h, i, now))
                .flatten();
            match lag {
                Some(l) => {
                    self.lag.get_or_create(&inst).set(gauge(l));
                }
                None => {
                    self.lag.remove(&inst);
                }
            }
            let peers = i.downstreams.len();
            self.streaming
                .get_or_create(&inst)
                .set(i64::try_from(peers).unwrap_or(i64::MAX));
            self.read_only
                .get_or_create(&inst)
                .set(i64::from(i.read_only));
            let lease = i.write_lease(&h.params, now).is_ok();
            self.write_lease.get_or_create(&inst).set(i64::from(lease));
            self.phony
                .get_or_create(&inst)
                .set(i64::from(i.phony_dead_hits));
            for (path, pct) in [("data", i.data_disk_pct), ("log", i.log_disk_pct)] {
                let label = InstPath {
                    instance: inst.instance.clone(),
                    path: path.into(),
                };
                self.disk.get_or_create(&label).set(i64::from(pct));
            }
            catch_up(&self.restarts.get_or_create(&inst), i.restarts_total);
        }
        let age = h
            .answered_send
            .map_or(f64::NAN, |s| now.saturating_since(s).as_secs_f64());
        self.answered_age.set(age);
        for r in &h.resources {
            for state in RESOURCE_STATES {
                let label = InstState {
                    instance: r.instance.to_string(),
                    state: state.name().to_lowercase(),
                };
                self.resource_state
                    .get_or_create(&label)
                    .set(i64::from(r.state == state));
            }
        }
        if let Some(tls) = &self.tls {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.cert_remaining
                .set(tls.min_remaining_s(wall).unwrap_or(i64::MIN));
        }
        catch_up(&self.self_fences, h.self_fences);
        catch_up(&self.http_requests, stats.requests.load(Ordering::Relaxed));
        catch_up(&self.http_refused, stats.refused.load(Ordering::Relaxed));
        catch_up(
            &self.http_handshake_failed,
            stats.handshake_failed.load(Ordering::Relaxed),
        );
        self.journal.refresh();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

/// A standby's lag as `/replica?lag=` measures it (the same cm-core rule, through its body).
fn lag_of(h: &AgentHealth, i: &cm_core::agent::InstanceHealth, now: Instant) -> Option<u64> {
    let q = [("instance".to_owned(), i.instance.to_string())];
    match cm_core::agent::answer(h, now, "/replica", &q).body {
        RestBody::Member(m) => m.lag_bytes,
        _ => None,
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Raises a counter to `total` (the snapshot's count since start).
fn catch_up(counter: &Counter, total: u64) {
    let have = counter.get();
    if total > have {
        counter.inc_by(total - have);
    }
}

#[cfg(test)]
#[path = "rest_tests.rs"]
mod tests;
