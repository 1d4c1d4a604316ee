//! Availability during faults (issue 11), checked beside the invariants of SPEC §13: whenever
//! the side that holds a CMS majority also holds a Lock1 quorum of a group (members whose DN and
//! agent run, the agent reaching a cm_server of that side), and what that side looks like has
//! not changed for the bound B of [`availability_bound`], the group must have a
//! writable primary (a write acknowledged within the last second). Majorities count CMS
//! voters only (§5.1: a CMS that lost its store votes again only once re-added). Also: every
//! switchover the CMS accepted ends (done or aborted) within the bound of SPEC §4.5.
//!
//! A group is exempt (no clock runs for it) while the check could not be fair to it: before its
//! first acknowledged write (cold start, §4.2 `cluster_starting_arbit_delay`), while the cluster
//! is paused or stopping or one of its members is kept stopped (§2), while one of its DNs hangs
//! (T/D/Z: phony-dead detection, §6, has its own, longer timings), or while a member's data disk
//! is over the read-only clear level (§7.2: read-only is the intended outcome).

use std::collections::{BTreeMap, BTreeSet};

use core::time::Duration;

use cm_core::dn::ProcState;
use cm_core::msg::{Endpoint, Role};
use cm_core::params::{Params, SyncMode};
use cm_core::{GroupId, InstanceId, Instant, NodeId, QuorumTerm};

use crate::world::World;

/// How the faults in force look to a group, for choosing its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exposure {
    /// An agent is cut off from the CMS while standbys may still stream from its primary
    /// (an agent cut from every cm_server of the side, a stopped agent, or a side whose nodes
    /// are not all linked pairwise): the split-brain wait of §8 applies. (An agent cut from
    /// the leader alone is not: the leader must step down within the 10 s of §5.3.)
    pub agent_cut: bool,
    /// Two-node mode with the majority side being one CMS alone: it leads only after its
    /// peer's lease must have lapsed and the gateway answered (§5.4).
    pub two_node_alone: bool,
}

/// B: how long after the faults last changed a group on the CMS majority side that also holds
/// a Lock1 quorum must have a writable primary.
///
/// `instance_heartbeat_timeout` + 10 s (the minority demotion of §5.3) + 2 ×
/// `election_timeout_max` + the fencing floor (§8) + 2 s; with an agent cut off while standbys
/// stream, at least the split-brain timeout + 7 s (§8: Failover ≈ 67 s after the last report);
/// a lone two-node side adds (`cms_network_isolation_timeout` + 1 s probe) × (1 + ρ)/(1 − ρ) +
/// the lease (§5.4).
pub fn availability_bound(p: &Params, cms_count: usize, e: Exposure) -> Duration {
    let base = p.instance_heartbeat_timeout()
        + Duration::from_secs(10)
        + 2 * p.election_timeout_max()
        + p.fencing_floor()
        + Duration::from_secs(2);
    let mut b = base;
    if e.agent_cut {
        b = b.max(p.split_brain_timeout(cms_count) + Duration::from_secs(7));
    }
    if e.two_node_alone {
        let wait =
            (p.cms_network_isolation_timeout() + Duration::from_secs(1)).mul_f64(p.drift_up());
        b += wait + p.leader_lease();
    }
    b
}

/// How long an accepted switchover may stay pending: the §4.5 timeout as another node's clock
/// may see it, plus two elections and 5 s for the leader that ends it to commit the end.
pub fn switchover_bound(p: &Params) -> Duration {
    p.switchover_timeout().mul_f64(p.drift_up())
        + 2 * p.election_timeout_max()
        + Duration::from_secs(5)
}

/// Members (of `n`) a side must hold for a group to be writable after losing the rest: a
/// Lock1 quorum q = ⌈n/2⌉ (§4.2) and, in synchronous mode, a primary with its n − q
/// synchronous standbys.
pub fn members_needed(n: usize, sync: SyncMode) -> usize {
    let q = n.div_ceil(2).max(1);
    match sync {
        SyncMode::Quorum if n > 1 => q.max(n - q + 1),
        _ => q,
    }
}

/// What must stay the same for a group's clock to keep running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// The nodes of the CMS majority side.
    pub side: Vec<NodeId>,
    /// The live cm_servers on it.
    pub cms: Vec<NodeId>,
    /// The group's healthy members on it.
    pub healthy: Vec<InstanceId>,
    /// How the faults look.
    pub exposure: Exposure,
}

