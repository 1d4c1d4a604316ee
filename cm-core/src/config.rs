//! The cluster configuration: one TOML file, identical on every node.
//!
//! ```toml
//! name = "demo"
//!
//! [[az]]
//! name = "AZ1"
//! priority = 1
//!
//! [[node]]
//! id = 1
//! name = "n1"
//! address = "127.0.0.1"
//! az = "AZ1"
//! state_dir = "/var/lib/cm/n1"
//! monitor_port = 17001          # om_monitor's control port (cm_ctl reaches the node here)
//! cms_port = 17101              # present iff this node runs a cm_server
//! rest_port = 8008              # cm_agent's HTTP health endpoints (§15); absent = not served
//!
//! [[group]]
//! id = 1
//! [[group.member]]
//! instance = 6001
//! node = 1
//! data_dir = "/var/lib/pg/dn1"
//! port = 5432
//!
//! [params]                      # openGauss names, SPEC.md §11
//! profile = "default"
//! ```
//!
//! [`ClusterConfig::from_toml_str`] parses and validates; every problem is returned with its
//! location (`node[2].az`), not only the first.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{AzName, GroupId, InstanceId, NodeId};
use crate::params::Params;
use crate::security::SecurityConfig;

#[path = "config_resource.rs"]
mod resource;
pub use resource::{Placement, RESOURCE_NAME_MAX, ResourceConfig, ResourceInstanceConfig};

/// One problem in a configuration, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigIssue {
    /// Where: a key path such as `node[2].az` or `params.agent_report_interval`.
    pub location: String,
    /// What is wrong and, where useful, what to do.
    pub message: String,
}

/// A configuration that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML or does not have the expected shape.
    #[error("{0}")]
    Syntax(String),
    /// The configuration parsed but breaks one or more rules.
    #[error("{}", render_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    let mut s = format!("{} problem(s) in the cluster config:", issues.len());
    for i in issues {
        s.push_str(&format!("\n  {}: {}", i.location, i.message));
    }
    s
}

/// An availability zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzConfig {
    /// Its name.
    pub name: AzName,
    /// Failover preference: lower is preferred (§4.2).
    #[serde(default)]
    pub priority: u32,
}

/// A host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Its id (unique, > 0).
    pub id: NodeId,
    /// Its name, as shown by `cm_ctl query`.
    pub name: String,
    /// The address other nodes reach it at.
    pub address: String,
    /// Its availability zone.
    pub az: AzName,
    /// The directory holding its flag files, terms and quorum store.
    pub state_dir: String,
    /// The TCP port of om_monitor's control port.
    pub monitor_port: u16,
    /// The TCP port of its cm_server, if it runs one.
    #[serde(default)]
    pub cms_port: Option<u16>,
    /// The HTTP port of its cm_server's `/metrics` and `/cluster` (§15); none: not served.
    #[serde(default)]
    pub cms_http_port: Option<u16>,
    /// The TCP port of its cm_agent's HTTP endpoints (§15: `/primary`, `/replica`, `/metrics`,
    /// ...). Absent: the agent serves no HTTP (a load balancer needs it on every DN node).
    #[serde(default)]
    pub rest_port: Option<u16>,
}

/// One DN of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The instance id (unique in the cluster), e.g. 6001.
    pub instance: InstanceId,
    /// The node it runs on.
    pub node: NodeId,
    /// Its data directory.
    pub data_dir: String,
    /// Its database port.
    pub port: u16,
}

/// A DN group: one primary plus standbys. The first member is the install-time primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Its id (unique).
    pub id: GroupId,
    /// Its members in config order (order breaks candidate ties, §4.2).
    #[serde(rename = "member")]
    pub members: Vec<MemberConfig>,
}

/// How the agents run the databases (driver settings, read by cm-io only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Which driver: `postgres`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Directory of the database binaries.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    /// The unprivileged OS user that runs the database.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// The database user the agent connects as.
    #[serde(default = "default_os_user")]
    pub db_user: String,
}

fn default_kind() -> String {
    "postgres".into()
}
fn default_bin_dir() -> String {
    "/usr/lib/postgresql/15/bin".into()
}
fn default_os_user() -> String {
    "postgres".into()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            bin_dir: default_bin_dir(),
            os_user: default_os_user(),
            db_user: default_os_user(),
        }
    }
}

