use std::path::Path;
use std::time::Duration;

use super::*;

fn layout<'a>() -> Layout<'a> {
    Layout {
        instance: InstanceId(6002),
        data_dir: Path::new("/data/dn2"),
        run_dir: Path::new("/state/dn_6002"),
        listen_address: "10.0.0.2",
        port: 5433,
        db_user: "postgres",
        passfile: Path::new("/state/pgpass"),
        wal_sender_timeout: Duration::from_secs(3),
        wal_receiver_timeout: Duration::from_millis(700),
        max_slot_wal_keep_size_mb: 1024,
    }
}

fn desired() -> Desired {
    Desired {
        upstream: Upstream::None,
        pending: true,
        sync_k: 1,
        sync_members: vec![InstanceId(6001), InstanceId(6002), InstanceId(6003)],
        read_only: false,
        rebuilt_from: None,
    }
}

fn value_of<'t>(text: &'t str, key: &str) -> Vec<&'t str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key} = ")))
        .collect()
}

#[test]
fn sync_names_are_any_k_over_all_members_quoted() {
    let m = [InstanceId(6001), InstanceId(6002), InstanceId(6003)];
    assert_eq!(
        sync_standby_names(1, &m),
        "ANY 1 (\"dn_6001\", \"dn_6002\", \"dn_6003\")"
    );
    assert_eq!(sync_standby_names(0, &m), "", "k = 0 is asynchronous");
    assert_eq!(sync_standby_names(1, &[]), "");
}

#[test]
fn pending_config_has_empty_upstream_and_every_managed_key_once() {
    let text = render_config(&layout(), &desired(), None);
    assert_eq!(value_of(&text, "primary_conninfo"), ["''"]);
    assert_eq!(value_of(&text, "primary_slot_name"), ["''"]);
    assert_eq!(value_of(&text, "port"), ["5433"]);
    assert_eq!(value_of(&text, "synchronous_commit"), ["on"]);
    assert_eq!(
        value_of(&text, "synchronous_standby_names"),
        ["'ANY 1 (\"dn_6001\", \"dn_6002\", \"dn_6003\")'"]
    );
    assert_eq!(value_of(&text, "wal_receiver_timeout"), ["'700ms'"]);
    assert_eq!(value_of(&text, "wal_sender_timeout"), ["'3000ms'"]);
    assert_eq!(value_of(&text, "wal_receiver_status_interval"), ["'1s'"]);
    assert_eq!(
        value_of(&text, "unix_socket_directories"),
        ["'/state/dn_6002/sock'"]
    );
    assert_eq!(
        value_of(&text, "hba_file"),
        ["'/state/dn_6002/pg_hba.conf'"]
    );
    assert_eq!(
        value_of(&text, "ident_file"),
        ["'/state/dn_6002/pg_ident.conf'"]
    );
    for key in MANAGED_KEYS {
        assert_eq!(value_of(&text, key).len(), 1, "{key} set exactly once");
    }
    // The user's file comes first so the managed lines override it.
    let include = text
        .find("include_if_exists = '/data/dn2/postgresql.conf'")
        .expect("include");
    assert!(include < text.find("port = ").expect("port"));
}

#[test]
fn following_sets_conninfo_with_own_name_and_own_slot() {
    let up = Endpoint {
        instance: InstanceId(6001),
        address: "10.0.0.1".into(),
        port: 5432,
    };
    let mut d = desired();
    d.upstream = Upstream::Follow {
        primary: InstanceId(6001),
        locked: false,
    };
    d.read_only = true;
    let text = render_config(&layout(), &d, Some(&up));
    assert_eq!(
        value_of(&text, "primary_conninfo"),
        [
            "'host=10.0.0.1 port=5432 user=postgres passfile=/state/pgpass application_name=dn_6002 connect_timeout=2'"
        ]
    );
    assert_eq!(value_of(&text, "primary_slot_name"), ["'dn_6002'"]);
    assert_eq!(value_of(&text, "default_transaction_read_only"), ["on"]);
}

#[test]
fn quotes_in_values_are_doubled() {
    assert_eq!(quote("it's"), "'it''s'");
}

/// §16: nothing trusts an address. Members replicate and connect as the database user with
/// the password (SCRAM), local connections are peer-authenticated (the agent's OS user through
/// the ident map); the user's replication rules and network `trust` rules are dropped.
#[test]
fn hba_lets_only_members_in_with_the_password_and_trusts_no_address() {
    let user = "# comment\nlocal all all peer\nhost replication all 0.0.0.0/0 trust\n\
                host all all 127.0.0.1/32 trust\nhostssl all app 10.0.0.0 255.0.0.0 trust\n\
                host all app 10.0.0.0/8 scram-sha-256\nlocal replication,postgres all trust\n";
    let text = render_hba(
        "postgres",
        &[
            "10.0.0.1".into(),
            "10.0.0.2".into(),
            "10.0.0.1".into(),
            "::1".into(),
        ],
        user,
    );
    let rules: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        rules,
        [
            "local all postgres peer map=cm_agent",
            "local all all peer",
            "host replication postgres 10.0.0.1/32 scram-sha-256",
            "host all postgres 10.0.0.1/32 scram-sha-256",
            "host replication postgres 10.0.0.2/32 scram-sha-256",
            "host all postgres 10.0.0.2/32 scram-sha-256",
            "host replication postgres ::1/128 scram-sha-256",
            "host all postgres ::1/128 scram-sha-256",
            "host replication all all reject",
            "local all all peer",
            "host all app 10.0.0.0/8 scram-sha-256",
        ]
    );
    assert!(rules.iter().all(|r| !r.contains("trust")), "{text}");
}

