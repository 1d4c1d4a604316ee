//! The security keys of the cluster config (SPEC.md §16): where the TLS material is, and the
//! test-only escape hatch `allow_plaintext`.
//!
//! ```toml
//! ssl_ca_file = "tls/ca.crt"            # one or more CA certificates (PEM), all trusted
//! ssl_cert_file = "tls/{node}.crt"      # this node's certificate; `{node}` = the node's name
//! ssl_key_file = "tls/{node}.key"
//! ssl_operator_cert_file = "tls/operator.crt"   # cm_ctl's (flags may override)
//! ssl_operator_key_file = "tls/operator.key"
//! allow_plaintext = false               # tests only; honoured only on loopback addresses
//! ```
//!
//! Relative paths are relative to the config file's directory. A node's certificate names the
//! node (a DNS subject-alternative name equal to the node's `name`); the operator's names
//! [`OPERATOR_NAME`]. This module only validates the keys: reading the files is cm-io's.

use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, ConfigIssue};

/// The name an operator (cm_ctl) certificate carries instead of a node name.
pub const OPERATOR_NAME: &str = "cm-operator";

/// The placeholder in `ssl_cert_file`/`ssl_key_file` replaced by the node's name.
pub const NODE_PLACEHOLDER: &str = "{node}";

/// The TLS keys of the config (all optional in the file; the daemons refuse to start without
/// them unless `allow_plaintext` is set and honoured).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityConfig {
    /// PEM file with every trusted CA certificate.
    pub ssl_ca_file: Option<String>,
    /// PEM file with the node's certificate (chain); may contain [`NODE_PLACEHOLDER`].
    pub ssl_cert_file: Option<String>,
    /// PEM file with the node's private key; may contain [`NODE_PLACEHOLDER`].
    pub ssl_key_file: Option<String>,
    /// PEM file with the operator's certificate (cm_ctl).
    pub ssl_operator_cert_file: Option<String>,
    /// PEM file with the operator's private key (cm_ctl).
    pub ssl_operator_key_file: Option<String>,
    /// Run without TLS (tests only; refused unless every address is loopback).
    pub allow_plaintext: bool,
}

impl SecurityConfig {
    /// True when the node material (CA, certificate, key) is configured.
    pub fn has_node_material(&self) -> bool {
        self.ssl_ca_file.is_some() && self.ssl_cert_file.is_some() && self.ssl_key_file.is_some()
    }

    /// `path` with [`NODE_PLACEHOLDER`] replaced by `node_name`.
    pub fn for_node(path: &str, node_name: &str) -> String {
        path.replace(NODE_PLACEHOLDER, node_name)
    }
}

