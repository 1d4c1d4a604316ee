//! The command lines of om_monitor, cm_agent and cm_server, parsed by hand.
//!
//! Each daemon takes a handful of flags; clap's parser, help renderer and error formatting were
//! 150–230 kB of every daemon's code, and a resident daemon keeps about its whole `.text`
//! mapped (issue 16: om_monitor + cm_agent ≤ 10 MB resident per node). cm_ctl and cm_local,
//! which run and exit, keep clap.
//!
//! What clap accepted is accepted the same way: `--flag VALUE`, `--flag=VALUE`, `-c VALUE`,
//! `-cVALUE`, the environment variables of [`NodeArgs`] when the flag is absent (an empty
//! variable counts as absent), `-h`/`--help`, `-V`/`--version`. An error names the argument,
//! says what is wrong and exits 2, as clap did.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::common::NodeArgs;

/// The config file when neither `--config` nor `CM_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "/etc/cm/cluster.toml";

/// One daemon's command line: its name, what it does, and its own value flags beside
/// [`NodeArgs`]'s.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The binary's name (usage, `--version`).
    pub name: &'static str,
    /// One line on what it does (`--help`).
    pub about: &'static str,
    /// The daemon's own value flags: (long name without `--`, value name, help line).
    pub extra: &'static [(&'static str, &'static str, &'static str)],
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Config, node and logging.
    pub node: NodeArgs,
    /// The daemon's own flags that were given: (long name, value), in [`Spec::extra`] order.
    pub extra: Vec<(&'static str, OsString)>,
}

impl Parsed {
    /// The value of the daemon's own flag `long`, if given.
    pub fn value(&self, long: &str) -> Option<&OsStr> {
        self.extra
            .iter()
            .find(|(l, _)| *l == long)
            .map(|(_, v)| v.as_os_str())
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Run the daemon.
    Run(Parsed),
    /// Print this on stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// Print this on stderr and exit 2 (a usage error).
    Fail(String),
}

/// The common flags: (long, short, value name, environment variable, help).
const COMMON: &[(&str, Option<char>, &str, &str, &str)] = &[
    (
        "config",
        Some('c'),
        "PATH",
        "CM_CONFIG",
        "The cluster config file (the same file on every node) [default: /etc/cm/cluster.toml]",
    ),
    (
        "node",
        Some('n'),
        "NODE",
        "CM_NODE",
        "This node's id in the config",
    ),
    (
        "log",
        None,
        "FILTER",
        "CM_LOG",
        "Log filter: a level and `target=level` pairs, e.g. `info` or `cm_core=debug,info` [default: info]",
    ),
];

impl Spec {
    fn usage(&self) -> String {
        let mut u = format!("Usage: {} [OPTIONS] --node <NODE>", self.name);
        if !self.extra.is_empty() {
            u.push_str("\n       (options: -c, -n, --log, --log-json");
            for (long, _, _) in self.extra {
                u.push_str(&format!(", --{long}"));
            }
            u.push(')');
        }
        u
    }

    /// The `--help` text.
    pub fn help(&self) -> String {
        let mut h = format!("{}\n\n{}\n\nOptions:\n", self.about, self.usage());
        for (long, short, value, env, help) in COMMON {
            let flag = match short {
                Some(s) => format!("-{s}, --{long} <{value}>"),
                None => format!("    --{long} <{value}>"),
            };
            h.push_str(&format!("  {flag}\n          {help} [env: {env}=]\n"));
        }
        h.push_str(
            "      --log-json\n          Log as JSON lines instead of human-readable text \
             [env: CM_LOG_JSON=]\n",
        );
        for (long, value, help) in self.extra {
            h.push_str(&format!("      --{long} <{value}>\n          {help}\n"));
        }
        h.push_str(
            "  -h, --help\n          Print help\n  -V, --version\n          Print version\n",
        );
        h
    }

    fn error_text(&self, what: &str) -> String {
        format!(
            "error: {what}\n\n{}\n\nFor more information, try '--help'.\n",
            self.usage()
        )
    }

    fn error(&self, what: &str) -> Outcome {
        Outcome::Fail(self.error_text(what))
    }

