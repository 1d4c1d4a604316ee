//! cm_ctl's execution: it runs cm-core's planner ([`Plan`]) step by step over real
//! connections and prints what happened. It makes no decision of its own: the order of steps,
//! when to stop polling and what counts as success are the planner's.
//!
//! Exit codes: 0 success; 1 refused, failed or unreachable (the message on stderr says what
//! and what to do); 2 usage error.

pub mod check;
pub mod client;

use std::path::Path;
use std::time::Duration;

use std::fmt::Write as _;

use cm_core::config::ClusterConfig;
use cm_core::ctl::{ClusterHealth, ClusterStatus, CmsRole, CtlReply, CtlRequest, MonitorRequest};
use cm_core::ctl_plan::{
    Operation, Plan, Step, StepResult, explain_no_leader, node_problems, waiting_for,
};
use cm_core::dn::DnRole;
use cm_core::params::{ParamSide, Params};

use crate::common;
use crate::ctl_cli::{
    Cli, CtlCommand, check_resource_scripts, operation, render_query, render_resources,
};
use client::CtlClient;

/// How long cm_ctl tries to reach the CMS leader for one request.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long cm_ctl waits for the om_monitors' answers to one request.
pub const MONITOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: refused, failed or unreachable.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: u8 = 2;

/// Runs one cm_ctl invocation; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    if let CtlCommand::Check { binary, path } = &cli.command {
        return check_process(binary, path);
    }
    let cfg_path = Path::new(&cli.config);
    let config = match common::load_config(cfg_path) {
        Ok(c) => c,
        Err(e) => return fail(&common::error_text(&e)),
    };
    if let CtlCommand::Res { list, .. } = &cli.command {
        // The config parsed and validated above: that is the first half of `--check`.
        if *list {
            print!("{}", render_resources(&config));
            return EXIT_OK;
        }
        let problems = check_resource_scripts(&config);
        for p in &problems {
            println!("{p}");
        }
        if problems.is_empty() {
            println!(
                "{} resource(s): config and scripts OK",
                config.resources.len()
            );
            return EXIT_OK;
        }
        return EXIT_FAILED;
    }
    let op = match operation(&config, &cli.command) {
        Ok(op) => op,
        Err(e) => {
            eprintln!("cm_ctl: {e}");
            return EXIT_USAGE;
        }
    };
    let operator = common::Identity::Operator {
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
    };
    let security = match common::load_security(cfg_path, &config, &operator) {
        Ok(s) => s,
        Err(e) => return fail(&common::error_text(&e)),
    };
    let mut client = match CtlClient::start(&config, security).await {
        Ok(c) => c,
        Err(e) => return fail(&common::error_text(&e)),
    };
    let code = match (op, &cli.command) {
        (
            None,
            CtlCommand::Query {
                verbose,
                by_group,
                json,
                watch,
            },
        ) => {
            let view = View {
                verbose: *verbose,
                by_group: *by_group,
                json: *json,
            };
            match watch {
                Some(secs) => loop {
                    println!("--- {}", now_text());
                    query(&mut client, &config, view).await;
                    tokio::time::sleep(Duration::from_secs(*secs)).await;
                },
                None => query(&mut client, &config, view).await,
            }
        }
        (None, CtlCommand::History { json }) => history(&mut client, *json).await,
        (Some(Operation::Leader(CtlRequest::ListParams)), _) => {
            list_params(&mut client, &config).await
        }
        (Some(op), _) => match Plan::new(&config, op) {
            Ok(plan) => execute(&mut client, plan).await,
            Err(e) => {
                eprintln!("cm_ctl: {e}");
                EXIT_USAGE
            }
        },
        (None, _) => fail("internal: this command has no plan"),
    };
    client.close().await;
    code
}

/// Wall-clock time for `query --watch` headers (UTC, seconds).
fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

fn fail(msg: &str) -> u8 {
    eprintln!("cm_ctl: {msg}");
    EXIT_FAILED
}

fn check_process(binary: &str, path: &str) -> u8 {
    match check::find(binary, path) {
        Ok(pids) if !pids.is_empty() => {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            println!("{binary} is running with {path} (pid {})", list.join(", "));
            EXIT_OK
        }
        Ok(_) => fail(&format!("no {binary} process is running with {path}")),
        Err(e) => fail(&format!("cannot list processes in /proc: {e}")),
    }
}

