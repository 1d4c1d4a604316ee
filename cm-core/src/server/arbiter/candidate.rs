//! Candidate selection and the Lock1 quorum (§4.2), as small pure functions.

use crate::dn::History;
use crate::ids::{AzName, InstanceId, Position};

/// One locked standby, as candidate selection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locked<'a> {
    /// The instance.
    pub instance: InstanceId,
    /// Its AZ.
    pub az: &'a AzName,
    /// Its AZ's priority (lower preferred).
    pub az_priority: u32,
    /// Its position.
    pub position: Position,
    /// Its timeline history.
    pub history: &'a History,
}

/// The Lock1 quorum q = ⌊(n+1)/2⌋ (§4.2), from the one quorum-arithmetic module.
pub use crate::quorum_math::lock1_quorum;

/// Whether `c` holds the maximum position along its own timeline history: every other locked
/// standby's position lies on `c`'s history at or before `c`'s position, or is on an older
/// timeline past its fork point (diverged: it needs Build, and its extra WAL was never
/// acknowledged by a quorum). A member on a newer timeline, or further along `c`'s own timeline,
/// beats `c`.
pub fn is_max_along_history(c: &Locked<'_>, all: &[Locked<'_>]) -> bool {
    all.iter().all(|s| {
        if c.history.contains(s.position) {
            s.position.timeline != c.position.timeline || s.position.lsn <= c.position.lsn
        } else {
            s.position.timeline < c.position.timeline
        }
    })
}

/// Chooses the member to promote among locked standbys (members in config order): those with
/// the maximum position along their history are eligible; the static primary first, then the
/// first eligible member in the static primary's AZ, then the lowest AZ priority (ties: config
/// order).
pub fn select(
    locked: &[Locked<'_>],
    static_primary: InstanceId,
    static_az: Option<&AzName>,
) -> Option<InstanceId> {
    let eligible: Vec<&Locked<'_>> = locked
        .iter()
        .filter(|c| is_max_along_history(c, locked))
        .collect();
    if let Some(c) = eligible.iter().find(|c| c.instance == static_primary) {
        return Some(c.instance);
    }
    if let Some(az) = static_az
        && let Some(c) = eligible.iter().find(|c| c.az == az)
    {
        return Some(c.instance);
    }
    eligible
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (c.az_priority, *i))
        .map(|(_, c)| c.instance)
}

#[cfg(test)]
#[path = "candidate_tests.rs"]
mod tests;