/// Operator scripts an agent runs after an event on one of its DNs (§15, CM's
/// `event_triggers`): absolute paths, each run as `PATH EVENT INSTANCE ROLE TERM`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTriggers {
    /// The DN started (seen running after being seen stopped).
    #[serde(default)]
    pub on_start: Option<String>,
    /// The DN stopped (seen stopped after being seen running).
    #[serde(default)]
    pub on_stop: Option<String>,
    /// The DN became primary through a Failover command.
    #[serde(default)]
    pub on_failover: Option<String>,
    /// The DN became primary through a Switchover command.
    #[serde(default)]
    pub on_switchover: Option<String>,
    /// The DN's role (primary or standby) differs from the last one seen.
    #[serde(default)]
    pub on_role_change: Option<String>,
}

impl EventTriggers {
    /// `(key, path)` of every configured trigger.
    pub fn configured(&self) -> Vec<(&'static str, &str)> {
        [
            ("on_start", &self.on_start),
            ("on_stop", &self.on_stop),
            ("on_failover", &self.on_failover),
            ("on_switchover", &self.on_switchover),
            ("on_role_change", &self.on_role_change),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|p| (k, p)))
        .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    /// Removed (the HMAC handshake gave way to TLS); kept to say so.
    #[serde(default)]
    secret_file: Option<toml::Value>,
    #[serde(default)]
    ssl_ca_file: Option<String>,
    #[serde(default)]
    ssl_cert_file: Option<String>,
    #[serde(default)]
    ssl_key_file: Option<String>,
    #[serde(default)]
    ssl_operator_cert_file: Option<String>,
    #[serde(default)]
    ssl_operator_key_file: Option<String>,
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default, rename = "az")]
    azs: Vec<AzConfig>,
    #[serde(rename = "node")]
    nodes: Vec<NodeConfig>,
    #[serde(default, rename = "group")]
    groups: Vec<GroupConfig>,
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    event_triggers: EventTriggers,
    #[serde(default, rename = "resource")]
    resources: Vec<resource::RawResource>,
}

/// A validated cluster configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// TLS material and `allow_plaintext` (SPEC.md §16).
    pub security: SecurityConfig,
    /// Availability zones (an AZ named by a node but not listed gets priority 0).
    pub azs: Vec<AzConfig>,
    /// Hosts, in config order.
    pub nodes: Vec<NodeConfig>,
    /// DN groups, in config order.
    pub groups: Vec<GroupConfig>,
    /// Database driver settings.
    pub database: DatabaseConfig,
    /// Parameters.
    pub params: Params,
    /// Event trigger scripts (§15).
    #[serde(default)]
    pub event_triggers: EventTriggers,
    /// Custom resources (SPEC §14), in config order.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

impl ClusterConfig {
    /// Parses and validates a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut issues = Vec::new();
        let params = match Params::from_toml_table(&raw.params) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs {
                    let (loc, msg) = match &e {
                        crate::params::ParamError::Unknown(n) => {
                            (format!("params.{n}"), "unknown parameter".to_owned())
                        }
                        crate::params::ParamError::Invalid { name, reason } => {
                            (format!("params.{name}"), reason.clone())
                        }
                    };
                    issues.push(ConfigIssue {
                        location: loc,
                        message: msg,
                    });
                }
                Params::defaults()
            }
        };
        if raw.secret_file.is_some() {
            issues.push(ConfigIssue {
                location: "secret_file".into(),
                message: "the shared-secret handshake was replaced by mutual TLS: remove \
                          `secret_file` and set ssl_ca_file, ssl_cert_file and ssl_key_file \
                          (cm_local generates them; see cm-daemons/README.md)"
                    .into(),
            });
        }
        let security = SecurityConfig {
            ssl_ca_file: raw.ssl_ca_file,
            ssl_cert_file: raw.ssl_cert_file,
            ssl_key_file: raw.ssl_key_file,
            ssl_operator_cert_file: raw.ssl_operator_cert_file,
            ssl_operator_key_file: raw.ssl_operator_key_file,
            allow_plaintext: raw.allow_plaintext,
        };
        let resources = resource::convert(raw.resources, &mut issues);
        let cfg = Self {
            resources,
            name: raw.name,
            security,
            azs: raw.azs,
            nodes: raw.nodes,
            groups: raw.groups,
            database: raw.database,
            params,
            event_triggers: raw.event_triggers,
        };
        issues.extend(cfg.validate());
        if issues.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// Every rule the configuration breaks, with locations. Empty means valid.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut v = Validator::default();
        v.check_nodes(self);
        v.check_groups(self);
        v.issues.extend(crate::security::check(self));
        for (key, path) in self.event_triggers.configured() {
            if !path.starts_with('/') {
                v.push(
                    format!("event_triggers.{key}"),
                    format!("`{path}` is not an absolute path: give the script's full path"),
                );
            }
        }
        resource::check_resources(self, &mut v.issues);
        for (name, msg) in self.params.check_orderings() {
            v.push(format!("params.{name}"), msg);
        }
        if self.cms_nodes().is_empty() {
            v.push(
                "node",
                "no node runs a cm_server: give at least one node a `cms_port`".into(),
            );
        }
        v.issues
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The nodes that run a cm_server, in config order.
    pub fn cms_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.cms_port.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The group with this id.
    pub fn group(&self, id: GroupId) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// The group and member config of an instance.
    pub fn member(&self, instance: InstanceId) -> Option<(&GroupConfig, &MemberConfig)> {
        self.groups.iter().find_map(|g| {
            g.members
                .iter()
                .find(|m| m.instance == instance)
                .map(|m| (g, m))
        })
    }

    /// The instances that run on a node, in config order.
    pub fn instances_on(&self, node: NodeId) -> Vec<InstanceId> {
        self.groups
            .iter()
            .flat_map(|g| g.members.iter())
            .filter(|m| m.node == node)
            .map(|m| m.instance)
            .collect()
    }

    /// The resource that has an instance with this id, and that instance.
    pub fn resource_instance(
        &self,
        id: InstanceId,
    ) -> Option<(&ResourceConfig, &ResourceInstanceConfig)> {
        self.resources
            .iter()
            .find_map(|r| r.instance(id).map(|i| (r, i)))
    }

    /// The AZ of a node.
    pub fn az_of(&self, node: NodeId) -> Option<&AzName> {
        self.node(node).map(|n| &n.az)
    }

    /// The failover priority of an AZ (0 when not listed).
    pub fn az_priority(&self, az: &AzName) -> u32 {
        self.azs
            .iter()
            .find(|a| &a.name == az)
            .map_or(0, |a| a.priority)
    }
}

