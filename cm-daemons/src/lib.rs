//! The cluster manager daemons (`cm_server`, `cm_agent`, `om_monitor`) and the `cm_ctl` CLI.
//!
//! The binaries are thin: they parse arguments, load the cluster config, install logging and
//! wire cm-io's drivers to the cm-core machines. What is testable without processes lives in
//! this library: cm_ctl's argument handling, plan execution and `query` rendering,
//! cm_server's wiring and executor, and the executors of om_monitor ([`monitor`]) and
//! cm_agent ([`agent`]) with their /proc helpers ([`node`]), and the local-cluster launcher
//! ([`local`], binary `cm_local`). Deployment:
//! `cm-daemons/README.md` and `cm-daemons/dist/`.

#![warn(missing_docs)]

pub mod agent;
pub mod common;
pub mod ctl;
pub mod ctl_cli;
pub mod ctl_history;
pub mod daemon_cli;
pub mod local;
pub mod monitor;
pub mod node;
pub mod resident;
pub mod server;
