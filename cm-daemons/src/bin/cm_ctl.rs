//! `cm_ctl`: operate the cluster (SPEC.md §10). Exit codes: 0 success, 1 refused, failed or
//! unreachable, 2 usage error.

use std::process::ExitCode;

use clap::Parser as _;
use cm_daemons::ctl::run;
use cm_daemons::ctl_cli::Cli;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (help and version with 0).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cm_ctl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}
