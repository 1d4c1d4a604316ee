//! Executes cm_server's orders: frames through the transport, quorum writes through the store
//! writer, the fence command and gateway probes on their own tasks, alarms as log events.
//! Every slow order reports back through the event loop's input channel; nothing blocks the
//! loop and nothing is decided here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cm_core::Instant;
use cm_core::io::{Alarm, Executor, Flow, WriteCompleted};
use cm_core::server::{ServerCommand, ServerInput};
use cm_io::store::{Store, StoreWriter};
use cm_io::transport::Transport;
use tokio::sync::mpsc;

use super::{fence, gateways};

/// How long the fence command may run before it is killed and counted as failed.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each gateway has to answer.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(2);
/// Quorum writes queued before new ones are refused (and reported failed to the core).
const WRITE_QUEUE: usize = 256;

/// The cm_server executor.
#[derive(Debug)]
pub struct CmsExecutor {
    transport: Transport,
    writer: StoreWriter,
    inputs: mpsc::Sender<ServerInput>,
    submitted: u64,
    completed: Arc<AtomicU64>,
}

impl CmsExecutor {
    /// Starts the store writer for `store` and returns the executor. Completions go to
    /// `inputs` (the event loop's input sender).
    pub fn new(transport: Transport, store: Store, inputs: mpsc::Sender<ServerInput>) -> Self {
        let (done_tx, mut done_rx) = mpsc::channel::<WriteCompleted>(WRITE_QUEUE);
        let writer = StoreWriter::spawn(store, WRITE_QUEUE, done_tx, |w| w);
        let completed = Arc::new(AtomicU64::new(0));
        // Counts completions before handing them on, so that `flush` still learns of them
        // after the event loop (the receiver of `inputs`) has stopped.
        let count = Arc::clone(&completed);
        let forward = inputs.clone();
        tokio::spawn(async move {
            while let Some(done) = done_rx.recv().await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = forward.send(ServerInput::WriteCompleted(done)).await;
            }
        });
        Self {
            transport,
            writer,
            inputs,
            submitted: 0,
            completed,
        }
    }

    /// Waits (at most `limit`) until every submitted quorum write has completed, so that a
    /// clean exit never leaves a vote or log entry the core already relied on unwritten.
    /// Returns whether everything completed.
    pub async fn flush(&self, limit: Duration) -> bool {
        let all = async {
            while self.completed.load(Ordering::SeqCst) < self.submitted {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    fn persist(&mut self, p: cm_core::io::PersistState) {
        self.submitted += 1;
        if let Err(refused) = self.writer.submit(p) {
            tracing::error!(
                token = refused.token.0,
                "quorum write refused: {:?}",
                refused.result
            );
            self.completed.fetch_add(1, Ordering::SeqCst);
            self.feed(ServerInput::WriteCompleted(refused));
        }
    }

    /// Hands an input to the loop from a task (the loop is the caller of `execute`).
    fn feed(&self, input: ServerInput) {
        let tx = self.inputs.clone();
        tokio::spawn(async move {
            let _ = tx.send(input).await;
        });
    }
}

impl Executor<ServerCommand> for CmsExecutor {
    fn execute(&mut self, _now: Instant, order: ServerCommand) -> Flow {
        match order {
            ServerCommand::Net(c) => self.transport.execute(c),
            ServerCommand::Persist(p) => self.persist(p),
            ServerCommand::RunFenceCommand {
                group,
                instance,
                node,
                command,
            } => {
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    let target = fence::Target {
                        group,
                        instance,
                        node,
                    };
                    let success = fence::run(&command, target, FENCE_TIMEOUT).await;
                    let _ = tx
                        .send(ServerInput::FenceCommandDone { group, success })
                        .await;
                });
            }
            ServerCommand::ProbeGateways { gateways } => {
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    let reachable = gateways::all_answer(&gateways, GATEWAY_TIMEOUT).await;
                    tracing::info!(%gateways, reachable, "third-party gateways probed");
                    let _ = tx.send(ServerInput::GatewaysProbed { reachable }).await;
                });
            }
            ServerCommand::RaiseAlarm(a) => raise(&a),
        }
        Flow::Continue
    }
}

