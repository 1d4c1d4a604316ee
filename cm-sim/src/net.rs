//! The network model: per-link latency, loss, duplication, reordering, one-way and two-way
//! partitions between nodes, and connections (TCP-like: FIFO per connection unless reordering is
//! on; a partition or a crash closes them). Frames are delivered as `Envelope`s directly.

use std::collections::{BTreeMap, BTreeSet};

use core::time::Duration;

use cm_core::msg::Endpoint;
use cm_core::rng::Prng;
use cm_core::{Instant, NodeId};
use serde::{Deserialize, Serialize};

/// Network behaviour, per scenario (swarm mode draws it from the seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetParams {
    /// Minimum one-way latency between nodes, ms.
    pub latency_min_ms: f64,
    /// Maximum one-way latency between nodes, ms.
    pub latency_max_ms: f64,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplication: f64,
    /// Whether frames of one connection may overtake each other.
    pub reorder: bool,
    /// How long a connect to an unreachable node takes to fail, ms.
    pub connect_timeout_ms: f64,
    /// How long the survivor of a crashed host takes to see its connections close, ms.
    pub dead_peer_close_ms: f64,
}

impl Default for NetParams {
    fn default() -> Self {
        Self {
            latency_min_ms: 0.2,
            latency_max_ms: 2.0,
            loss: 0.0,
            duplication: 0.0,
            reorder: false,
            connect_timeout_ms: 1000.0,
            dead_peer_close_ms: 1000.0,
        }
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

/// A connection between two processes, stored with its ends ordered.
pub type ConnKey = (Endpoint, Endpoint);

/// Orders the ends of a connection.
pub fn conn_key(a: Endpoint, b: Endpoint) -> ConnKey {
    if a <= b { (a, b) } else { (b, a) }
}

/// The network state.
#[derive(Debug, Default)]
pub struct Network {
    /// Behaviour.
    pub params: NetParams,
    blocked: BTreeSet<(NodeId, NodeId)>,
    cut: BTreeSet<ConnKey>,
    conns: BTreeMap<ConnKey, u64>,
    next_conn: u64,
    fifo: BTreeMap<(Endpoint, Endpoint), Instant>,
    gateway: BTreeMap<NodeId, bool>,
}

impl Network {
    /// A network with these parameters, fully connected, no connections.
    pub fn new(params: NetParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// Whether frames from node `a` reach node `b` (same-node traffic always does).
    pub fn reaches(&self, a: NodeId, b: NodeId) -> bool {
        a == b || !self.blocked.contains(&(a, b))
    }

    /// Whether `a` and `b` can hold a connection (both directions pass).
    pub fn link_up(&self, a: NodeId, b: NodeId) -> bool {
        self.reaches(a, b) && self.reaches(b, a)
    }

    /// Whether processes `a` and `b` can hold a connection (nodes linked, pair not cut).
    pub fn endpoints_up(&self, a: Endpoint, b: Endpoint) -> bool {
        self.link_up(a.node, b.node) && !self.cut.contains(&conn_key(a, b))
    }

    /// Cuts process `a` from each of `peers` (both directions), leaving their nodes linked:
    /// e.g. one agent from every cm_server while its DN keeps streaming. Returns the peers whose
    /// connection broke.
    pub fn cut_endpoints(&mut self, a: Endpoint, peers: &[Endpoint]) -> Vec<Endpoint> {
        let mut broken = Vec::new();
        for p in peers {
            self.cut.insert(conn_key(a, *p));
            if self.close(a, *p) {
                broken.push(*p);
            }
        }
        broken
    }

    /// Blocks traffic from every node of `from` to every node of `to` (and back unless
    /// `one_way`). Returns the connections that break.
    pub fn partition(&mut self, from: &[NodeId], to: &[NodeId], one_way: bool) -> Vec<ConnKey> {
        for a in from {
            for b in to {
                if a != b {
                    self.blocked.insert((*a, *b));
                    if !one_way {
                        self.blocked.insert((*b, *a));
                    }
                }
            }
        }
        let broken: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|(a, b)| !self.link_up(a.node, b.node))
            .copied()
            .collect();
        for k in &broken {
            self.conns.remove(k);
        }
        broken
    }

    /// Removes every partition, cut and gateway override.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.cut.clear();
        self.gateway.clear();
    }

    /// Whether any partition is in place.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty() || !self.cut.is_empty()
    }

