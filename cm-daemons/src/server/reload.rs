//! SIGHUP for cm_server: re-read the config file and say what changed.
//!
//! The server's parameters are read by cm-core when the machine is built; at run time they
//! change only through `cm_ctl set --param --server -k NAME=VALUE`, which the leader commits
//! to the replicated state so that every CMS (and every later leader) applies the same value.
//! A parameter edited in the file therefore does not take effect on SIGHUP: it is logged with
//! that advice, and it applies at the next start (a committed `cm_ctl set` override still
//! wins). Changes to the topology (nodes, ports, groups, AZs, TLS file names) need a restart of every
//! process of the cluster.

use cm_core::config::ClusterConfig;

/// What differs between the running config and the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Parameters whose value differs: (name, running value, value in the file).
    pub params: Vec<(String, String, String)>,
    /// Parts of the topology that differ (`nodes`, `groups`, ...).
    pub topology: Vec<&'static str>,
}

/// Compares the running config with a freshly read one.
pub fn diff(running: &ClusterConfig, file: &ClusterConfig) -> ConfigChanges {
    let params = running
        .params
        .list()
        .into_iter()
        .zip(file.params.list())
        .filter(|((_, _, old), (_, _, new))| old != new)
        .map(|((name, _, old), (_, _, new))| (name.to_owned(), old, new))
        .collect();
    let mut topology = Vec::new();
    let parts: [(&'static str, bool); 6] = [
        ("name", running.name != file.name),
        ("ssl_*/allow_plaintext", running.security != file.security),
        ("az", running.azs != file.azs),
        ("node", running.nodes != file.nodes),
        ("group", running.groups != file.groups),
        ("database", running.database != file.database),
    ];
    for (part, changed) in parts {
        if changed {
            topology.push(part);
        }
    }
    ConfigChanges { params, topology }
}

/// Logs the changes (SIGHUP's only effect on cm_server).
pub fn log(path: &std::path::Path, changes: &ConfigChanges) {
    if changes.params.is_empty() && changes.topology.is_empty() {
        tracing::info!(config = %path.display(), "config reloaded: nothing changed");
    }
    for (name, old, new) in &changes.params {
        tracing::warn!(
            config = %path.display(),
            param = %name,
            running = %old,
            file = %new,
            "parameter changed in the config file; it applies at the next start. To change it \
             now on every CMS, run `cm_ctl set --param --server -k {name}={new}` (replicated)"
        );
    }
    if !changes.topology.is_empty() {
        tracing::warn!(
            config = %path.display(),
            changed = %changes.topology.join(", "),
            "the cluster topology changed in the config file; restart the cluster's processes \
             to apply it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/unused"
monitor_port = 17001
cms_port = 17101
"#;

    #[test]
    fn changed_parameters_and_topology_parts_are_named() {
        let running = ClusterConfig::from_toml_str(BASE).unwrap();
        assert_eq!(diff(&running, &running), ConfigChanges::default());
        let edited = format!(
            "{}[params]\ninstance_heartbeat_timeout = 9\n",
            BASE.replace("17101", "17102")
        );
        let file = ClusterConfig::from_toml_str(&edited).unwrap();
        let d = diff(&running, &file);
        assert_eq!(
            d.params,
            vec![("instance_heartbeat_timeout".into(), "6".into(), "9".into())]
        );
        assert_eq!(d.topology, vec!["node"]);
    }
}