/// The clocks of the availability and switchover checks.
#[derive(Debug, Default)]
pub struct Availability {
    next_check: Option<Instant>,
    stable: BTreeMap<GroupId, (Picture, Instant)>,
    switchover_since: BTreeMap<GroupId, Instant>,
    /// CMS nodes whose store was lost (`WipeStore`), with the highest quorum term seen then:
    /// the simulated operator re-adds one only from a leader of a higher term (§5.1).
    pub(crate) wiped_cms: BTreeMap<NodeId, QuorumTerm>,
}

/// How often the (costly) picture is taken, simulated time.
const CHECK_EVERY: Duration = Duration::from_millis(100);

impl Availability {
    /// One group's picture now (None: exempt or no side holds what it needs); returns the
    /// message of a miss when the picture has been stable for its bound and the group has had
    /// no acknowledged write in the last second.
    pub fn observe(
        &mut self,
        at: Instant,
        group: GroupId,
        picture: Option<Picture>,
        bound: &dyn Fn(Exposure) -> Duration,
        last_ack: Option<Instant>,
    ) -> Option<(String, String)> {
        let Some(pic) = picture else {
            self.stable.remove(&group);
            return None;
        };
        let since = match self.stable.get(&group) {
            Some((p, s)) if *p == pic => *s,
            _ => {
                self.stable.insert(group, (pic.clone(), at));
                at
            }
        };
        let b = bound(pic.exposure);
        let writable = last_ack.is_some_and(|t| at - t <= Duration::from_secs(1));
        if at - since < b || writable {
            return None;
        }
        let key = format!("{group}@{}", since.as_nanos());
        let m = format!(
            "A: {group} has no writable primary {:.1} s after the faults last changed \
             (bound {:.1} s): the CMS majority side {:?} (cm_servers {:?}) holds its members \
             {:?}{}{}",
            (at - since).as_secs_f64(),
            b.as_secs_f64(),
            pic.side.iter().map(|n| n.0).collect::<Vec<_>>(),
            pic.cms.iter().map(|n| n.0).collect::<Vec<_>>(),
            pic.healthy.iter().map(|i| i.0).collect::<Vec<_>>(),
            if pic.exposure.agent_cut {
                ", an agent cut off"
            } else {
                ""
            },
            if pic.exposure.two_node_alone {
                ", one CMS of two alone"
            } else {
                ""
            },
        );
        Some((key, m))
    }

    /// A fault or operator action touched `group` (see [`FaultAction::touches`]): its faults
    /// changed, so its clock restarts at its next picture even when that picture looks the
    /// same (a broken stream, a healed process cut, a killed and restarted DN).
    ///
    /// [`FaultAction::touches`]: crate::scenario::FaultAction::touches
    pub fn faults_changed(&mut self, group: GroupId) {
        self.stable.remove(&group);
    }

    /// A group's switchover is pending now (or not); returns the message of a miss once it has
    /// been pending for longer than `bound`.
    pub fn observe_switchover(
        &mut self,
        at: Instant,
        group: GroupId,
        pending: bool,
        bound: Duration,
    ) -> Option<(String, String)> {
        if !pending {
            self.switchover_since.remove(&group);
            return None;
        }
        let since = *self.switchover_since.entry(group).or_insert(at);
        (at - since > bound).then(|| {
            let key = format!("{group}@{}", since.as_nanos());
            let m = format!(
                "SW: {group}'s switchover accepted by {:.1} s is still pending {:.1} s later \
                 (bound {:.1} s, SPEC §4.5)",
                since.as_secs_f64(),
                (at - since).as_secs_f64(),
                bound.as_secs_f64()
            );
            (key, m)
        })
    }
}

