use clap::Parser;
use cm_core::ctl::{CmsRow, DnRow, GroupStatus};
use cm_core::ids::{GroupId, Position, QuorumTerm, Term};

use super::*;

const CONFIG: &str = r#"
name = "demo"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/s1"
monitor_port = 17001
cms_port = 17101
[[node]]
id = 2
name = "n2"
address = "127.0.0.2"
az = "AZ1"
state_dir = "/tmp/s2"
monitor_port = 17001
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/data/dn1"
port = 5432
[[group.member]]
instance = 6002
node = 2
data_dir = "/data/dn2"
port = 5432
"#;

fn cfg() -> ClusterConfig {
    ClusterConfig::from_toml_str(CONFIG).unwrap()
}

fn op(args: &[&str]) -> Result<Option<Operation>, UsageError> {
    let mut full = vec!["cm_ctl"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full).expect("clap accepts it");
    operation(&cfg(), &cli.command)
}

#[test]
fn start_and_stop_map_to_cluster_node_and_instance_operations() {
    assert_eq!(
        op(&["start"]).unwrap(),
        Some(Operation::StartCluster {
            timeout: Duration::from_secs(300)
        })
    );
    assert_eq!(
        op(&["stop", "-n", "2", "-D", "/data/dn2/", "-m", "i", "-t", "9"]).unwrap(),
        Some(Operation::StopInstance {
            node: NodeId(2),
            instance: Some(InstanceId(6002)),
            mode: StopMode::Immediate,
            timeout: Duration::from_secs(9)
        })
    );
    assert_eq!(
        op(&["stop", "-n", "1"]).unwrap(),
        Some(Operation::StopInstance {
            node: NodeId(1),
            instance: None,
            mode: StopMode::Fast,
            timeout: Duration::from_secs(300)
        })
    );
}

#[test]
fn wrong_arguments_say_what_is_wrong() {
    assert!(
        op(&["stop", "-m", "gentle"])
            .unwrap_err()
            .0
            .contains("smart, fast or immediate")
    );
    assert!(
        op(&["start", "-n", "7"])
            .unwrap_err()
            .0
            .contains("no such node (nodes: 1 (n1), 2 (n2))")
    );
    assert!(
        op(&["start", "-n", "1", "-D", "/data/dn2"])
            .unwrap_err()
            .0
            .contains("/data/dn2")
    );
    assert!(
        op(&["switchover", "-n", "1"])
            .unwrap_err()
            .0
            .contains("-n NODE -D DATADIR")
    );
    assert!(
        op(&["set", "--param", "--agent", "-k", "x"])
            .unwrap_err()
            .0
            .contains("NAME=VALUE")
    );
    assert!(
        op(&[
            "set",
            "--param",
            "--agent",
            "-k",
            "wait_static_primary_times=7"
        ])
        .unwrap_err()
        .0
        .contains("server parameter")
    );
    assert!(
        op(&[
            "set",
            "--param",
            "--server",
            "-k",
            "wait_static_primary_times=2"
        ])
        .unwrap_err()
        .0
        .contains("outside")
    );
    // clap itself refuses -D without -n and -a with -n.
    assert!(Cli::try_parse_from(["cm_ctl", "start", "-D", "/x"]).is_err());
    assert!(Cli::try_parse_from(["cm_ctl", "switchover", "-a", "-n", "1"]).is_err());
    assert!(
        Cli::try_parse_from([
            "cm_ctl",
            "switchover",
            "-n",
            "2",
            "-D",
            "/data/dn2",
            "-t",
            "0"
        ])
        .is_err()
    );
}

