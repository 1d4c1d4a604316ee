//! cm_ctl's connections: requests to the CMS leader and to the nodes' om_monitor control
//! ports, over a cm-io [`Transport`] authenticated as a `Ctl` endpoint.
//!
//! The ctl endpoint's id is the process id, so concurrent cm_ctl runs never replace each
//! other's connections at a server. Nothing here decides anything: it delivers the planner's
//! requests and reports what came back, or why nothing did.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::ctl::{CtlReply, CtlRequest, MonitorReply, MonitorRequest, Refusal};
use cm_core::ids::{NodeId, QuorumTerm};
use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_io::transport::{AddressBook, Limits, Security, Transport, TransportConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long cm_ctl waits after a "not leader" or "no lease" answer before asking that CMS
/// again (an election may be under way).
const RETRY_REFUSED: Duration = Duration::from_millis(250);

/// cm_ctl's client side.
#[derive(Debug)]
pub struct CtlClient {
    transport: Transport,
    events: mpsc::Receiver<NetEvent>,
    addresses: AddressBook,
    local: Endpoint,
    servers: Vec<Endpoint>,
    connected: BTreeSet<Endpoint>,
    next_id: u64,
}

/// Where one request stands with one peer.
#[derive(Debug, Default)]
struct Tries {
    /// When to (re)send to each connected peer.
    send_at: BTreeMap<Endpoint, Instant>,
    /// Requests in flight: id → peer.
    waiting: BTreeMap<u64, Endpoint>,
    /// Failed connection attempts per peer (refused, unreachable, handshake failed).
    failed: BTreeMap<Endpoint, u32>,
}

/// Connection attempts to every cm_server that must fail before cm_ctl stops waiting for a
/// leader early (a stopped cluster refuses at once; waiting the full limit only delays the
/// answer).
const GIVE_UP_AFTER_FAILURES: u32 = 3;

impl CtlClient {
    /// Starts the transport (outbound only) for `config`.
    pub async fn start(config: &ClusterConfig, security: Security) -> anyhow::Result<Self> {
        let local = Endpoint {
            node: NodeId(std::process::id()),
            role: Role::Ctl,
        };
        let addresses = AddressBook::from_config(config);
        let (transport, events) = Transport::start(TransportConfig {
            local,
            security,
            listen: None,
            addresses: addresses.clone(),
            limits: Limits {
                idle_timeout: None,
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                ..Limits::default()
            },
        })
        .await?;
        Ok(Self {
            transport,
            events,
            addresses,
            local,
            servers: config
                .cms_nodes()
                .into_iter()
                .map(Endpoint::server)
                .collect(),
            connected: BTreeSet::new(),
            next_id: 1,
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.transport.shutdown().await;
    }

    fn envelope(&mut self, to: Endpoint, msg: impl FnOnce(u64) -> Msg) -> (u64, Envelope) {
        let id = self.next_id;
        self.next_id += 1;
        let env = Envelope {
            from: self.local,
            to,
            quorum_term: QuorumTerm(0),
            msg: msg(id),
        };
        (id, env)
    }

    /// Applies a connection event; returns the frame it carried, if any.
    fn track(&mut self, ev: NetEvent, tries: &mut Tries) -> Option<(Endpoint, Msg)> {
        match ev {
            NetEvent::Connected { peer } => {
                self.connected.insert(peer);
                tries.send_at.insert(peer, Instant::now());
                None
            }
            NetEvent::ConnectFailed { peer } => {
                *tries.failed.entry(peer).or_default() += 1;
                self.connected.remove(&peer);
                tries.send_at.remove(&peer);
                tries.waiting.retain(|_, p| *p != peer);
                None
            }
            NetEvent::Closed { peer } => {
                self.connected.remove(&peer);
                tries.send_at.remove(&peer);
                tries.waiting.retain(|_, p| *p != peer);
                None
            }
            NetEvent::FrameReceived { peer, envelope } => Some((peer, envelope.msg)),
        }
    }

    /// Sends `req` to every CMS until one answers with something other than "not leader" /
    /// "no lease", within `limit`. Every CMS is asked at once (the leader hint of a refusal
    /// names one of them, already being asked); refusing ones are asked again shortly, since
    /// an election may be under way. `Err` says why no leader answered.
    pub async fn leader(&mut self, req: &CtlRequest, limit: Duration) -> Result<CtlReply, String> {
        let deadline = Instant::now() + limit;
        let mut tries = Tries::default();
        for s in self.servers.clone() {
            self.transport.connect(s);
            if self.connected.contains(&s) {
                tries.send_at.insert(s, Instant::now());
            }
        }
        let mut last_refusal: Option<Refusal> = None;
        loop {
            let now = Instant::now();
            let due: Vec<Endpoint> = tries
                .send_at
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(p, _)| *p)
                .collect();
            for peer in due {
                tries.send_at.remove(&peer);
                let (id, env) = self.envelope(peer, |id| Msg::CtlRequest {
                    id,
                    req: req.clone(),
                });
                if self.transport.send(&env).is_ok() {
                    tries.waiting.insert(id, peer);
                }
            }
            let wake = tries
                .send_at
                .values()
                .copied()
                .min()
                .unwrap_or(deadline)
                .min(deadline);
            let ev = tokio::select! {
                ev = self.events.recv() => ev,
                () = tokio::time::sleep_until(wake) => None,
            };
            if let Some((peer, Msg::CtlReply { id, reply })) =
                ev.and_then(|ev| self.track(ev, &mut tries))
            {
                if tries.waiting.remove(&id).is_none() {
                    continue;
                }
                match reply {
                    CtlReply::Refused(r @ (Refusal::NotLeader { .. } | Refusal::NoLease)) => {
                        last_refusal = Some(r);
                        tries.send_at.insert(peer, Instant::now() + RETRY_REFUSED);
                    }
                    other => return Ok(other),
                }
            }
            let all_refused = last_refusal.is_none()
                && self.connected.is_empty()
                && self
                    .servers
                    .iter()
                    .all(|s| tries.failed.get(s).copied().unwrap_or(0) >= GIVE_UP_AFTER_FAILURES);
            if Instant::now() >= deadline || all_refused {
                return Err(self.no_leader(last_refusal, limit).await);
            }
        }
    }

    async fn no_leader(&self, last_refusal: Option<Refusal>, limit: Duration) -> String {
        if let Some(r) = last_refusal {
            return format!(
                "can't connect to cm_server: no cm_server leader answered within {} s (last \
                 answer: {r}); the quorum may be electing or may have lost its majority",
                limit.as_secs()
            );
        }
        let mut why = Vec::new();
        for s in &self.servers {
            why.push(self.diagnose(*s).await);
        }
        format!(
            "can't connect to cm_server ({}); check that cm_server runs on the CMS nodes and that \
             this config and TLS material are the cluster's",
            why.join("; ")
        )
    }

    /// Why `peer` cannot be used, found by one direct connection and handshake.
    async fn diagnose(&self, peer: Endpoint) -> String {
        let Some(addr) = self.addresses.get(peer) else {
            return format!("{peer}: no address in the config");
        };
        match tokio::time::timeout(Duration::from_secs(2), self.transport.probe(peer)).await {
            Ok(Ok(_)) => format!("{peer} at {addr}: reachable, but it did not answer"),
            Ok(Err(e)) => format!("{peer} at {addr}: {e}"),
            Err(_) => format!("{peer} at {addr}: timed out"),
        }
    }

    /// Sends `req` to the om_monitor of every node in `nodes` and collects each answer within
    /// `limit`; a node without one gets `Err(reason)`.
    pub async fn monitors(
        &mut self,
        nodes: &[NodeId],
        req: &MonitorRequest,
        limit: Duration,
    ) -> Vec<(NodeId, Result<MonitorReply, String>)> {
        let deadline = Instant::now() + limit;
        let mut tries = Tries::default();
        for n in nodes {
            let peer = Endpoint::monitor(*n);
            self.transport.connect(peer);
            if self.connected.contains(&peer) {
                tries.send_at.insert(peer, Instant::now());
            }
        }
        let mut answers: BTreeMap<NodeId, MonitorReply> = BTreeMap::new();
        while answers.len() < nodes.len() && Instant::now() < deadline {
            let due: Vec<Endpoint> = tries.send_at.keys().copied().collect();
            for peer in due {
                tries.send_at.remove(&peer);
                let (id, env) = self.envelope(peer, |id| Msg::MonitorRequest {
                    id,
                    req: req.clone(),
                });
                if self.transport.send(&env).is_ok() {
                    tries.waiting.insert(id, peer);
                }
            }
            let ev = tokio::select! {
                ev = self.events.recv() => ev,
                () = tokio::time::sleep_until(deadline) => None,
            };
            if let Some((peer, Msg::MonitorReply { id, reply })) =
                ev.and_then(|ev| self.track(ev, &mut tries))
                && tries.waiting.remove(&id).is_some()
            {
                answers.insert(peer.node, reply);
            }
            // Every node still missing refuses connections: waiting longer changes nothing.
            let hopeless = nodes.iter().filter(|n| !answers.contains_key(n)).all(|n| {
                let peer = Endpoint::monitor(*n);
                !self.connected.contains(&peer)
                    && tries.failed.get(&peer).copied().unwrap_or(0) >= GIVE_UP_AFTER_FAILURES
            });
            if hopeless {
                break;
            }
        }
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let r = match answers.remove(n) {
                Some(a) => Ok(a),
                None => Err(format!(
                    "om_monitor unreachable ({})",
                    self.diagnose(Endpoint::monitor(*n)).await
                )),
            };
            out.push((*n, r));
        }
        out
    }
}
