//! Where each addressable endpoint listens, from the cluster config.

use std::collections::BTreeMap;

use cm_core::config::ClusterConfig;
use cm_core::msg::{Endpoint, Role};

/// `host:port` of every endpoint that listens: each node's om_monitor (`monitor_port`) and, on
/// CMS nodes, its cm_server (`cms_port`). Agents and cm_ctl clients do not listen; they are
/// reached over the connections they open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook {
    addrs: BTreeMap<Endpoint, String>,
}

impl AddressBook {
    /// An empty book (a pure client, or tests that fill it by hand).
    pub fn new() -> Self {
        Self::default()
    }

    /// The listening endpoints of a cluster config.
    pub fn from_config(config: &ClusterConfig) -> Self {
        let mut book = Self::new();
        for node in &config.nodes {
            book.insert(
                Endpoint::monitor(node.id),
                host_port(&node.address, node.monitor_port),
            );
            if let Some(port) = node.cms_port {
                book.insert(Endpoint::server(node.id), host_port(&node.address, port));
            }
        }
        book
    }

    /// Sets (or replaces) the address of one endpoint.
    pub fn insert(&mut self, endpoint: Endpoint, addr: impl Into<String>) {
        self.addrs.insert(endpoint, addr.into());
    }

    /// Every `host:port` in the book (the cluster's members), for resolving their addresses.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.addrs.values().map(String::as_str)
    }

    /// The `host:port` of an endpoint, if it listens.
    pub fn get(&self, endpoint: Endpoint) -> Option<&str> {
        if endpoint.role == Role::Ctl {
            return None;
        }
        self.addrs.get(&endpoint).map(String::as_str)
    }
}

/// `host:port`, bracketing a bare IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use cm_core::NodeId;

    use super::*;

    #[test]
    fn config_gives_monitor_and_cms_ports_and_nothing_for_agents() {
        let text = r#"
            name = "t"
            [[node]]
            id = 1
            name = "n1"
            address = "10.0.0.1"
            az = "AZ1"
            state_dir = "/s1"
            monitor_port = 17001
            cms_port = 17101
            [[node]]
            id = 2
            name = "n2"
            address = "::1"
            az = "AZ1"
            state_dir = "/s2"
            monitor_port = 17002
        "#;
        let cfg = ClusterConfig::from_toml_str(text).unwrap();
        let book = AddressBook::from_config(&cfg);
        assert_eq!(
            book.get(Endpoint::server(NodeId(1))),
            Some("10.0.0.1:17101")
        );
        assert_eq!(
            book.get(Endpoint::monitor(NodeId(1))),
            Some("10.0.0.1:17001")
        );
        assert_eq!(book.get(Endpoint::monitor(NodeId(2))), Some("[::1]:17002"));
        assert_eq!(book.get(Endpoint::server(NodeId(2))), None);
        assert_eq!(book.get(Endpoint::agent(NodeId(1))), None);
    }
}
