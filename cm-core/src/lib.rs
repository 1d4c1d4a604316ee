//! # cm-core: the pure decision core of the cluster manager
//!
//! Every decision of the cluster manager — when to restart a process, when a primary is dead,
//! which standby to promote, when a primary must fence itself, who leads the CMS quorum — is
//! made here, by deterministic state machines that do no I/O, read no clock and draw no
//! unseeded randomness. The daemons (`cm-io`, `cm-daemons`) and the simulator (`cm-sim`) drive
//! the very same machines.
//!
//! ## The contract
//!
//! Each machine implements [`io::Machine`]:
//!
//! ```text
//! fn step(&mut self, now: Instant, input: Input) -> Vec<Command>;
//! fn next_deadline(&self) -> Option<Instant>;
//! fn status(&self) -> Status;
//! ```
//!
//! * **Inputs are facts** (a frame arrived, a process was sampled, a write completed, a tick).
//! * **Commands are orders** (send, start, kill, persist, run a DN action), executed in the
//!   order returned.
//! * **Time is an input**: [`Instant`] is a `u64` of nanoseconds on the caller's monotonic clock;
//!   it must never go backwards (asserted, in release builds too).
//! * **No timers**: drivers sleep until `next_deadline()` and then send a tick; an early or
//!   spurious tick is a no-op.
//! * **Durability is explicit**: anything that must survive a crash is emitted as a persist
//!   command and acted on only after the matching write-completed input.
//!
//! The purity is enforced mechanically: `cm-core/clippy.toml` bans clocks, thread RNGs and
//! hasher-ordered collections, and CI fails if `cargo tree -p cm-core -e normal` shows tokio,
//! mio, socket2 or getrandom.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod codec;
pub mod config;
pub mod ctl;
pub mod ctl_plan;
pub mod dn;
pub mod flags;
pub mod ids;
pub mod io;
pub mod monitor;
pub mod msg;
pub mod params;
pub mod rng;
pub mod server;
pub mod state;
pub mod time;

#[cfg(test)]
pub(crate) mod testkit;

pub use ids::*;
pub use time::Instant;
