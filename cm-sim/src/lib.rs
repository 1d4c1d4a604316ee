//! Deterministic simulation of whole clusters against the cm-core machines.
//!
//! One `u64` seed drives everything: an event heap keyed by `(time, seq)` ([`engine`]), per-node
//! drifting clocks, and models of hosts, processes, the network ([`net`]), disks ([`disk`]) and
//! databases ([`db`]). The SAME cm-core machines the daemons run are driven through thin
//! adapters; invariants S1–S6 (SPEC §13) are checked after every event.

pub mod db;
pub mod disk;
pub mod engine;
pub mod net;
