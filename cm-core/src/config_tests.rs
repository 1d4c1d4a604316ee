use super::*;

use crate::config::EXAMPLE_CONFIG as THREE_NODES;

#[test]
fn a_good_config_parses_with_defaults() {
    let c = ClusterConfig::from_toml_str(THREE_NODES).unwrap();
    assert_eq!(c.cms_nodes(), vec![NodeId(1), NodeId(2), NodeId(3)]);
    assert_eq!(c.instances_on(NodeId(2)), vec![InstanceId(6002)]);
    assert_eq!(c.member(InstanceId(6003)).unwrap().1.node, NodeId(3));
    assert_eq!(c.params, Params::defaults());
    assert_eq!(c.az_priority(&"AZ2".into()), 2);
    assert_eq!(c.database.os_user, "postgres");
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let text = THREE_NODES
        .replace("id = 2\nname = \"n2\"", "id = 1\nname = \"n1\"")
        .replace("az = \"AZ2\"", "az = \"AZ9\"")
        .replace("node = 3\n", "node = 7\n")
        .replace(
            "[[group]]\nid = 1",
            "[params]\nagent_report_interval = 0.001\n\n[[group]]\nid = 1",
        );
    let err = ClusterConfig::from_toml_str(&text).unwrap_err();
    let ConfigError::Invalid(issues) = err else {
        panic!("{err:?}")
    };
    let locs: Vec<&str> = issues.iter().map(|i| i.location.as_str()).collect();
    assert!(locs.contains(&"node[1].id"), "{locs:?}");
    assert!(locs.contains(&"node[1].name"), "{locs:?}");
    assert!(locs.contains(&"node[2].az"), "{locs:?}");
    assert!(locs.contains(&"group[0].member[2].node"), "{locs:?}");
    assert!(locs.contains(&"params.agent_report_interval"), "{locs:?}");
}

#[test]
fn port_clashes_on_one_address_are_found() {
    let text = THREE_NODES.replacen("port = 5432", "port = 17101", 1);
    let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&text).unwrap_err() else {
        panic!()
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].location, "group[0].member[0].port");
    assert!(issues[0].message.contains("127.0.0.1:17101"));
}

#[test]
fn syntax_errors_and_unknown_keys_are_reported() {
    assert!(matches!(
        ClusterConfig::from_toml_str("name = "),
        Err(ConfigError::Syntax(_))
    ));
    let text = THREE_NODES.replacen("monitor_port = 17001", "monitor_port = 17001\nbogus = 1", 1);
    let err = ClusterConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn a_cluster_without_cms_is_invalid() {
    let text = THREE_NODES.replace("cms_port = 17101\n", "");
    let err = ClusterConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("cm_server"), "{err}");
}

/// Review finding B of issue 18: a trailing `/` put the full copy's build directory inside the
/// data directory; it (and a relative path) is rejected where it is written.
#[test]
fn a_data_dir_must_be_absolute_without_a_trailing_slash() {
    for (bad, says) in [
        ("/tmp/pg/dn1/", "ends with '/'"),
        ("tmp/pg/dn1", "not an absolute path"),
    ] {
        let text = THREE_NODES.replacen("\"/tmp/pg/dn1\"", &format!("{bad:?}"), 1);
        let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&text).unwrap_err() else {
            panic!("{bad}")
        };
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].location, "group[0].member[0].data_dir");
        assert!(issues[0].message.contains(says), "{issues:?}");
    }
}

#[test]
fn an_all_digit_node_name_is_refused_since_it_reads_as_a_node_id() {
    let text = THREE_NODES.replacen("name = \"n1\"", "name = \"2\"", 1);
    assert_ne!(text, THREE_NODES, "the example names node 1 `n1`");
    let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&text).unwrap_err() else {
        panic!()
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].location, "node[0].name");
    assert!(
        issues[0].message.contains("all digits"),
        "{}",
        issues[0].message
    );
}

/// The operator guide's config example is what people copy: it must parse.
#[test]
fn the_operator_guides_config_example_parses() {
    let guide = include_str!("../../docs/operator-guide.md");
    let start = guide
        .find("```toml\n")
        .expect("a ```toml block in the guide")
        + "```toml\n".len();
    let len = guide[start..].find("```").expect("the block's end");
    let c = ClusterConfig::from_toml_str(&guide[start..start + len])
        .unwrap_or_else(|e| panic!("docs/operator-guide.md's example: {e}"));
    assert_eq!(c.nodes.len(), 3);
}

#[test]
fn event_triggers_parse_and_a_relative_path_is_refused_by_its_key() {
    let good = format!(
        "event_triggers = {{ on_failover = \"/opt/cm/failover.sh\", on_stop = \"/opt/cm/stop.sh\" }}\n{THREE_NODES}"
    );
    let c = ClusterConfig::from_toml_str(&good).unwrap();
    assert_eq!(
        c.event_triggers.configured(),
        vec![
            ("on_stop", "/opt/cm/stop.sh"),
            ("on_failover", "/opt/cm/failover.sh")
        ]
    );
    assert_eq!(
        ClusterConfig::from_toml_str(THREE_NODES)
            .unwrap()
            .event_triggers,
        EventTriggers::default()
    );
    let bad = format!("event_triggers = {{ on_role_change = \"hooks/role.sh\" }}\n{THREE_NODES}");
    let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&bad).unwrap_err() else {
        panic!()
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].location, "event_triggers.on_role_change");
    assert!(issues[0].message.contains("absolute"), "{issues:?}");
    let unknown = format!("event_triggers = {{ on_reboot = \"/x\" }}\n{THREE_NODES}");
    let err = ClusterConfig::from_toml_str(&unknown).unwrap_err();
    assert!(err.to_string().contains("on_reboot"), "{err}");
}

#[test]
fn a_cms_http_port_needs_a_cm_server_and_a_free_port() {
    let ok = THREE_NODES.replacen(
        "cms_port = 17101\n",
        "cms_port = 17101\ncms_http_port = 8008\n",
        1,
    );
    let c = ClusterConfig::from_toml_str(&ok).unwrap();
    assert_eq!(c.nodes[0].cms_http_port, Some(8008));
    assert_eq!(c.nodes[1].cms_http_port, None);
    let clash = THREE_NODES.replacen(
        "cms_port = 17101\n",
        "cms_port = 17101\ncms_http_port = 17001\n",
        1,
    );
    let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&clash).unwrap_err() else {
        panic!()
    };
    assert_eq!(issues[0].location, "node[0].cms_http_port", "{issues:?}");
    let no_cms = THREE_NODES.replacen("cms_port = 17101\n", "cms_http_port = 8008\n", 1);
    let ConfigError::Invalid(issues) = ClusterConfig::from_toml_str(&no_cms).unwrap_err() else {
        panic!()
    };
    assert!(
        issues
            .iter()
            .any(|i| i.location == "node[0].cms_http_port" && i.message.contains("cms_port")),
        "{issues:?}"
    );
}
