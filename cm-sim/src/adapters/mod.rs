//! The simulated drivers of the cm-core machines: one adapter per process role translating the
//! world's generic [`SimInput`]/[`EnvOp`] vocabulary to and from the machine's own
//! `Input`/`Command` enums, exactly as cm-io's drivers do for the real OS.

use cm_core::msg::Role;

use crate::daemon::{DaemonFactory, SimDaemon, Spawn};

/// Builds the cm-core machines that exist in this build of cm-core.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machines;

impl DaemonFactory for Machines {
    fn spawn(&self, role: Role, spawn: Spawn<'_>) -> Option<Box<dyn SimDaemon>> {
        let _ = (role, spawn);
        None
    }
}
