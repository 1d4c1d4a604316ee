//! What a cm_server knows of the custom resources (SPEC §14): each node's newest resource
//! report with its receipt time. The leader shows them (`Unknown` after
//! `instance_heartbeat_timeout` without a report), counts them in the cluster state, and relays
//! the other nodes' `with_primary_of` instances to each agent for the hand-over.
//!
//! Every cm_server records reports, leader or not (agents report to all), so a new leader
//! already knows when each node last reported to it. That is not when the node last reported
//! to *a* leader: a node cut from this server alone may have reported to the previous leader
//! until it lost its lease, and may still be stopping its copy. So a relayed age counts from no
//! earlier than the start of this server's leadership — a node not heard from since the
//! election is taken to have reported then, as §8's fencing floor counts members not heard from
//! since the election, and its older state is not relayed (an old `Stopped` is no proof: the
//! node may have started its copy under the previous leader since) — and a node never heard of
//! from no earlier than this server's start.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::config::{ClusterConfig, Placement};
use crate::ctl::{ClusterHealth, ClusterStatus, ResourceRow};
use crate::ids::{InstanceId, NodeId};
use crate::msg::PeerResource;
use crate::resource::{ResourceReport, ResourceState};
use crate::time::Instant;

/// Each node's newest resource report.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ResourceBook {
    started: Option<Instant>,
    /// When this server's current leadership began (`None` while it does not lead).
    led_since: Option<Instant>,
    reports: BTreeMap<NodeId, (Instant, Vec<ResourceReport>)>,
}

impl ResourceBook {
    /// Notes the server's first step (the floor of every unknown receipt).
    pub fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// This server began to lead at `now`.
    pub fn elected(&mut self, now: Instant) {
        self.led_since = Some(now);
    }

    /// This server stopped leading.
    pub fn deposed(&mut self) {
        self.led_since = None;
    }

    /// Records a node's report received at `now`.
    pub fn record(&mut self, now: Instant, node: NodeId, resources: &[ResourceReport]) {
        self.reports.insert(node, (now, resources.to_vec()));
    }

    fn newest(&self, node: NodeId, instance: InstanceId) -> (Option<ResourceState>, Instant) {
        match self.reports.get(&node) {
            Some((at, rs)) => (
                rs.iter().find(|r| r.instance == instance).map(|r| r.state),
                *at,
            ),
            None => (None, self.started.unwrap_or(Instant::ZERO)),
        }
    }

    /// For each `with_primary_of` resource with an instance on `node`: its instances on the
    /// other nodes, with their newest state and its age at `now`.
    pub fn relay(&self, config: &ClusterConfig, now: Instant, node: NodeId) -> Vec<PeerResource> {
        let mut out = Vec::new();
        for r in &config.resources {
            if !matches!(r.placement, Placement::WithPrimaryOf(_))
                || !r.instances.iter().any(|i| i.node == node)
            {
                continue;
            }
            for i in r.instances.iter().filter(|i| i.node != node) {
                let (state, at) = self.newest(i.node, i.id);
                // Received before this leadership: neither its time nor its state is the
                // node's newest (it may have reported Online to the previous leader since).
                let (state, at) = match self.led_since {
                    Some(since) if at < since => (None, since),
                    _ => (state, at),
                };
                out.push(PeerResource {
                    instance: i.id,
                    state,
                    age: now.saturating_since(at),
                });
            }
        }
        out
    }

    /// Every configured resource instance as the leader shows it: the newest reported state,
    /// `Unknown` when none is known or it is older than `timeout`.
    pub fn rows(
        &self,
        config: &ClusterConfig,
        now: Instant,
        timeout: Duration,
    ) -> Vec<ResourceRow> {
        let mut out = Vec::new();
        for r in &config.resources {
            for i in &r.instances {
                let state = match self.reports.get(&i.node) {
                    Some((at, rs)) if now.saturating_since(*at) < timeout => rs
                        .iter()
                        .find(|x| x.instance == i.id)
                        .map_or(ResourceState::Unknown, |x| x.state),
                    _ => ResourceState::Unknown,
                };
                out.push(ResourceRow {
                    node: i.node,
                    name: r.name.clone(),
                    instance: i.id,
                    state,
                });
            }
        }
        out
    }
}