#[test]
fn leader_requests() {
    assert_eq!(
        op(&["switchover", "-n", "2", "-D", "/data/dn2", "-f"]).unwrap(),
        Some(Operation::Switchover {
            instance: InstanceId(6002),
            fast: true,
            wait: Some(Duration::from_secs(120)),
        })
    );
    assert_eq!(
        op(&["switchover", "-n", "2", "-D", "/data/dn2", "-t", "30"]).unwrap(),
        Some(Operation::Switchover {
            instance: InstanceId(6002),
            fast: false,
            wait: Some(Duration::from_secs(30)),
        })
    );
    assert_eq!(
        op(&["switchover", "-n", "2", "-D", "/data/dn2", "--no-wait"]).unwrap(),
        Some(Operation::Switchover {
            instance: InstanceId(6002),
            fast: false,
            wait: None,
        })
    );
    // -a waits like a single switchover (-t, --no-wait), issue 17.
    assert_eq!(
        op(&["switchover", "-a"]).unwrap(),
        Some(Operation::SwitchoverAll {
            wait: Some(Duration::from_secs(120))
        })
    );
    assert_eq!(
        op(&["switchover", "-a", "-t", "30"]).unwrap(),
        Some(Operation::SwitchoverAll {
            wait: Some(Duration::from_secs(30))
        })
    );
    assert_eq!(
        op(&["switchover", "-a", "--no-wait"]).unwrap(),
        Some(Operation::SwitchoverAll { wait: None })
    );
    assert_eq!(
        op(&["pause"]).unwrap(),
        Some(Operation::Leader(CtlRequest::Pause))
    );
    assert_eq!(
        op(&[
            "set",
            "--param",
            "--server",
            "-k",
            "cluster_starting_aribt_delay=\"90\""
        ])
        .unwrap(),
        Some(Operation::Leader(CtlRequest::SetParam {
            side: ParamSide::Server,
            name: "cluster_starting_arbit_delay".into(),
            value: "90".into()
        }))
    );
    assert_eq!(op(&["query", "-Cv"]).unwrap(), None);
}

fn sample_status() -> ClusterStatus {
    let row = |node: u32, inst: u32, p: bool, role, state| DnRow {
        node: NodeId(node),
        node_name: format!("n{node}"),
        address: format!("127.0.0.{node}"),
        instance: InstanceId(inst),
        data_dir: format!("/data/dn{node}"),
        port: 5432,
        static_primary: p,
        install_primary: p,
        role,
        state,
        term: Term(3),
        position: Position::new(2, 0x1_0000_0010),
        lsn: "1/00000010".into(),
        lag_bytes: (!p).then_some(0),
        read_only: false,
        not_streaming_ms: None,
        last_build: Default::default(),
    };
    ClusterStatus {
        cluster: "demo".into(),
        quorum_term: QuorumTerm(4),
        cms: vec![CmsRow {
            node: NodeId(1),
            name: "n1".into(),
            address: "127.0.0.1".into(),
            role: CmsRole::Primary,
        }],
        state: ClusterHealth::Normal,
        balanced: true,
        paused: false,
        history: Vec::new(),
        groups: vec![GroupStatus {
            group: GroupId(1),
            term: Term(3),
            members: vec![
                row(1, 6001, true, DnRole::Primary, DbState::Normal),
                row(2, 6002, false, DnRole::Standby, DbState::Normal),
            ],
            switchover: None,
            last_switchover: None,
            commits_acknowledged: true,
        }],
        resources: Vec::new(),
    }
}

#[test]
fn query_renders_cm_layout_with_a_header_row_port_and_lag() {
    let s = sample_status();
    let text = render_query(&s, true, true);
    assert!(text.contains("[  CMServer State   ]"), "{text}");
    assert!(text.contains("1     n1    127.0.0.1  Primary"), "{text}");
    assert!(text.contains("cluster_state   : Normal"), "{text}");
    assert!(text.contains("balanced        : Yes"), "{text}");
    let dn: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("group 1"))
        .collect();
    assert_eq!(dn[0], "group 1 (term 3)", "{text}");
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        cells(dn[1]),
        [
            "node", "name", "node_ip", "instance", "port", "data_dir", "P/S", "role", "state",
            "lag", "term", "timeline", "lsn"
        ]
    );
    // -C: one line per member, not one line per group.
    assert_eq!(
        cells(dn[2]),
        [
            "1",
            "n1",
            "127.0.0.1",
            "6001",
            "5432",
            "/data/dn1",
            "P",
            "Primary",
            "Normal",
            "-",
            "3",
            "2",
            "1/00000010"
        ]
    );
    assert_eq!(
        cells(dn[3]),
        [
            "2",
            "n2",
            "127.0.0.2",
            "6002",
            "5432",
            "/data/dn2",
            "S",
            "Standby",
            "Normal",
            "0",
            "B",
            "3",
            "2",
            "1/00000010"
        ]
    );
    let plain = render_query(&s, false, false);
    assert!(!plain.contains("CMServer"));
    assert!(!plain.contains("1/00000010"));
    assert_eq!(plain.lines().filter(|l| l.contains("/data/dn")).count(), 2);
    assert!(plain.lines().any(|l| l.starts_with("node  ")), "{plain}");
}