#[derive(Default)]
struct Validator {
    issues: Vec<ConfigIssue>,
}

impl Validator {
    fn push(&mut self, location: impl Into<String>, message: String) {
        self.issues.push(ConfigIssue {
            location: location.into(),
            message,
        });
    }

    fn check_nodes(&mut self, cfg: &ClusterConfig) {
        if cfg.nodes.is_empty() {
            self.push("node", "the cluster has no nodes".into());
        }
        let azs: BTreeSet<&AzName> = cfg.azs.iter().map(|a| &a.name).collect();
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut endpoints: BTreeMap<(String, u16), String> = BTreeMap::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            let at = |k: &str| format!("node[{i}].{k}");
            if n.id.0 == 0 {
                self.push(at("id"), "node ids start at 1".into());
            }
            if !ids.insert(n.id) {
                self.push(at("id"), format!("duplicate node id {}", n.id.0));
            }
            if !n.name.is_empty() && n.name.bytes().all(|b| b.is_ascii_digit()) {
                self.push(
                    at("name"),
                    format!(
                        "node name `{}` is all digits: `-n {}` would mean node id {}; \
                         use a name with a letter",
                        n.name, n.name, n.name
                    ),
                );
            }
            if !names.insert(n.name.as_str()) {
                self.push(at("name"), format!("duplicate node name `{}`", n.name));
            }
            if n.address.trim().is_empty() {
                self.push(at("address"), "empty address".into());
            }
            if n.state_dir.trim().is_empty() {
                self.push(at("state_dir"), "empty state directory".into());
            }
            if !cfg.azs.is_empty() && !azs.contains(&n.az) {
                self.push(at("az"), format!("AZ `{}` is not declared in [[az]]", n.az));
            }
            let mut ports = vec![("monitor_port", n.monitor_port)];
            if let Some(p) = n.cms_port {
                ports.push(("cms_port", p));
            }
            if let Some(p) = n.cms_http_port {
                if n.cms_port.is_none() {
                    self.push(
                        at("cms_http_port"),
                        "only a node that runs a cm_server (has a `cms_port`) serves it".into(),
                    );
                }
                ports.push(("cms_http_port", p));
            }

            if let Some(p) = n.rest_port {
                ports.push(("rest_port", p));
            }
            for (key, port) in ports {
                self.claim_port(&mut endpoints, &n.address, port, at(key));
            }
        }
    }

    fn claim_port(
        &mut self,
        endpoints: &mut BTreeMap<(String, u16), String>,
        address: &str,
        port: u16,
        location: String,
    ) {
        if port == 0 {
            self.push(location, "port 0 is not a fixed port".into());
            return;
        }
        if let Some(prev) = endpoints.insert((address.to_owned(), port), location.clone()) {
            self.push(
                location,
                format!("{address}:{port} is already used by {prev}"),
            );
        }
    }

    fn check_groups(&mut self, cfg: &ClusterConfig) {
        let node_ids: BTreeSet<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
        let mut group_ids = BTreeSet::new();
        let mut instances = BTreeSet::new();
        let mut endpoints: BTreeMap<(String, u16), String> = BTreeMap::new();
        for n in &cfg.nodes {
            endpoints.insert((n.address.clone(), n.monitor_port), "a monitor port".into());
            if let Some(p) = n.cms_port {
                endpoints.insert((n.address.clone(), p), "a cms port".into());
            }
            if let Some(p) = n.cms_http_port {
                endpoints.insert((n.address.clone(), p), "a cms http port".into());
            }

            if let Some(p) = n.rest_port {
                endpoints.insert((n.address.clone(), p), "a rest port".into());
            }
        }
        for (gi, g) in cfg.groups.iter().enumerate() {
            if !group_ids.insert(g.id) {
                self.push(
                    format!("group[{gi}].id"),
                    format!("duplicate group id {}", g.id.0),
                );
            }
            if g.members.is_empty() {
                self.push(
                    format!("group[{gi}].member"),
                    "a group needs at least one member".into(),
                );
            }
            let mut dirs_on_node = BTreeSet::new();
            for (mi, m) in g.members.iter().enumerate() {
                let at = |k: &str| format!("group[{gi}].member[{mi}].{k}");
                if m.instance.0 == 0 {
                    self.push(at("instance"), "instance ids start at 1".into());
                }
                if !instances.insert(m.instance) {
                    self.push(
                        at("instance"),
                        format!("duplicate instance id {}", m.instance.0),
                    );
                }
                if !node_ids.contains(&m.node) {
                    self.push(at("node"), format!("node {} is not declared", m.node.0));
                } else if let Some(n) = cfg.node(m.node) {
                    self.claim_port(&mut endpoints, &n.address, m.port, at("port"));
                }
                if m.data_dir.trim().is_empty() {
                    self.push(at("data_dir"), "empty data directory".into());
                } else if !m.data_dir.starts_with('/') {
                    self.push(
                        at("data_dir"),
                        format!("data directory {:?} is not an absolute path", m.data_dir),
                    );
                } else if m.data_dir.ends_with('/') {
                    // A full copy is built beside the data directory (`<data>.cm_build`).
                    self.push(
                        at("data_dir"),
                        format!(
                            "data directory {:?} ends with '/': write it without the trailing slash",
                            m.data_dir
                        ),
                    );
                }
                if !dirs_on_node.insert((m.node, m.data_dir.clone())) {
                    self.push(at("data_dir"), "two members share a data directory".into());
                }
            }
        }
    }
}

