use super::*;
use crate::agent::LeaderView;
use crate::dn::{Downstream, Upstream};
use crate::ids::{Lsn, Position, QuorumTerm};
use crate::params::Params;

const MB: u64 = 1 << 20;

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn view(primary: u32, primary_lsn: u64, at: Instant) -> LeaderView {
    LeaderView {
        sent: ms(10_000),
        primary: InstanceId(primary),
        term: Term(3),
        primary_position: Some((Position::new(1, primary_lsn), at)),
    }
}

/// DN 6001, primary at term 3, named by the leader in a report sent at 10 s.
fn primary() -> InstanceHealth {
    InstanceHealth {
        instance: InstanceId(6001),
        group: vec![InstanceId(6001), InstanceId(6002), InstanceId(6003)],
        running: true,
        fencing: false,
        role: Some(DnRole::Primary),
        db_state: Some(DbState::Normal),
        term: Term(3),
        query_ok: true,
        read_only: false,
        stepping_down: false,
        position: Some(Position::new(1, 100 * MB)),
        upstream: None,
        downstreams: vec![Downstream {
            instance: InstanceId(6002),
            reply_age: Duration::from_millis(100),
        }],
        status_at: ms(10_000),
        view: Some(view(6001, 100 * MB, ms(10_000))),
        phony_dead_hits: 0,
        data_disk_pct: 10,
        log_disk_pct: 10,
        disk_damaged: false,
        restarts_total: 0,
        replay: None,
    }
}

/// DN 6002, a standby streaming from 6001 (last message 0.5 s old at its sample at 10 s), at
/// `lsn`; the leader's copy of the primary's position (100 MB) arrived at 10 s.
fn standby(lsn: u64) -> InstanceHealth {
    InstanceHealth {
        instance: InstanceId(6002),
        role: Some(DnRole::Standby),
        position: Some(Position::new(1, lsn)),
        replay: Some(Lsn(lsn)),
        upstream: Some(Upstream {
            instance: InstanceId(6001),
            last_msg_age: Duration::from_millis(500),
        }),
        downstreams: Vec::new(),
        term: Term(2),
        ..primary()
    }
}

fn agent(instances: Vec<InstanceHealth>) -> AgentHealth {
    AgentHealth {
        node: NodeId(1),
        params: Params::defaults(),
        stepped_at: ms(10_000),
        leader: Some(NodeId(2)),
        answered_send: Some(ms(10_000)),
        self_fences: 0,
        instances,
        cluster: None,
        resources: Vec::new(),
    }
}

fn get(h: &AgentHealth, now: Instant, target: &str) -> RestAnswer {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    answer(h, now, path, &query)
}

fn reason(a: &RestAnswer) -> String {
    match &a.body {
        RestBody::Member(m) => m.reason.clone().unwrap_or_default(),
        RestBody::Error(e) => e.clone(),
        other => panic!("no reason in {other:?}"),
    }
}

#[test]
fn primary_and_its_alias_answer_from_the_write_lease_at_the_request_instant() {
    let h = agent(vec![primary()]);
    for path in ["/primary", "/read-write", "/primary/"] {
        assert_eq!(get(&h, ms(13_999), path).status, 200, "{path}");
    }
    // The report that named it was sent at 10 s: the lease window (6 − 2 × 1 s) ends at 14 s,
    // but a standby streams (reply 0.1 s old at the 10 s sample): 200 until that row is 2 s old.
    assert_eq!(get(&h, ms(11_899), "/primary").status, 200);
    let mut no_stream = primary();
    no_stream.downstreams.clear();
    let h = agent(vec![no_stream]);
    assert_eq!(get(&h, ms(13_999), "/primary").status, 200);
    let a = get(&h, ms(14_000), "/primary");
    assert_eq!(a.status, 503);
    assert!(
        reason(&a).contains("lease window 4.000 s"),
        "{}",
        reason(&a)
    );
    let RestBody::Member(m) = &a.body else {
        panic!("member body")
    };
    assert!(!m.write_lease);
    assert_eq!(
        (m.role.as_str(), m.term, m.group_term),
        ("primary", Term(3), Some(Term(3)))
    );
}