    /// Parses `args` (without the program name), reading the environment through `env`.
    pub fn parse_from<I, E>(&self, args: I, env: E) -> Outcome
    where
        I: IntoIterator<Item = OsString>,
        E: Fn(&str) -> Option<OsString>,
    {
        let mut given: Vec<(&'static str, OsString)> = Vec::new();
        let mut log_json: Option<bool> = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(text) = arg.to_str() else {
                return self.error(&format!("unexpected argument '{}'", arg.to_string_lossy()));
            };
            match text {
                "-h" | "--help" => return Outcome::Print(self.help()),
                "-V" | "--version" => {
                    return Outcome::Print(format!(
                        "{} {}\n",
                        self.name,
                        env!("CARGO_PKG_VERSION")
                    ));
                }
                "--log-json" => {
                    if log_json.replace(true).is_some() {
                        return self
                            .error("the argument '--log-json' cannot be used multiple times");
                    }
                    continue;
                }
                _ => {}
            }
            // Which value flag, and its value if attached (`--x=v`, `-cv`, `-c=v`).
            let (long, attached): (&'static str, Option<OsString>) =
                if let Some(rest) = text.strip_prefix("--") {
                    let (name, value) = match rest.split_once('=') {
                        Some((n, v)) => (n, Some(OsString::from(v))),
                        None => (rest, None),
                    };
                    match self.known_long(name) {
                        Some(l) => (l, value),
                        None => return self.error(&format!("unexpected argument '--{name}'")),
                    }
                } else if let Some(rest) = text.strip_prefix('-')
                    && let Some(c) = rest.chars().next()
                    && let Some(l) = COMMON
                        .iter()
                        .find(|(_, s, ..)| *s == Some(c))
                        .map(|(l, ..)| *l)
                {
                    let tail = &rest[c.len_utf8()..];
                    let tail = tail.strip_prefix('=').unwrap_or(tail);
                    (l, (!tail.is_empty()).then(|| OsString::from(tail)))
                } else {
                    return self.error(&format!("unexpected argument '{text}'"));
                };
            let value = match attached {
                Some(v) => v,
                None => match args.next() {
                    Some(v) => v,
                    None => {
                        return self.error(&format!(
                            "a value is required for '--{long} <{}>' but none was supplied",
                            self.value_name(long)
                        ));
                    }
                },
            };
            if given.iter().any(|(l, _)| *l == long) {
                return self.error(&format!(
                    "the argument '--{long} <{}>' cannot be used multiple times",
                    self.value_name(long)
                ));
            }
            given.push((long, value));
        }
        // A flag given wins over its environment variable; an empty variable is absent.
        let from = |long: &str| -> Option<OsString> {
            given
                .iter()
                .find(|(l, _)| *l == long)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    let var = COMMON.iter().find(|(l, ..)| *l == long)?.3;
                    env(var).filter(|v| !v.is_empty())
                })
        };
        let config = from("config").map_or_else(|| PathBuf::from(DEFAULT_CONFIG), PathBuf::from);
        let Some(node) = from("node") else {
            return self.error(
                "the following required arguments were not provided:\n  --node <NODE> (or CM_NODE)",
            );
        };
        let Some(Ok(node)) = node.to_str().map(str::parse::<u32>) else {
            return self.error(&format!(
                "invalid value '{}' for '--node <NODE>': not a node id (a number)",
                node.to_string_lossy()
            ));
        };
        let log = match from("log") {
            None => "info".to_owned(),
            Some(v) => match v.into_string() {
                Ok(s) => s,
                Err(v) => {
                    return self.error(&format!(
                        "invalid value '{}' for '--log <FILTER>': not UTF-8",
                        v.to_string_lossy()
                    ));
                }
            },
        };
        // As clap's flag from the environment: n, no, f, false, off, 0 (any case) and empty
        // are false, anything else true.
        let log_json = log_json.unwrap_or_else(|| {
            env("CM_LOG_JSON").is_some_and(|v| {
                let v = v.to_string_lossy().to_ascii_lowercase();
                !matches!(v.as_str(), "" | "n" | "no" | "f" | "false" | "off" | "0")
            })
        });
        let mut extra = Vec::new();
        for (long, _, _) in self.extra {
            if let Some((_, v)) = given.iter().find(|(l, _)| l == long) {
                extra.push((*long, v.clone()));
            }
        }
        Outcome::Run(Parsed {
            node: NodeArgs {
                config,
                node,
                log_json,
                log,
            },
            extra,
        })
    }

