//! Real drivers feeding cm-core: processes, files, disks, TCP transport, databases.
//!
//! Nothing here decides anything: drivers measure, execute and report back as inputs.
#![warn(missing_docs)]

pub mod disk;
pub mod event_loop;
pub mod flags;
pub mod http;
pub mod journal;
pub mod postgres;
pub mod process;
pub mod script;
pub mod statedir;
pub mod store;
pub mod transport;