impl World {
    /// Runs the availability and switchover checks (every 100 ms of simulated time).
    pub(crate) fn check_availability(&mut self) {
        let now = self.now();
        if self.avail.next_check.is_some_and(|t| now < t) {
            return;
        }
        self.avail.next_check = Some(now + CHECK_EVERY);
        let p = &self.scenario.config.params;
        let cms_count = self.scenario.config.cms_nodes().len();
        let views = self.server_views();
        let holders: Vec<_> = views.iter().filter(|s| s.holds_lease()).collect();
        let paused = views.iter().any(|s| s.obs.paused || s.obs.stopping);
        let sw_bound = switchover_bound(p);
        let groups: Vec<GroupId> = self.scenario.config.groups.iter().map(|g| g.id).collect();
        let mut found = Vec::new();
        for g in groups {
            let pending = holders.iter().any(|s| s.obs.switchovers.contains(&g));
            if let Some(v) = self.avail.observe_switchover(now, g, pending, sw_bound) {
                found.push(("SW", v));
            }
            let picture = if paused { None } else { self.picture(g) };
            let last_ack = self.checker.last_ack.get(&g).copied();
            let bound = |e: Exposure| availability_bound(p, cms_count, e);
            if let Some(v) = self.avail.observe(now, g, picture, &bound, last_ack) {
                found.push(("A", v));
            }
        }
        for (rule, (key, m)) in found {
            self.checker.violate_keyed(now, rule, key, m);
        }
    }

    /// Whether a node's host runs, unfrozen, with a disk that answers.
    fn node_sound(&self, n: NodeId, now: Instant) -> bool {
        self.hosts.get(&n).is_some_and(|h| {
            h.up && !h.frozen && !h.disk.hung(now) && !h.disk.write_error && !h.disk.read_error
        })
    }

    fn proc_runs(&self, n: NodeId, role: Role) -> bool {
        self.hosts
            .get(&n)
            .and_then(|h| h.procs.get(&role))
            .is_some_and(|p| !p.stopped)
    }