#[test]
fn replica_needs_a_normal_standby_streaming_from_the_current_primary() {
    let h = agent(vec![standby(100 * MB)]);
    assert_eq!(get(&h, ms(10_500), "/replica").status, 200);
    assert_eq!(
        get(&h, ms(10_500), "/replica?replication_state=streaming").status,
        200
    );
    // The last message was 0.5 s old at the 10 s sample: stale (wal_receiver_timeout 3 s) at
    // 12.5 s.
    assert_eq!(get(&h, ms(12_499), "/replica").status, 200);
    let a = get(&h, ms(12_500), "/replica");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "not streaming from the current primary 6001".into())
    );
    // Streaming from a member the leader no longer names primary.
    let mut s = standby(100 * MB);
    s.view = Some(view(6003, 100 * MB, ms(10_000)));
    assert_eq!(get(&agent(vec![s]), ms(10_500), "/replica").status, 503);
    let mut s = standby(100 * MB);
    s.db_state = Some(DbState::CatchUp);
    let a = get(&agent(vec![s]), ms(10_500), "/replica");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "the standby's state is CatchUp, not Normal".into())
    );
    // The primary is no standby.
    assert_eq!(
        get(&agent(vec![primary()]), ms(10_500), "/replica").status,
        503
    );
}

#[test]
fn replica_lag_is_measured_against_the_primary_position_the_leader_sent() {
    // 16 MB behind 100 MB.
    let h = agent(vec![standby(84 * MB)]);
    assert_eq!(get(&h, ms(10_500), "/replica?lag=16MB").status, 200);
    assert_eq!(get(&h, ms(10_500), "/replica?lag=16777216").status, 200);
    let a = get(&h, ms(10_500), "/replica?lag=16777215");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "replay lag 16777216 bytes exceeds 16777215".into())
    );
    let RestBody::Member(m) = &a.body else {
        panic!("member body")
    };
    assert_eq!(m.lag_bytes, Some(16 * MB));
    // The primary's position arrived at 10 s: usable until 2 report intervals later.
    assert_eq!(get(&h, ms(12_000), "/replica?lag=1GB").status, 200);
    let a = get(&h, ms(12_001), "/replica?lag=1GB");
    assert_eq!(a.status, 503);
    assert!(reason(&a).contains("older than 2 report intervals"));
    // /readiness: rest_max_lag (16 MB) for a standby.
    assert_eq!(get(&h, ms(10_500), "/readiness").status, 200);
    let h = agent(vec![standby(84 * MB - 1)]);
    assert_eq!(get(&h, ms(10_500), "/readiness").status, 503);
}

#[test]
fn replica_lag_counts_from_the_replay_position_not_the_received_one() {
    // Received everything (100 MB), replayed only 80 MB (replay paused or stalled).
    let mut s = standby(100 * MB);
    s.replay = Some(Lsn(80 * MB));
    let h = agent(vec![s.clone()]);
    assert_eq!(get(&h, ms(10_500), "/replica").status, 200);
    let a = get(&h, ms(10_500), "/replica?lag=16MB");
    assert_eq!(
        (a.status, reason(&a)),
        (
            503,
            format!("replay lag {} bytes exceeds {}", 20 * MB, 16 * MB)
        )
    );
    let RestBody::Member(m) = &a.body else {
        panic!("member body")
    };
    assert_eq!(
        (m.lsn, m.replay_lsn, m.lag_bytes),
        (Some(100 * MB), Some(80 * MB), Some(20 * MB))
    );
    assert_eq!(get(&h, ms(10_500), "/replica?lag=20MB").status, 200);
    assert_eq!(get(&h, ms(10_500), "/readiness").status, 503);
    // No replay position at all: the bound cannot be checked.
    s.replay = None;
    let a = get(&agent(vec![s]), ms(10_500), "/replica?lag=1GB");
    assert_eq!(
        (a.status, reason(&a)),
        (
            503,
            "the standby has no replay position (pg_last_wal_replay_lsn() is NULL)".into()
        )
    );
}