    fn known_long(&self, name: &str) -> Option<&'static str> {
        COMMON
            .iter()
            .map(|(l, ..)| *l)
            .chain(self.extra.iter().map(|(l, ..)| *l))
            .find(|l| *l == name)
    }

    fn value_name(&self, long: &str) -> &'static str {
        COMMON
            .iter()
            .find(|(l, ..)| *l == long)
            .map(|(_, _, v, ..)| *v)
            .or_else(|| {
                self.extra
                    .iter()
                    .find(|(l, ..)| *l == long)
                    .map(|(_, v, _)| *v)
            })
            .unwrap_or("VALUE")
    }

    /// Parses the process's own arguments and environment, then `check`s the daemon's own
    /// values; prints and exits on `--help`, `--version` (0) or a usage error (2), as clap's
    /// `parse` did.
    pub fn parse<T>(&self, check: impl FnOnce(Parsed) -> Result<T, String>) -> T {
        let text = match self.parse_from(std::env::args_os().skip(1), |v| std::env::var_os(v)) {
            Outcome::Run(p) => match check(p) {
                Ok(t) => return t,
                Err(what) => self.error_text(&what),
            },
            Outcome::Print(text) => {
                print!("{text}");
                std::process::exit(0)
            }
            Outcome::Fail(text) => text,
        };
        eprint!("{text}");
        std::process::exit(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Spec = Spec {
        name: "cm_agent",
        about: "Supervises this node's DNs.",
        extra: &[
            ("start-kind", "KIND", "normal or abnormal"),
            ("server-bin", "PATH", "The cm_server binary"),
        ],
    };

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        AGENT.parse_from(args.iter().map(OsString::from), move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Parsed {
        match parse(args, env) {
            Outcome::Run(p) => p,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn fail(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse(args, env) {
            Outcome::Fail(text) => text,
            other => panic!("{args:?} should fail: {other:?}"),
        }
    }

    #[test]
    fn every_spelling_of_a_flag_clap_took_is_taken() {
        for args in [
            &["--config", "/c.toml", "--node", "2"][..],
            &["--config=/c.toml", "--node=2"],
            &["-c", "/c.toml", "-n", "2"],
            &["-c/c.toml", "-n2"],
            &["-c=/c.toml", "-n=2"],
        ] {
            let p = run(args, &[]);
            assert_eq!(p.node.config, PathBuf::from("/c.toml"), "{args:?}");
            assert_eq!(p.node.node, 2, "{args:?}");
            assert_eq!(p.node.log, "info");
            assert!(!p.node.log_json);
            assert!(p.extra.is_empty());
        }
    }

    #[test]
    fn what_om_monitor_passes_to_cm_agent_is_understood() {
        let p = run(
            &[
                "--config",
                "/etc/cm/c.toml",
                "--node",
                "3",
                "--start-kind",
                "normal",
                "--log",
                "cm_core=debug,info",
                "--log-json",
                "--server-bin",
                "/opt/cm/cm_server",
            ],
            &[],
        );
        assert_eq!(p.node.node, 3);
        assert_eq!(p.node.log, "cm_core=debug,info");
        assert!(p.node.log_json);
        assert_eq!(p.value("start-kind"), Some(OsStr::new("normal")));
        assert_eq!(p.value("server-bin"), Some(OsStr::new("/opt/cm/cm_server")));
        assert_eq!(p.value("agent-bin"), None);
    }

    #[test]
    fn the_environment_fills_what_the_flags_leave_out_and_flags_win() {
        let env = [
            ("CM_CONFIG", "/env.toml"),
            ("CM_NODE", "5"),
            ("CM_LOG", "debug"),
            ("CM_LOG_JSON", "1"),
        ];
        let p = run(&[], &env);
        assert_eq!(
            (
                p.node.config.to_str(),
                p.node.node,
                p.node.log.as_str(),
                p.node.log_json
            ),
            (Some("/env.toml"), 5, "debug", true)
        );
        let p = run(&["-c", "/flag.toml", "-n", "1", "--log", "warn"], &env);
        assert_eq!(
            (p.node.config.to_str(), p.node.node, p.node.log.as_str()),
            (Some("/flag.toml"), 1, "warn")
        );
        // Empty is absent; the default config applies.
        let p = run(&[], &[("CM_NODE", "1"), ("CM_CONFIG", "")]);
        assert_eq!(p.node.config, PathBuf::from(DEFAULT_CONFIG));
        for falsey in ["0", "false", "No", "off", "f", "n", ""] {
            let p = run(&["-n", "1"], &[("CM_LOG_JSON", falsey)]);
            assert!(!p.node.log_json, "CM_LOG_JSON={falsey}");
        }
        for truthy in ["1", "true", "yes", "on"] {
            let p = run(&["-n", "1"], &[("CM_LOG_JSON", truthy)]);
            assert!(p.node.log_json, "CM_LOG_JSON={truthy}");
        }
    }

    #[test]
    fn a_usage_error_names_the_argument_and_what_is_wrong() {
        let e = fail(&["-c", "/c.toml"], &[]);
        assert!(
            e.contains("--node <NODE>") && e.contains("not provided"),
            "{e}"
        );
        let e = fail(&["-n", "two"], &[]);
        assert!(e.contains("invalid value 'two' for '--node <NODE>'"), "{e}");
        let e = fail(&["-n", "1", "--agent-bin", "/x"], &[]);
        assert!(e.contains("unexpected argument '--agent-bin'"), "{e}");
        let e = fail(&["-n", "1", "stray"], &[]);
        assert!(e.contains("unexpected argument 'stray'"), "{e}");
        let e = fail(&["-n", "1", "-x"], &[]);
        assert!(e.contains("unexpected argument '-x'"), "{e}");
        let e = fail(&["-n", "1", "--config"], &[]);
        assert!(
            e.contains("a value is required for '--config <PATH>'"),
            "{e}"
        );
        let e = fail(&["-n", "1", "-n", "2"], &[]);
        assert!(
            e.contains("'--node <NODE>' cannot be used multiple times"),
            "{e}"
        );
        let e = fail(&["-n", "1", "--log-json", "--log-json"], &[]);
        assert!(
            e.contains("'--log-json' cannot be used multiple times"),
            "{e}"
        );
        assert!(
            e.contains("Usage: cm_agent") && e.contains("try '--help'"),
            "{e}"
        );
    }

    #[test]
    fn help_and_version_are_printed_whatever_else_is_missing() {
        let Outcome::Print(h) = parse(&["--help"], &[]) else {
            panic!("no help");
        };
        for needle in [
            "Supervises",
            "--config <PATH>",
            "CM_NODE",
            "--log-json",
            "--start-kind <KIND>",
            "--server-bin <PATH>",
        ] {
            assert!(h.contains(needle), "{needle} missing from {h}");
        }
        assert_eq!(parse(&["-h"], &[]), Outcome::Print(h));
        let v = format!("cm_agent {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(parse(&["-V"], &[]), Outcome::Print(v.clone()));
        assert_eq!(parse(&["--version"], &[]), Outcome::Print(v));
    }

    fn parsed(spec: &Spec, args: &[&str]) -> Parsed {
        match spec.parse_from(args.iter().map(OsString::from), |_| None) {
            Outcome::Run(p) => p,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn each_daemon_takes_its_own_flags_and_checks_their_values() {
        use crate::agent::{AgentArgs, StartKindArg};
        let a = AgentArgs::from_parsed(&parsed(&crate::agent::CLI, &["-n", "1"])).unwrap();
        assert_eq!((a.start_kind, a.server_bin), (StartKindArg::Abnormal, None));
        let p = parsed(
            &crate::agent::CLI,
            &["-n", "1", "--start-kind=normal", "--server-bin", "/s"],
        );
        let a = AgentArgs::from_parsed(&p).unwrap();
        assert_eq!(a.start_kind, StartKindArg::Normal);
        assert_eq!(a.server_bin, Some(PathBuf::from("/s")));
        let p = parsed(&crate::agent::CLI, &["-n", "1", "--start-kind", "sideways"]);
        let e = AgentArgs::from_parsed(&p).unwrap_err();
        assert!(
            e.contains("invalid value 'sideways' for '--start-kind <KIND>'"),
            "{e}"
        );
        let m = crate::monitor::MonitorArgs::from_parsed(&parsed(
            &crate::monitor::CLI,
            &["-n", "2", "--agent-bin", "/a", "--server-bin", "/s"],
        ));
        assert_eq!(m.agent_bin, Some(PathBuf::from("/a")));
        assert_eq!(m.server_bin, Some(PathBuf::from("/s")));
        // cm_server takes no flag of the others.
        let e = crate::server::CLI.parse_from(
            ["-n", "1", "--start-kind", "normal"].map(OsString::from),
            |_| None,
        );
        assert!(matches!(e, Outcome::Fail(t) if t.contains("unexpected argument '--start-kind'")));
    }
}
