//! Parameters with their openGauss names and SPEC.md §11 defaults, the fast profile, and the
//! derived timings every machine shares (split-brain timeout, fencing floor, lease).
//!
//! One table (`params!` below) declares each parameter once: its name in config files and in
//! `cm_ctl set`, the side that reads it, its default, its fast-profile value and its bounds.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{scale_down, scale_up};

/// Which daemon a parameter belongs to (`cm_ctl set --param --agent|--server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamSide {
    /// Read by cm_server.
    Server,
    /// Read by cm_agent.
    Agent,
    /// Read by both (timings both sides must agree on).
    Both,
}

/// The profile a parameter set starts from (`profile = "fast"` in `[params]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// SPEC.md §11 defaults (openGauss CM's).
    #[default]
    Default,
    /// The opt-in fast profile of SPEC.md §11.
    Fast,
}

/// Synchronous replication mode of the DN groups (§9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `ANY k (all members)` with k = n − q.
    #[default]
    Quorum,
    /// Asynchronous replication.
    Off,
}

/// Why a parameter value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// No parameter has that name.
    #[error("unknown parameter `{0}`")]
    Unknown(String),
    /// The value does not parse or is out of range.
    #[error("parameter `{name}`: {reason}")]
    Invalid {
        /// The parameter.
        name: String,
        /// What is wrong, in words.
        reason: String,
    },
}

trait ParamValue: Sized {
    fn parse_text(s: &str) -> Result<Self, String>;
    fn from_toml(v: &toml::Value) -> Result<Self, String>;
    fn render(&self) -> String;
    fn to_f64(&self) -> Option<f64>;
}

impl ParamValue for f64 {
    fn parse_text(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<Self>()
            .map_err(|_| format!("`{s}` is not a number"))
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as Self),
            other => Err(format!("expected a number, found {}", other.type_str())),
        }
    }
    fn render(&self) -> String {
        format!("{self}")
    }
    fn to_f64(&self) -> Option<f64> {
        Some(*self)
    }
}

impl ParamValue for u64 {
    fn parse_text(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<Self>()
            .map_err(|_| format!("`{s}` is not a non-negative integer"))
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(i) if *i >= 0 => Ok(*i as Self),
            toml::Value::Integer(i) => Err(format!("{i} is negative")),
            other => Err(format!("expected an integer, found {}", other.type_str())),
        }
    }
    fn render(&self) -> String {
        format!("{self}")
    }
    fn to_f64(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl ParamValue for bool {
    fn parse_text(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(format!("`{s}` is not on/off")),
        }
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::String(s) => Self::parse_text(s),
            other => Err(format!("expected on/off, found {}", other.type_str())),
        }
    }
    fn render(&self) -> String {
        if *self { "on".into() } else { "off".into() }
    }
    fn to_f64(&self) -> Option<f64> {
        None
    }
}

impl ParamValue for String {
    fn parse_text(s: &str) -> Result<Self, String> {
        Ok(s.to_owned())
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", other.type_str())),
        }
    }
    fn render(&self) -> String {
        self.clone()
    }
    fn to_f64(&self) -> Option<f64> {
        None
    }
}

impl ParamValue for SyncMode {
    fn parse_text(s: &str) -> Result<Self, String> {
        match s.trim() {
            "quorum" => Ok(Self::Quorum),
            "off" => Ok(Self::Off),
            _ => Err(format!("`{s}` is not `quorum` or `off`")),
        }
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::parse_text(s),
            other => Err(format!(
                "expected `quorum` or `off`, found {}",
                other.type_str()
            )),
        }
    }
    fn render(&self) -> String {
        match self {
            Self::Quorum => "quorum".into(),
            Self::Off => "off".into(),
        }
    }
    fn to_f64(&self) -> Option<f64> {
        None
    }
}

/// Safety-breaking switches for the simulator's negative controls. Not parameters: they are
/// set by code only (cm-sim's `[test_switches]` scenario table, unit tests), never by a config
/// file or `cm_ctl set` (SPEC.md §16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestSwitches {
    /// Replaces the Lock1 quorum q when non-zero (0 = ⌊(n+1)/2⌋); breaks §4.2 on purpose.
    pub lock1_quorum_override: u64,
    /// Skips the fencing floor (§8); breaks safety on purpose.
    pub skip_fencing_floor: bool,
}

