use super::*;

#[test]
fn split_brain_timeout_is_63_s_with_defaults_and_3_cms() {
    assert_eq!(
        Params::defaults().split_brain_timeout(3),
        Duration::from_secs(63)
    );
}

#[test]
fn split_brain_timeout_follows_its_formula() {
    let mut p = Params::defaults();
    p.agent_connect_timeout = 2.0;
    p.agent_connect_retries = 10;
    p.agent_heartbeat_timeout = 5.0;
    // 5 × 2 × 10 + 5 + 10
    assert_eq!(p.split_brain_timeout(5), Duration::from_secs(115));
    assert_eq!(
        Params::defaults().split_brain_timeout(1),
        Duration::from_secs(33)
    );
}

#[test]
fn fencing_floor_with_defaults_is_about_7_6_s() {
    let f = Params::defaults().fencing_floor();
    // 6 × 1.01/0.99 = 6.1212… + 1 + 0.5
    assert_eq!(f.as_millis(), 7621);
}

#[test]
fn lease_is_shorter_than_min_election_timeout_by_the_drift_bound() {
    let p = Params::defaults();
    assert_eq!(p.leader_lease().as_millis(), 784); // 800 × 0.99 / 1.01
    assert_eq!(p.startup_vote_holdoff().as_millis(), 1632); // 1600 × 1.01 / 0.99 (ceil)
}

#[test]
fn read_only_thresholds() {
    let p = Params::defaults();
    assert_eq!(p.datastorage_threshold_value_check, 85);
    assert_eq!(p.read_only_prealarm_pct(), 68);
    assert_eq!(p.read_only_clear_pct(), 80);
}

#[test]
fn defaults_and_fast_profile_pass_the_ordering_rules() {
    assert!(
        Params::defaults().check_orderings().is_empty(),
        "{:?}",
        Params::defaults().check_orderings()
    );
    assert!(
        Params::fast().check_orderings().is_empty(),
        "{:?}",
        Params::fast().check_orderings()
    );
}

#[test]
fn a_self_fence_timeout_below_two_elections_is_rejected() {
    let mut p = Params::defaults();
    p.agent_self_fence_timeout = 5.2; // exactly 2 × 1.6 + 2 × 1: must exceed
    let problems = p.check_orderings();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "agent_self_fence_timeout");
}

#[test]
fn freshness_window_must_be_below_half_the_heartbeat_timeout() {
    let mut p = Params::defaults();
    p.wal_receiver_timeout = 3.1;
    p.instance_heartbeat_timeout = 6.0;
    assert_eq!(p.check_orderings()[0].0, "wal_receiver_timeout");
}

