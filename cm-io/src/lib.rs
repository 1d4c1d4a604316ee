//! Real drivers feeding cm-core: processes, files, TCP transport, databases.

pub mod postgres;
pub mod process;
