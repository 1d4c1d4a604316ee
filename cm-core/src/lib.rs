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
//! ## Driving a machine by hand
//!
//! A driver is a loop: feed a fact, execute the orders, answer the probes it asked for, sleep
//! until `next_deadline()`. Here the agent of node 1 (whose DN 6001 is not running; the CMS
//! is on node 2) is driven by hand, exactly as cm-io's event loop and cm-sim do:
//!
//! ```
//! use cm_core::agent::{Agent, AgentCommand, AgentInput};
//! use cm_core::config::ClusterConfig;
//! use cm_core::dn::DnAction;
//! use cm_core::flags::FlagSet;
//! use cm_core::io::{Machine, NetCommand};
//! use cm_core::msg::Endpoint;
//! use cm_core::{Instant, InstanceId, NodeId};
//!
//! let config = ClusterConfig::from_toml_str(r#"
//!     name = "demo"
//!     [[node]]
//!     id = 1
//!     name = "n1"
//!     address = "127.0.0.1"
//!     az = "AZ1"
//!     state_dir = "/tmp/cm/n1"
//!     monitor_port = 17001
//!     [[node]]
//!     id = 2
//!     name = "n2"
//!     address = "127.0.0.2"
//!     az = "AZ1"
//!     state_dir = "/tmp/cm/n2"
//!     monitor_port = 17001
//!     cms_port = 17101
//!     [[group]]
//!     id = 1
//!     [[group.member]]
//!     instance = 6001
//!     node = 1
//!     data_dir = "/tmp/cm/dn6001"
//!     port = 5432
//! "#).unwrap();
//! let mut agent = Agent::new(&config, NodeId(1), 42, None).unwrap();
//!
//! // 1. The first tick is due at once: connect to every CMS, read the flag files, sample the DN.
//! let now = Instant::ZERO;
//! let orders = agent.step(now, AgentInput::Tick);
//! assert_eq!(orders[0], AgentCommand::Net(NetCommand::Connect { peer: Endpoint::server(NodeId(2)) }));
//! assert!(orders.contains(&AgentCommand::ReadFlags));
//! let sample = orders.iter().find_map(|c| match c {
//!     AgentCommand::SampleProcesses { op, instance } => Some((*op, *instance)),
//!     _ => None,
//! }).unwrap();
//!
//! // 2. The driver answers: no flag files, and no process of DN 6001.
//! let now = Instant::from_millis(5);
//! agent.step(now, AgentInput::FlagsObserved(FlagSet::default()));
//! let orders = agent.step(now, AgentInput::ProcessesSampled {
//!     op: sample.0,
//!     instance: sample.1,
//!     processes: vec![],
//! });
//!
//! // 3. The agent decides: start it as a pending standby (only a CMS may make it primary).
//! assert!(orders.iter().any(|c| matches!(c,
//!     AgentCommand::RunDnAction { instance: InstanceId(6001), action: DnAction::StartPending, .. })));
//!
//! // 4. Nothing else is due before the next 200 ms turn of the CMS-contact loop.
//! assert_eq!(agent.next_deadline(), Some(Instant::from_millis(200)));
//! ```
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
pub mod history;
pub mod ids;
pub mod io;
pub mod journal;
pub mod monitor;
pub mod msg;
pub mod params;
pub mod quorum_math;
pub mod resource;
pub mod rng;
pub mod security;
pub mod server;
pub mod state;
pub mod time;

pub use ids::*;
pub use time::Instant;
