//! om_monitor: keeps this node's cm_agent running and serves cm_ctl's control port.
//! See `cm_daemons::monitor`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts (issue 16: fewer resident malloc arenas).
    cm_daemons::resident::limit_malloc_arenas();
    let args = cm_daemons::monitor::MonitorArgs::parse();
    match cm_daemons::monitor::main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("om_monitor: {}", cm_daemons::common::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