#[test]
fn query_shows_read_only_and_unknown_in_the_state_column() {
    let mut s = sample_status();
    s.groups[0].members[0].read_only = true;
    s.groups[0].members[1].role = DnRole::Unknown;
    s.groups[0].members[1].state = DbState::Unknown;
    let plain = render_query(&s, false, false);
    assert!(plain.contains("Primary  Normal, read-only"), "{plain}");
    assert!(plain.contains("Unknown  Unknown"), "{plain}");
}

#[test]
fn the_json_status_carries_the_lsn_text_and_the_lag() {
    let json = serde_json::to_value(sample_status()).unwrap();
    let m = &json["groups"][0]["members"][1];
    assert_eq!(m["lsn"], "1/00000010");
    assert_eq!(m["lag_bytes"], 0);
    assert_eq!(m["install_primary"], false);
}

#[test]
fn bytes_print_short() {
    assert_eq!(bytes_text(0), "0 B");
    assert_eq!(bytes_text(1023), "1023 B");
    assert_eq!(bytes_text(16 * 1024), "16 kB");
    assert_eq!(bytes_text(3 * 1024 * 1024 + 512 * 1024), "3.5 MB");
}

#[test]
fn nodes_are_named_by_id_or_name() {
    assert_eq!(
        op(&["switchover", "-n", "n2", "-D", "/data/dn2"]).unwrap(),
        op(&["switchover", "-n", "2", "-D", "/data/dn2"]).unwrap()
    );
    let err = op(&["stop", "-n", "n9"]).unwrap_err().0;
    assert!(
        err.contains("no such node (nodes: 1 (n1), 2 (n2))"),
        "{err}"
    );
}

#[test]
fn start_and_stop_refuse_a_zero_timeout() {
    assert!(Cli::try_parse_from(["cm_ctl", "start", "-t", "0"]).is_err());
    assert!(Cli::try_parse_from(["cm_ctl", "stop", "-t", "0"]).is_err());
    assert!(Cli::try_parse_from(["cm_ctl", "start", "-t", "1"]).is_ok());
}

#[test]
fn check_refuses_unknown_binaries() {
    assert!(Cli::try_parse_from(["cm_ctl", "check", "-B", "bash", "-T", "/x"]).is_err());
    assert!(Cli::try_parse_from(["cm_ctl", "check", "-B", "om_monitor", "-T", "/x"]).is_ok());
}

#[test]
fn query_watch_takes_an_optional_interval() {
    let watch = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
        CtlCommand::Query { watch, .. } => watch,
        other => panic!("{other:?}"),
    };
    assert_eq!(watch(&["cm_ctl", "query"]), None);
    assert_eq!(watch(&["cm_ctl", "query", "--watch"]), Some(2));
    assert_eq!(watch(&["cm_ctl", "query", "--watch", "5"]), Some(5));
}

#[test]
fn help_describes_cm_ctl_and_the_p_s_letter() {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let about = cmd.get_about().unwrap().to_string();
    assert!(about.starts_with("cm_ctl: operate a cluster"), "{about}");
    let query = cmd
        .find_subcommand_mut("query")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(query.contains("install-time role"), "{query}");
    assert!(
        query.contains("Exits 1 when the cluster is Unavailable"),
        "{query}"
    );
}

