use super::*;

use cm_core::agent::{InstanceHealth, LeaderView};
use cm_core::dn::{DbState, Downstream};
use cm_core::ids::{InstanceId, NodeId, Position, Term};
use cm_core::params::Params;
use cm_core::resource::{ResourceReport, ScriptExit, ScriptVerb};
use cm_io::http::HttpMethod;

fn primary() -> InstanceHealth {
    InstanceHealth {
        instance: InstanceId(6001),
        group: vec![InstanceId(6001), InstanceId(6002)],
        running: true,
        fencing: false,
        role: Some(DnRole::Primary),
        db_state: Some(DbState::Normal),
        term: Term(2),
        query_ok: true,
        read_only: false,
        stepping_down: false,
        position: Some(Position::new(3, 4096)),
        upstream: None,
        downstreams: vec![Downstream {
            instance: InstanceId(6002),
            reply_age: Duration::from_millis(10),
        }],
        status_at: Instant::from_secs(100),
        view: Some(LeaderView {
            sent: Instant::from_secs(100),
            primary: InstanceId(6001),
            term: Term(2),
            primary_position: Some((Position::new(3, 4096), Instant::from_secs(100))),
        }),
        phony_dead_hits: 1,
        data_disk_pct: 42,
        log_disk_pct: 7,
        disk_damaged: false,
        restarts_total: 3,
        replay: None,
    }
}

/// A handler over a snapshot taken at 100 s, with a clock that reads `now` (100.5 s: the
/// handler's own clock is the process clock, so tests call `answer`/`render` directly where
/// the instant matters).
fn health() -> AgentHealth {
    AgentHealth {
        node: NodeId(1),
        params: Params::defaults(),
        stepped_at: Instant::from_secs(100),
        leader: Some(NodeId(2)),
        answered_send: Some(Instant::from_secs(100)),
        self_fences: 1,
        instances: vec![primary()],
        cluster: None,
        resources: vec![ResourceReport {
            instance: InstanceId(9001),
            state: ResourceState::Abnormal,
        }],
    }
}

fn json(body: &RestBody) -> serde_json::Value {
    serde_json::from_slice(&render(body)).expect("JSON body")
}

#[test]
fn member_bodies_are_json_with_the_reason_on_503() {
    let h = health();
    let ok = cm_core::agent::answer(&h, Instant::from_millis(100_500), "/primary", &[]);
    assert_eq!(ok.status, 200);
    let v = json(&ok.body);
    assert_eq!(v["role"], "primary");
    assert_eq!(v["term"], 2);
    assert_eq!(v["lsn"], 4096);
    assert_eq!(v["write_lease"], true);
    assert_eq!(v["reason"], serde_json::Value::Null);
    let no = cm_core::agent::answer(&h, Instant::from_millis(100_500), "/replica", &[]);
    assert_eq!(no.status, 503);
    assert_eq!(
        json(&no.body)["reason"],
        "the instance is primary, not a standby"
    );
    let err = cm_core::agent::answer(&h, Instant::from_millis(100_500), "/nope", &[]);
    assert_eq!(
        json(&err.body),
        serde_json::json!({"error": "no endpoint /nope"})
    );
}

#[test]
fn history_serves_the_array_the_leader_sends_or_an_empty_one() {
    let mut status: serde_json::Value = serde_json::json!({
        "cluster": "t", "quorum_term": 1, "cms": [], "state": "Normal",
        "balanced": true, "paused": false, "groups": []
    });
    let parsed: cm_core::ctl::ClusterStatus =
        serde_json::from_value(status.clone()).expect("status");
    let body = RestBody::History(Arc::new(parsed.clone()));
    let served = json(&body);
    // A leader whose status has a `history` array gets it served as is.
    match serde_json::to_value(&parsed).expect("json").get("history") {
        Some(h) => assert_eq!(&served, h),
        None => assert_eq!(served, serde_json::json!([])),
    }
    status["cluster"] = "u".into();
    let cluster = RestBody::Cluster(Arc::new(serde_json::from_value(status).expect("status")));
    assert_eq!(json(&cluster)["cluster"], "u");
}