/// A small valid cluster: three nodes (n1, n2 in AZ1; n3 in AZ2), a CMS on each, one group of
/// instances 6001 (primary at install), 6002 and 6003. For examples, tests, benchmarks and
/// fuzzing — one fixture instead of a copy per crate.
pub const EXAMPLE_CONFIG: &str = r#"
name = "demo"

[[az]]
name = "AZ1"
priority = 1

[[az]]
name = "AZ2"
priority = 2

[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/cm/n1"
monitor_port = 17001
cms_port = 17101

[[node]]
id = 2
name = "n2"
address = "127.0.0.2"
az = "AZ1"
state_dir = "/tmp/cm/n2"
monitor_port = 17001
cms_port = 17101

[[node]]
id = 3
name = "n3"
address = "127.0.0.3"
az = "AZ2"
state_dir = "/tmp/cm/n3"
monitor_port = 17001
cms_port = 17101

[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/tmp/pg/dn1"
port = 5432
[[group.member]]
instance = 6002
node = 2
data_dir = "/tmp/pg/dn2"
port = 5432
[[group.member]]
instance = 6003
node = 3
data_dir = "/tmp/pg/dn3"
port = 5432
"#;

/// The smallest valid cluster: one node `n1` running a CMS and one group with the single
/// instance 6001. For tests of one machine (monitor, journal, replay) in every crate — one
/// fixture instead of a copy per test file.
pub const ONE_NODE_CONFIG: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "10.0.0.1"
az = "AZ1"
state_dir = "/s/n1"
monitor_port = 17001
cms_port = 17101
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d/6001"
port = 5432
"#;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
