//! The settings the driver owns (§9): rendered into a file *outside* the data directory that
//! PostgreSQL reads through `config_file` on its command line, plus a managed `pg_hba.conf`
//! beside it. Nothing here touches the disk: the driver writes what these functions render, so
//! the rules can be tested as plain text.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use cm_core::InstanceId;

use super::credential::conninfo_value;
use serde::{Deserialize, Serialize};

/// Every key the driver manages. They are removed from `postgresql.auto.conf` at every start
/// and after every Build: `ALTER SYSTEM` (or a rewind/base backup copying the source's file)
/// would otherwise override the managed file, which PostgreSQL reads before the auto file.
pub const MANAGED_KEYS: &[&str] = &[
    "data_directory",
    "hba_file",
    "ident_file",
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "synchronous_commit",
    "default_transaction_read_only",
    "hot_standby",
    "recovery_target_timeline",
    "restore_command",
    "recovery_min_apply_delay",
    "wal_log_hints",
    "max_slot_wal_keep_size",
    "wal_keep_size",
    "wal_sender_timeout",
    "wal_receiver_timeout",
    "wal_receiver_status_interval",
];

/// WAL kept for rewinds and lagging standbys beyond what slots hold.
pub const WAL_KEEP_SIZE: &str = "256MB";

/// The name of an instance as PostgreSQL sees it: `application_name`, replication slot name and
/// `synchronous_standby_names` entry (lower case, digits and `_`, valid as a slot name).
pub fn instance_name(id: InstanceId) -> String {
    format!("dn_{}", id.0)
}

/// Where an instance takes its WAL from: the intent the driver was last given. It is also the
/// lock state it reports (§4.1), so it is persisted beside the managed settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Upstream {
    /// No upstream: a pending member, or a primary.
    None,
    /// Lock1: never reconnect.
    Lock1,
    /// Stream from this primary (`locked` when the CMS named it with Lock2).
    Follow {
        /// The upstream instance.
        primary: InstanceId,
        /// Lock2 (follow only this one) rather than Unlock/Notify.
        locked: bool,
    },
}

/// The driver's desired state of one instance, persisted as JSON beside the managed file so an
/// agent restart keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Upstream / lock intent.
    pub upstream: Upstream,
    /// Started pending and not yet told to follow (reported as `Pending`).
    pub pending: bool,
    /// `ANY k (...)`: k (0 = asynchronous).
    pub sync_k: u32,
    /// `ANY k (...)`: the member names, in config order.
    pub sync_members: Vec<InstanceId>,
    /// `default_transaction_read_only`.
    pub read_only: bool,
    /// The source of the last successful Build, until the next start: a rebuilt member
    /// streams from it while it starts, since a copy taken under writes becomes consistent
    /// only with WAL written after it (issue 18: a rewound old primary started with no
    /// upstream never finished its start).
    #[serde(default)]
    pub rebuilt_from: Option<InstanceId>,
}

/// The value of `synchronous_standby_names` for `k` of `members` (§9): empty when k is 0.
/// Names are double-quoted so that any instance name is a valid standby name.
pub fn sync_standby_names(k: u32, members: &[InstanceId]) -> String {
    if k == 0 || members.is_empty() {
        return String::new();
    }
    let names: Vec<String> = members
        .iter()
        .map(|m| format!("\"{}\"", instance_name(*m)))
        .collect();
    format!("ANY {k} ({})", names.join(", "))
}

/// An address and port another member is reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The member.
    pub instance: InstanceId,
    /// Its host address, as in the cluster config.
    pub address: String,
    /// Its port.
    pub port: u16,
}

/// Everything the managed file depends on besides [`Desired`].
#[derive(Clone, Debug)]
pub struct Layout<'a> {
    /// This instance.
    pub instance: InstanceId,
    /// Its data directory.
    pub data_dir: &'a Path,
    /// The driver's directory for it (managed files, socket directory, log).
    pub run_dir: &'a Path,
    /// The address it listens on.
    pub listen_address: &'a str,
    /// Its port.
    pub port: u16,
    /// The database user the driver and the standbys connect as.
    pub db_user: &'a str,
    /// The passfile holding that user's password (§16), read by the WAL receiver.
    pub passfile: &'a Path,
    /// `wal_sender_timeout`.
    pub wal_sender_timeout: Duration,
    /// `wal_receiver_timeout`.
    pub wal_receiver_timeout: Duration,
    /// `max_slot_wal_keep_size` in MB.
    pub max_slot_wal_keep_size_mb: u64,
}

/// A configuration string literal with embedded quotes doubled.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The `primary_conninfo` for following `upstream`: the WAL receiver authenticates with the
/// cluster's password from the passfile (§16).
pub fn primary_conninfo(layout: &Layout<'_>, upstream: &Endpoint) -> String {
    format!(
        "host={} port={} user={} passfile={} application_name={} connect_timeout=2",
        upstream.address,
        upstream.port,
        layout.db_user,
        conninfo_value(&layout.passfile.display().to_string()),
        instance_name(layout.instance)
    )
}