/// An alarm's structured fields, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmFields {
    /// The alarm item (CM's name).
    pub kind: &'static str,
    /// The node concerned.
    pub node: Option<u32>,
    /// The group concerned.
    pub group: Option<u32>,
    /// The instance concerned.
    pub instance: Option<u32>,
    /// Usage percent (disk, environment).
    pub usage_pct: Option<u8>,
    /// The resource (environment alarm).
    pub resource: Option<String>,
}

/// The fields of an alarm.
pub fn alarm_fields(a: &Alarm) -> AlarmFields {
    let f = AlarmFields::default;
    match a {
        Alarm::AbnormalCmaProcess { node } => AlarmFields {
            kind: "AbnormalCmaProcess",
            node: Some(node.0),
            ..f()
        },
        Alarm::PhonyDead { instance } => AlarmFields {
            kind: "PhonyDead",
            instance: Some(instance.0),
            ..f()
        },
        Alarm::Failover { group, instance } => AlarmFields {
            kind: "Failover",
            group: Some(group.0),
            instance: Some(instance.0),
            ..f()
        },
        Alarm::PrimaryAliveButSilent { group, instance } => AlarmFields {
            kind: "PrimaryAliveButSilent",
            group: Some(group.0),
            instance: Some(instance.0),
            ..f()
        },
        Alarm::ResourceRestartBudgetSpent { instance, resource } => AlarmFields {
            kind: "ResourceRestartBudgetSpent",
            instance: Some(instance.0),
            resource: Some(resource.clone()),
            ..f()
        },
        Alarm::DoublePrimary { group } => AlarmFields {
            kind: "DoublePrimary",
            group: Some(group.0),
            ..f()
        },
        Alarm::StorageThresholdPreAlarm {
            instance,
            usage_pct,
        } => AlarmFields {
            kind: "StorageThresholdPreAlarm",
            instance: Some(instance.0),
            usage_pct: Some(*usage_pct),
            ..f()
        },
        Alarm::TransactionReadOnly { instance } => AlarmFields {
            kind: "TransactionReadOnly",
            instance: Some(instance.0),
            ..f()
        },
        Alarm::DiskDamaged { instance } => AlarmFields {
            kind: "DiskDamaged",
            instance: Some(instance.0),
            ..f()
        },
        Alarm::Environment {
            resource,
            usage_pct,
        } => AlarmFields {
            kind: "Environment",
            usage_pct: Some(*usage_pct),
            resource: Some(resource.clone()),
            ..f()
        },
    }
}

/// Logs an alarm at WARN with plain fields (`alarm=PhonyDead instance=6002`); cm_agent's
/// alarms too.
pub fn raise(a: &Alarm) {
    let f = alarm_fields(a);
    tracing::warn!(
        alarm = f.kind,
        node = f.node,
        group = f.group,
        instance = f.instance,
        usage_pct = f.usage_pct,
        resource = f.resource.as_deref(),
        "alarm raised"
    );
}

#[cfg(test)]
mod tests {
    use cm_core::ids::{GroupId, InstanceId};

    use super::*;

    #[test]
    fn alarm_fields_name_the_item_and_its_subject() {
        assert_eq!(
            alarm_fields(&Alarm::Failover {
                group: GroupId(2),
                instance: InstanceId(6002)
            }),
            AlarmFields {
                kind: "Failover",
                group: Some(2),
                instance: Some(6002),
                ..AlarmFields::default()
            }
        );
        assert_eq!(
            alarm_fields(&Alarm::Environment {
                resource: "cpu".into(),
                usage_pct: 95
            }),
            AlarmFields {
                kind: "Environment",
                usage_pct: Some(95),
                resource: Some("cpu".into()),
                ..AlarmFields::default()
            }
        );
    }
}