#[test]
fn read_only_health_and_readiness_combine_the_member_checks() {
    let down = InstanceHealth {
        running: false,
        query_ok: false,
        ..standby(0)
    };
    for (inst, read_only, health, ready) in [
        (primary(), 200, 200, 200),
        (standby(100 * MB), 200, 200, 200),
        (down, 503, 503, 503),
    ] {
        let h = agent(vec![inst]);
        assert_eq!(get(&h, ms(10_500), "/read-only").status, read_only);
        assert_eq!(get(&h, ms(10_500), "/health").status, health);
        assert_eq!(get(&h, ms(10_500), "/readiness").status, ready);
    }
    let failed = InstanceHealth {
        query_ok: false,
        ..primary()
    };
    let a = get(&agent(vec![failed]), ms(10_500), "/health");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "the instance's last status query failed".into())
    );
}

#[test]
fn liveness_is_the_agents_latest_step_within_two_report_intervals() {
    let h = agent(vec![primary()]);
    assert_eq!(get(&h, ms(12_000), "/liveness").status, 200);
    let a = get(&h, ms(12_001), "/liveness");
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        RestBody::Liveness {
            stepped_ms_ago: 2001
        }
    );
}

#[test]
fn cluster_and_history_serve_the_leaders_status_while_it_is_fresh() {
    let mut h = agent(vec![primary()]);
    let a = get(&h, ms(10_000), "/cluster");
    assert_eq!(
        (a.status, reason(&a)),
        (
            503,
            "no cluster status received from the CMS leader yet".into()
        )
    );
    let status = Arc::new(sample_status());
    assert_eq!(status.quorum_term, QuorumTerm(2));
    h.cluster = Some((ms(10_000), Arc::clone(&status)));
    assert_eq!(
        get(&h, ms(15_000), "/cluster"),
        RestAnswer {
            status: 200,
            body: RestBody::Cluster(Arc::clone(&status))
        }
    );
    assert_eq!(
        get(&h, ms(15_000), "/history").body,
        RestBody::History(Arc::clone(&status))
    );
    let a = get(&h, ms(15_001), "/cluster");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "the CMS leader's cluster status is 5.0 s old".into())
    );
    h.leader = None;
    let a = get(&h, ms(10_000), "/history");
    assert_eq!(
        (a.status, reason(&a)),
        (503, "no CMS leader answers this agent".into())
    );
}

/// Built from text so that fields added later with a default do not break it.
fn sample_status() -> ClusterStatus {
    toml::from_str(
        "cluster = \"t\"\nquorum_term = 2\ncms = []\nstate = \"Normal\"\nbalanced = true\n\
         paused = false\ngroups = []\n",
    )
    .expect("a cluster status")
}

#[test]
fn instance_selection_and_bad_queries_are_client_errors() {
    let mut other = standby(100 * MB);
    other.instance = InstanceId(7001);
    let h = agent(vec![primary(), other]);
    let a = get(&h, ms(10_500), "/primary");
    assert_eq!(
        (a.status, reason(&a)),
        (
            400,
            "this node runs several DNs (6001, 7001): add ?instance=ID".into()
        )
    );
    assert_eq!(get(&h, ms(10_500), "/primary?instance=6001").status, 200);
    assert_eq!(get(&h, ms(10_500), "/primary?instance=7001").status, 503);
    assert_eq!(get(&h, ms(10_500), "/replica?instance=7001").status, 200);
    let a = get(&h, ms(10_500), "/primary?instance=9");
    assert_eq!(
        (a.status, reason(&a)),
        (404, "no instance 9 on node1".into())
    );
    assert_eq!(get(&h, ms(10_500), "/primary?instance=x").status, 400);
    let a = get(&h, ms(10_500), "/replica?instance=7001&lag=lots");
    assert_eq!(
        (a.status, reason(&a)),
        (400, "lag `lots` is not a number of bytes".into())
    );
    let a = get(
        &h,
        ms(10_500),
        "/replica?instance=7001&replication_state=catchup",
    );
    assert_eq!(a.status, 400);
    assert_eq!(get(&h, ms(10_500), "/nope").status, 404);
}

#[test]
fn sizes_take_postgresql_units() {
    for (text, bytes) in [
        ("0", 0),
        ("1024", 1024),
        ("16MB", 16 * MB),
        ("16 mb", 16 * MB),
        ("8kB", 8192),
        ("1GB", 1 << 30),
        ("2TB", 2 << 40),
        ("5B", 5),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "MB",
        "-1",
        "1.5MB",
        "16XB",
        "99999999999999999999",
        "20000000TB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}
