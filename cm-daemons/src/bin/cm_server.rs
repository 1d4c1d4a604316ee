//! `cm_server`: a CMS quorum member and, while it leads, the cluster's arbiter.

use cm_daemons::common::init_logging;
use cm_daemons::server::{ServerArgs, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts (issue 16: fewer resident malloc arenas).
    cm_daemons::resident::limit_malloc_arenas();
    let args = ServerArgs::parse();
    if let Err(e) = init_logging(args.node.log_json, &args.node.log) {
        eprintln!("cm_server: {}", cm_daemons::common::error_text(&e));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cm_server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cm_server: {}", cm_daemons::common::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
