//! cm_agent: supervises this node's DNs, reports to every CMS and carries out the leader's
//! commands. See `cm_daemons::agent`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cm_daemons::agent::AgentArgs::parse();
    match cm_daemons::agent::main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cm_agent: {}", cm_daemons::common::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
