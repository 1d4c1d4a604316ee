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

use cm_core::ctl::{ClusterStatus, CtlReply, CtlRequest};
use cm_core::ctl_plan::{Plan, Step, StepResult};
use cm_io::transport::Secret;

use crate::common;
use crate::ctl_cli::{Cli, CtlCommand, operation, render_query};
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
        Err(e) => return fail(&format!("{e:#}")),
    };
    let op = match operation(&config, &cli.command) {
        Ok(op) => op,
        Err(e) => {
            eprintln!("cm_ctl: {e}");
            return EXIT_USAGE;
        }
    };
    let secret = match common::secret_path(cfg_path, &config).and_then(|p| Ok(Secret::load(&p)?)) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{e:#}")),
    };
    let mut client = match CtlClient::start(&config, secret).await {
        Ok(c) => c,
        Err(e) => return fail(&format!("{e:#}")),
    };
    let code = match (op, &cli.command) {
        (
            None,
            CtlCommand::Query {
                verbose,
                by_group,
                json,
            },
        ) => query(&mut client, *verbose, *by_group, *json).await,
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

async fn query(client: &mut CtlClient, verbose: bool, by_group: bool, json: bool) -> u8 {
    match client.leader(&CtlRequest::Query, LEADER_TIMEOUT).await {
        Ok(CtlReply::Status(s)) if json => match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                println!("{text}");
                EXIT_OK
            }
            Err(e) => fail(&format!("cannot print the status as JSON: {e}")),
        },
        Ok(CtlReply::Status(s)) => {
            print!("{}", render_query(&s, verbose, by_group));
            EXIT_OK
        }
        Ok(CtlReply::Refused(r)) => fail(&format!("refused: {r}")),
        Ok(other) => fail(&format!("unexpected answer to a query: {other:?}")),
        Err(e) => fail(&e),
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
                let status = poll_status(client).await;
                let elapsed = started.elapsed();
                if own.is_none() {
                    println!("{}", progress(&status, elapsed));
                }
                StepResult::Status { status, elapsed }
            }
            Step::Done(msg) => {
                match last_reply {
                    Some(CtlReply::Params(list)) => print_params(&list),
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

/// One progress line while polling.
pub fn progress(status: &Result<Box<ClusterStatus>, String>, elapsed: Duration) -> String {
    match status {
        Ok(s) => format!(
            "... cluster_state {:?}{} ({} s)",
            s.state,
            if s.paused { ", paused" } else { "" },
            elapsed.as_secs()
        ),
        Err(e) => format!("... waiting: {e} ({} s)", elapsed.as_secs()),
    }
}

fn print_params(list: &[(String, cm_core::params::ParamSide, String)]) {
    let width = list.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    for (name, side, value) in list {
        println!("{name:<width$}  {:<6}  {value}", side.to_string());
    }
}
