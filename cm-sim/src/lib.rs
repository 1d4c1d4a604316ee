//! Deterministic simulation of whole clusters against the cm-core machines.
//!
//! One `u64` seed drives everything: an event heap keyed by `(time, seq)` ([`engine`]), per-node
//! drifting clocks, and models of hosts, processes, the network ([`net`]), disks ([`disk`]) and
//! databases ([`db`]). The SAME cm-core machines the daemons run are driven the way the
//! daemons drive them: each gets its own inputs ([`daemon`]) and its commands go to an
//! `Executor` over the world's models (`exec`); invariants S1–S6 and liveness (SPEC §13) are checked after every
//! event ([`check`]), availability during faults and the switchover bound too ([`avail`]);
//! scenarios are TOML data ([`scenario`], `SCENARIOS.md`); [`swarm`] draws
//! random clusters and fault mixes from a seed.

pub mod avail;
pub mod check;
pub mod daemon;
pub mod db;
pub mod disk;
pub mod engine;
mod exec;
mod faults;
pub mod net;
pub mod operator;
pub mod replay;
pub mod resources;
pub mod run;
pub mod scenario;
pub mod swarm;
pub mod world;
mod world_ops;
