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
            .contains("no such node (nodes: 1, 2)")
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
    assert_eq!(
        op(&["switchover", "-a"]).unwrap(),
        Some(Operation::Leader(CtlRequest::SwitchoverAll))
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

#[test]
fn query_renders_cm_layout() {
    let row = |node: u32, inst: u32, p: bool, role, state| DnRow {
        node: NodeId(node),
        node_name: format!("n{node}"),
        address: format!("127.0.0.{node}"),
        instance: InstanceId(inst),
        data_dir: format!("/data/dn{node}"),
        port: 5432,
        static_primary: p,
        role,
        state,
        term: Term(3),
        position: Position::new(2, 0x1_0000_0010),
        read_only: false,
        not_streaming_ms: None,
    };
    let s = ClusterStatus {
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
    };
    let text = render_query(&s, true, true);
    assert!(text.contains("[  CMServer State   ]"), "{text}");
    assert!(text.contains("1  n1     127.0.0.1       Primary"), "{text}");
    assert!(text.contains("cluster_state   : Normal"), "{text}");
    assert!(text.contains("balanced        : Yes"), "{text}");
    assert!(
        text.contains(
            "1  n1     127.0.0.1       6001 /data/dn1 P Primary Normal term=3 pos=2/1/10 | \
             2  n2     127.0.0.2       6002 /data/dn2 S Standby Normal term=3 pos=2/1/10"
        ),
        "{text}"
    );
    let plain = render_query(&s, false, false);
    assert!(!plain.contains("CMServer"));
    assert_eq!(plain.lines().filter(|l| l.contains("/data/dn")).count(), 2);
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
