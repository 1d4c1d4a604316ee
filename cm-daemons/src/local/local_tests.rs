use super::*;
use cm_core::config::ClusterConfig;

fn sample() -> (Paths, Ports) {
    (
        Paths {
            dir: PathBuf::from("/tmp/cm-local-x"),
        },
        Ports {
            monitor: vec![20001, 20002, 20003],
            cms: vec![20011, 20012, 20013],
            dn: vec![20021, 20022, 20023],
            cms_http: vec![20031, 20032, 20033],
            rest: vec![20041, 20042, 20043],
        },
    )
}

#[test]
fn the_generated_config_is_three_cms_nodes_and_one_1p2s_group() {
    let (paths, ports) = sample();
    let text = render_config(
        &paths,
        &ports,
        Profile::Fast,
        Path::new("/usr/lib/postgresql/15/bin"),
        &[("datastorage_threshold_check_interval".into(), "1".into())],
    );
    let cfg = ClusterConfig::from_toml_str(&text).expect("valid");
    assert_eq!(cfg.cms_nodes().len(), 3);
    assert_eq!(cfg.groups.len(), 1);
    let m = &cfg.groups[0].members;
    assert_eq!(
        m.iter()
            .map(|m| (m.instance.0, m.node.0, m.port))
            .collect::<Vec<_>>(),
        vec![(6001, 1, 20021), (6002, 2, 20022), (6003, 3, 20023)]
    );
    assert_eq!(m[0].data_dir, "/tmp/cm-local-x/data/dn1");
    assert_eq!(cfg.nodes[2].state_dir, "/tmp/cm-local-x/node3");
    assert_eq!(cfg.nodes[1].monitor_port, 20002);
    assert_eq!(cfg.nodes[1].cms_port, Some(20012));
    assert_eq!(cfg.nodes[1].cms_http_port, Some(20032));
    assert_eq!(cfg.nodes[2].rest_port, Some(20043));
    assert_eq!(cfg.database.os_user, "postgres");
    assert_eq!(
        cfg.security.ssl_cert_file.as_deref(),
        Some("/tmp/cm-local-x/tls/{node}.crt")
    );
    assert!(cfg.security.has_node_material() && !cfg.security.allow_plaintext);
    assert_eq!(cfg.params.profile, Profile::Fast);
    assert_eq!(cfg.params.datastorage_threshold_check_interval, 1.0);
}

#[test]
fn the_default_profile_is_written_as_default() {
    let (paths, ports) = sample();
    let text = render_config(&paths, &ports, Profile::Default, Path::new("/x"), &[]);
    let cfg = ClusterConfig::from_toml_str(&text).expect("valid");
    assert_eq!(cfg.params.profile, Profile::Default);
    assert_eq!(cfg.database.bin_dir, "/x");
}

#[test]
fn picked_ports_are_distinct() {
    let p = Ports::pick().unwrap();
    let mut all: Vec<u16> = p
        .monitor
        .iter()
        .chain(&p.cms)
        .chain(&p.dn)
        .chain(&p.rest)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 12);
}

#[test]
fn missing_postgres_says_how_to_install_it() {
    let mut o = LocalOptions::new(PathBuf::from("/tmp/x"), Profile::Fast);
    o.pg_bin = PathBuf::from("/nonexistent/pg/bin");
    let e = check_prerequisites(&o).unwrap_err().to_string();
    assert!(e.contains("sudo apt-get install postgresql"), "{e}");
    assert!(e.contains("/nonexistent/pg/bin"), "{e}");
}

#[test]
fn the_generated_material_loads_for_every_node_and_the_operator() {
    let t = tempfile::tempdir().unwrap();
    let paths = Paths {
        dir: t.path().to_path_buf(),
    };
    write_tls_material(&paths).unwrap();
    let ports = Ports::pick().unwrap();
    let text = render_config(&paths, &ports, Profile::Fast, Path::new("/x"), &[]);
    let cfg = ClusterConfig::from_toml_str(&text).unwrap();
    let cfg_path = paths.config();
    for n in &cfg.nodes {
        let id = crate::common::Identity::Node(n.id);
        crate::common::load_security(&cfg_path, &cfg, &id).unwrap();
    }
    let op = crate::common::Identity::Operator {
        cert: None,
        key: None,
    };
    crate::common::load_security(&cfg_path, &cfg, &op).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(paths.tls_dir().join("n1.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys are private");
}

#[test]
fn a_private_ancestor_is_found() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = tempfile::tempdir().unwrap();
    let private = t.path().join("p");
    std::fs::create_dir_all(private.join("c")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        untraversable_ancestor(&private.join("c")),
        Some(private.clone())
    );
}

#[test]
fn a_non_root_user_is_told_to_run_as_root() {
    assert!(root_check(true).is_ok());
    let text = root_check(false).unwrap_err().to_string();
    assert!(text.contains("must run as root"), "{text}");
    assert!(text.contains("sudo"), "{text}");
}

#[test]
fn the_local_haproxy_config_is_the_shipped_one_with_local_ports() {
    let (_, ports) = sample();
    let text = render_haproxy(&ports, Path::new("/x/tls/ca.crt"), 25000, 25001);
    assert!(text.contains("    bind 127.0.0.1:25000\n"), "{text}");
    assert!(text.contains("    bind 127.0.0.1:25001\n"), "{text}");
    assert!(!text.contains("10.0.0."), "{text}");
    for n in 1..=3 {
        let line = format!(
            "    server n{n} 127.0.0.1:2002{n} check port 2004{n} check-ssl verify required \
             ca-file /x/tls/ca.crt verifyhost n{n} check-sni n{n}\n"
        );
        assert_eq!(
            text.matches(&line).count(),
            2,
            "{line} in both listeners:\n{text}"
        );
    }
    // Every check of the shipped file is kept.
    for kept in [
        "http-check send meth GET uri /primary",
        "http-check send meth GET uri /replica?lag=16MB",
        "on-marked-down shutdown-sessions",
    ] {
        assert!(text.contains(kept), "{kept}");
    }
    assert_eq!(
        text.lines().count(),
        HAPROXY_SAMPLE.lines().count(),
        "one line for one line"
    );
}

#[test]
fn cm_local_up_adds_an_example_resource_on_every_node() {
    let (paths, ports) = sample();
    let mut text = render_config(&paths, &ports, Profile::Fast, Path::new("/x"), &[]);
    text += &render_example_resource(&paths);
    let cfg = ClusterConfig::from_toml_str(&text).expect("valid");
    let r = &cfg.resources[0];
    assert_eq!(r.name, "demo-sleep");
    assert_eq!(r.script, "/tmp/cm-local-x/resource-example.sh");
    assert_eq!(
        r.instances
            .iter()
            .map(|i| (i.node.0, i.id.0))
            .collect::<Vec<_>>(),
        vec![(1, 9001), (2, 9002), (3, 9003)]
    );
    assert_eq!(
        r.instances[0].args,
        "/tmp/cm-local-x/res /bin/sleep 2147483647"
    );
    assert!(EXAMPLE_RESOURCE_SCRIPT.starts_with("#!/bin/sh"));
}