/// True for an address that can only reach this host: a loopback IP or `localhost`.
pub fn is_loopback(address: &str) -> bool {
    let a = address.trim().trim_start_matches('[').trim_end_matches(']');
    if a.eq_ignore_ascii_case("localhost") {
        return true;
    }
    a.parse::<core::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// True when `name` can be a certificate's DNS name: dot-separated labels of ASCII letters,
/// digits and `-`, none empty, none starting or ending with `-`, at most 253 bytes.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The rules of the security keys, as config issues.
pub(crate) fn check(cfg: &ClusterConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut push =
        |location: String, message: String| issues.push(ConfigIssue { location, message });
    let s = &cfg.security;
    if s.allow_plaintext {
        for (i, n) in cfg.nodes.iter().enumerate() {
            if !is_loopback(&n.address) {
                push(
                    "allow_plaintext".into(),
                    format!(
                        "plaintext is allowed only when every address is loopback, and \
                         node[{i}].address is `{}`: configure ssl_ca_file, ssl_cert_file and \
                         ssl_key_file instead",
                        n.address
                    ),
                );
            }
        }
    }
    let node_keys = [
        ("ssl_ca_file", &s.ssl_ca_file),
        ("ssl_cert_file", &s.ssl_cert_file),
        ("ssl_key_file", &s.ssl_key_file),
    ];
    let given = node_keys.iter().filter(|(_, v)| v.is_some()).count();
    if given != 0 && given != node_keys.len() {
        for (key, v) in node_keys {
            if v.is_none() {
                push(
                    key.into(),
                    "missing: ssl_ca_file, ssl_cert_file and ssl_key_file go together".into(),
                );
            }
        }
    }
    if s.ssl_operator_cert_file.is_some() != s.ssl_operator_key_file.is_some() {
        push(
            "ssl_operator_key_file".into(),
            "ssl_operator_cert_file and ssl_operator_key_file go together".into(),
        );
    }
    if given != 0 {
        for (i, n) in cfg.nodes.iter().enumerate() {
            if !is_dns_name(&n.name) {
                push(
                    format!("node[{i}].name"),
                    format!(
                        "`{}` cannot be a certificate's DNS name (letters, digits, `-` and `.` \
                         only): node certificates name their node",
                        n.name
                    ),
                );
            }
            if n.name == OPERATOR_NAME {
                push(
                    format!("node[{i}].name"),
                    format!("`{OPERATOR_NAME}` is the operator certificate's name"),
                );
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str, address: &str, name: &str) -> Result<ClusterConfig, String> {
        let text = format!(
            "name = \"t\"\n{extra}\n[[node]]\nid = 1\nname = \"{name}\"\naddress = \"{address}\"\n\
             az = \"AZ1\"\nstate_dir = \"/s\"\nmonitor_port = 17001\ncms_port = 17101\n"
        );
        ClusterConfig::from_toml_str(&text).map_err(|e| e.to_string())
    }

    const TLS: &str = "ssl_ca_file = \"ca.crt\"\nssl_cert_file = \"{node}.crt\"\n\
                       ssl_key_file = \"{node}.key\"";

    #[test]
    fn plaintext_is_refused_on_a_non_loopback_address_and_allowed_on_loopback() {
        let err = cfg("allow_plaintext = true", "10.0.0.1", "n1").unwrap_err();
        assert!(err.contains("allow_plaintext"), "{err}");
        assert!(err.contains("10.0.0.1"), "{err}");
        for lo in ["127.0.0.1", "127.0.0.5", "::1", "localhost"] {
            let c = cfg("allow_plaintext = true", lo, "n1").unwrap();
            assert!(c.security.allow_plaintext, "{lo}");
        }
    }

    #[test]
    fn the_tls_keys_go_together_and_paths_name_the_node() {
        let err = cfg("ssl_ca_file = \"ca.crt\"", "10.0.0.1", "n1").unwrap_err();
        assert!(
            err.contains("ssl_cert_file") && err.contains("ssl_key_file"),
            "{err}"
        );
        let c = cfg(TLS, "10.0.0.1", "n1").unwrap();
        assert!(c.security.has_node_material());
        let cert = c.security.ssl_cert_file.as_deref().unwrap();
        assert_eq!(SecurityConfig::for_node(cert, "n1"), "n1.crt");
        let err = cfg("ssl_operator_cert_file = \"o.crt\"", "::1", "n1").unwrap_err();
        assert!(err.contains("ssl_operator_key_file"), "{err}");
    }

    #[test]
    fn with_tls_a_node_name_must_be_a_dns_name_and_not_the_operators() {
        let err = cfg(TLS, "10.0.0.1", "n_1").unwrap_err();
        assert!(err.contains("node[0].name"), "{err}");
        let err = cfg(TLS, "10.0.0.1", OPERATOR_NAME).unwrap_err();
        assert!(err.contains("operator"), "{err}");
        // Without TLS, names stay free.
        cfg("allow_plaintext = true", "127.0.0.1", "n_1").unwrap();
    }

    #[test]
    fn the_removed_secret_file_key_says_what_replaced_it() {
        let err = cfg("secret_file = \"secret\"", "127.0.0.1", "n1").unwrap_err();
        assert!(
            err.contains("secret_file") && err.contains("ssl_ca_file"),
            "{err}"
        );
    }

    #[test]
    fn dns_names_and_loopback_table() {
        for ok in ["n1", "db-1.example.com", "A"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", "n_1", "-a", "a-", "a..b", "a b"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(is_loopback("[::1]"));
        assert!(!is_loopback("db1.example.com"));
        assert!(!is_loopback("0.0.0.0"));
    }
}