#[test]
fn the_operator_guide_documents_every_cm_ctl_command() {
    use clap::CommandFactory as _;
    let guide = include_str!("../../docs/operator-guide.md");
    let missing: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|name| name != "help")
        .filter(|name| {
            !guide.lines().any(|l| {
                l.starts_with("### cm_ctl ") && l.split([' ', '/']).any(|w| w == name.as_str())
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operator-guide.md has no section or example for cm_ctl {missing:?}"
    );
}

#[test]
fn build_waits_for_its_outcome() {
    assert_eq!(
        op(&["build", "-n", "n2", "-D", "/data/dn2", "-t", "30"]).unwrap(),
        Some(Operation::Build {
            instance: InstanceId(6002),
            full: false,
            timeout: Duration::from_secs(30)
        })
    );
}

#[test]
fn build_full_asks_for_a_full_copy() {
    assert_eq!(
        op(&["build", "-n", "n2", "-D", "/data/dn2", "--full"]).unwrap(),
        Some(Operation::Build {
            instance: InstanceId(6002),
            full: true,
            timeout: Duration::from_secs(600)
        })
    );
    assert!(
        Cli::try_parse_from(["cm_ctl", "build", "-n", "n2", "-D", "/data/dn2", "--fast"]).is_err()
    );
}

#[test]
fn cms_readd_takes_a_cms_node_by_id_or_name() {
    let want = Some(Operation::Leader(CtlRequest::ReaddCms { node: NodeId(1) }));
    assert_eq!(op(&["cms", "--readd", "1"]).unwrap(), want);
    assert_eq!(op(&["cms", "--readd", "n1"]).unwrap(), want);
    let err = op(&["cms", "--readd", "99"]).unwrap_err();
    assert!(err.0.contains("no such node"), "{err}");
    let err = op(&["cms", "--readd", "n2"]).unwrap_err();
    assert!(err.0.contains("runs no cm_server"), "{err}");
}

/// Every key of `query --json` (with every optional part filled in).
fn json_keys(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                json_keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_keys(v, out)),
        _ => {}
    }
}

/// Issue 17: the `--json` fields are documented: every key the output can carry is named in
/// the guide's `query --json` field list (this fails when a field is added undocumented).
#[test]
fn the_operator_guide_documents_every_query_json_field() {
    let mut s = sample_status();
    let g = &mut s.groups[0];
    g.switchover = Some(cm_core::state::PendingSwitchover {
        target: InstanceId(6002),
        from: InstanceId(6001),
        term: Term(4),
        fast: false,
        deadline: cm_core::time::WallMillis(0),
    });
    g.last_switchover = Some(cm_core::state::SwitchoverEnd {
        target: InstanceId(6002),
        from: InstanceId(6001),
        term: Term(3),
        result: cm_core::state::SwitchoverResult::Promoted,
    });
    g.members[1].not_streaming_ms = Some(1000);
    g.members[1].last_build = cm_core::dn::BuildOutcome {
        count: 1,
        error: Some("x".into()),
        pending: false,
        agent_incarnation: Some(5),
        half_rewound: true,
    };
    let json = serde_json::to_value(&s).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    json_keys(&json, &mut keys);
    let guide = include_str!("../../docs/operator-guide.md");
    let start = guide
        .find("#### `query --json` fields")
        .expect("the guide has a `query --json` fields section");
    let section = &guide[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |e| e + 4)];
    // Named as a field: `key`, `parent[].key`, `parent.key` or `key[]...`.
    let named = |k: &str| {
        section.match_indices(k).any(|(at, _)| {
            let before = section[..at].chars().next_back();
            let after = section[at + k.len()..].chars().next();
            matches!(before, Some('`' | '.')) && matches!(after, Some('`' | '['))
        })
    };
    let missing: Vec<&String> = keys.iter().filter(|k| !named(k)).collect();
    assert!(
        missing.is_empty(),
        "undocumented --json fields {missing:?}; the output is:\n{}",
        serde_json::to_string_pretty(&json).unwrap()
    );
}

#[test]
fn query_prints_the_resource_table_after_the_dns() {
    use cm_core::ctl::ResourceRow;
    use cm_core::resource::ResourceState;
    let mut s = sample_status();
    let plain = render_query(&s, false, false);
    assert!(
        !plain.contains("Resource State"),
        "no table without resources"
    );
    s.resources = vec![
        ResourceRow {
            node: NodeId(1),
            name: "pgbouncer".into(),
            instance: InstanceId(9001),
            state: ResourceState::Online,
        },
        ResourceRow {
            node: NodeId(2),
            name: "pgbouncer".into(),
            instance: InstanceId(9002),
            state: ResourceState::Stopped,
        },
    ];
    let text = render_query(&s, false, false);
    let at = text
        .find("[  Resource State   ]")
        .expect("a resource section");
    assert!(at > text.find("[  Datanode State   ]").unwrap());
    let lines: Vec<Vec<&str>> = text[at..]
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('-'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["node", "res_name", "instance", "state"],
            vec!["1", "pgbouncer", "9001", "Online"],
            vec!["2", "pgbouncer", "9002", "Stopped"],
        ],
        "{text}"
    );
}