#[test]
fn metrics_parse_as_prometheus_text_with_the_snapshots_values() {
    let h = health();
    let stats = HttpStats::default();
    stats.requests.store(5, Ordering::Relaxed);
    cm_io::transport::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let today = cm_io::transport::certgen::today();
    cm_io::transport::certgen::write_cluster_material(dir.path(), "t", &["n1"], today).unwrap();
    let files = cm_io::transport::TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("n1.crt"),
        key: dir.path().join("n1.key"),
    };
    let tls = cm_io::transport::Tls::load(files, Default::default()).unwrap();
    let counters = Counters {
        tls: Some(Arc::new(tls)),
        ..Counters::default()
    };
    counters.triggers.runs.inc_by(2);
    counters.triggers.failures.inc();
    counters
        .scripts
        .count(ScriptVerb::Check, &ScriptExit::Code(0));
    counters
        .scripts
        .count(ScriptVerb::Check, &ScriptExit::Killed);
    counters
        .scripts
        .count(ScriptVerb::Start, &ScriptExit::Code(0));
    let mut m = AgentMetrics::new(&counters);
    let text = m.render(&h, Instant::from_millis(100_500), &stats);
    assert!(
        text.contains("# HELP cm_agent_dn_term The DN's durable CM term."),
        "{text}"
    );
    let lines = text
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let i = ("instance", "6001");
    assert_eq!(value("cm_agent_dn_role", &[i, ("role", "primary")]), 1.0);
    assert_eq!(value("cm_agent_dn_role", &[i, ("role", "standby")]), 0.0);
    assert_eq!(value("cm_agent_dn_term", &[i]), 2.0);
    assert_eq!(value("cm_agent_dn_timeline", &[i]), 3.0);
    assert_eq!(value("cm_agent_dn_lsn_bytes", &[i]), 4096.0);
    assert_eq!(value("cm_agent_dn_streaming_peers", &[i]), 1.0);
    assert_eq!(value("cm_agent_dn_write_lease", &[i]), 1.0);
    assert_eq!(value("cm_agent_dn_phony_dead_hits", &[i]), 1.0);
    assert_eq!(
        value("cm_agent_dn_disk_usage_percent", &[i, ("path", "data")]),
        42.0
    );
    assert_eq!(value("cm_agent_dn_restarts_total", &[i]), 3.0);
    assert_eq!(value("cm_agent_self_fences_total", &[]), 1.0);
    assert_eq!(value("cm_agent_http_requests_total", &[]), 5.0);
    assert_eq!(value("cm_agent_trigger_runs_total", &[]), 2.0);
    assert_eq!(value("cm_agent_trigger_failures_total", &[]), 1.0);
    let check = ("verb", "check");
    assert_eq!(value("cm_agent_resource_script_runs_total", &[check]), 2.0);
    assert_eq!(
        value("cm_agent_resource_script_failures_total", &[check]),
        1.0
    );
    let start = ("verb", "start");
    assert_eq!(value("cm_agent_resource_script_runs_total", &[start]), 1.0);
    let r = ("instance", "9001");
    assert_eq!(
        value("cm_agent_resource_state", &[r, ("state", "abnormal")]),
        1.0
    );
    assert_eq!(
        value("cm_agent_resource_state", &[r, ("state", "online")]),
        0.0
    );
    // The node certificate is valid for 825 days from today (certgen).
    let remaining = value("cm_agent_cert_min_remaining_seconds", &[]);
    assert!(
        (823.0 * 86_400.0..=826.0 * 86_400.0).contains(&remaining),
        "{remaining}"
    );
    assert_eq!(
        value("cm_agent_leader_answered_report_age_seconds", &[]),
        0.5
    );
    // Counters only rise: a second scrape with the same totals leaves them as they were.
    let again = m.render(&h, Instant::from_millis(100_600), &stats);
    assert!(
        again.contains("cm_agent_dn_restarts_total{instance=\"6001\"} 3\n"),
        "{again}"
    );
}

#[test]
fn the_handler_answers_from_the_published_snapshot() {
    let (tx, rx) = watch::channel(Arc::new(health()));
    let handler = Handler::new(
        rx,
        Clock::process(),
        Arc::new(HttpStats::default()),
        &Counters::default(),
    );
    let req = |path: &str| HttpRequest {
        method: HttpMethod::Get,
        path: path.into(),
        query: Vec::new(),
    };
    // The snapshot's agent stepped at 100 s of the boot clock: long ago on a host up longer.
    let live = handler.handle(&req("/liveness"));
    let mut h = health();
    h.stepped_at = Clock::process().now();
    tx.send_replace(Arc::new(h));
    assert_eq!(handler.handle(&req("/liveness")).status, 200);
    assert!(live.status == 503 || Clock::process().now() < Instant::from_secs(103));
    let m = handler.handle(&req("/metrics"));
    assert_eq!((m.status, m.content_type), (200, METRICS_CONTENT_TYPE));
}