#[test]
fn toml_table_applies_profile_then_keys_and_reports_every_error() {
    let t: toml::Table = toml::from_str(
        "profile = \"fast\"\nagent_report_interval = 0.5\ncluster_starting_aribt_delay = 90\n",
    )
    .unwrap();
    let p = Params::from_toml_table(&t).unwrap();
    assert_eq!(p.profile, Profile::Fast);
    assert_eq!(p.agent_report_interval, 0.5);
    assert_eq!(p.cluster_starting_arbit_delay, 90);
    assert_eq!(p.instance_heartbeat_timeout, 1.5);

    let bad: toml::Table =
        toml::from_str("wait_static_primary_times = 3\nno_such = 1\nenable_self_fence = 7\n")
            .unwrap();
    let errs = Params::from_toml_table(&bad).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn set_and_get_by_text_like_cm_ctl() {
    let mut p = Params::defaults();
    p.set_text("phony_dead_effective_time", "7").unwrap();
    assert_eq!(
        p.get_text("phony_dead_effective_time").as_deref(),
        Some("7")
    );
    p.set_text("enable_transaction_read_only", "off").unwrap();
    assert_eq!(
        p.get_text("enable_transaction_read_only").as_deref(),
        Some("off")
    );
    assert_eq!(
        p.set_text("datastorage_threshold_value_check", "100"),
        Err(ParamError::Invalid {
            name: "datastorage_threshold_value_check".into(),
            reason: "100 is outside [1, 99]".into()
        })
    );
    assert!(matches!(
        p.set_text("nope", "1"),
        Err(ParamError::Unknown(_))
    ));
    assert_eq!(
        Params::side_of("agent_report_interval"),
        Some(ParamSide::Both)
    );
    assert_eq!(
        Params::side_of("cluster_starting_aribt_delay"),
        Some(ParamSide::Server)
    );
}

#[test]
fn candidate_waits() {
    let p = Params::defaults();
    assert_eq!(p.candidate_wait_rounds(false), 6);
    assert_eq!(p.candidate_wait_rounds(true), 180);
    assert_eq!(Params::STATIC_PRIMARY_WAIT_ROUNDS, 5);
}

#[test]
fn dn_start_bound_is_twenty_heartbeat_timeouts() {
    let mut odd = Params::defaults();
    odd.instance_heartbeat_timeout = 2.5;
    let table = [
        (Params::defaults(), Duration::from_secs(120)),
        (Params::fast(), Duration::from_secs(30)),
        (odd, Duration::from_secs(50)),
    ];
    for (p, want) in table {
        assert_eq!(p.dn_start_bound(), want, "{}", p.instance_heartbeat_timeout);
    }
}

/// Issue 16: the transport drops a connection whose sends stay unacknowledged this long.
#[test]
fn unacked_send_bound_is_two_election_timeouts_at_least_a_second() {
    let mut slow = Params::defaults();
    slow.election_timeout_max_ms = 5_000;
    let table = [
        (Params::defaults(), Duration::from_millis(3_200)),
        (Params::fast(), Duration::from_secs(1)),
        (slow, Duration::from_secs(10)),
    ];
    for (p, want) in table {
        assert_eq!(
            p.unacked_send_bound(),
            want,
            "{}",
            p.election_timeout_max_ms
        );
    }
}

#[test]
fn the_parameter_reference_in_docs_is_generated_from_this_table() {
    let committed = include_str!("../../docs/parameters.md");
    assert!(
        committed == reference_markdown(),
        "docs/parameters.md is stale: regenerate it with \
         `cargo run -p cm-core --example param_docs > docs/parameters.md`"
    );
}

#[test]
fn every_parameter_is_described_with_unit_default_and_range() {
    let all = Params::describe();
    assert_eq!(all.len(), Params::NAMES.len());
    let p = |n: &str| all.iter().find(|p| p.name == n).unwrap().clone();
    let hb = p("instance_heartbeat_timeout");
    assert_eq!(
        (hb.unit, hb.default.as_str(), hb.fast.as_str()),
        ("s", "6", "1.5")
    );
    assert_eq!(hb.range, "0.1 – 3600");
    assert!(
        hb.meaning.starts_with("Seconds without a DN report"),
        "{}",
        hb.meaning
    );
    assert!(!hb.meaning.contains('§'), "{}", hb.meaning);
    assert_eq!(p("disk_check_timeout").unit, "ms");
    assert_eq!(p("election_timeout_min_ms").unit, "ms");
    assert_eq!(p("wait_static_primary_times").unit, "rounds");
    assert_eq!(p("datastorage_threshold_value_check").unit, "%");
    assert_eq!(p("enable_self_fence").range, "on/off");
    assert_eq!(
        p("cluster_starting_arbit_delay").alias,
        Some("cluster_starting_aribt_delay")
    );
    assert_eq!(p("switchover_timeout").range, "1 – no limit");
}

#[test]
fn the_test_switches_are_not_parameters_and_say_so() {
    for name in TEST_SWITCH_NAMES {
        let mut p = Params::defaults();
        let err = p.set_text(name, "1").unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("test-only"), "{err}");
        assert!(err.contains("cm_ctl set"), "{err}");
        assert_eq!(p, Params::defaults());
        assert!(Params::canonical(name).is_none());
        assert!(!Params::describe().iter().any(|d| d.name == name));
        let text = format!(
            "name = \"t\"\n[[node]]\nid = 1\nname = \"n1\"\naddress = \"127.0.0.1\"\n\
             az = \"AZ1\"\nstate_dir = \"/s\"\nmonitor_port = 1\ncms_port = 2\n\
             [params]\n{name} = 1\n"
        );
        let err = crate::config::ClusterConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("params.{name}")) && err.contains("test-only"),
            "{err}"
        );
    }
    assert_eq!(Params::defaults().test, TestSwitches::default());
}

/// `Params::secs` takes a shortcut for whole nanoseconds; it must give exactly what
/// `Duration::from_secs_f64` gives (the machines' deadlines and the simulator's trace depend
/// on it), for parameter-like values, values a hair off them, and arbitrary bit patterns.
#[test]
fn secs_equals_from_secs_f64_everywhere() {
    let reference = |v: f64| Duration::from_secs_f64(v.max(0.0));
    let mut values = vec![
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::MIN_POSITIVE,
        5e-324,
        0.5e-9,
        1.5e-9,
        2.5e-9,
        0.3,
        0.7,
        0.1 + 0.2,
        4_503_599.627_370_496,
        4_503_599.627_370_497,
        9_007_199.254_740_992,
        1e7,
        1e9,
        1.8e10,
    ];
    for k in 0..200_000u32 {
        let base = f64::from(k) / 1000.0;
        values.push(base);
        values.push(f64::from_bits(base.to_bits() + 1));
        values.push(f64::from_bits(base.to_bits().saturating_sub(1)));
        values.push(f64::from(k) / 7.0);
    }
    let mut rng = crate::rng::Prng::new(12);
    for _ in 0..200_000 {
        values.push(rng.unit_f64() * 1e5);
        // Any finite non-negative bit pattern small enough for a Duration.
        let v = f64::from_bits(rng.next_u64() >> 2);
        if v < 1e15 {
            values.push(v);
        }
    }
    for (name, v) in [Params::defaults(), Params::fast()]
        .iter()
        .flat_map(|p| p.list())
        .filter_map(|(n, _, v)| v.parse::<f64>().ok().map(|f| (n, f)))
    {
        assert_eq!(Params::secs(v), reference(v), "parameter {name} = {v}");
    }
    for v in values {
        assert_eq!(Params::secs(v), reference(v), "{v:e} ({:#x})", v.to_bits());
    }
}