    /// The group's picture, or None when it is exempt or no CMS majority side holds enough of
    /// its members.
    fn picture(&self, g: GroupId) -> Option<Picture> {
        let now = self.now();
        let cfg = &self.scenario.config;
        let p = &cfg.params;
        let group = cfg.group(g)?;
        self.checker.last_ack.get(&g)?;
        let clear = p.read_only_clear_pct() as f64;
        for m in &group.members {
            let db = self.dbs.get(m.instance)?;
            let host = self.hosts.get(&m.node)?;
            if db.running && db.proc_state != ProcState::Running
                || host.flags.keeps_stopped(m.instance).is_some()
                || host.disk.usage_pct(now) >= clear
            {
                return None;
            }
        }
        let cms_all = cfg.cms_nodes();
        let sound: Vec<NodeId> = self
            .hosts
            .keys()
            .copied()
            .filter(|n| self.node_sound(*n, now))
            .collect();
        // Only a cm_server that may vote counts toward a side's majority (SPEC §5.1): one that
        // started with an empty store neither votes nor campaigns until every other CMS node
        // has answered that it never counted it (swarm seed 1646: cm_server 5, its host
        // restarted, could not reach cm_server 3 across a one-way cut and stayed undecided;
        // with the leader's node isolated, the side [1, 2, 5] had two voters of five).
        let voters: BTreeSet<NodeId> = self
            .server_views()
            .iter()
            .filter(|s| s.obs.voter)
            .map(|s| s.node)
            .collect();
        let live_cms: BTreeSet<NodeId> = cms_all
            .iter()
            .copied()
            .filter(|n| sound.contains(n) && self.proc_runs(*n, Role::Server) && voters.contains(n))
            .collect();
        let two_node = cms_all.len() == 2;
        // Two-node mode: a CMS whose disk hangs still talks to its peer, which so never loses
        // it and may not lead alone (§5.4: the gateway rule is for a peer lost for
        // `cms_network_isolation_timeout`), while it cannot persist a vote or an entry itself:
        // no side is a quorum until the disk answers (swarm seed 495: W2, the leader, hung for
        // 60 s). Nothing SPEC promises applies then.
        if two_node
            && cms_all.iter().any(|n| {
                self.hosts
                    .get(n)
                    .is_some_and(|h| h.up && !h.frozen && h.disk.hung(now))
            })
        {
            return None;
        }
        // §5.1: majorities count voters only — the configured CMS minus the committed
        // non-voters — and a CMS that lost its store (or has not yet decided whether it did)
        // does not vote. Servers may know different committed sets: a side is a majority only
        // under each of them.
        let views = self.server_views();
        let not_voting: BTreeSet<NodeId> = views
            .iter()
            .filter(|v| v.obs.not_voting)
            .map(|v| v.node)
            .collect();
        let mut non_voter_sets: BTreeSet<&BTreeSet<NodeId>> =
            views.iter().map(|v| &v.obs.non_voters).collect();
        let none = BTreeSet::new();
        non_voter_sets.insert(&none);
        let is_majority = |set: &[NodeId]| {
            non_voter_sets.iter().all(|nv| {
                let voters = cms_all.iter().filter(|n| !nv.contains(n)).count();
                let got = set
                    .iter()
                    .filter(|n| !nv.contains(n) && !not_voting.contains(n))
                    .count();
                2 * got > voters
            })
        };
        let gateway_rule = two_node && p.cms_enable_failover_on2nodes;
        let all_nodes: Vec<NodeId> = self.hosts.keys().copied().collect();
        let mut best: Option<Picture> = None;
        for side in components(&sound, |a, b| self.net.link_up(a, b)) {
            let cms: Vec<NodeId> = side
                .iter()
                .copied()
                .filter(|n| live_cms.contains(n))
                .collect();
            let mut alone = false;
            let majority = if two_node {
                let both = cms.len() == 2;
                let w2 = cms.first() == cms_all.first() && !cms.is_empty();
                let gw = cms.len() == 1 && self.net.gateway_reachable(cms[0], &all_nodes);
                alone = !both;
                both || if gateway_rule { gw } else { w2 }
            } else {
                is_majority(&cms)
            };
            if !majority {
                continue;
            }
            let healthy: Vec<InstanceId> = group
                .members
                .iter()
                .filter(|m| {
                    side.contains(&m.node)
                        && self.proc_runs(m.node, Role::Agent)
                        && cms.iter().any(|c| {
                            self.net
                                .endpoints_up(Endpoint::agent(m.node), Endpoint::server(*c))
                        })
                        && self.dbs.get(m.instance).is_some_and(|d| {
                            // A DN whose recovery stalls "starting up" refuses every
                            // connection: it can be neither locked (§4.2 wants a `Prohibit`
                            // report) nor a synchronous standby, so it is no member of a
                            // Lock1 quorum until a Build cures it.
                            d.running && d.proc_state == ProcState::Running && !d.recovery_stalls
                        })
                })
                .map(|m| m.instance)
                .collect();
            if healthy.len() < members_needed(group.members.len(), p.dn_sync_mode) {
                continue;
            }
            // §4.1: a Failover is executed only once its member's agent has confirmed the
            // quorum term with a quorum of CMS voters, so the candidate — a member with the
            // greatest position (§4.2) — must reach one (not a fault of the core: the rule
            // that keeps a deposed leader's Failover from promoting): with three CMS a majority, with two
            // W2 (or the lone side's CMS). Reaching one cm_server is enough to be locked, not
            // to be promoted (swarm seed 439: the leader's peer cut from the agents, the
            // candidate's agent reaching one CMS of three).
            let reaches_quorum = |m: InstanceId| {
                let Some(node) = group
                    .members
                    .iter()
                    .find(|x| x.instance == m)
                    .map(|x| x.node)
                else {
                    return false;
                };
                let reached: Vec<NodeId> = cms
                    .iter()
                    .copied()
                    .filter(|c| {
                        self.net
                            .endpoints_up(Endpoint::agent(node), Endpoint::server(*c))
                    })
                    .collect();
                if two_node {
                    if cms.len() == 2 {
                        cms_all.first().is_some_and(|w2| reached.contains(w2))
                    } else {
                        reached.len() == cms.len()
                    }
                } else {
                    is_majority(&reached)
                }
            };
            let position = |i: &InstanceId| self.dbs.get(*i).map(|d| d.position());
            let top = healthy.iter().filter_map(position).max();
            // Among members tied at the top the leader picks by preference (§4.2), which
            // this check does not model: each of them must be able to confirm.
            let candidate_confirms = healthy
                .iter()
                .filter(|i| position(i) == top)
                .all(|i| reaches_quorum(*i));
            if !candidate_confirms {
                continue;
            }
            let clique = side
                .iter()
                .all(|a| side.iter().all(|b| self.net.link_up(*a, *b)));
            let cut = group.members.iter().any(|m| {
                self.hosts
                    .get(&m.node)
                    .and_then(|h| h.procs.get(&Role::Agent))
                    .is_some_and(|a| a.stopped)
                    || !cms.is_empty()
                        && cms.iter().all(|c| {
                            self.net
                                .endpoints_cut(Endpoint::agent(m.node), Endpoint::server(*c))
                        })
            });
            let one_way = group.members.iter().any(|m| {
                !side.contains(&m.node)
                    && sound.contains(&m.node)
                    && side
                        .iter()
                        .any(|n| self.net.reaches(m.node, *n) || self.net.reaches(*n, m.node))
            });
            best = Some(Picture {
                side,
                cms,
                healthy,
                exposure: Exposure {
                    agent_cut: !clique || cut || one_way,
                    two_node_alone: gateway_rule && alone,
                },
            });
            break;
        }
        best
    }
}

