//! `/metrics` of a real cm_server machine state, parsed by a Prometheus text parser
//! (`prometheus-parse`), and `/cluster`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cm_core::Instant;
use cm_core::config::ClusterConfig;
use cm_core::dn::{DbState, DnReport, DnRole, LockState};
use cm_core::ids::{CmdStamp, InstanceId, NodeId, QuorumTerm, ReportSeq};
use cm_core::io::{Machine, NetCommand, NetEvent, WriteCompleted};
use cm_core::msg::{AgentReport, CmsCommand, Endpoint, Envelope, Msg};
use cm_core::server::{ServerCommand, ServerInput};
use cm_core::time::WallMillis;
use cm_io::http::{HttpMethod, HttpRequest};
use cm_io::transport::TransportStats;

use super::*;
use crate::server::machine::CmsMachine;

const ONE_CMS: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/unused"
monitor_port = 17001
cms_port = 17101
cms_http_port = 18001
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d1"
port = 5432
"#;

fn get(path: &str) -> HttpRequest {
    HttpRequest {
        method: HttpMethod::Get,
        path: path.into(),
        query: Vec::new(),
    }
}

/// One DN report from node 1's agent: 6001 as `role`, having applied command `applied`.
fn report(seq: u64, role: DnRole, lock: LockState, applied: CmdStamp) -> ServerInput {
    let mut dn = DnReport::down(InstanceId(6001));
    dn.role = role;
    dn.db_state = DbState::Normal;
    dn.lock = lock;
    dn.last_applied = applied;
    let from = Endpoint::agent(NodeId(1));
    ServerInput::Net(NetEvent::FrameReceived {
        peer: from,
        envelope: Envelope {
            from,
            to: Endpoint::server(NodeId(1)),
            quorum_term: QuorumTerm(0),
            msg: Msg::AgentReport(AgentReport {
                seq: ReportSeq(seq),
                dns: vec![dn],
                cms_process: None,
                normal_start: false,
                resources: Vec::new(),
            }),
        },
    })
}