/// Adds the resource table to a status and counts it (§14): a resource instance not Online —
/// other than one stopped by intent — makes a Normal cluster Degraded. Resources never make
/// it Unavailable: they never drive DN arbitration.
pub fn add_to_status(status: &mut ClusterStatus, rows: Vec<ResourceRow>) {
    if status.state == ClusterHealth::Normal && rows.iter().any(|r| r.state.degrades()) {
        status.state = ClusterHealth::Degraded;
    }
    status.resources = rows;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EXAMPLE_CONFIG;

    fn cfg() -> ClusterConfig {
        ClusterConfig::from_toml_str(&format!(
            "{EXAMPLE_CONFIG}\n[[resource]]\nname = \"vip\"\nscript = \"/v.sh\"\n\
             instances = [{{ node = 1, id = 9001 }}, {{ node = 2, id = 9002 }}, {{ node = 3, id = 9003 }}]\n\
             placement = {{ with_primary_of = 1 }}\n\
             [[resource]]\nname = \"app\"\nscript = \"/a.sh\"\ninstances = [{{ node = 1, id = 9101 }}]\n"
        ))
        .unwrap()
    }

    fn rep(instance: u32, state: ResourceState) -> ResourceReport {
        ResourceReport {
            instance: InstanceId(instance),
            state,
        }
    }

    #[test]
    fn the_leader_shows_unknown_after_the_heartbeat_timeout() {
        let c = cfg();
        let mut b = ResourceBook::default();
        b.start(Instant::from_millis(0));
        b.record(
            Instant::from_millis(1000),
            NodeId(1),
            &[
                rep(9001, ResourceState::Online),
                rep(9101, ResourceState::Abnormal),
            ],
        );
        let six = Duration::from_secs(6);
        let at = |ms| b.rows(&c, Instant::from_millis(ms), six);
        let rows = at(6999);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            (
                rows[0].node,
                rows[0].name.as_str(),
                rows[0].instance,
                rows[0].state
            ),
            (NodeId(1), "vip", InstanceId(9001), ResourceState::Online)
        );
        assert_eq!(
            rows[1].state,
            ResourceState::Unknown,
            "node 2 never reported"
        );
        assert_eq!(rows[3].state, ResourceState::Abnormal);
        // 6 s after the receipt at 1 s: Unknown.
        assert_eq!(at(7000)[0].state, ResourceState::Unknown);
    }

    #[test]
    fn the_relay_names_other_nodes_instances_with_their_age() {
        let c = cfg();
        let mut b = ResourceBook::default();
        b.start(Instant::from_millis(500));
        b.record(
            Instant::from_millis(2000),
            NodeId(1),
            &[rep(9001, ResourceState::Stopped)],
        );
        let relay = b.relay(&c, Instant::from_millis(3000), NodeId(2));
        assert_eq!(
            relay,
            vec![
                PeerResource {
                    instance: InstanceId(9001),
                    state: Some(ResourceState::Stopped),
                    age: Duration::from_millis(1000),
                },
                // Node 3 never reported to this server: its age counts from the server's start.
                PeerResource {
                    instance: InstanceId(9003),
                    state: None,
                    age: Duration::from_millis(2500),
                },
            ]
        );
        // The fixed resource is never relayed; a node without an instance gets nothing.
        assert!(relay.iter().all(|p| p.instance != InstanceId(9101)));
    }

    /// Review of issue 14: node 1 reported its vip Stopped to this server at 2 s, then only to
    /// the previous leader (cut from this one), under which it may have started it. Elected at
    /// 100 s, this server must not relay node 1's silence as 103 s old, nor its old `Stopped`
    /// as proof — node 1 may have reported Online to that leader until it lost its lease and
    /// still be stopping its copy: no state, and the age counts from the election (3 s at
    /// 103 s). A node heard since the election keeps its own report; once deposed, nothing is
    /// floored.
    #[test]
    fn a_relayed_age_counts_from_no_earlier_than_the_election() {
        let c = cfg();
        let mut b = ResourceBook::default();
        let ms = Instant::from_millis;
        b.start(ms(500));
        b.record(ms(2000), NodeId(1), &[rep(9001, ResourceState::Stopped)]);
        b.elected(ms(100_000));
        b.record(ms(101_000), NodeId(3), &[rep(9003, ResourceState::Stopped)]);
        let relayed: Vec<(Option<ResourceState>, Duration)> = b
            .relay(&c, ms(103_000), NodeId(2))
            .iter()
            .map(|p| (p.state, p.age))
            .collect();
        assert_eq!(
            relayed,
            vec![
                (None, Duration::from_millis(3000)),
                (Some(ResourceState::Stopped), Duration::from_millis(2000))
            ]
        );
        b.deposed();
        assert_eq!(
            b.relay(&c, ms(103_000), NodeId(2))[0].age,
            Duration::from_millis(101_000)
        );
    }

    #[test]
    fn a_resource_not_online_degrades_a_normal_cluster_but_stopped_does_not() {
        let row = |state| ResourceRow {
            node: NodeId(1),
            name: "app".into(),
            instance: InstanceId(9101),
            state,
        };
        let status = |state| ClusterStatus {
            cluster: "t".into(),
            quorum_term: Default::default(),
            cms: Vec::new(),
            state,
            balanced: true,
            paused: false,
            groups: Vec::new(),
            history: Vec::new(),
            resources: Vec::new(),
        };
        for (res, expect) in [
            (ResourceState::Online, ClusterHealth::Normal),
            (ResourceState::Stopped, ClusterHealth::Normal),
            (ResourceState::Offline, ClusterHealth::Degraded),
            (ResourceState::Unknown, ClusterHealth::Degraded),
            (ResourceState::Abnormal, ClusterHealth::Degraded),
        ] {
            let mut s = status(ClusterHealth::Normal);
            add_to_status(&mut s, vec![row(res)]);
            assert_eq!(s.state, expect, "{res}");
            assert_eq!(s.resources, vec![row(res)]);
        }
        let mut s = status(ClusterHealth::Unavailable);
        add_to_status(&mut s, vec![row(ResourceState::Online)]);
        assert_eq!(s.state, ClusterHealth::Unavailable);
    }
}
