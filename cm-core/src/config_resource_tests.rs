use core::time::Duration;

use crate::config::{ClusterConfig, ConfigError, EXAMPLE_CONFIG, Placement};
use crate::ids::{GroupId, InstanceId, NodeId};

const ROUTER: &str = r#"
[[resource]]
name = "router"
script = "/opt/cm/router.sh"
instances = [{ node = 1, id = 9001, args = "--port 6432" }, { node = 2, id = 9002 }, { node = 3, id = 9003 }]
placement = { with_primary_of = 1 }
"#;

fn with(extra: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::from_toml_str(&format!("{EXAMPLE_CONFIG}\n{extra}"))
}

/// The locations of every issue, or a panic when the config is valid.
fn issues(extra: &str) -> Vec<(String, String)> {
    match with(extra) {
        Err(ConfigError::Invalid(v)) => v.into_iter().map(|i| (i.location, i.message)).collect(),
        other => panic!("expected issues, got {other:?}"),
    }
}

fn only_issue(extra: &str) -> (String, String) {
    let v = issues(extra);
    assert_eq!(v.len(), 1, "{v:?}");
    v.into_iter().next().unwrap()
}

#[test]
fn defaults_follow_the_spec() {
    let c = with(
        r#"
[[resource]]
name = "app"
script = "/opt/app.sh"
instances = [{ node = 2, id = 9001 }]
"#,
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.check_interval, Duration::from_secs(1));
    assert_eq!(r.time_out, Duration::from_secs(10));
    assert_eq!(r.restart_delay, Duration::from_secs(1));
    assert_eq!(r.restart_period, Duration::from_secs(1));
    assert_eq!(r.restart_times, None);
    assert_eq!(r.abnormal_timeout, Duration::from_secs(30));
    assert_eq!(r.placement, Placement::Fixed);
    assert_eq!(r.instances[0].args, "");
    assert_eq!(
        c.resource_instance(InstanceId(9001)).unwrap().1.node,
        NodeId(2)
    );
}

#[test]
fn with_primary_of_and_explicit_values_parse() {
    let c = with(&format!(
        "{ROUTER}check_interval = 0.5\ntime_out = 3\nrestart_times = 4\nrestart_delay = 0\n"
    ))
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.placement, Placement::WithPrimaryOf(GroupId(1)));
    assert_eq!(r.check_interval, Duration::from_millis(500));
    assert_eq!(r.time_out, Duration::from_secs(3));
    assert_eq!(r.restart_times, Some(4));
    assert_eq!(r.restart_delay, Duration::ZERO);
    assert_eq!(r.instances[0].args, "--port 6432");
    let fixed = with(&ROUTER.replace("{ with_primary_of = 1 }", "\"fixed\"")).unwrap();
    assert_eq!(fixed.resources[0].placement, Placement::Fixed);
}

#[test]
fn a_long_or_duplicate_name_is_refused() {
    let long = "x".repeat(33);
    let (at, msg) = only_issue(&ROUTER.replace("\"router\"", &format!("\"{long}\"")));
    assert_eq!(at, "resource[0].name");
    assert!(msg.contains("1 to 32"), "{msg}");
    // 32 is fine.
    with(&ROUTER.replace("\"router\"", &format!("\"{}\"", "x".repeat(32)))).unwrap();
    let second = ROUTER.replace("900", "910");
    let (at, msg) = only_issue(&format!("{ROUTER}{second}"));
    assert_eq!(at, "resource[1].name");
    assert!(msg.contains("duplicate resource name"), "{msg}");
}

#[test]
fn a_relative_script_is_refused() {
    let (at, msg) = only_issue(&ROUTER.replace("/opt/cm/router.sh", "router.sh"));
    assert_eq!(at, "resource[0].script");
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn instance_ids_are_unique_and_disjoint_from_dn_ids() {
    let (at, msg) = only_issue(&ROUTER.replace("id = 9002", "id = 6002"));
    assert_eq!(at, "resource[0].instances[1].id");
    assert!(msg.contains("DN instance id"), "{msg}");
    let (at, msg) = only_issue(&ROUTER.replace("id = 9002", "id = 9001"));
    assert_eq!(at, "resource[0].instances[1].id");
    assert!(msg.contains("duplicate"), "{msg}");
    // Across resources too.
    let other =
        "[[resource]]\nname = \"b\"\nscript = \"/b\"\ninstances = [{ node = 1, id = 9003 }]\n";
    let (at, _) = only_issue(&format!("{ROUTER}{other}"));
    assert_eq!(at, "resource[1].instances[0].id");
}

#[test]
fn an_unknown_node_and_no_instances_are_refused() {
    let fixed = ROUTER.replace("{ with_primary_of = 1 }", "\"fixed\"");
    let (at, _) = only_issue(&fixed.replace("node = 3, id = 9003", "node = 8, id = 9003"));
    assert_eq!(at, "resource[0].instances[2].node");
    let (at, _) = only_issue("[[resource]]\nname = \"a\"\nscript = \"/a\"\n");
    assert_eq!(at, "resource[0].instances");
}

#[test]
fn bad_durations_and_counts_name_their_key() {
    for (key, value) in [
        ("check_interval", "0"),
        ("check_interval", "0.099"),
        ("time_out", "-1"),
        ("restart_delay", "-0.5"),
        ("restart_period", "100000"),
        ("abnormal_timeout", "0"),
        ("restart_times", "-2"),
    ] {
        let (at, _) = only_issue(&format!("{ROUTER}{key} = {value}\n"));
        assert_eq!(at, format!("resource[0].{key}"), "{key} = {value}");
    }
}

#[test]
fn a_check_interval_below_100_ms_is_refused_and_100_ms_accepted() {
    let (at, msg) = only_issue(&format!("{ROUTER}check_interval = 0.05\n"));
    assert_eq!(at, "resource[0].check_interval");
    assert!(msg.contains("0.1 s"), "{msg}");
    let c = with(&format!("{ROUTER}check_interval = 0.1\n"));
    assert_eq!(
        c.expect("100 ms is accepted").resources[0].check_interval,
        Duration::from_millis(100)
    );
}

#[test]
fn placement_must_name_a_group_covered_by_instances() {
    let (at, msg) = only_issue(&ROUTER.replace("with_primary_of = 1", "with_primary_of = 4"));
    assert_eq!(at, "resource[0].placement");
    assert!(msg.contains("group 4"), "{msg}");
    let (at, msg) = only_issue(&ROUTER.replace(", { node = 3, id = 9003 }", ""));
    assert_eq!(at, "resource[0].instances");
    assert!(msg.contains("node 3 has none"), "{msg}");
    let (at, msg) = only_issue(&ROUTER.replace("\"floating\"", "").replace(
        "placement = { with_primary_of = 1 }",
        "placement = \"floating\"",
    ));
    assert_eq!(at, "resource[0].placement");
    assert!(msg.contains("not a placement"), "{msg}");
}

#[test]
fn unknown_keys_are_syntax_errors() {
    let err = with(&format!("{ROUTER}restart_time = 3\n")).unwrap_err();
    assert!(err.to_string().contains("restart_time"), "{err}");
}