fn res_cfg(script: &str) -> ClusterConfig {
    ClusterConfig::from_toml_str(&format!(
        "{CONFIG}\n[[resource]]\nname = \"app\"\nscript = \"{script}\"\n\
         instances = [{{ node = 2, id = 9002, args = \"--port 7000\" }}]\nrestart_times = 3\n"
    ))
    .unwrap()
}

fn res_op(args: &[&str]) -> Result<Option<Operation>, UsageError> {
    let mut full = vec!["cm_ctl"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full).expect("clap accepts it");
    operation(&res_cfg("/opt/app.sh"), &cli.command)
}

#[test]
fn start_and_stop_dash_i_name_a_resource_instance_on_its_node() {
    assert_eq!(
        res_op(&["stop", "-I", "9002"]).unwrap(),
        Some(Operation::StopInstance {
            node: NodeId(2),
            instance: Some(InstanceId(9002)),
            mode: StopMode::Fast,
            timeout: Duration::from_secs(300),
        })
    );
    assert_eq!(
        res_op(&["start", "-I", "9002", "-n", "n2", "-t", "20"]).unwrap(),
        Some(Operation::StartInstance {
            node: NodeId(2),
            instance: Some(InstanceId(9002)),
            timeout: Duration::from_secs(20),
        })
    );
    let e = res_op(&["start", "-I", "9002", "-n", "1"]).unwrap_err();
    assert!(e.0.contains("runs on node 2, not on node 1"), "{e}");
    let e = res_op(&["stop", "-I", "6001"]).unwrap_err();
    assert!(
        e.0.contains("no resource instance") && e.0.contains("9002"),
        "{e}"
    );
    assert!(Cli::try_parse_from(["cm_ctl", "stop", "-I", "9002", "-n", "2", "-D", "/d"]).is_err());
}

#[test]
fn res_list_shows_every_instance_with_its_settings() {
    let text = render_resources(&res_cfg("/opt/app.sh"));
    assert!(text.contains("app"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("9002"))
        .expect("a row for 9002");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        vec!["app", "9002", "2", "fixed", "/opt/app.sh", "--port", "7000"]
    );
    assert!(text.contains("restart_times 3"), "{text}");
    assert_eq!(render_resources(&cfg()), "no resources in the config\n");
    assert!(
        Cli::try_parse_from(["cm_ctl", "res"]).is_err(),
        "--list or --check"
    );
}

#[test]
fn res_check_finds_missing_and_non_executable_scripts() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.sh");
    let path = script.to_str().unwrap();
    let missing = check_resource_scripts(&res_cfg(path));
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("resource[0].script (app)"),
        "{missing:?}"
    );
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_exec = check_resource_scripts(&res_cfg(path));
    assert!(not_exec[0].contains("not executable"), "{not_exec:?}");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(check_resource_scripts(&res_cfg(path)).is_empty());
}

/// `-D` as a user types it: a relative path is taken from the current directory, `.` and
/// repeated separators do not matter (a fresh-clone pass was refused `-D .local-cluster/…`).
#[test]
fn a_relative_or_dotted_data_directory_names_its_instance() {
    let stop2 = Some(Operation::StopInstance {
        node: NodeId(2),
        instance: Some(InstanceId(6002)),
        mode: StopMode::Fast,
        timeout: Duration::from_secs(9),
    });
    assert_eq!(
        op(&["stop", "-n", "2", "-D", "/data/./dn2", "-t", "9"]).unwrap(),
        stop2
    );
    // nextest runs each test in its own process: the working directory is this test's own.
    std::env::set_current_dir("/").unwrap();
    assert_eq!(
        op(&["stop", "-n", "2", "-D", "data/dn2", "-t", "9"]).unwrap(),
        stop2
    );
    assert!(op(&["stop", "-n", "2", "-D", "data/dn1", "-t", "9"]).is_err());
}