/// `cm_ctl history [--json]`: the promotion history from the leader's status.
async fn history(client: &mut CtlClient, json: bool) -> u8 {
    match client.leader(&CtlRequest::Query, LEADER_TIMEOUT).await {
        Ok(CtlReply::Status(s)) => {
            if json {
                match crate::ctl_history::history_json(&s) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(&format!("cannot print the history as JSON: {e}")),
                }
            } else {
                print!("{}", crate::ctl_history::render_history(&s));
            }
            EXIT_OK
        }
        Ok(CtlReply::Refused(r)) => fail(&format!("refused: {r}")),
        Ok(other) => fail(&format!("unexpected answer to a query: {other:?}")),
        Err(e) => fail(&e),
    }
}

/// How `query` prints.
#[derive(Clone, Copy, Debug)]
struct View {
    verbose: bool,
    by_group: bool,
    json: bool,
}

/// One query: prints the status (or why there is none); exit 1 when Unavailable or no leader.
async fn query(client: &mut CtlClient, config: &ClusterConfig, view: View) -> u8 {
    match client.leader(&CtlRequest::Query, LEADER_TIMEOUT).await {
        Ok(CtlReply::Status(s)) => {
            if view.json {
                match serde_json::to_string_pretty(&s) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(&format!("cannot print the status as JSON: {e}")),
                }
            } else {
                print!("{}", render_query(&s, view.verbose, view.by_group));
                if needs_node_check(&s) {
                    // Something is not heard from: ask the nodes' om_monitors why.
                    let nodes: Vec<_> = config.nodes.iter().map(|n| n.id).collect();
                    let answers = client
                        .monitors(&nodes, &MonitorRequest::Status, Duration::from_secs(2))
                        .await;
                    let problems = node_problems(&answers);
                    if !problems.is_empty() {
                        println!("\n[  Node problems    ]\n");
                        for p in problems {
                            println!("{p}");
                        }
                    }
                }
            }
            // JSON readers have the state in the object; scripts polling it keep exit 0.
            if s.state == ClusterHealth::Unavailable && !view.json {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
        Ok(CtlReply::Refused(r)) => fail(&format!("refused: {r}")),
        Ok(other) => fail(&format!("unexpected answer to a query: {other:?}")),
        Err(e) => {
            let nodes: Vec<_> = config.nodes.iter().map(|n| n.id).collect();
            let answers = client
                .monitors(&nodes, &MonitorRequest::Status, Duration::from_secs(2))
                .await;
            fail(&explain_no_leader(&answers).unwrap_or(e))
        }
    }
}

/// Whether a status has a member or CMS not heard from (then `query` asks the om_monitors).
fn needs_node_check(s: &ClusterStatus) -> bool {
    s.cms.iter().any(|c| c.role == CmsRole::Down)
        || s.groups
            .iter()
            .flat_map(|g| g.members.iter())
            .any(|m| matches!(m.role, DnRole::Unknown | DnRole::Down))
}

/// `list --param`: the leader's values, or, without a leader, the config file's.
async fn list_params(client: &mut CtlClient, config: &ClusterConfig) -> u8 {
    match client.leader(&CtlRequest::ListParams, LEADER_TIMEOUT).await {
        Ok(CtlReply::Params(list)) => {
            print!("{}", params_table(&list));
            EXIT_OK
        }
        Ok(CtlReply::Refused(r)) => fail(&format!("refused: {r}")),
        Ok(other) => fail(&format!("unexpected answer to list --param: {other:?}")),
        Err(_) => {
            let list: Vec<(String, ParamSide, String)> = config
                .params
                .list()
                .into_iter()
                .map(|(n, side, v)| (n.to_owned(), side, v))
                .collect();
            eprintln!(
                "cm_ctl: no cm_server leader answered; these are the config file's values \
                 (changes made with `cm_ctl set` are not shown)"
            );
            print!("{}", params_table(&list));
            EXIT_OK
        }
    }
}

/// Executes a plan to its end; prints progress while polling and the leader's listing, if any.
async fn execute(client: &mut CtlClient, mut plan: Plan) -> u8 {
    let started = tokio::time::Instant::now();
    let mut result = StepResult::Begin;
    let mut last_reply: Option<CtlReply> = None;
    loop {
        result = match plan.next(result) {
            Step::Monitors { nodes, req } => {
                StepResult::Monitors(client.monitors(&nodes, &req, MONITOR_TIMEOUT).await)
            }
            Step::Leader(req) => {
                let r = client.leader(&req, LEADER_TIMEOUT).await;
                last_reply = r.as_ref().ok().cloned();
                StepResult::Leader(r)
            }
            Step::PollStatus { after } => {
                // A plan that knows what it waits for (switchover) says so, as of the status
                // it last judged; the others print the cluster state.
                let own = plan.waiting_for().map(str::to_owned);
                if let Some(what) = &own {
                    println!("... {what} ({} s)", started.elapsed().as_secs());
                }
                tokio::time::sleep(after).await;
                let elapsed = started.elapsed();
                if let Some(what) = plan.waiting_on() {
                    // A stop does not need the leader (which is going away): say what it waits for.
                    println!("... {what} ({} s)", elapsed.as_secs());
                    StepResult::Status {
                        status: Err(what),
                        elapsed,
                    }
                } else {
                    let status = poll_status(client).await;
                    if own.is_none() {
                        println!("{}", progress(&status, elapsed));
                    }
                    StepResult::Status { status, elapsed }
                }
            }
            Step::Done(msg) => {
                match last_reply {
                    Some(CtlReply::Params(list)) => print!("{}", params_table(&list)),
                    _ => println!("{msg}"),
                }
                return EXIT_OK;
            }
            Step::Failed(msg) => return fail(&msg),
        };
    }
}

async fn poll_status(client: &mut CtlClient) -> Result<Box<ClusterStatus>, String> {
    match client.leader(&CtlRequest::Query, LEADER_TIMEOUT).await {
        Ok(CtlReply::Status(s)) => Ok(s),
        Ok(CtlReply::Refused(r)) => Err(format!("refused: {r}")),
        Ok(other) => Err(format!("unexpected answer to a query: {other:?}")),
        Err(e) => Err(e),
    }
}

/// One progress line while polling: the cluster state and what is still missing.
pub fn progress(status: &Result<Box<ClusterStatus>, String>, elapsed: Duration) -> String {
    let missing = waiting_for(status);
    match status {
        Ok(s) => format!(
            "... cluster_state {}{}{} ({} s)",
            s.state,
            if s.paused { ", paused" } else { "" },
            if missing.is_empty() {
                String::new()
            } else {
                format!(": {missing}")
            },
            elapsed.as_secs()
        ),
        Err(_) => format!("... waiting: {missing} ({} s)", elapsed.as_secs()),
    }
}

/// `list --param`: a header, then name, side, value, unit and default of every parameter.
pub fn params_table(list: &[(String, ParamSide, String)]) -> String {
    let info = Params::describe();
    let mut rows = vec![["name", "side", "value", "unit", "default"].map(String::from)];
    for (name, side, value) in list {
        let found = info.iter().find(|p| p.name == name);
        rows.push([
            name.clone(),
            side.to_string(),
            if value.is_empty() {
                "''".into()
            } else {
                value.clone()
            },
            found.map(|p| p.unit.to_owned()).unwrap_or_default(),
            found
                .map(|p| {
                    if p.default.is_empty() {
                        "''".into()
                    } else {
                        p.default.clone()
                    }
                })
                .unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_core::ctl::{ClusterHealth, ClusterStatus};
    use cm_core::ids::QuorumTerm;

    #[test]
    fn list_param_prints_a_header_units_and_defaults() {
        let text = params_table(&[
            (
                "instance_heartbeat_timeout".into(),
                ParamSide::Server,
                "3".into(),
            ),
            (
                "third_party_gateway_ip".into(),
                ParamSide::Server,
                String::new(),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["name", "side", "value", "unit", "default"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["instance_heartbeat_timeout", "server", "3", "s", "6"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["third_party_gateway_ip", "server", "''", "''"]
        );
    }

    #[test]
    fn progress_lines_name_what_is_missing() {
        let line = progress(&Err("can't connect".into()), Duration::from_secs(3));
        assert_eq!(
            line,
            "... waiting: no cm_server leader yet (can't connect) (3 s)"
        );
        let s = ClusterStatus {
            cluster: "demo".into(),
            quorum_term: QuorumTerm(1),
            cms: Vec::new(),
            state: ClusterHealth::Degraded,
            balanced: true,
            paused: false,
            groups: Vec::new(),
            history: Vec::new(),
            resources: Vec::new(),
        };
        assert_eq!(
            progress(&Ok(Box::new(s)), Duration::from_secs(4)),
            "... cluster_state Degraded (4 s)"
        );
    }
}