/// Renders the managed settings file. The user's own `postgresql.conf` in the data directory is
/// included first, so every managed line after it wins.
pub fn render_config(
    layout: &Layout<'_>,
    desired: &Desired,
    upstream: Option<&Endpoint>,
) -> String {
    let data = layout.data_dir.display().to_string();
    let run = layout.run_dir.display().to_string();
    let (conninfo, slot) = match upstream {
        Some(up) => (primary_conninfo(layout, up), instance_name(layout.instance)),
        None => (String::new(), String::new()),
    };
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let onoff = |b: bool| if b { "on" } else { "off" };
    let lines: Vec<(&str, String)> = vec![
        ("data_directory", quote(&data)),
        ("hba_file", quote(&format!("{run}/pg_hba.conf"))),
        ("ident_file", quote(&format!("{run}/pg_ident.conf"))),
        ("port", layout.port.to_string()),
        ("listen_addresses", quote(layout.listen_address)),
        ("unix_socket_directories", quote(&format!("{run}/sock"))),
        ("hot_standby", "on".into()),
        ("wal_log_hints", "on".into()),
        ("recovery_target_timeline", quote("latest")),
        ("restore_command", quote("")),
        ("recovery_min_apply_delay", "0".into()),
        ("synchronous_commit", "on".into()),
        (
            "synchronous_standby_names",
            quote(&sync_standby_names(desired.sync_k, &desired.sync_members)),
        ),
        (
            "default_transaction_read_only",
            onoff(desired.read_only).into(),
        ),
        ("primary_conninfo", quote(&conninfo)),
        ("primary_slot_name", quote(&slot)),
        (
            "max_slot_wal_keep_size",
            quote(&format!("{}MB", layout.max_slot_wal_keep_size_mb)),
        ),
        // pg_rewind reads the target's own WAL back to the last common checkpoint; without a
        // floor, the target's checkpoints recycle that segment and rewind falls back to a full
        // copy (seen on this machine: "could not find previous WAL record").
        ("wal_keep_size", quote(WAL_KEEP_SIZE)),
        ("wal_sender_timeout", quote(&ms(layout.wal_sender_timeout))),
        (
            "wal_receiver_timeout",
            quote(&ms(layout.wal_receiver_timeout)),
        ),
        ("wal_receiver_status_interval", quote("1s")),
    ];
    let mut out = format!(
        "# Managed by cm_agent for instance {}: rewritten on every change, do not edit.\n\
         # Put your own settings into {data}/postgresql.conf (included first).\n\
         include_if_exists = {}\n",
        instance_name(layout.instance),
        quote(&format!("{data}/postgresql.conf")),
    );
    for (k, v) in lines {
        debug_assert!(MANAGED_KEYS.contains(&k), "{k} must be listed as managed");
        let _ = writeln!(out, "{k} = {v}");
    }
    out
}

/// An address written as a pg_hba address field: a bare IP gets its host mask.
fn hba_address(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => format!("{a}/32"),
        Ok(std::net::IpAddr::V6(a)) => format!("{a}/128"),
        Err(_) => addr.to_owned(),
    }
}

/// The `pg_ident.conf` map through which the agent's OS user (root) and the database OS user
/// may connect over the unix socket as the database user (peer authentication, §16).
pub const IDENT_MAP: &str = "cm_agent";

/// Renders the managed `pg_hba.conf` (§16: nothing trusts an address):
/// - over the unix socket (in a directory only the database OS user and root can enter), peer
///   authentication: the database user through [`IDENT_MAP`], every other user as itself;
/// - over TCP, only member addresses may replicate or connect as the database user (pg_rewind,
///   pg_basebackup and the agent's remote calls need a normal connection too), with the
///   cluster's password (SCRAM); every other replication connection is rejected;
/// - then the user's own rules from the data directory's `pg_hba.conf`, minus any replication
///   rule and any network rule that trusts without a password (`initdb -A trust` writes them).
pub fn render_hba(db_user: &str, member_addresses: &[String], user_hba: &str) -> String {
    let mut out = format!(
        "# Managed by cm_agent: rewritten on every start, do not edit.\n\
         local all {db_user} peer map={IDENT_MAP}\n\
         local all all peer\n"
    );
    let mut seen = Vec::new();
    for a in member_addresses {
        let a = hba_address(a);
        if seen.contains(&a) {
            continue;
        }
        let _ = writeln!(out, "host replication {db_user} {a} scram-sha-256");
        let _ = writeln!(out, "host all {db_user} {a} scram-sha-256");
        seen.push(a);
    }
    out.push_str(
        "host replication all all reject\n\
         # The data directory's pg_hba.conf without replication rules and without network rules \
         that trust:\n",
    );
    for line in user_hba.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let kind = fields.first().copied().unwrap_or("");
        let is_rule = kind.starts_with("host") || kind == "local";
        let replication = is_rule
            && fields
                .get(1)
                .is_some_and(|db| db.split(',').any(|d| d == "replication"));
        // The method follows the address (one field, or two with a separate mask).
        let trusts_network =
            kind.starts_with("host") && fields.iter().skip(4).any(|f| *f == "trust");
        if !replication && !trusts_network {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Renders the managed `pg_ident.conf`: [`IDENT_MAP`] lets the agent's OS user and the database
/// OS user in as the database user; the data directory's own `pg_ident.conf` follows (the
/// user's maps for their own `peer`/`ident` rules).
pub fn render_ident(agent_os_user: &str, os_user: &str, db_user: &str, user_ident: &str) -> String {
    let mut out = String::from("# Managed by cm_agent: rewritten on every start, do not edit.\n");
    for os in [agent_os_user, os_user] {
        let line = format!("{IDENT_MAP} {os} {db_user}\n");
        if !out.contains(&line) {
            out.push_str(&line);
        }
    }
    out.push_str("# The data directory's pg_ident.conf:\n");
    out.push_str(user_ident);
    if !user_ident.is_empty() && !user_ident.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `postgresql.auto.conf` without any managed key (comments and other settings kept).
/// Returns `None` when nothing had to be removed.
pub fn strip_auto_conf(text: &str) -> Option<String> {
    let mut removed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line
            .split(['=', ' ', '\t'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !line.trim_start().starts_with('#') && MANAGED_KEYS.contains(&key.as_str()) {
            removed = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    removed.then_some(out)
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
