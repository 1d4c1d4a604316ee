//! cm_server's `/metrics` and `/cluster` (SPEC.md §15) on the node's `cms_http_port`.
//!
//! The event loop owns the machine, so [`CmsMachine`](super::machine::CmsMachine) publishes a
//! [`Published`] view here at most once a second (and whenever leadership changes) and counts
//! what passes through it (reports in, Failover/Switchover/Lock1 out); the HTTP handler reads
//! only that view and the transport's counters. Decisions stay in cm-core; nothing here waits
//! for the loop.
//!
//! Metrics live in a registry owned by this struct (no global registry), named `cm_server_…`,
//! each with HELP text; counters start at 0 with the process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cm_core::Instant;
use cm_core::ctl::{ClusterStatus, GroupStatus};
use cm_core::dn::DnRole;
use cm_core::server::ServerStatus;
use cm_io::http::{HttpRequest, HttpResponse};
use cm_io::transport::TransportStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `Content-Type` of the metrics text (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A group label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// The group id.
    pub group: String,
}

/// A group and one arbitration state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The group id.
    pub group: String,
    /// The state name.
    pub state: String,
}

/// Why a connection was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// The arbitration states a group can be in, as `cm_server_group_arbitration_state` names them.
pub const ARBITRATION_STATES: [&str; 4] = ["normal", "no_primary", "switchover", "paused"];

/// What the machine last published.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// The server's status at `at`.
    pub status: Option<ServerStatus>,
    /// The `cm_ctl query --json` object while this node arbitrates.
    pub cluster: Option<ClusterStatus>,
    /// The machine's clock when published.
    pub at: Instant,
}

/// Counters bumped by the machine wrapper as inputs and orders pass.
#[derive(Debug, Default)]
pub struct Passing {
    /// Agent reports received.
    pub reports_received: AtomicU64,
    /// Agent reports received while this node did not arbitrate.
    pub reports_dropped: AtomicU64,
    /// Failover commands sent (every promotion order, resends included).
    pub failovers: AtomicU64,
    /// Failovers decided: a promotion replacing a failed primary (the Failover alarm).
    pub failovers_decided: AtomicU64,
    /// Switchover commands sent.
    pub switchovers: AtomicU64,
    /// Lock1 commands sent.
    pub lock1s: AtomicU64,
    /// Control requests refused because they did not come from cm_ctl.
    pub ctl_refused: AtomicU64,
}

