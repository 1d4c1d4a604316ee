//! cm_server: the CMS quorum and, on the leader, DN arbitration.
//!
//! The leader-side decisions ([`leader::Leader`]) are written against the
//! [`crate::state::ReplicatedState`] interface, so they run unchanged on the quorum or on the
//! in-memory state of the tests.

pub mod arbiter;
pub mod leader;
pub mod machine;
pub mod outbox;
pub mod phony_dead;
pub mod quorum;
pub mod read_only;
pub mod resources;
pub mod status;
pub mod switchover;

#[cfg(test)]
pub(crate) mod harness;

pub use machine::{Server, ServerCommand, ServerInput, ServerStatus};