#[test]
fn ident_maps_the_agent_and_the_database_os_user_to_the_database_user() {
    assert_eq!(
        render_ident("root", "postgres", "postgres", "mymap alice app"),
        "# Managed by cm_agent: rewritten on every start, do not edit.\n\
         cm_agent root postgres\n\
         cm_agent postgres postgres\n\
         # The data directory's pg_ident.conf:\n\
         mymap alice app\n"
    );
    // The agent running as the database OS user: one line.
    let text = render_ident("postgres", "postgres", "postgres", "");
    assert_eq!(
        text.matches("cm_agent postgres postgres").count(),
        1,
        "{text}"
    );
}

#[test]
fn auto_conf_loses_managed_keys_only() {
    let text = "# Do not edit this file manually!\nprimary_conninfo = 'host=x'\nwork_mem = '8MB'\nPORT=5999\ndefault_transaction_read_only = 'on'\n";
    assert_eq!(
        strip_auto_conf(text).as_deref(),
        Some("# Do not edit this file manually!\nwork_mem = '8MB'\n")
    );
    assert_eq!(
        strip_auto_conf("work_mem = '8MB'\n"),
        None,
        "nothing managed: untouched"
    );
}

/// Each way around the pg_hba filter a reviewer found: a continued line, a quoted method, a
/// comment glued to the method, include directives (PostgreSQL ≥ 16), ident over TCP.
#[test]
fn hba_filter_tokenises_as_postgres_and_drops_every_bypass() {
    let cases: &[(&str, bool)] = &[
        ("host all all 0.0.0.0/0 \\\n trust", false),
        ("host all all 0.0.0.0/0 \"trust\"", false),
        ("host all all 0.0.0.0/0 trust#comment", false),
        ("hostssl all all 10.0.0.0 255.0.0.0 TRUST", false),
        ("host all all 0.0.0.0/0 ident", false),
        ("hostnossl all all 0.0.0.0/0 ident map=x", false),
        ("include /etc/evil_hba.conf", false),
        ("include_if_exists /etc/evil_hba.conf", false),
        ("include_dir /etc/evil.d", false),
        ("\"include\" /etc/evil_hba.conf", false),
        ("host \"replication\" all 0.0.0.0/0 scram-sha-256", false),
        ("host app, replication all 0.0.0.0/0 scram-sha-256", false),
        ("host all all 0.0.0.0/0 scram-sha-256 # trust me", true),
        ("host all \"trust\" 10.0.0.0/8 md5", true),
        ("local all all trust", true),
        ("local all all ident", true),
        ("# host all all 0.0.0.0/0 trust", true),
    ];
    for (line, kept) in cases {
        let filtered = filter_user_hba(line);
        let joined = line.replace("\\\n", "");
        let comment_only = line.starts_with('#');
        if comment_only {
            assert_eq!(filtered, FilteredHba::default(), "{line}");
        } else if *kept {
            assert_eq!(filtered.kept, [joined], "{line}");
            assert!(filtered.dropped.is_empty(), "{line}");
        } else {
            assert_eq!(filtered.dropped, [joined], "{line}");
            assert!(filtered.kept.is_empty(), "{line}");
        }
        let text = render_hba("postgres", &["10.0.0.1".into()], line);
        let rules: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        if !kept {
            assert!(
                !rules.contains("trust")
                    && !rules.contains("ident")
                    && !rules.contains("evil")
                    && rules.matches("replication").count() == 2,
                "{line}:\n{text}"
            );
        }
    }
}

/// A continuation on the last line joins nothing and is kept as it is.
#[test]
fn hba_filter_keeps_a_dangling_continuation_line_whole() {
    let filtered =
        filter_user_hba("host all app 10.0.0.0/8 \\\nscram-sha-256\nlocal all all peer \\");
    assert_eq!(
        filtered.kept,
        [
            "host all app 10.0.0.0/8 scram-sha-256",
            "local all all peer "
        ]
    );
}

/// The user's pg_ident.conf cannot add members to the agent's map, directly or by include.
#[test]
fn ident_drops_the_users_lines_for_the_agents_map_and_includes() {
    let text = render_ident(
        "root",
        "postgres",
        "postgres",
        "mymap alice app\ncm_agent mallory postgres\n\"cm_agent\" eve postgres\n\
         include /tmp/x\ninclude_dir /tmp/d\n# cm_agent note\n",
    );
    assert_eq!(
        text,
        "# Managed by cm_agent: rewritten on every start, do not edit.\n\
         cm_agent root postgres\n\
         cm_agent postgres postgres\n\
         # The data directory's pg_ident.conf:\n\
         mymap alice app\n"
    );
}