    /// Whether the cut pair `a`–`b` exists (an endpoint cut, not a node partition).
    pub fn endpoints_cut(&self, a: Endpoint, b: Endpoint) -> bool {
        self.cut.contains(&conn_key(a, b))
    }

    /// Sets whether `node` reaches the third-party gateways (SPEC §5.4) until the next heal.
    pub fn set_gateway(&mut self, node: NodeId, reachable: bool) {
        self.gateway.insert(node, reachable);
    }

    /// Whether `node` reaches the third-party gateways: as set by a `gateway` fault, else
    /// whenever it is linked to some other node of `nodes` (the gateway sits in the network
    /// the cluster shares).
    pub fn gateway_reachable(&self, node: NodeId, nodes: &[NodeId]) -> bool {
        self.gateway
            .get(&node)
            .copied()
            .unwrap_or_else(|| nodes.iter().any(|n| *n != node && self.link_up(node, *n)))
    }

    /// A one-way latency draw (loopback is ~50 µs).
    pub fn latency(&self, a: NodeId, b: NodeId, rng: &mut Prng) -> Duration {
        if a == b {
            return Duration::from_micros(50);
        }
        rng.duration_between(
            ms(self.params.latency_min_ms),
            ms(self.params.latency_max_ms),
        )
    }

    /// Opens a connection; returns its id (a reconnect gets a new id).
    pub fn open(&mut self, a: Endpoint, b: Endpoint) -> u64 {
        self.next_conn += 1;
        self.conns.insert(conn_key(a, b), self.next_conn);
        self.next_conn
    }

    /// The id of the open connection between `a` and `b`.
    pub fn conn(&self, a: Endpoint, b: Endpoint) -> Option<u64> {
        self.conns.get(&conn_key(a, b)).copied()
    }

    /// Closes the connection between `a` and `b`; true if there was one.
    pub fn close(&mut self, a: Endpoint, b: Endpoint) -> bool {
        self.conns.remove(&conn_key(a, b)).is_some()
    }

    /// Closes every connection of `ep`; returns the peers.
    pub fn close_all_of(&mut self, ep: Endpoint) -> Vec<Endpoint> {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|(a, b)| *a == ep || *b == ep)
            .copied()
            .collect();
        keys.iter()
            .map(|k| {
                self.conns.remove(k);
                if k.0 == ep { k.1 } else { k.0 }
            })
            .collect()
    }

    /// Delivery instants of one frame sent now from `from` to `to`: none (lost), one, or two
    /// (duplicated). FIFO per direction unless reordering is on.
    pub fn plan_frame(
        &mut self,
        now: Instant,
        from: Endpoint,
        to: Endpoint,
        rng: &mut Prng,
    ) -> FrameTimes {
        let mut out = FrameTimes::default();
        let remote = from.node != to.node;
        if remote && rng.chance(self.params.loss) {
            return out;
        }
        let copies = if remote && rng.chance(self.params.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.latency(from.node, to.node, rng);
            if !self.params.reorder {
                let last = self.fifo.entry((from, to)).or_insert(Instant::ZERO);
                at = at.max(*last);
                *last = at;
            }
            out.at[out.len] = at;
            out.len += 1;
        }
        out
    }

    /// How long a failed connect takes to be reported.
    pub fn connect_timeout(&self) -> Duration {
        ms(self.params.connect_timeout_ms)
    }

    /// How long the peers of a crashed host take to see their connections close.
    pub fn dead_peer_close(&self) -> Duration {
        ms(self.params.dead_peer_close_ms)
    }
}

