use super::*;

fn shipped(name: &str) -> String {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).expect("shipped scenario")
}

const SPEC_ROWS: &[&str] = &[
    "primary-process-killed",
    "primary-node-crash",
    "primary-agent-cut",
    "cms-leader-crash",
    "primary-frozen-1p4s-two-az",
    "primary-hang-d-state",
    "disk-over-threshold",
    "minority-az-isolated",
    "manual-stop-start",
];

#[test]
fn every_spec_12_row_ships_as_a_parsing_scenario() {
    for name in SPEC_ROWS.iter().chain(&["broken-lock1-quorum"]) {
        let s = Scenario::from_toml_str(&shipped(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, *name);
        assert!(s.first_fault().is_some(), "{name} has faults");
        assert!(s.expect.keys().all(|k| TIMING_NAMES.contains(&k.as_str())));
    }
}

fn with(replace: &str, by: &str) -> Result<Scenario, ScenarioError> {
    let text = shipped("primary-node-crash");
    assert!(text.contains(replace), "fixture contains {replace:?}");
    Scenario::from_toml_str(&text.replacen(replace, by, 1))
}

fn locations(e: &ScenarioError) -> Vec<&str> {
    e.problems.iter().map(|(l, _)| l.as_str()).collect()
}

#[test]
fn unknown_fault_action_is_reported_at_its_fault() {
    let e = with("action = \"restart_host\"", "action = \"reboot\"").expect_err("bad action");
    assert_eq!(locations(&e), vec!["fault[1]"]);
    assert!(e.problems[0].1.contains("reboot"), "{e}");
}

#[test]
fn fault_naming_an_unknown_node_is_reported_with_the_key() {
    let e = with("node = 1\n", "node = 9\n").expect_err("bad node");
    assert_eq!(locations(&e), vec!["fault[0]"]);
    assert!(e.problems[0].1.starts_with("node: node 9"), "{e}");
}

#[test]
fn missing_at_s_is_reported() {
    let e = with("at_s = 30\n", "").expect_err("no time");
    assert_eq!(e.problems[0], ("fault[0]".into(), "at_s: missing".into()));
}

#[test]
fn unknown_timing_name_and_bad_bounds_are_reported_under_expect() {
    let e = with("failover_sent_s = [6.5, 9.0]", "failover_s = [6.5, 9.0]").expect_err("name");
    assert_eq!(locations(&e), vec!["expect.failover_s"]);
    let e = with(
        "failover_sent_s = [6.5, 9.0]",
        "failover_sent_s = [9.0, 6.5]",
    )
    .expect_err("bounds");
    assert_eq!(locations(&e), vec!["expect.failover_sent_s"]);
}

#[test]
fn cluster_config_errors_carry_the_daemon_config_location() {
    let e = with(
        "az = \"AZ1\"\nstate_dir = \"/var/lib/cm/n2\"",
        "az = \"AZ9\"\nstate_dir = \"/var/lib/cm/n2\"",
    )
    .expect_err("bad az");
    assert_eq!(locations(&e), vec!["cluster.node[1].az"]);
}

#[test]
fn several_problems_are_all_reported() {
    let text = shipped("primary-node-crash")
        .replacen("node = 1\n", "node = 9\n", 1)
        .replacen("failover_sent_s", "failover_s", 1);
    let e = Scenario::from_toml_str(&text).expect_err("two problems");
    assert_eq!(locations(&e), vec!["fault[0]", "expect.failover_s"]);
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let e = Scenario::from_toml_str("name = \"x\"\nduration_s = = 3\n").expect_err("syntax");
    assert!(e.problems[0].1.contains("line 2"), "{e}");
}

#[test]
fn never_and_bounds_parse() {
    let s = Scenario::from_toml_str(&shipped("cms-leader-crash")).expect("parses");
    assert_eq!(s.expect.get("failover_sent_s"), Some(&Expect::Never));
    assert_eq!(
        s.expect.get("cms_leader_s"),
        Some(&Expect::Within(0.0, 3.0))
    );
    assert_eq!(s.faults[0].action, FaultAction::CrashCmsLeader);
}

#[test]
fn test_switches_come_from_the_scenario_schema_not_from_cluster_params() {
    let s = Scenario::from_toml_str(&shipped("broken-lock1-quorum")).unwrap();
    assert_eq!(s.config.params.test.lock1_quorum_override, 1);
    let text = shipped("primary-node-crash");
    let s = Scenario::from_toml_str(&format!(
        "{text}\n[test_switches]\nskip_fencing_floor = true\n"
    ))
    .unwrap();
    assert!(s.config.params.test.skip_fencing_floor);
    assert_eq!(s.config.params.test.lock1_quorum_override, 0);
    // The old spelling under [cluster.params] is the config's refusal.
    let e = with(
        "[cluster.params]\n",
        "[cluster.params]\ntest_skip_fencing_floor = true\n",
    )
    .expect_err("not a parameter");
    assert_eq!(
        locations(&e),
        vec!["cluster.params.test_skip_fencing_floor"]
    );
    assert!(e.problems[0].1.contains("test-only"), "{e}");
}