fn commands(orders: &[ServerCommand]) -> Vec<(CmdStamp, CmsCommand)> {
    orders
        .iter()
        .filter_map(|o| match o {
            ServerCommand::Net(NetCommand::Send { envelope }) => match &envelope.msg {
                Msg::Command(sc) => Some((
                    CmdStamp {
                        quorum_term: envelope.quorum_term,
                        seq: sc.seq,
                    },
                    sc.cmd.clone(),
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A single-CMS cm_server machine driven until it sent the first primary's Failover: every
/// write completes at once, the agent reports every second and obeys Lock1 at once.
fn driven() -> (CmsMachine, Arc<ServerMetrics>, Instant, Vec<CmsCommand>) {
    let cfg = ClusterConfig::from_toml_str(ONE_CMS).unwrap();
    let metrics = Arc::new(ServerMetrics::new());
    let mut m = CmsMachine::new(&cfg, NodeId(1), 7, None)
        .unwrap()
        .with_metrics(Arc::clone(&metrics));
    let mut now = Instant::ZERO;
    let mut pending = vec![ServerInput::WallClock(WallMillis(1_764_000_000_000))];
    let mut sent = Vec::new();
    let (mut seq, mut next_report) = (0, Instant::from_secs(1));
    let (mut lock, mut applied) = (LockState::None, CmdStamp::default());
    for _ in 0..10_000 {
        let input = match pending.pop() {
            Some(i) => i,
            None => {
                let at = m.next_deadline().unwrap_or(next_report).min(next_report);
                now = now.max(at);
                if now >= next_report {
                    seq += 1;
                    next_report = now + std::time::Duration::from_secs(1);
                    report(seq, DnRole::Pending, lock, applied)
                } else {
                    ServerInput::Tick
                }
            }
        };
        let orders = m.step(now, input);
        for o in &orders {
            if let ServerCommand::Persist(p) = o {
                pending.push(ServerInput::WriteCompleted(WriteCompleted {
                    token: p.token,
                    result: Ok(()),
                }));
            }
        }
        for (stamp, cmd) in commands(&orders) {
            if cmd == CmsCommand::Lock1 {
                lock = LockState::Prohibit;
            }
            applied = stamp;
            sent.push(cmd.clone());
            if matches!(cmd, CmsCommand::Failover { .. }) {
                return (m, metrics, now, sent);
            }
        }
    }
    panic!("no Failover was sent: {sent:?}");
}

fn scrape(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = BTreeMap::new();
    for s in &scrape.samples {
        let (prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v)) = s.value
        else {
            continue;
        };
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
    }
    for name in out.keys() {
        let base = name.split('{').next().unwrap_or_default();
        let family = base.trim_end_matches("_total");
        assert!(
            scrape.docs.contains_key(family) || scrape.docs.contains_key(base),
            "{base} has no HELP text: {:?}",
            scrape.docs
        );
    }
    out
}

#[test]
fn a_leaders_metrics_parse_and_carry_its_state_and_counters() {
    let (m, metrics, now, sent) = driven();
    // The machine publishes at leadership changes and once a second: publish what it has now.
    metrics.publish(Published {
        status: Some(m.status()),
        cluster: m.server().cluster_status(),
        at: now,
    });
    let mut transport = TransportStats {
        malformed: 2,
        ..TransportStats::default()
    };
    transport.refused.untrusted = 3;
    transport.refused.too_many_pending = 1;
    let resp = handle(&metrics, &get("/metrics"), now, transport, 4, 2);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.content_type, METRICS_CONTENT_TYPE);
    let text = String::from_utf8(resp.body).unwrap();
    let v = scrape(&text);
    let at = |k: &str| {
        *v.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in\n{text}"))
    };
    assert_eq!(at("cm_server_leader{}"), 1.0);
    let qterm = m.status().quorum.term.0 as f64;
    assert!(qterm >= 1.0);
    assert_eq!(at("cm_server_quorum_term{}"), qterm);
    assert!(at("cm_server_lease_remaining_seconds{}") > 0.0, "{text}");
    assert_eq!(
        at("cm_server_commit_index{}"),
        m.status().quorum.commit_index.0 as f64
    );
    assert_eq!(at("cm_server_group_term{group=1}"), 1.0);
    // The Failover was just sent: the leader has not seen 6001 as primary yet.
    assert_eq!(at("cm_server_group_primary_instance{group=1}"), 0.0);
    assert_eq!(
        at("cm_server_group_arbitration_state{group=1,state=no_primary}"),
        1.0
    );
    assert_eq!(
        at("cm_server_group_arbitration_state{group=1,state=normal}"),
        0.0
    );
    let count = |pick: fn(&CmsCommand) -> bool| sent.iter().filter(|c| pick(c)).count() as f64;
    assert_eq!(at("cm_server_failovers_sent_total{}"), 1.0);
    // The first primary's promotion is a start, not a failover.
    assert_eq!(at("cm_server_failovers_total{}"), 0.0);
    assert_eq!(
        at("cm_server_lock1_sent_total{}"),
        count(|c| *c == CmsCommand::Lock1)
    );
    assert_eq!(at("cm_server_switchovers_sent_total{}"), 0.0);
    assert!(at("cm_server_reports_received_total{}") >= 1.0);
    assert!(at("cm_server_reports_dropped_total{}") <= at("cm_server_reports_received_total{}"));
    assert_eq!(
        at("cm_server_connections_refused_total{reason=untrusted}"),
        3.0
    );
    assert_eq!(
        at("cm_server_connections_refused_total{reason=malformed_frame}"),
        2.0
    );
    assert_eq!(
        at("cm_server_connections_refused_total{reason=too_many_pending}"),
        1.0
    );
    assert_eq!(
        at("cm_server_connections_refused_total{reason=http_overload}"),
        4.0
    );
    assert_eq!(
        at("cm_server_connections_refused_total{reason=http_handshake}"),
        2.0
    );
}

#[test]
fn cluster_is_the_query_object_while_arbitrating_and_503_otherwise() {
    let (m, metrics, now, _) = driven();
    let cluster = m.server().cluster_status().expect("arbitrating");
    metrics.publish(Published {
        status: Some(m.status()),
        cluster: Some(cluster.clone()),
        at: now,
    });
    let resp = handle(
        &metrics,
        &get("/cluster"),
        now,
        TransportStats::default(),
        0,
        0,
    );
    assert_eq!(resp.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body, serde_json::to_value(&cluster).unwrap());
    assert!(body["history"].is_array());

    let follower = ServerMetrics::new();
    follower.publish(Published {
        status: Some(m.status()),
        cluster: None,
        at: now,
    });
    let resp = handle(
        &follower,
        &get("/cluster"),
        now,
        TransportStats::default(),
        0,
        0,
    );
    assert_eq!(resp.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not the arbitrating leader")
    );
    // A follower's metrics say so and carry no group series.
    let text = follower.render(now, TransportStats::default(), 0, 0);
    let v = scrape(&text);
    assert!(
        !v.keys().any(|k| k.starts_with("cm_server_group_")),
        "{text}"
    );
    assert_eq!(
        handle(
            &follower,
            &get("/nope"),
            now,
            TransportStats::default(),
            0,
            0
        )
        .status,
        404
    );
}

/// Issue 18, defect 3: whether a group can acknowledge a commit at all is visible in
/// `/metrics` as it is in `cm_ctl query` (`commits_acknowledged`), per group, from the
/// published cluster status.
#[test]
fn whether_a_group_can_acknowledge_commits_is_a_metric() {
    let (m, metrics, now, _) = driven();
    let mut cluster = m.server().cluster_status().expect("arbitrating");
    let scraped = |cluster: &ClusterStatus| {
        metrics.publish(Published {
            status: Some(m.status()),
            cluster: Some(cluster.clone()),
            at: now,
        });
        let text = metrics.render(now, TransportStats::default(), 0, 0);
        scrape(&text)
            .get("cm_server_group_commits_acknowledged{group=1}")
            .copied()
    };
    // The first primary's Failover was just sent: nothing can commit yet.
    assert!(!cluster.groups[0].commits_acknowledged);
    assert_eq!(scraped(&cluster), Some(0.0));
    cluster.groups[0].commits_acknowledged = true;
    assert_eq!(scraped(&cluster), Some(1.0));
    // A node that does not arbitrate publishes no cluster status: no group rows.
    metrics.publish(Published {
        status: Some(m.status()),
        cluster: None,
        at: now,
    });
    let text = metrics.render(now, TransportStats::default(), 0, 0);
    assert!(
        !text.contains("cm_server_group_commits_acknowledged{"),
        "{text}"
    );
}

#[test]
fn counters_start_at_zero_and_the_machine_publishes_itself() {
    let (_, metrics, now, _) = driven();
    // Published by the machine during the run (at its leadership change at least).
    assert!(metrics.cluster().is_some());
    let fresh = ServerMetrics::new();
    let v = scrape(&fresh.render(now, TransportStats::default(), 0, 0));
    for k in [
        "cm_server_failovers_sent_total{}",
        "cm_server_switchovers_sent_total{}",
        "cm_server_lock1_sent_total{}",
        "cm_server_reports_received_total{}",
        "cm_server_reports_dropped_total{}",
    ] {
        assert_eq!(v.get(k), Some(&0.0), "{k}");
    }
}

#[test]
fn certificate_expiry_is_exported_as_cm_server_cert_metrics() {
    let m = ServerMetrics::new();
    let now = Instant::ZERO;
    let tls = TransportStats {
        cert_min_remaining_s: Some(86_400),
        cert_expiry_alarms: 3,
        ..TransportStats::default()
    };
    let v = scrape(&m.render(now, tls, 0, 0));
    assert_eq!(
        v.get("cm_server_cert_min_remaining_seconds{}"),
        Some(&86_400.0)
    );
    assert_eq!(v.get("cm_server_cert_expiry_alarms_total{}"), Some(&3.0));
    assert_eq!(
        v.get("cm_server_control_requests_refused_total{}"),
        Some(&0.0)
    );
}
