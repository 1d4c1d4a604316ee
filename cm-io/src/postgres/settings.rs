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
/// - then the user's own rules from the data directory's `pg_hba.conf` as [`filter_user_hba`]
///   leaves them (no include, no replication rule, no network rule by `trust` or `ident`;
///   `initdb -A trust` writes such rules); what is dropped is logged.
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
         # The data directory's pg_hba.conf without includes, replication rules and network rules \
         by trust or ident:\n",
    );
    let filtered = filter_user_hba(user_hba);
    for line in &filtered.dropped {
        tracing::warn!(rule = %line, "dropped from the data directory's pg_hba.conf (§16)");
    }
    for line in &filtered.kept {
        out.push_str(line);
        out.push('\n');
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
    for line in logical_lines(user_ident) {
        let fields = fields(&line);
        let Some(first) = fields.first().and_then(|f| f.first()) else {
            continue; // blank or comment only
        };
        // A user line for the agent's map would let another OS user in as the database user;
        // an include could add one.
        if first.text == IDENT_MAP || is_include(&first.text) {
            tracing::warn!(line = %line, "dropped from the data directory's pg_ident.conf (§16)");
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The user's `pg_hba.conf` split into the rules kept and the rules dropped (each one logical
/// line, continuations joined; blank and comment lines are neither).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilteredHba {
    /// The rules copied into the managed file.
    pub kept: Vec<String>,
    /// The rules left out (logged).
    pub dropped: Vec<String>,
}

/// Filters the data directory's `pg_hba.conf`, tokenised as PostgreSQL does (continuation lines
/// joined, comments stripped, quotes removed), dropping:
/// - `include`, `include_if_exists` and `include_dir` lines (PostgreSQL ≥ 16): the included
///   rules would escape this filter;
/// - every replication rule (only members replicate, by the managed rules above them);
/// - every network rule authenticating by `trust` or `ident` (ident over TCP believes the
///   client's own identd: trust by address in practice).
pub fn filter_user_hba(user_hba: &str) -> FilteredHba {
    let mut out = FilteredHba::default();
    for line in logical_lines(user_hba) {
        let fields = fields(&line);
        let Some(kind) = fields.first().and_then(|f| f.first()) else {
            continue; // blank or comment only
        };
        // Quoted or not: PostgreSQL may not tell them apart for the first field.
        let include = is_include(&kind.text);
        let is_rule = kind.text.starts_with("host") || kind.text == "local";
        let replication = is_rule
            && fields
                .get(1)
                .is_some_and(|db| db.iter().any(|t| t.text == "replication"));
        // The method follows the address (one field, or two with a separate mask); options
        // (`name=value`) never equal a method's name, so any later field will do.
        let trusts_network = kind.text.starts_with("host")
            && fields.iter().skip(4).flatten().any(|t| {
                let m = t.text.to_ascii_lowercase();
                m == "trust" || m == "ident"
            });
        if include || replication || trusts_network {
            out.dropped.push(line);
        } else {
            out.kept.push(line);
        }
    }
    out
}

fn is_include(word: &str) -> bool {
    matches!(word, "include" | "include_if_exists" | "include_dir")
}

/// The logical lines of an hba/ident file: a line ending in a backslash continues on the next
/// one (PostgreSQL ≥ 14 joins them, dropping the backslash and the newline).
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(head) = raw.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(raw);
        lines.push(std::mem::take(&mut current));
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// One token of an hba/ident line, its quotes removed.
#[derive(Debug, Default)]
struct Token {
    text: String,
}

/// The fields of one logical line: blanks separate fields, commas separate the tokens of one
/// field (blanks after a comma do not end it), `"` quotes, `#` outside quotes starts a comment.
fn fields(line: &str) -> Vec<Vec<Token>> {
    let mut fields: Vec<Vec<Token>> = Vec::new();
    let mut field: Vec<Token> = Vec::new();
    let mut token = Token::default();
    let mut in_token = false;
    let mut in_quote = false;
    let mut after_comma = false;
    for c in line.chars() {
        if in_quote {
            if c == '"' {
                in_quote = false;
            } else {
                token.text.push(c);
            }
            continue;
        }
        match c {
            '#' => break,
            ',' => {
                field.push(std::mem::take(&mut token));
                in_token = false;
                after_comma = true;
            }
            c if c.is_whitespace() => {
                if in_token {
                    field.push(std::mem::take(&mut token));
                    in_token = false;
                }
                if !after_comma && !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                }
            }
            c => {
                if c == '"' {
                    in_quote = true;
                } else {
                    token.text.push(c);
                }
                in_token = true;
                after_comma = false;
            }
        }
    }
    if in_token {
        field.push(token);
    }
    if !field.is_empty() {
        fields.push(field);
    }
    fields
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
