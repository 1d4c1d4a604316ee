//! The simulated drivers of the cm-core machines: one adapter per process role translating the
//! world's generic [`SimInput`](crate::daemon::SimInput)/[`EnvOp`](crate::daemon::EnvOp)
//! vocabulary to and from the machine's own `Input`/`Command` enums, exactly as cm-io's drivers
//! do for the real OS.

pub mod agent;
pub mod monitor;
pub mod server;

use cm_core::msg::Role;

use crate::daemon::{DaemonFactory, SimDaemon, Spawn};

/// Builds the cm-core machines: om_monitor (started at boot), which starts cm_agent, which
/// starts the node's cm_server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machines;

impl DaemonFactory for Machines {
    fn spawn(&self, role: Role, spawn: Spawn<'_>) -> Option<Box<dyn SimDaemon>> {
        match role {
            Role::Monitor => Some(Box::new(monitor::MonitorAdapter::new(&spawn))),
            Role::Agent => {
                agent::AgentAdapter::new(&spawn).map(|a| Box::new(a) as Box<dyn SimDaemon>)
            }
            Role::Server => {
                server::ServerAdapter::new(&spawn).map(|a| Box::new(a) as Box<dyn SimDaemon>)
            }
            Role::Ctl => None,
        }
    }
}
