//! cm_agent: supervises this node's DNs, reports to every CMS and carries out the leader's
//! commands. See `cm_daemons::agent`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts (issue 16: fewer resident malloc arenas).
    cm_daemons::resident::limit_malloc_arenas();
    let args = cm_daemons::agent::AgentArgs::parse();
    match cm_daemons::agent::main(args) {
        Ok(code) => code,
        Err(e) => {
            let text = cm_daemons::common::error_text(&e);
            eprintln!("cm_agent: {text}");
            // om_monitor names a file for the error it then logs once and shows to cm_ctl.
            if let Some(path) = std::env::var_os(cm_daemons::monitor::AGENT_ERROR_ENV) {
                let _ = std::fs::write(path, format!("{text}\n"));
            }
            ExitCode::FAILURE
        }
    }
}
