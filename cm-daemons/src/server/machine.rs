//! The cm_server machine as the daemon drives it: cm-core's [`Server`] with its commands made
//! executable.
//!
//! Two of the server's commands name configuration the executor cannot see: `RunFenceCommand`
//! runs `fence_command` and `ProbeGateways` probes `third_party_gateway_ip`. Both are
//! parameters that `cm_ctl set --param --server` can change at run time (the change is
//! replicated by the quorum and applied by the leader component), so the command text is read
//! from the core's *effective* parameters at the moment the command is emitted, never from
//! the config file. Nothing is decided here: every order is the core's, in the core's order.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cm_core::Instant;
use cm_core::config::ClusterConfig;
use cm_core::ids::NodeId;
use cm_core::io::{Alarm, Machine, NetCommand, NetEvent};
use cm_core::msg::{CmsCommand, Msg};
use cm_core::server::quorum::QuorumError;
use cm_core::server::{Server, ServerCommand, ServerInput, ServerStatus};
use cm_io::journal::Journaled;

use super::metrics::{Published, ServerMetrics};

/// The metrics view is published at most this often (and at every leadership change).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// cm-core's [`Server`] behind the same [`Machine`] contract, with the daemon's counting,
/// publishing and leadership log around each step.
#[derive(Debug)]
pub struct CmsMachine {
    server: Server,
    /// Leadership as last logged: (leader known, this node arbitrates).
    shown: (Option<NodeId>, bool),
    /// Where `/metrics` and `/cluster` read from, with when it was last published.
    metrics: Option<(Arc<ServerMetrics>, Option<Instant>)>,
}

impl CmsMachine {
    /// Builds the cm_server of `node` from its restored quorum store.
    pub fn new(
        config: &ClusterConfig,
        node: NodeId,
        seed: u64,
        restored: Option<Vec<u8>>,
    ) -> Result<Self, QuorumError> {
        Ok(Self {
            server: Server::new(config, node, seed, restored)?,
            shown: (None, false),
            metrics: None,
        })
    }

    /// Publishes to `metrics` and counts into it (§15).
    pub fn with_metrics(mut self, metrics: Arc<ServerMetrics>) -> Self {
        self.metrics = Some((metrics, None));
        self
    }

    /// Counts a report received (`report`) and the commands the orders send.
    fn count(&self, report: bool, arbitrating: bool, orders: &[ServerCommand]) {
        let Some((m, _)) = &self.metrics else {
            return;
        };
        let p = &m.passing;
        p.ctl_refused
            .store(self.server.ctl_refused_not_operator(), Ordering::Relaxed);
        if report {
            p.reports_received.fetch_add(1, Ordering::Relaxed);
            if !arbitrating {
                p.reports_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        for o in orders {
            if let ServerCommand::RaiseAlarm(Alarm::Failover { .. }) = o {
                p.failovers_decided.fetch_add(1, Ordering::Relaxed);
            }
            let ServerCommand::Net(NetCommand::Send { envelope }) = o else {
                continue;
            };
            let Msg::Command(sc) = &envelope.msg else {
                continue;
            };
            let counter = match sc.cmd {
                CmsCommand::Failover { .. } => &p.failovers,
                CmsCommand::Switchover { .. } => &p.switchovers,
                CmsCommand::Lock1 => &p.lock1s,
                _ => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes the view when [`PUBLISH_EVERY`] passed or leadership changed.
    fn publish(&mut self, now: Instant, leadership_changed: bool) {
        let Some((m, last)) = &mut self.metrics else {
            return;
        };
        let due =
            leadership_changed || last.is_none_or(|t| now.saturating_since(t) >= PUBLISH_EVERY);
        if !due {
            return;
        }
        *last = Some(now);
        m.publish(Published {
            status: Some(self.server.status()),
            cluster: self.server.cluster_status(),
            at: now,
        });
    }

    /// The wrapped core machine.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Logs leadership changes, so an operator can follow elections in the log; true when it
    /// changed.
    fn log_leadership(&mut self) -> bool {
        let st = self.server.status();
        let now = (st.quorum.leader, st.arbitrating);
        let changed = now != self.shown;
        if changed {
            self.shown = now;
            tracing::info!(
                node = st.quorum.node.0,
                term = st.quorum.term.0,
                leader = st.quorum.leader.map(|n| n.0),
                arbitrating = st.arbitrating,
                "CMS leadership changed"
            );
        }
        changed
    }
}

impl Machine for CmsMachine {
    type Input = ServerInput;
    type Command = ServerCommand;
    type Status = ServerStatus;

    fn step(&mut self, now: Instant, input: ServerInput) -> Vec<ServerCommand> {
        let report = matches!(
            &input,
            ServerInput::Net(NetEvent::FrameReceived { envelope, .. })
                if matches!(envelope.msg, Msg::AgentReport(_))
        );
        let arbitrating = self.metrics.is_some() && self.server.status().arbitrating;
        let commands = self.server.step(now, input);
        self.count(report, arbitrating, &commands);
        let changed = self.log_leadership();
        self.publish(now, changed);
        commands
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    fn status(&self) -> ServerStatus {
        self.server.status()
    }
}

impl Journaled for CmsMachine {
    type Core = Server;

    fn core(&self) -> &Server {
        &self.server
    }

    fn core_input(input: &ServerInput) -> &ServerInput {
        input
    }

    fn core_commands(commands: &[ServerCommand]) -> Cow<'_, [ServerCommand]> {
        Cow::Borrowed(commands)
    }
}

#[cfg(test)]
mod tests {
    use cm_core::io::Machine;

    use super::*;

    const ONE_CMS: &str = r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/unused"
monitor_port = 17001
cms_port = 17101
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d1"
port = 5432
[params]
fence_command = "echo fence"
"#;

    #[test]
    fn the_machine_orders_exactly_the_cores_commands_and_the_first_step_persists() {
        let cfg = ClusterConfig::from_toml_str(ONE_CMS).unwrap();
        let mut m = CmsMachine::new(&cfg, NodeId(1), 7, None).unwrap();
        let mut core = Server::new(&cfg, NodeId(1), 7, None).unwrap();
        let expected = core.step(Instant::ZERO, ServerInput::Tick);
        let got = m.step(Instant::ZERO, ServerInput::Tick);
        assert_eq!(got, expected);
        assert!(
            got.iter().any(|o| matches!(o, ServerCommand::Persist(_))),
            "a blank single-CMS store is written at start: {got:?}"
        );
    }
}