/// The registry and the view it is filled from.
pub struct ServerMetrics {
    registry: Registry,
    leader: Gauge,
    quorum_term: Gauge,
    lease_seconds: Gauge<f64, AtomicU64>,
    commit_index: Gauge,
    agents: Gauge,
    group_term: Family<GroupLabel, Gauge>,
    group_primary: Family<GroupLabel, Gauge>,
    group_state: Family<StateLabel, Gauge>,
    group_commits: Family<GroupLabel, Gauge>,
    failovers: Counter,
    failovers_decided: Counter,
    switchovers: Counter,
    lock1s: Counter,
    reports_received: Counter,
    reports_dropped: Counter,
    refused: Family<ReasonLabel, Counter>,
    ctl_refused: Counter,
    cert_min_remaining: Gauge,
    cert_expiry_alarms: Counter,
    /// Counted by the machine wrapper.
    pub passing: Passing,
    /// The journal's counters (SPEC §17).
    pub journal: crate::common::JournalCounters,
    published: Mutex<Published>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("cm_server"),
            leader: Gauge::default(),
            quorum_term: Gauge::default(),
            lease_seconds: Gauge::default(),
            commit_index: Gauge::default(),
            agents: Gauge::default(),
            group_term: Family::default(),
            group_primary: Family::default(),
            group_state: Family::default(),
            group_commits: Family::default(),
            failovers: Counter::default(),
            failovers_decided: Counter::default(),
            switchovers: Counter::default(),
            lock1s: Counter::default(),
            reports_received: Counter::default(),
            reports_dropped: Counter::default(),
            refused: Family::default(),
            ctl_refused: Counter::default(),
            cert_min_remaining: Gauge::default(),
            cert_expiry_alarms: Counter::default(),
            passing: Passing::default(),
            journal: crate::common::JournalCounters::default(),
            published: Mutex::new(Published::default()),
        };
        m.journal.register(&mut m.registry);
        let r = &mut m.registry;
        r.register(
            "leader",
            "1 while this cm_server leads the quorum with a lease and arbitrates, else 0",
            m.leader.clone(),
        );
        r.register(
            "quorum_term",
            "The CMS quorum term this cm_server is in",
            m.quorum_term.clone(),
        );
        r.register(
            "lease_remaining_seconds",
            "Seconds left on this leader's lease (0 when it holds none)",
            m.lease_seconds.clone(),
        );
        r.register(
            "commit_index",
            "Highest replicated log index known committed",
            m.commit_index.clone(),
        );
        r.register(
            "agents_connected",
            "Agents heard from recently",
            m.agents.clone(),
        );
        r.register(
            "group_term",
            "The group's committed term (leader only)",
            m.group_term.clone(),
        );
        r.register(
            "group_primary_instance",
            "Instance id of the group's primary, 0 when it has none (leader only)",
            m.group_primary.clone(),
        );
        r.register(
            "group_arbitration_state",
            "1 for the group's arbitration state (normal, no_primary, switchover, paused), 0 for the others (leader only)",
            m.group_state.clone(),
        );
        r.register(
            "group_commits_acknowledged",
            "1 while the group's primary can acknowledge a commit (it serves and, with dn_sync_mode = quorum, enough standbys stream from it), else 0 (leader only; issue 18)",
            m.group_commits.clone(),
        );
        r.register(
            "failovers_sent",
            "Failover commands sent to agents: every promotion order, a start's first primary and the old primary's restore after an aborted switchover included, resends included (failovers are cm_server_failovers_total)",
            m.failovers.clone(),
        );
        r.register(
            "failovers",
            "Failovers this leader decided: promotions replacing a failed primary (also hung or disk-damaged); not a start's first primary nor a restore after an aborted switchover",
            m.failovers_decided.clone(),
        );
        r.register(
            "switchovers_sent",
            "Switchover commands sent to agents",
            m.switchovers.clone(),
        );
        r.register(
            "lock1_sent",
            "Lock1 commands sent to agents",
            m.lock1s.clone(),
        );
        r.register(
            "reports_received",
            "Agent reports received",
            m.reports_received.clone(),
        );
        r.register(
            "reports_dropped",
            "Agent reports received while this cm_server did not arbitrate (not the leader, or no lease), so not acted on",
            m.reports_dropped.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused or closed, by reason (each TLS handshake refusal reason, malformed_frame, http_overload, http_handshake: a failed or late TLS handshake on the HTTP port)",
            m.refused.clone(),
        );
        r.register(
            "control_requests_refused",
            "Control requests refused because they came from a node certificate, not from cm_ctl (the operator certificate)",
            m.ctl_refused.clone(),
        );
        r.register(
            "cert_min_remaining_seconds",
            "Seconds until the first certificate in use (this node's or a CA) expires; negative once expired; 0 without TLS",
            m.cert_min_remaining.clone(),
        );
        r.register(
            "cert_expiry_alarms",
            "Expiry checks that found a certificate in use expiring within ssl_cert_expire_alert_threshold",
            m.cert_expiry_alarms.clone(),
        );
        m
    }

    /// Replaces the published view.
    pub fn publish(&self, view: Published) {
        if let Ok(mut p) = self.published.lock() {
            *p = view;
        }
    }

    /// The published `cm_ctl query --json` object, if this node arbitrated when it was taken.
    pub fn cluster(&self) -> Option<ClusterStatus> {
        self.published.lock().ok().and_then(|p| p.cluster.clone())
    }

    /// Fills the registry from the published view at `now` (the daemon clock, for the lease)
    /// and renders it.
    pub fn render(
        &self,
        now: Instant,
        transport: TransportStats,
        http_refused: u64,
        http_handshake_failed: u64,
    ) -> String {
        let view = self.published.lock().map(|p| p.clone()).unwrap_or_default();
        self.fill(&view, now);
        let pass = |a: &AtomicU64, c: &Counter| {
            c.inner()
                .store(a.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        pass(&self.passing.failovers, &self.failovers);
        pass(&self.passing.failovers_decided, &self.failovers_decided);
        pass(&self.passing.switchovers, &self.switchovers);
        pass(&self.passing.lock1s, &self.lock1s);
        pass(&self.passing.reports_received, &self.reports_received);
        pass(&self.passing.reports_dropped, &self.reports_dropped);
        pass(&self.passing.ctl_refused, &self.ctl_refused);
        self.journal.refresh();
        self.cert_expiry_alarms
            .inner()
            .store(transport.cert_expiry_alarms, Ordering::Relaxed);
        if let Some(left) = transport.cert_min_remaining_s {
            self.cert_min_remaining.set(left);
        }
        let others = [
            ("malformed_frame", transport.malformed),
            ("http_overload", http_refused),
            ("http_handshake", http_handshake_failed),
        ];
        for (reason, v) in transport.refused.by_reason().into_iter().chain(others) {
            let c = self.refused.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
            c.inner().store(v, Ordering::Relaxed);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        text
    }

    fn fill(&self, view: &Published, now: Instant) {
        let Some(st) = &view.status else {
            return;
        };
        let q = &st.quorum;
        self.leader.set(i64::from(st.arbitrating));
        self.quorum_term.set(clamp(q.term.0));
        self.commit_index.set(clamp(q.commit_index.0));
        self.agents
            .set(i64::try_from(st.agents_connected).unwrap_or(i64::MAX));
        let lease = q
            .lease_until
            .map_or(0.0, |until| until.saturating_since(now).as_secs_f64());
        self.lease_seconds.set(lease);
        self.group_term.clear();
        self.group_primary.clear();
        self.group_state.clear();
        self.group_commits.clear();
        let Some(cluster) = &view.cluster else {
            return;
        };
        for g in &cluster.groups {
            let label = GroupLabel {
                group: g.group.0.to_string(),
            };
            self.group_term.get_or_create(&label).set(clamp(g.term.0));
            let primary = primary_of(g).map_or(0, |i| i64::from(i.0));
            self.group_primary.get_or_create(&label).set(primary);
            self.group_commits
                .get_or_create(&label)
                .set(i64::from(g.commits_acknowledged));
            let state = arbitration_state(cluster, g);
            for s in ARBITRATION_STATES {
                let l = StateLabel {
                    group: label.group.clone(),
                    state: s.into(),
                };
                self.group_state
                    .get_or_create(&l)
                    .set(i64::from(s == state));
            }
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The member the leader sees as Primary (the static primary first, should two say so).
fn primary_of(g: &GroupStatus) -> Option<cm_core::InstanceId> {
    let primaries: Vec<_> = g
        .members
        .iter()
        .filter(|m| m.role == DnRole::Primary)
        .collect();
    primaries
        .iter()
        .find(|m| m.static_primary)
        .or_else(|| primaries.first())
        .map(|m| m.instance)
}

/// One of [`ARBITRATION_STATES`].
pub fn arbitration_state(cluster: &ClusterStatus, g: &GroupStatus) -> &'static str {
    if cluster.paused {
        "paused"
    } else if g.switchover.is_some() {
        "switchover"
    } else if primary_of(g).is_some() {
        "normal"
    } else {
        "no_primary"
    }
}

/// The handler of cm_server's HTTP port: `/metrics` always, `/cluster` while this node
/// arbitrates (503 with a JSON reason otherwise), 404 for anything else.
pub fn handle(
    metrics: &ServerMetrics,
    req: &HttpRequest,
    now: Instant,
    transport: TransportStats,
    http_refused: u64,
    http_handshake_failed: u64,
) -> HttpResponse {
    match req.path.as_str() {
        "/metrics" => HttpResponse {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: metrics
                .render(now, transport, http_refused, http_handshake_failed)
                .into_bytes(),
        },
        "/cluster" => match metrics.cluster() {
            Some(c) => match serde_json::to_vec(&c) {
                Ok(body) => HttpResponse::json(200, body),
                Err(e) => HttpResponse::json(500, error_body(&format!("cannot encode: {e}"))),
            },
            None => HttpResponse::json(
                503,
                error_body(
                    "this cm_server is not the arbitrating leader; ask the leader's cms_http_port",
                ),
            ),
        },
        _ => HttpResponse::json(
            404,
            error_body("no such endpoint: /metrics and /cluster are served here"),
        ),
    }
}

fn error_body(reason: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": reason })).unwrap_or_default()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
