//! cm_server: the CMS quorum and, on the leader, DN arbitration.

pub mod quorum;
