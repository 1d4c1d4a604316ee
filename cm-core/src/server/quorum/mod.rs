//! The CMS quorum: Raft-style election and the replicated cluster state (SPEC.md §5).

mod msg;

pub use msg::{EntryPayload, LogEntry, QuorumMsg};