/// The names the test switches had when they were parameters: refused with the reason.
pub const TEST_SWITCH_NAMES: [&str; 2] = ["test_lock1_quorum_override", "test_skip_fencing_floor"];

fn refuse_test_switch(name: &str) -> Result<(), ParamError> {
    if TEST_SWITCH_NAMES.contains(&name) {
        return Err(ParamError::Invalid {
            name: name.into(),
            reason: "a test-only switch that breaks split-brain protection, not a parameter: \
                     no config file or cm_ctl set can reach it (only the simulator's \
                     scenarios set it, in [test_switches])"
                .into(),
        });
    }
    Ok(())
}

macro_rules! params {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident : $ty:ty = $default:expr, fast $fast:expr, $side:ident,
            range ($min:expr, $max:expr) $(, alias $alias:literal)? ;
    )*) => {
        /// Every tunable of the cluster manager. Field names are the openGauss parameter names.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Params {
            /// The profile these values started from.
            pub profile: Profile,
            $( $(#[doc = $doc])* pub $name: $ty, )*
            /// Switches that break safety on purpose for the simulator's negative controls
            /// (SPEC.md §16): not parameters, so no config file and no `cm_ctl set` reaches
            /// them; only code (the simulator's scenario schema, tests) sets them.
            #[serde(default)]
            pub test: TestSwitches,
        }

        impl Params {
            /// SPEC.md §11 defaults.
            pub fn defaults() -> Self {
                Self {
                    profile: Profile::Default,
                    $( $name: $default, )*
                    test: TestSwitches::default(),
                }
            }

            /// The fast profile of SPEC.md §11.
            pub fn fast() -> Self {
                Self {
                    profile: Profile::Fast,
                    $( $name: $fast, )*
                    test: TestSwitches::default(),
                }
            }

            /// The defaults of a profile.
            pub fn for_profile(profile: Profile) -> Self {
                match profile {
                    Profile::Default => Self::defaults(),
                    Profile::Fast => Self::fast(),
                }
            }

            /// Every parameter name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The side that reads a parameter, or `None` for an unknown name.
            pub fn side_of(name: &str) -> Option<ParamSide> {
                match Self::canonical(name)? {
                    $( stringify!($name) => Some(ParamSide::$side), )*
                    _ => None,
                }
            }

            /// The canonical name of a parameter (aliases resolved).
            pub fn canonical(name: &str) -> Option<&'static str> {
                match name {
                    $( stringify!($name) $(| $alias)? => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// Sets one parameter from its text form (as `cm_ctl set -k NAME=VALUE` gives it).
            pub fn set_text(&mut self, name: &str, value: &str) -> Result<(), ParamError> {
                refuse_test_switch(name)?;
                let canon = Self::canonical(name)
                    .ok_or_else(|| ParamError::Unknown(name.to_owned()))?;
                match canon {
                    $( stringify!($name) => {
                        let v = <$ty as ParamValue>::parse_text(value)
                            .map_err(|reason| ParamError::Invalid { name: canon.into(), reason })?;
                        check_range(canon, v.to_f64(), $min, $max)?;
                        self.$name = v;
                    } )*
                    _ => return Err(ParamError::Unknown(name.to_owned())),
                }
                Ok(())
            }

            fn set_toml(&mut self, name: &str, value: &toml::Value) -> Result<(), ParamError> {
                refuse_test_switch(name)?;
                let canon = Self::canonical(name)
                    .ok_or_else(|| ParamError::Unknown(name.to_owned()))?;
                match canon {
                    $( stringify!($name) => {
                        let v = <$ty as ParamValue>::from_toml(value)
                            .map_err(|reason| ParamError::Invalid { name: canon.into(), reason })?;
                        check_range(canon, v.to_f64(), $min, $max)?;
                        self.$name = v;
                    } )*
                    _ => return Err(ParamError::Unknown(name.to_owned())),
                }
                Ok(())
            }

            /// Every parameter's description, in declaration order (the generated parameter
            /// reference `docs/parameters.md` and `cm_ctl list --param` use it).
            pub fn describe() -> Vec<ParamInfo> {
                let (d, f) = (Self::defaults(), Self::fast());
                vec![ $( ParamInfo {
                    name: stringify!($name),
                    alias: None $(.or(Some($alias)))?,
                    side: ParamSide::$side,
                    default: d.$name.render(),
                    fast: f.$name.render(),
                    range: range_text(&d.$name.render(), d.$name.to_f64().is_some(), $min, $max),
                    unit: unit_of(stringify!($name), concat!($($doc, " "),*), d.$name.to_f64().is_some()),
                    meaning: plain_meaning(concat!($($doc, " "),*)),
                }, )* ]
            }

            /// Every parameter as (name, side, value text), for `cm_ctl list --param`.
            pub fn list(&self) -> Vec<(&'static str, ParamSide, String)> {
                vec![ $( (stringify!($name), ParamSide::$side, self.$name.render()), )* ]
            }
        }
    };
}

/// One parameter as documented: what `docs/parameters.md` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// The name in config files and `cm_ctl set`.
    pub name: &'static str,
    /// CM's alternative spelling, if any.
    pub alias: Option<&'static str>,
    /// Which daemon reads it.
    pub side: ParamSide,
    /// The default (SPEC.md §11).
    pub default: String,
    /// The fast profile's value.
    pub fast: String,
    /// Accepted values, in words (`0.1 – 3600`, `on/off`, `text`).
    pub range: String,
    /// Unit (`s`, `ms`, `rounds`, `%`), empty when none.
    pub unit: &'static str,
    /// What it means (the declaration's doc comment).
    pub meaning: String,
}

fn range_text(default: &str, numeric: bool, min: f64, max: f64) -> String {
    if !numeric {
        return if matches!(default, "on" | "off") {
            "on/off".into()
        } else if matches!(default, "quorum" | "off") {
            "quorum/off".into()
        } else {
            "text".into()
        };
    }
    let show = |v: f64| {
        if v >= INF {
            "no limit".to_string()
        } else {
            format!("{v}")
        }
    };
    format!("{} – {}", show(min), show(max))
}

/// The doc comment as one line, without the SPEC.md section references (`§4.3`).
fn plain_meaning(doc: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for w in doc.split_whitespace() {
        if w.starts_with('§') || w.starts_with("(§") {
            if let Some(prev) = words.last_mut() {
                let cut = prev.trim_end_matches(',').len();
                prev.truncate(cut);
                if w.ends_with('.') {
                    prev.push('.');
                }
            }
        } else {
            words.push(w.to_owned());
        }
    }
    words.join(" ")
}

/// The unit, read from the name and the doc comment's words (the table declares each once).
fn unit_of(name: &str, doc: &str, numeric: bool) -> &'static str {
    let lower = doc.to_ascii_lowercase();
    if !numeric {
        ""
    } else if name.ends_with("_ms") || lower.contains("milliseconds") || lower.contains(", ms") {
        "ms"
    } else if lower.contains("percent") {
        "%"
    } else if lower.contains("seconds") {
        "s"
    } else if lower.contains("rounds") {
        "rounds"
    } else if lower.starts_with("days") {
        "days"
    } else {
        ""
    }
}

