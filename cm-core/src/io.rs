//! The input and command pieces every machine shares: connections, frames, persistence, alarms,
//! and the two traits that give the daemons and the simulator one way to drive every machine:
//! [`Machine`] (feed one input, get the commands) and [`Executor`] (carry out one command).
//!
//! Machine-specific inputs and commands live with each machine (`monitor`, `agent`, `server`)
//! and wrap these.

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, InstanceId, NodeId, WriteToken};
use crate::msg::{Endpoint, Envelope};
use crate::time::Instant;

/// A connection-level fact reported by the transport (DESIGN.md "connections are decisions").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NetEvent {
    /// An outbound connection the machine asked for is up (authenticated).
    Connected {
        /// The peer.
        peer: Endpoint,
    },
    /// An outbound connection attempt failed.
    ConnectFailed {
        /// The peer.
        peer: Endpoint,
    },
    /// A connection (either direction) closed.
    Closed {
        /// The peer.
        peer: Endpoint,
    },
    /// A frame arrived and decoded.
    FrameReceived {
        /// The connection's authenticated peer (the envelope's `from` must match it).
        peer: Endpoint,
        /// The envelope.
        envelope: Envelope,
    },
}

/// A connection-level order to the transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NetCommand {
    /// Open (or keep) a connection to a peer.
    Connect {
        /// The peer.
        peer: Endpoint,
    },
    /// Close the connection to a peer.
    Disconnect {
        /// The peer.
        peer: Endpoint,
    },
    /// Send an envelope to `envelope.to` on the connection to it (dropped when there is none).
    Send {
        /// The envelope.
        envelope: Envelope,
    },
}

/// Durable state to write: the machine acts on it only after [`WriteCompleted`] for its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistState {
    /// Matches the completion.
    pub token: WriteToken,
    /// The whole persisted state, encoded with [`crate::codec::encode_persisted`].
    pub bytes: Vec<u8>,
}

/// A write finished (durably, e.g. after fsync) — or failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCompleted {
    /// The token of the `PersistState`.
    pub token: WriteToken,
    /// `Err(reason)` when the write failed (disk full, I/O error).
    pub result: Result<(), String>,
}

/// An alarm (CM's alarm items), raised or cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alarm {
    /// om_monitor could not keep cm_agent running (3 start attempts).
    AbnormalCmaProcess {
        /// The node.
        node: NodeId,
    },
    /// A DN was found hung and restarted (§6).
    PhonyDead {
        /// The instance.
        instance: InstanceId,
    },
    /// A group failed over.
    Failover {
        /// The group.
        group: GroupId,
        /// The new primary.
        instance: InstanceId,
    },
    /// Fresh streaming evidence says the silent primary is alive (§8).
    PrimaryAliveButSilent {
        /// The group.
        group: GroupId,
        /// The old primary.
        instance: InstanceId,
    },
    /// Two primaries were seen in one group.
    DoublePrimary {
        /// The group.
        group: GroupId,
    },
    /// Disk usage reached the pre-alarm threshold (68 % by default).
    StorageThresholdPreAlarm {
        /// The instance.
        instance: InstanceId,
        /// Usage percent.
        usage_pct: u8,
    },
    /// A DN was made read-only by the disk threshold.
    TransactionReadOnly {
        /// The instance.
        instance: InstanceId,
    },
    /// A disk probe failed 3 times.
    DiskDamaged {
        /// The instance.
        instance: InstanceId,
    },
    /// A resource instance spent its restart budget and was stopped manually (§14).
    ResourceRestartBudgetSpent {
        /// The resource instance.
        instance: InstanceId,
        /// The resource's name.
        resource: String,
    },
    /// cpu/mem/io above `environment_threshold`.
    Environment {
        /// Which resource.
        resource: String,
        /// Usage percent.
        usage_pct: u8,
    },
}

impl core::fmt::Display for Alarm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::AbnormalCmaProcess { node } => write!(f, "AbnormalCmaProcess node={}", node.0),
            Self::PhonyDead { instance } => write!(f, "PhonyDead instance={instance}"),
            Self::Failover { group, instance } => {
                write!(f, "Failover group={} instance={instance}", group.0)
            }
            Self::PrimaryAliveButSilent { group, instance } => {
                write!(
                    f,
                    "PrimaryAliveButSilent group={} instance={instance}",
                    group.0
                )
            }
            Self::DoublePrimary { group } => write!(f, "DoublePrimary group={}", group.0),
            Self::StorageThresholdPreAlarm {
                instance,
                usage_pct,
            } => write!(
                f,
                "StorageThresholdPreAlarm instance={instance} usage={usage_pct}%"
            ),
            Self::TransactionReadOnly { instance } => {
                write!(f, "TransactionReadOnly instance={instance}")
            }
            Self::DiskDamaged { instance } => write!(f, "DiskDamaged instance={instance}"),
            Self::ResourceRestartBudgetSpent { instance, resource } => write!(
                f,
                "ResourceRestartBudgetSpent resource={resource} instance={instance}"
            ),
            Self::Environment {
                resource,
                usage_pct,
            } => write!(f, "Environment resource={resource} usage={usage_pct}%"),
        }
    }
}

/// The driving contract every cm-core machine implements.
///
/// * `step(now, input)`: feed one fact; get the orders to execute, **in order**. `now` must
///   never go backwards (the machine asserts it, in release builds too).
/// * `next_deadline()`: when the machine next wants a `Tick`-like input; drivers sleep until
///   then. It is pure; a spurious early tick is a no-op.
/// * `status()`: plain data for cm_ctl, the simulator's checkers and metrics.
pub trait Machine {
    /// Facts the machine accepts.
    type Input;
    /// Orders the machine emits.
    type Command;
    /// Its observable state.
    type Status;

    /// Feeds one input at `now`; returns the commands to execute in order.
    fn step(&mut self, now: Instant, input: Self::Input) -> Vec<Self::Command>;
    /// The next instant at which the machine wants to be ticked.
    fn next_deadline(&self) -> Option<Instant>;
    /// A snapshot of its state.
    fn status(&self) -> Self::Status;
}

/// Whether a driver goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep running.
    Continue,
    /// Stop after the current batch of commands (e.g. the agent exits after a cluster stop).
    Stop,
}

/// Carries out a machine's commands: cm-io's daemons against the OS, cm-sim against the
/// world's models. Each implementation is the one `match` over the machine's command enum on
/// its side, so a new command needs exactly one new arm in the daemons and one in the
/// simulator.
///
/// A driver hands every command of a step to `execute`, **in the order** the machine
/// returned them, before it feeds the machine its next input. The executor never decides
/// anything: what comes back (a completion, a sample, a failure) comes back as a later input
/// of the same machine.
pub trait Executor<C> {
    /// Executes or starts one command, at the `now` the machine stepped at. It must not block:
    /// slow work (process start, SQL, fsync) runs elsewhere and reports back as an input.
    fn execute(&mut self, now: Instant, command: C) -> Flow;
}