/// The delivery instants of one frame ([`Network::plan_frame`]): none, one or two, kept
/// inline (a frame is planned for every message sent).
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimes {
    at: [Instant; 2],
    len: usize,
}

impl core::ops::Deref for FrameTimes {
    type Target = [Instant];

    fn deref(&self) -> &[Instant] {
        &self.at[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn two_way_partition_blocks_both_directions_and_breaks_connections() {
        let mut net = Network::new(NetParams::default());
        net.open(Endpoint::agent(n(1)), Endpoint::server(n(2)));
        net.open(Endpoint::agent(n(3)), Endpoint::server(n(2)));
        let broken = net.partition(&[n(1)], &[n(2), n(3)], false);
        assert_eq!(
            broken,
            vec![conn_key(Endpoint::agent(n(1)), Endpoint::server(n(2)))]
        );
        assert!(!net.reaches(n(1), n(2)) && !net.reaches(n(2), n(1)));
        assert!(net.reaches(n(2), n(3)));
        assert!(
            net.conn(Endpoint::agent(n(3)), Endpoint::server(n(2)))
                .is_some()
        );
        net.heal();
        assert!(net.link_up(n(1), n(2)));
    }

    #[test]
    fn one_way_partition_blocks_one_direction_but_no_connection_survives() {
        let mut net = Network::new(NetParams::default());
        net.open(Endpoint::agent(n(1)), Endpoint::server(n(2)));
        let broken = net.partition(&[n(1)], &[n(2)], true);
        assert_eq!(broken.len(), 1, "TCP needs both directions");
        assert!(!net.reaches(n(1), n(2)));
        assert!(net.reaches(n(2), n(1)));
        assert!(!net.link_up(n(2), n(1)));
    }

    #[test]
    fn gateway_follows_the_links_unless_set_and_heal_clears_the_setting() {
        let mut net = Network::new(NetParams::default());
        let all = [n(1), n(2), n(3)];
        assert!(net.gateway_reachable(n(1), &all));
        net.partition(&[n(1)], &[n(2), n(3)], false);
        assert!(!net.gateway_reachable(n(1), &all));
        assert!(net.gateway_reachable(n(2), &all));
        net.set_gateway(n(1), true);
        net.set_gateway(n(2), false);
        assert!(net.gateway_reachable(n(1), &all));
        assert!(!net.gateway_reachable(n(2), &all));
        net.heal();
        assert!(net.gateway_reachable(n(1), &all));
        assert!(net.gateway_reachable(n(2), &all));
    }

    #[test]
    fn same_node_traffic_ignores_partitions() {
        let mut net = Network::new(NetParams::default());
        net.partition(&[n(1)], &[n(1), n(2)], false);
        assert!(net.link_up(n(1), n(1)));
    }

    #[test]
    fn frames_keep_fifo_order_without_reordering() {
        let mut net = Network::new(NetParams {
            latency_min_ms: 1.0,
            latency_max_ms: 50.0,
            ..NetParams::default()
        });
        let mut rng = Prng::new(5);
        let (a, b) = (Endpoint::agent(n(1)), Endpoint::server(n(2)));
        let mut last = Instant::ZERO;
        for i in 0..200 {
            let at = net.plan_frame(Instant::from_millis(i), a, b, &mut rng)[0];
            assert!(at >= last);
            last = at;
        }
    }

    #[test]
    fn loss_and_duplication_follow_their_probabilities() {
        let mut net = Network::new(NetParams {
            loss: 1.0,
            ..NetParams::default()
        });
        let mut rng = Prng::new(1);
        let (a, b) = (Endpoint::agent(n(1)), Endpoint::server(n(2)));
        assert!(net.plan_frame(Instant::ZERO, a, b, &mut rng).is_empty());
        net.params.loss = 0.0;
        net.params.duplication = 1.0;
        assert_eq!(net.plan_frame(Instant::ZERO, a, b, &mut rng).len(), 2);
        let local = Endpoint::server(n(1));
        assert_eq!(net.plan_frame(Instant::ZERO, a, local, &mut rng).len(), 1);
    }
}