/// The parameter reference `docs/parameters.md`, generated from the table above
/// (`cargo run -p cm-core --example param_docs > docs/parameters.md`; a test compares).
pub fn reference_markdown() -> String {
    use core::fmt::Write as _;
    let mut out = String::from(
        "# Parameters\n\n\
         <!-- GENERATED from cm-core/src/params.rs: do not edit. Regenerate with\n     \
         cargo run -p cm-core --example param_docs > docs/parameters.md -->\n\n\
         Set them in the `[params]` table of the cluster config (same file on every node), or at\n\
         run time with `cm_ctl set --param --agent|--server -k NAME=VALUE`; `cm_ctl list --param`\n\
         shows the values in force. `profile = \"fast\"` in `[params]` starts from the fast\n\
         column instead of the default one. Side: which daemon reads it (`both`: timings both\n\
         sides must agree on). on/off parameters also accept true/false, yes/no, 1/0.\n\n\
         | name | side | unit | default | fast | range | meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for p in Params::describe() {
        let name = match p.alias {
            Some(a) => format!("`{}` (alias `{a}`)", p.name),
            None => format!("`{}`", p.name),
        };
        let cell = |v: &str| {
            if v.is_empty() {
                "''".to_string()
            } else {
                format!("`{v}`")
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            p.side,
            p.unit,
            cell(&p.default),
            cell(&p.fast),
            p.range,
            p.meaning.replace('|', "\\|")
        );
    }
    out
}

fn check_range(name: &str, v: Option<f64>, min: f64, max: f64) -> Result<(), ParamError> {
    match v {
        Some(v) if !(min..=max).contains(&v) || !v.is_finite() => Err(ParamError::Invalid {
            name: name.into(),
            reason: format!("{v} is outside [{min}, {max}]"),
        }),
        _ => Ok(()),
    }
}

const INF: f64 = 1e12;

params! {
    /// Seconds without a DN report before its member is timed out (Unknown at half of it), §4.3.
    instance_heartbeat_timeout: f64 = 6.0, fast 1.5, Server, range (0.1, 3600.0);
    /// Rounds a non-static candidate waits (minimum 5), §4.2.
    wait_static_primary_times: u64 = 6, fast 5, Server, range (5.0, 1e6);
    /// Rounds a non-static candidate waits while the cluster is starting, §4.2.
    cluster_starting_arbit_delay: u64 = 180, fast 180, Server, range (0.0, 1e6),
        alias "cluster_starting_aribt_delay";
    /// Extra rounds a candidate outside the static primary's AZ waits (0 = off), §4.2.
    delay_arbitrate_timeout: u64 = 0, fast 0, Server, range (0.0, 1e6);
    /// Consecutive phony-dead hits that make a primary Unknown and restart it, §6.
    phony_dead_effective_time: u64 = 5, fast 3, Server, range (1.0, 1e9);
    /// Seconds of cool-down after a phony-dead recovery, §6.
    instance_phony_dead_restart_interval: f64 = 21600.0, fast 21600.0, Server, range (0.0, INF);
    /// Seconds between read-only threshold checks, §7.2.
    datastorage_threshold_check_interval: f64 = 10.0, fast 10.0, Server, range (1.0, 2592000.0);
    /// Disk usage percent at which a DN is made read-only, §7.2.
    datastorage_threshold_value_check: u64 = 85, fast 85, Server, range (1.0, 99.0);
    /// Whether disk-threshold read-only protection runs, §7.2.
    enable_transaction_read_only: bool = true, fast true, Server, range (0.0, 0.0);
    /// Two-node mode: seconds without the peer CMS before the gateway rule applies, §5.4.
    cms_network_isolation_timeout: f64 = 20.0, fast 20.0, Server, range (1.0, INF);
    /// Two-node mode: whether a CMS alone may lead when the gateways answer, §5.4.
    cms_enable_failover_on2nodes: bool = false, fast false, Server, range (0.0, 0.0);
    /// Two-node mode: comma-separated gateway addresses, §5.4.
    third_party_gateway_ip: String = String::new(), fast String::new(), Server, range (0.0, 0.0);
    /// Minimum randomized election timeout of the CMS quorum, ms (ours), §5.1.
    election_timeout_min_ms: u64 = 800, fast 250, Both, range (10.0, 600000.0);
    /// Maximum randomized election timeout of the CMS quorum, ms (ours), §5.1.
    election_timeout_max_ms: u64 = 1600, fast 500, Both, range (10.0, 600000.0);
    /// Interval of the CMS leader's heartbeats, ms (ours), §5.1.
    quorum_heartbeat_interval_ms: u64 = 200, fast 50, Server, range (1.0, 600000.0);
    /// Seconds between DN status reports, §3.
    agent_report_interval: f64 = 1.0, fast 0.25, Both, range (0.05, 3600.0);
    /// Seconds of CMS silence after which an agent closes and reopens the connection, §3.
    agent_heartbeat_timeout: f64 = 8.0, fast 8.0, Both, range (1.0, 3600.0);
    /// Seconds per CMS connect attempt (enters the split-brain timeout), §8.
    agent_connect_timeout: f64 = 1.0, fast 1.0, Both, range (0.1, 3600.0);
    /// Connect retries (enters the split-brain timeout), §8.
    agent_connect_retries: u64 = 15, fast 15, Both, range (1.0, 1e6);
    /// Seconds between phony-dead checks (36 s while the process is in state T), §6.
    agent_phony_dead_check_interval: f64 = 10.0, fast 1.0, Agent, range (0.1, 3600.0);
    /// Seconds between phony-dead checks while a process stays in state T, §6.
    agent_phony_dead_check_interval_t: f64 = 36.0, fast 3.6, Agent, range (0.1, 3600.0);
    /// Milliseconds after which a disk probe counts as hung, §3.
    disk_check_timeout: u64 = 2000, fast 1000, Agent, range (10.0, 3600000.0);
    /// Seconds between disk probes and usage samples, §3.
    disk_check_interval: f64 = 1.0, fast 1.0, Agent, range (0.1, 3600.0);
    /// cpu,mem,io percent thresholds for the system alarm, §3.
    environment_threshold: String = "90,90,90".into(), fast "90,90,90".into(), Agent,
        range (0.0, 0.0);
    /// Whether an agent fences its primary when it loses the CMS leader (ours), §8.
    enable_self_fence: bool = true, fast true, Both, range (0.0, 0.0);
    /// Seconds since the newest answered report after which a primary fences itself (ours), §8.
    agent_self_fence_timeout: f64 = 6.0, fast 1.6, Both, range (0.1, 3600.0);
    /// Bound on the time a SIGKILL takes to take effect, ms (ours), §8.
    kill_confirm_bound_ms: u64 = 500, fast 300, Both, range (0.0, 600000.0);
    /// Maximum relative clock drift ρ between nodes (ours), §5.2.
    max_clock_drift: f64 = 0.01, fast 0.01, Both, range (0.0, 0.2);
    /// Synchronous replication mode (ours), §9.
    dn_sync_mode: SyncMode = SyncMode::Quorum, fast SyncMode::Quorum, Both, range (0.0, 0.0);
    /// Seconds: the DN replication freshness window (`wal_receiver_timeout`), §8, §9.
    wal_receiver_timeout: f64 = 3.0, fast 0.7, Both, range (0.1, 3600.0);
    /// Seconds: `wal_sender_timeout` of the DNs, §9.
    wal_sender_timeout: f64 = 3.0, fast 0.7, Agent, range (0.1, 3600.0);
    /// Seconds a reply to a streaming status may be old and still count as fresh, §8.
    streaming_reply_staleness: f64 = 2.0, fast 0.5, Both, range (0.05, 3600.0);
    /// Command run by the CMS leader to fence a silent primary's node at the split-brain
    /// timeout (empty = none), §8.
    fence_command: String = String::new(), fast String::new(), Server, range (0.0, 0.0);
    /// Seconds a switchover may take before it is abandoned, §4.5.
    switchover_timeout: f64 = 120.0, fast 120.0, Server, range (1.0, INF);
    /// Days: alarm when a TLS certificate in use expires within this, §16.
    ssl_cert_expire_alert_threshold: u64 = 30, fast 30, Both, range (1.0, 3650.0);
    /// Bytes of replay lag a standby may have and still be ready (`/readiness`, 16 MB), §15.
    rest_max_lag: u64 = 16 << 20, fast 16 << 20, Agent, range (0.0, 1e15);
    /// Megabytes of input journal each daemon keeps in its state directory, oldest segments
    /// deleted first (0 = no journal), §17.
    journal_max_mb: u64 = 64, fast 64, Both, range (0.0, 1e6);
}

impl Default for Params {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Params {
    /// Builds parameters from a `[params]` TOML table: the profile's defaults, then each key.
    /// Returns every bad key, not just the first.
    pub fn from_toml_table(table: &toml::Table) -> Result<Self, Vec<ParamError>> {
        let mut errors = Vec::new();
        let profile = match table.get("profile") {
            None => Profile::Default,
            Some(toml::Value::String(s)) if s == "default" => Profile::Default,
            Some(toml::Value::String(s)) if s == "fast" => Profile::Fast,
            Some(other) => {
                errors.push(ParamError::Invalid {
                    name: "profile".into(),
                    reason: format!("`{other}` is not \"default\" or \"fast\""),
                });
                Profile::Default
            }
        };
        let mut p = Self::for_profile(profile);
        for (k, v) in table {
            if k == "profile" {
                continue;
            }
            if let Err(e) = p.set_toml(k, v) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }

    /// The value of one parameter as text, or `None` for an unknown name.
    pub fn get_text(&self, name: &str) -> Option<String> {
        let canon = Self::canonical(name)?;
        self.list()
            .into_iter()
            .find(|(n, _, _)| *n == canon)
            .map(|(_, _, v)| v)
    }

    /// Cross-parameter rules of SPEC.md §8 and §5, as (parameter, problem) pairs.
    pub fn check_orderings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            out.push((
                "election_timeout_min_ms",
                format!(
                    "must be below election_timeout_max_ms ({} >= {})",
                    self.election_timeout_min_ms, self.election_timeout_max_ms
                ),
            ));
        }
        if self.quorum_heartbeat_interval_ms * 2 > self.election_timeout_min_ms {
            out.push((
                "quorum_heartbeat_interval_ms",
                format!(
                    "must be at most half of election_timeout_min_ms ({} ms vs {} ms)",
                    self.quorum_heartbeat_interval_ms, self.election_timeout_min_ms
                ),
            ));
        }
        let floor =
            2.0 * self.election_timeout_max_ms as f64 / 1000.0 + 2.0 * self.agent_report_interval;
        if self.enable_self_fence && self.agent_self_fence_timeout <= floor {
            out.push((
                "agent_self_fence_timeout",
                format!(
                    "must exceed 2 × election_timeout_max_ms + 2 × agent_report_interval \
                     = {floor:.3} s (is {} s), or one leader change could fence a healthy primary",
                    self.agent_self_fence_timeout
                ),
            ));
        }
        // SPEC.md §8 writes `<`, but its own defaults (3 s and 6 s / 2) meet with equality and
        // §4.3 relies on exactly that (evidence ends no later than the member turns Unknown).
        if self.wal_receiver_timeout > self.instance_heartbeat_timeout / 2.0 {
            out.push((
                "wal_receiver_timeout",
                format!(
                    "the freshness window must not exceed instance_heartbeat_timeout / 2 \
                     ({} s > {} s)",
                    self.wal_receiver_timeout,
                    self.instance_heartbeat_timeout / 2.0
                ),
            ));
        }
        if self.agent_phony_dead_check_interval_t < self.agent_phony_dead_check_interval {
            out.push((
                "agent_phony_dead_check_interval_t",
                "must not be below agent_phony_dead_check_interval".into(),
            ));
        }
        for (i, part) in self.environment_threshold.split(',').enumerate() {
            if part.trim().parse::<u8>().map_or(true, |v| v > 100) {
                out.push((
                    "environment_threshold",
                    format!("item {} (`{part}`) is not a percent 0..100", i + 1),
                ));
            }
        }
        out
    }

    /// Seconds as a duration: `Duration::from_secs_f64(v.max(0.0))`, which rounds the exact
    /// value of `v × 10⁹` to the nearest nanosecond. Every duration accessor goes through here,
    /// several times per step of every machine, so the common case takes a shorter road to the
    /// same result: when the float product `p = v × 10⁹` is a whole number below 2⁵², it is
    /// within half an ulp (at most 1/4 there) of the exact product, whose nearest nanosecond is
    /// then `p` itself. Anything else (fractions of a nanosecond, huge or infinite values) is
    /// left to `from_secs_f64`.
    fn secs(v: f64) -> Duration {
        /// 2⁵²: below it an ulp is at most 1/2.
        const EXACT_BELOW: f64 = 4_503_599_627_370_496.0;
        let v = v.max(0.0);
        let ns = v * 1e9;
        if ns < EXACT_BELOW {
            // Through i64, whose conversions are single instructions (u64's are not); `ns`
            // is in [0, 2⁵²) here, so nothing saturates.
            let whole = ns as i64;
            if whole as f64 == ns {
                return Duration::from_nanos(whole.unsigned_abs());
            }
        }
        Duration::from_secs_f64(v)
    }

    /// (1 + ρ) / (1 − ρ): how much longer a timeout may look on another node's clock.
    pub fn drift_up(&self) -> f64 {
        (1.0 + self.max_clock_drift) / (1.0 - self.max_clock_drift)
    }

    /// `agent_report_interval` as a duration.
    pub fn report_interval(&self) -> Duration {
        Self::secs(self.agent_report_interval)
    }

    /// `instance_heartbeat_timeout` as a duration.
    pub fn instance_heartbeat_timeout(&self) -> Duration {
        Self::secs(self.instance_heartbeat_timeout)
    }

    /// `agent_heartbeat_timeout` as a duration.
    pub fn agent_heartbeat_timeout(&self) -> Duration {
        Self::secs(self.agent_heartbeat_timeout)
    }

    /// `agent_self_fence_timeout` as a duration.
    pub fn self_fence_timeout(&self) -> Duration {
        Self::secs(self.agent_self_fence_timeout)
    }

    /// `kill_confirm_bound_ms` as a duration.
    pub fn kill_confirm_bound(&self) -> Duration {
        Duration::from_millis(self.kill_confirm_bound_ms)
    }

    /// `wal_receiver_timeout`: the freshness window of streaming evidence (§8).
    pub fn freshness_window(&self) -> Duration {
        Self::secs(self.wal_receiver_timeout)
    }

    /// Age under which a `pg_stat_replication` reply counts as fresh (§8).
    pub fn streaming_reply_staleness(&self) -> Duration {
        Self::secs(self.streaming_reply_staleness)
    }

    /// Minimum election timeout.
    pub fn election_timeout_min(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms)
    }

    /// Maximum election timeout.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }

    /// How long bytes sent on a connection (CMS to CMS, agent to CMS) may stay unacknowledged
    /// by the peer's TCP before the connection counts as dead: the transport drops it and
    /// redials (`TCP_USER_TIMEOUT`). Twice the longest election timeout, at least 1 s (1 s in
    /// the fast profile, 3.2 s by default): after a partition heals, a pre-vote must not wait
    /// in a connection whose retransmissions backed off for seconds (nemesis, issue 16: a
    /// 14 s election); a short loss on a live link is retransmitted well within it.
    pub fn unacked_send_bound(&self) -> Duration {
        (self.election_timeout_max() * 2).max(Duration::from_secs(1))
    }

    /// Leader heartbeat interval.
    pub fn quorum_heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.quorum_heartbeat_interval_ms)
    }

    /// Phony-dead check interval (normal, and while in state T).
    pub fn phony_dead_intervals(&self) -> (Duration, Duration) {
        (
            Self::secs(self.agent_phony_dead_check_interval),
            Self::secs(self.agent_phony_dead_check_interval_t),
        )
    }

    /// `disk_check_timeout` as a duration.
    pub fn disk_check_timeout(&self) -> Duration {
        Duration::from_millis(self.disk_check_timeout)
    }

    /// `disk_check_interval` as a duration.
    pub fn disk_check_interval(&self) -> Duration {
        Self::secs(self.disk_check_interval)
    }

    /// `datastorage_threshold_check_interval` as a duration.
    pub fn read_only_check_interval(&self) -> Duration {
        Self::secs(self.datastorage_threshold_check_interval)
    }

    /// Percent at which the read-only pre-alarm fires: ⌊threshold × 4 / 5⌋ (68 for 85), §7.2.
    pub fn read_only_prealarm_pct(&self) -> u64 {
        self.datastorage_threshold_value_check * 4 / 5
    }

    /// Percent below which a CM-set read-only state is cleared: threshold − 5 (80 for 85), §7.2.
    pub fn read_only_clear_pct(&self) -> u64 {
        self.datastorage_threshold_value_check.saturating_sub(5)
    }

    /// The leader lease: `min_election_timeout × (1 − ρ)/(1 + ρ)`, §5.2.
    pub fn leader_lease(&self) -> Duration {
        scale_down(self.election_timeout_min(), 1.0 / self.drift_up())
    }

    /// How long a freshly started CMS grants no vote: `max_election_timeout × (1 + ρ)/(1 − ρ)`.
    pub fn startup_vote_holdoff(&self) -> Duration {
        scale_up(self.election_timeout_max(), self.drift_up())
    }

    /// The fencing floor of §8: `agent_self_fence_timeout × (1 + ρ)/(1 − ρ) +
    /// agent_report_interval + kill_confirm_bound`, counted from the receipt of the silent
    /// agent's newest report.
    pub fn fencing_floor(&self) -> Duration {
        scale_up(self.self_fence_timeout(), self.drift_up())
            + self.report_interval()
            + self.kill_confirm_bound()
    }

    /// The split-brain timeout of §8: `cms_count × agent_connect_timeout ×
    /// agent_connect_retries + agent_heartbeat_timeout + 10 s` (63 s with defaults and 3 CMS).
    pub fn split_brain_timeout(&self, cms_count: usize) -> Duration {
        let connect =
            cms_count as f64 * self.agent_connect_timeout * self.agent_connect_retries as f64;
        Self::secs(connect + self.agent_heartbeat_timeout + 10.0)
    }

    /// After the split-brain timeout, how long after streaming stopped the CMS waits before
    /// Failover when no fence command confirmed: `(2 s + report interval + kill bound) ×
    /// (1 + ρ)/(1 − ρ)`, §8.
    pub fn split_brain_fence_wait(&self) -> Duration {
        scale_up(
            self.streaming_reply_staleness() + self.report_interval() + self.kill_confirm_bound(),
            self.drift_up(),
        )
    }

    /// The rounds a non-static candidate waits: `cluster_starting_arbit_delay` while starting,
    /// else `wait_static_primary_times` (never below 5).
    pub fn candidate_wait_rounds(&self, cluster_starting: bool) -> u64 {
        if cluster_starting {
            self.cluster_starting_arbit_delay
        } else {
            self.wait_static_primary_times.max(5)
        }
    }

    /// Rounds the static primary waits as a candidate (hard-coded 5 in CM).
    pub const STATIC_PRIMARY_WAIT_ROUNDS: u64 = 5;

    /// How long a DN the agent started (pending, §1) may take to answer its status query —
    /// crash recovery or catch-up to a consistent state — before its silence or an unknown
    /// status counts against it (issue 18: a DN in crash recovery got phony-dead hits and was
    /// restarted every 2–3 s): `20 × instance_heartbeat_timeout` (120 s by default, 30 s in
    /// the fast profile). The PostgreSQL driver gives a start up after the same bound.
    pub fn dn_start_bound(&self) -> Duration {
        self.instance_heartbeat_timeout() * 20
    }

    /// `instance_phony_dead_restart_interval` as a duration.
    pub fn phony_dead_cooldown(&self) -> Duration {
        Self::secs(self.instance_phony_dead_restart_interval)
    }

    /// `cms_network_isolation_timeout` as a duration.
    pub fn cms_network_isolation_timeout(&self) -> Duration {
        Self::secs(self.cms_network_isolation_timeout)
    }

    /// `switchover_timeout` as a duration.
    pub fn switchover_timeout(&self) -> Duration {
        Self::secs(self.switchover_timeout)
    }

    /// The environment thresholds (cpu, mem, io) in percent.
    pub fn environment_thresholds(&self) -> [u8; 3] {
        let mut out = [90u8; 3];
        for (slot, part) in out.iter_mut().zip(self.environment_threshold.split(',')) {
            if let Ok(v) = part.trim().parse::<u8>() {
                *slot = v;
            }
        }
        out
    }
}

impl fmt::Display for ParamSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Agent => "agent",
            Self::Both => "both",
        })
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