/// The connected components of `nodes` under `linked` (in node order).
fn components(nodes: &[NodeId], linked: impl Fn(NodeId, NodeId) -> bool) -> Vec<Vec<NodeId>> {
    let mut left: Vec<NodeId> = nodes.to_vec();
    let mut out = Vec::new();
    while let Some(first) = left.first().copied() {
        let mut comp = vec![first];
        left.remove(0);
        let mut i = 0;
        while i < comp.len() {
            let a = comp[i];
            let (joined, rest): (Vec<NodeId>, Vec<NodeId>) =
                left.into_iter().partition(|b| linked(a, *b));
            comp.extend(joined);
            left = rest;
            i += 1;
        }
        comp.sort();
        out.push(comp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_core::params::Profile;

    fn secs(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).round() / 1000.0
    }

    #[test]
    fn the_bound_follows_the_parameters() {
        let d = Params::defaults();
        let mut drift = Params::defaults();
        drift.max_clock_drift = 0.05;
        let fast = Params::for_profile(Profile::Fast);
        let plain = Exposure {
            agent_cut: false,
            two_node_alone: false,
        };
        let cut = Exposure {
            agent_cut: true,
            two_node_alone: false,
        };
        let alone = Exposure {
            agent_cut: false,
            two_node_alone: true,
        };
        // (params, CMS count, exposure, B in seconds)
        let table: [(&Params, usize, Exposure, f64); 6] = [
            // 6 + 10 + 3.2 + (6 × 1.01/0.99 + 1 + 0.5) + 2
            (&d, 3, plain, 28.821),
            // ρ = 5 %: the fencing floor is 6 × 1.05/0.95 + 1 + 0.5
            (
                &drift,
                3,
                plain,
                6.0 + 10.0 + 3.2 + 6.0 * 1.05 / 0.95 + 1.5 + 2.0,
            ),
            // split-brain timeout 3 × 15 + 8 + 10 = 63, + 7
            (&d, 3, cut, 70.0),
            // 5 CMS: 5 × 15 + 18 + 7
            (&d, 5, cut, 100.0),
            // fast: 1.5 + 10 + 1.0 + (1.6 × 1.01/0.99 + 0.25 + 0.3) + 2
            (
                &fast,
                3,
                plain,
                1.5 + 10.0 + 1.0 + 1.6 * 1.01 / 0.99 + 0.55 + 2.0,
            ),
            // two-node, alone: + 21 × 1.01/0.99 + 0.8 × 0.99/1.01
            (
                &d,
                2,
                alone,
                28.821 + 21.0 * 1.01 / 0.99 + 0.8 * 0.99 / 1.01,
            ),
        ];
        for (i, (p, cms, e, want)) in table.iter().enumerate() {
            let got = secs(availability_bound(p, *cms, *e));
            assert!((got - want).abs() < 0.002, "row {i}: {got} != {want}");
        }
    }

    #[test]
    fn members_needed_is_the_lock1_quorum_and_the_sync_set() {
        let table = [
            (2, SyncMode::Quorum, 2),
            (3, SyncMode::Quorum, 2),
            (4, SyncMode::Quorum, 3),
            (5, SyncMode::Quorum, 3),
            (2, SyncMode::Off, 1),
            (3, SyncMode::Off, 2),
            (5, SyncMode::Off, 3),
        ];
        for (n, mode, want) in table {
            assert_eq!(members_needed(n, mode), want, "n = {n}, {mode:?}");
        }
    }

    fn pic(healthy: &[u32]) -> Picture {
        Picture {
            side: vec![NodeId(1), NodeId(2)],
            cms: vec![NodeId(1), NodeId(2)],
            healthy: healthy.iter().map(|i| InstanceId(*i)).collect(),
            exposure: Exposure {
                agent_cut: false,
                two_node_alone: false,
            },
        }
    }

    #[test]
    fn a_stable_picture_without_writes_for_the_bound_is_a_miss() {
        let mut a = Availability::default();
        let g = GroupId(1);
        let b = |_: Exposure| Duration::from_secs(20);
        let t = |s: u64| Instant::from_secs(s);
        let ack = Some(t(9));
        assert!(a.observe(t(10), g, Some(pic(&[1, 2])), &b, ack).is_none());
        assert!(a.observe(t(29), g, Some(pic(&[1, 2])), &b, ack).is_none());
        let miss = a.observe(t(30), g, Some(pic(&[1, 2])), &b, ack);
        assert!(miss.is_some_and(|(_, m)| m.contains("20.0 s after")));
        // A write acknowledged within the last second: no miss.
        assert!(
            a.observe(t(31), g, Some(pic(&[1, 2])), &b, Some(t(31)))
                .is_none()
        );
    }

    #[test]
    fn a_changed_or_exempt_picture_restarts_the_clock() {
        let mut a = Availability::default();
        let g = GroupId(1);
        let b = |_: Exposure| Duration::from_secs(20);
        let t = |s: u64| Instant::from_secs(s);
        assert!(a.observe(t(0), g, Some(pic(&[1, 2])), &b, None).is_none());
        assert!(a.observe(t(15), g, Some(pic(&[1, 3])), &b, None).is_none());
        assert!(a.observe(t(30), g, Some(pic(&[1, 3])), &b, None).is_none());
        assert!(a.observe(t(31), g, None, &b, None).is_none());
        assert!(a.observe(t(40), g, Some(pic(&[1, 3])), &b, None).is_none());
        assert!(a.observe(t(60), g, Some(pic(&[1, 3])), &b, None).is_some());
    }

    /// Swarm seeds 424 and 255: a 1P1S group's only standby had its stream broken (sync mode:
    /// writes wait for it) and the check reported a miss 1 s later, counting from a picture
    /// taken 80 s before — the side and its healthy members did not change. A fault touching
    /// the group restarts its clock.
    #[test]
    fn a_fault_touching_the_group_restarts_the_clock() {
        let mut a = Availability::default();
        let g = GroupId(1);
        let b = |_: Exposure| Duration::from_secs(20);
        let t = |s: u64| Instant::from_secs(s);
        assert!(
            a.observe(t(10), g, Some(pic(&[1, 2])), &b, Some(t(10)))
                .is_none()
        );
        assert!(
            a.observe(t(90), g, Some(pic(&[1, 2])), &b, Some(t(90)))
                .is_none()
        );
        a.faults_changed(GroupId(2));
        a.faults_changed(g);
        assert!(
            a.observe(t(91), g, Some(pic(&[1, 2])), &b, Some(t(90)))
                .is_none()
        );
        assert!(
            a.observe(t(110), g, Some(pic(&[1, 2])), &b, Some(t(90)))
                .is_none()
        );
        let miss = a.observe(t(111), g, Some(pic(&[1, 2])), &b, Some(t(90)));
        assert!(miss.is_some_and(|(_, m)| m.contains("20.0 s after")));
    }

    #[test]
    fn a_switchover_pending_past_its_bound_is_a_miss() {
        let mut a = Availability::default();
        let g = GroupId(1);
        let b = Duration::from_secs(130);
        let t = |s: u64| Instant::from_secs(s);
        assert!(a.observe_switchover(t(10), g, true, b).is_none());
        assert!(a.observe_switchover(t(140), g, true, b).is_none());
        assert!(a.observe_switchover(t(141), g, true, b).is_some());
        assert!(a.observe_switchover(t(142), g, false, b).is_none());
        assert!(a.observe_switchover(t(200), g, true, b).is_none());
    }

    #[test]
    fn components_follow_the_links() {
        let n = |i: u32| NodeId(i);
        let nodes = [n(1), n(2), n(3), n(4)];
        // 1–2 and 2–3 linked, 4 alone: {1, 2, 3} is one side although 1 and 3 are cut.
        let linked = |a: NodeId, b: NodeId| {
            let (x, y) = (a.0.min(b.0), a.0.max(b.0));
            matches!((x, y), (1, 2) | (2, 3))
        };
        assert_eq!(
            components(&nodes, linked),
            vec![vec![n(1), n(2), n(3)], vec![n(4)]]
        );
    }
}
