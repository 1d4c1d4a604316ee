//! SPEC §14 in the simulator: custom resources driven by the real agent and cm_server machines
//! through simulated scripts, with the timings of §14 asserted in virtual time.

use core::time::Duration;

use cm_core::dn::DnRole;
use cm_core::flags::Flag;
use cm_core::{InstanceId, Instant, NodeId};
use cm_sim::daemon::Machines;
use cm_sim::resources::ResourceModel;
use cm_sim::scenario::Scenario;
use cm_sim::world::World;

/// `primary-process-killed`'s 3-node 1P2S cluster without its faults, with `resources`
/// appended to the cluster and `faults` as the scenario's faults.
fn scenario(resources: &str, faults: &str) -> Scenario {
    let path = format!(
        "{}/scenarios/primary-process-killed.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("shipped scenario");
    let cluster = &text[text.find("[cluster]").expect("a [cluster] table")..];
    let head = "name = \"resources\"\nduration_s = 120\nliveness = false\naffected_group = 1\n";
    let text = format!("{head}{faults}\n{cluster}\n{resources}\n");
    Scenario::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn secs(s: f64) -> Instant {
    Instant::ZERO + Duration::from_secs_f64(s)
}

const APP: InstanceId = InstanceId(9002);

fn app(extra: &str) -> String {
    format!(
        "[[cluster.resource]]\nname = \"app\"\nscript = \"/opt/app.sh\"\n\
         instances = [{{ node = 2, id = 9002 }}]\n{extra}\n"
    )
}

/// Runs until `until`, returning the first instant after `from` at which `cond` held.
fn first_after(
    w: &mut World,
    from: Instant,
    until: Instant,
    cond: &dyn Fn(&World) -> bool,
) -> Option<Instant> {
    let mut seen = None;
    w.run_until(until, &mut |w| {
        if w.now() >= from && cond(w) {
            seen = Some(w.now());
            return true;
        }
        false
    });
    seen
}

/// §14: a killed resource is restarted within restart_delay + check_interval + script time
/// (1 s + 1 s + two script runs of at most 80 ms, on an agent clock up to ρ = 1 % fast or slow),
/// and not before restart_delay.
#[test]
fn a_killed_resource_is_restarted_within_delay_plus_interval_plus_script_time() {
    for seed in 1..=8 {
        let s = scenario(
            &app(""),
            "[[fault]]\nat_s = 30\naction = \"kill_resource\"\ninstance = 9002\n",
        );
        let mut w = World::new(s, seed, Box::new(Machines));
        let up = first_after(&mut w, secs(0.0), secs(29.0), &|w| {
            w.resource_running(NodeId(2), APP)
        });
        assert!(
            up.is_some(),
            "seed {seed}: the resource was started at boot"
        );
        w.run_until(secs(30.0), &mut |_| false);
        assert!(
            !w.resource_running(NodeId(2), APP),
            "seed {seed}: killed at 30 s"
        );
        let back = first_after(&mut w, secs(30.0), secs(40.0), &|w| {
            w.resource_running(NodeId(2), APP)
        })
        .unwrap_or_else(|| panic!("seed {seed}: not restarted\n{}", w.timeline.join("\n")));
        let took = back.saturating_since(secs(30.0));
        assert!(
            took <= Duration::from_millis(2_200) && took >= Duration::from_millis(990),
            "seed {seed}: restarted {took:?} after the kill"
        );
    }
}

/// §14: a resource whose start keeps failing is restarted restart_times times, then stopped
/// manually: `instance_manual_start_9002` appears and nothing starts it afterwards.
#[test]
fn a_spent_restart_budget_writes_the_manual_stop() {
    let s = scenario(
        &app("restart_times = 3"),
        "[[fault]]\nat_s = 30\naction = \"kill_resource\"\ninstance = 9002\n",
    );
    let mut w = World::new(s, 7, Box::new(Machines));
    w.run_until(secs(29.0), &mut |_| false);
    assert!(w.resource_running(NodeId(2), APP));
    // From now on the script's -start fails.
    w.resource_models.insert(APP, ResourceModel::FailStart);
    let flagged = |w: &World| {
        w.hosts[&NodeId(2)]
            .flags
            .instance_manual_start
            .contains_key(&APP)
    };
    let at = first_after(&mut w, secs(29.0), secs(60.0), &flagged)
        .unwrap_or_else(|| panic!("no manual stop\n{}", w.timeline.join("\n")));
    let starts = w
        .timeline
        .iter()
        .filter(|l| l.contains("resource 9002 -start"))
        .count();
    // One start at boot, then exactly the three restarts of the budget.
    assert_eq!(starts, 4, "{}", w.timeline.join("\n"));
    // Restarts 1 s apart (restart_delay, restart_period), the flag after the third.
    assert!(at >= secs(33.0) && at <= secs(36.0), "flag at {at}");
    w.resource_models.insert(APP, ResourceModel::Ok);
    w.run_until(secs(90.0), &mut |_| false);
    assert!(!w.resource_running(NodeId(2), APP));
    let later = w
        .timeline
        .iter()
        .filter(|l| l.contains("resource 9002 -start"))
        .count();
    assert_eq!(later, 4, "started again while its flag exists");
    let _ = Flag::InstanceManualStart(APP);
}

const VIP: &str = "[[cluster.resource]]\nname = \"vip\"\nscript = \"/opt/vip.sh\"\n\
    instances = [{ node = 1, id = 9001 }, { node = 2, id = 9002 }, { node = 3, id = 9003 }]\n\
    placement = { with_primary_of = 1 }\ntime_out = 1\n";

fn vip_nodes(w: &World) -> Vec<NodeId> {
    [(1, 9001), (2, 9002), (3, 9003)]
        .into_iter()
        .filter(|(n, i)| w.resource_running(NodeId(*n), InstanceId(*i)))
        .map(|(n, _)| NodeId(n))
        .collect()
}

/// S7 as the simulator sees it: a with_primary_of resource runs on at most one node, and only
/// on one whose DN is a running primary.
fn s7(w: &World) -> Result<(), String> {
    let nodes = vip_nodes(w);
    if nodes.len() > 1 {
        return Err(format!("vip runs on {nodes:?}"));
    }
    for n in nodes {
        let dn = w
            .dbs
            .instances
            .values()
            .find(|i| i.node == n && i.group.0 == 1);
        if !dn.is_some_and(|d| d.running && d.role == DnRole::Primary) {
            return Err(format!("vip runs on {n} whose DN is not a running primary"));
        }
    }
    Ok(())
}

/// §14: the resource follows the primary across a failover: it runs on the new primary's node
/// at most 2 s after that node's DN reported Primary (≤ 3 s after its promotion, reports
/// being 1 s apart), and S7 holds at every event.
///
/// The crashed node cannot report its instance stopped, so the new node waits the hand-over
/// time from that node's last report: fencing floor (≈ 7.62 s) + 2 × `time_out` × (1+ρ)/(1−ρ).
/// The failover itself comes ≈ 8–9 s after that report, so with a `time_out` of 1 s (hand-over
/// ≈ 9.7 s) the promotion is the later of the two instants the 2 s count from; with the
/// default 10 s the hand-over is (see the next test).
#[test]
fn with_primary_of_follows_the_primary_across_a_failover() {
    for seed in 1..=5 {
        let s = scenario(
            VIP,
            "[[fault]]\nat_s = 40\naction = \"crash_host\"\nnode = 1\n",
        );
        let mut w = World::new(s, seed, Box::new(Machines));
        let mut violation = None;
        w.run_until(secs(39.0), &mut |w| {
            violation = s7(w).err().map(|e| format!("{} {e}", w.now()));
            violation.is_some()
        });
        assert_eq!(violation, None, "seed {seed}");
        assert_eq!(
            vip_nodes(&w),
            vec![NodeId(1)],
            "seed {seed}: on the first primary"
        );
        // After the crash: find when a new DN is primary, and when the vip runs on its node.
        let mut promoted: Option<(Instant, NodeId)> = None;
        let mut followed = None;
        w.run_until(secs(100.0), &mut |w| {
            if let Err(e) = s7(w) {
                violation = Some(format!("{} {e}", w.now()));
                return true;
            }
            if promoted.is_none() {
                promoted = w
                    .dbs
                    .instances
                    .values()
                    .find(|i| i.node != NodeId(1) && i.running && i.role == DnRole::Primary)
                    .map(|i| (w.now(), i.node));
            }
            if let Some((_, n)) = promoted
                && vip_nodes(w) == vec![n]
            {
                followed = Some(w.now());
                return true;
            }
            false
        });
        assert_eq!(violation, None, "seed {seed}\n{}", w.timeline.join("\n"));
        let (at, node) = promoted.unwrap_or_else(|| panic!("seed {seed}: no failover"));
        let followed = followed.unwrap_or_else(|| {
            panic!(
                "seed {seed}: vip never on {node}\n{}",
                w.timeline.join("\n")
            )
        });
        let lag = followed.saturating_since(at);
        // Measured from the promotion itself: the DN *reports* Primary up to one report
        // interval (1 s) later, and §14's 2 s count from that report.
        assert!(
            lag <= Duration::from_secs(3),
            "seed {seed}: vip on {node} {lag:?} after promotion"
        );
    }
}

/// The vip with §14's defaults (`time_out` 10 s).
const VIP_DEFAULT: &str = "[[cluster.resource]]\nname = \"vip\"\nscript = \"/opt/vip.sh\"\n\
    instances = [{ node = 1, id = 9001 }, { node = 2, id = 9002 }, { node = 3, id = 9003 }]\n\
    placement = { with_primary_of = 1 }\n";

fn vip_of(node: NodeId) -> InstanceId {
    InstanceId(9000 + node.0)
}

fn dn_of(node: NodeId) -> InstanceId {
    InstanceId(6000 + node.0)
}

/// What a run after a fault saw of the vip's move to another node.
#[derive(Debug, Default)]
struct Move {
    /// The new primary's node and the instant its DN ran as primary.
    promoted: Option<(NodeId, Instant)>,
    /// The first instant that node's agent read its DN as Primary (its next report says so).
    role_seen: Option<Instant>,
    /// The first instant that node's agent held the write lease (its report of Primary was
    /// answered).
    leased: Option<Instant>,
    /// Per node other than the old one: the first instant its agent found §14's hand-over
    /// rule satisfied.
    clear: std::collections::BTreeMap<NodeId, Instant>,
    /// The first instant the vip ran there (and nowhere else).
    followed: Option<Instant>,
    /// A break of the test's S7 (with the instant).
    violation: Option<String>,
    /// The first instant after `from` at which a cm_server other than the lease holder at
    /// `from` (or a newer term) held the leader lease: a new leader relays a silent node's age
    /// from no earlier than its election.
    elected: Option<Instant>,
}

/// When the new primary's node reported its DN Primary: the first delivery of its agent's
/// report to a cm_server after the agent read the role (agents report to every CMS at once:
/// the leader's receipt is within the network's latency spread, ≤ 2 ms).
fn reported_primary(w: &World, m: &Move) -> Instant {
    let (node, _) = m.promoted.expect("a promotion");
    let seen = m.role_seen.expect("the agent read its DN as primary");
    *w.checker.reports[&node]
        .iter()
        .find(|t| **t >= seen)
        .expect("a report after the role was read")
}

/// Runs `w` from `from` until `until` or the vip runs on the new primary's node alone,
/// watching at every event that the vip never runs on two nodes — and with `strict`, the
/// test's S7 (only where a DN runs as primary: not across a demotion, which stops the vip a
/// script run later; the simulator's own S7 judges that with §14's grace).
fn watch_move(w: &mut World, from: Instant, until: Instant, old: NodeId, strict: bool) -> Move {
    let mut m = Move::default();
    let mut holder: Option<(NodeId, cm_core::QuorumTerm)> = None;
    w.run_until(until, &mut |w| {
        let nodes = vip_nodes(w);
        let broken = if strict {
            s7(w).err()
        } else {
            (nodes.len() > 1).then(|| format!("vip runs on {nodes:?}"))
        };
        if let Some(e) = broken {
            m.violation = Some(format!("{} {e}", w.now()));
            return true;
        }
        let leasing = w
            .server_views()
            .iter()
            .find(|v| v.holds_lease())
            .map(|v| (v.node, v.obs.quorum_term));
        if w.now() < from {
            holder = leasing.or(holder);
            return false;
        }
        if m.elected.is_none() && leasing.is_some() && leasing != holder {
            m.elected = Some(w.now());
        }
        for n in [1, 2, 3].map(NodeId) {
            if n != old && w.resource_handover_clear(n, vip_of(n)) == Some(true) {
                m.clear.entry(n).or_insert_with(|| w.now());
            }
        }
        if m.promoted.is_none() {
            m.promoted = w
                .dbs
                .instances
                .values()
                .find(|i| i.node != old && i.running && i.role == DnRole::Primary)
                .map(|i| (i.node, w.now()));
        }
        let Some((n, _)) = m.promoted else {
            return false;
        };
        let role = w.agent_health(n).and_then(|h| {
            h.instances
                .iter()
                .find(|i| i.instance == dn_of(n))
                .and_then(|i| i.role)
        });
        if m.role_seen.is_none() && role == Some(DnRole::Primary) {
            m.role_seen = Some(w.now());
        }
        if m.leased.is_none() && w.write_leased(n).contains(&dn_of(n)) {
            m.leased = Some(w.now());
        }
        if nodes == vec![n] {
            m.followed = Some(w.now());
            return true;
        }
        false
    });
    m
}

/// §14 with its default `time_out` (10 s) across a node crash: the crashed primary's node
/// cannot report its vip stopped, so the new primary's node waits the hand-over time —
/// fencing floor + 2 × 10 s × (1+ρ)/(1−ρ) ≈ 28.03 s — from that node's last report, long after
/// the promotion (≈ 8–9 s after it). The 2 s of §14 count from the later of the two instants
/// (our reading, `cm-core/src/agent/resource.rs`): here the hand-over. Asserted exactly in
/// virtual time: never before the leader's receipt of node 1's last report + the wait (S7's
/// "never on two nodes" — the checker of the simulator also runs), at most 2 s after it. Node
/// clocks do not drift in this test so that the agent's wait is the same length in virtual
/// time; drift is exercised by the swarm.
#[test]
fn with_primary_of_default_time_out_moves_within_2_s_of_the_hand_over_after_a_node_crash() {
    for seed in 1..=4 {
        let mut s = scenario(
            VIP_DEFAULT,
            "[[fault]]\nat_s = 40\naction = \"crash_host\"\nnode = 1\n",
        );
        s.sim.drift_fraction = 0.0;
        let p = s.config.params.clone();
        let time_out = s.config.resources[0].time_out;
        assert_eq!(time_out, Duration::from_secs(10), "the default");
        let wait = cm_core::resource::handover_wait(p.fencing_floor(), time_out, p.drift_up());
        let mut w = World::new(s, seed, Box::new(Machines));
        let m = watch_move(&mut w, secs(0.0), secs(39.0), NodeId(1), true);
        assert_eq!(m.violation, None, "seed {seed}");
        assert_eq!(
            vip_nodes(&w),
            vec![NodeId(1)],
            "seed {seed}: on the first primary"
        );
        let m = watch_move(&mut w, secs(40.0), secs(100.0), NodeId(1), true);
        let timeline = || w.timeline.join("\n");
        assert_eq!(m.violation, None, "seed {seed}\n{}", timeline());
        // The leader's receipt of node 1's last report (agents report to every CMS: the last
        // delivery is within the network's latency spread, ≤ 2 ms, of the leader's).
        let last = *w.checker.reports[&NodeId(1)]
            .iter()
            .rfind(|t| **t <= secs(40.0))
            .expect("node 1 reported");
        // Counted by the relaying leader from no earlier than its election (when node 1's
        // crash also took the CMS leader, a new one relays node 1's silence from its election).
        let handover = last.max(m.elected.unwrap_or(last)) + wait;
        let (node, promoted) = m
            .promoted
            .unwrap_or_else(|| panic!("seed {seed}: no failover"));
        let leased = m.leased.expect("the new primary's lease");
        let clear = *m.clear.get(&node).expect("the hand-over cleared");
        let followed = m
            .followed
            .unwrap_or_else(|| panic!("seed {seed}: vip never on {node}\n{}", timeline()));
        println!(
            "seed {seed}: last report {last}, promoted {promoted} on {node}, reported {}, \
             leased {leased}, hand-over {handover} (agent: {clear}), vip {followed}",
            reported_primary(&w, &m)
        );
        // The hand-over, not the promotion, is the later instant with defaults.
        assert!(leased + Duration::from_secs(10) < handover, "seed {seed}");
        // Never before the hand-over rule allows it, at the agent and in virtual time.
        assert!(
            clear >= handover,
            "seed {seed}: clear {clear} before {handover}"
        );
        assert!(
            followed >= clear,
            "seed {seed}: vip {followed} before clear {clear}"
        );
        // §14's 2 s, from the later instant.
        let reported = reported_primary(&w, &m);
        let later = handover.max(reported) + Duration::from_millis(2);
        assert!(
            followed <= later + Duration::from_secs(2),
            "seed {seed}: vip on {node} at {followed}, hand-over at {handover}"
        );
        let s7: Vec<_> = w
            .checker
            .violations
            .iter()
            .filter(|v| v.rule == "S7")
            .collect();
        assert!(s7.is_empty(), "seed {seed}: {s7:?}");
    }
}

/// §14 with its default `time_out` (10 s) across a switchover to 6002: node 1's agent loses
/// the write lease with the demotion, stops its vip and reports it `Stopped`; the leader relays
/// that to node 2 (the hand-over proof), whose DN reports Primary after its promotion. The vip
/// runs on node 2 at most 2 s after the later of the two — asserted exactly in virtual time,
/// counting from the promotion itself (which precedes the report of Primary) — and never
/// before node 2's agent found the hand-over clear. S7 holds at every event.
#[test]
fn with_primary_of_default_time_out_moves_within_2_s_across_a_switchover() {
    for seed in 1..=8 {
        let s = scenario(
            VIP_DEFAULT,
            "[[fault]]\nat_s = 40\naction = \"ctl\"\ncommand = \"switchover\"\ninstance = 6002\n",
        );
        let mut w = World::new(s, seed, Box::new(Machines));
        let m = watch_move(&mut w, secs(0.0), secs(39.0), NodeId(1), true);
        assert_eq!(m.violation, None, "seed {seed}");
        assert_eq!(
            vip_nodes(&w),
            vec![NodeId(1)],
            "seed {seed}: on the first primary"
        );
        let m = watch_move(&mut w, secs(40.0), secs(100.0), NodeId(1), false);
        let timeline = || w.timeline.join("\n");
        assert_eq!(m.violation, None, "seed {seed}\n{}", timeline());
        let (node, promoted) = m
            .promoted
            .unwrap_or_else(|| panic!("seed {seed}: no switchover"));
        assert_eq!(node, NodeId(2), "seed {seed}");
        let leased = m.leased.expect("the new primary's lease");
        let clear = *m.clear.get(&node).expect("the hand-over cleared");
        let followed = m
            .followed
            .unwrap_or_else(|| panic!("seed {seed}: vip never on {node}\n{}", timeline()));
        println!(
            "seed {seed}: promoted {promoted}, leased {leased}, hand-over clear {clear}, \
             vip {followed}"
        );
        let reported = reported_primary(&w, &m);
        println!("seed {seed}: reported Primary {reported}");
        assert!(followed >= clear && followed >= leased, "seed {seed}");
        let later = clear.max(reported);
        assert!(
            followed <= later + Duration::from_secs(2),
            "seed {seed}: vip on 2 at {followed}, reported Primary {reported}, clear {clear}"
        );
        // Node 1's Stopped report is the proof: far sooner than the 28 s wait.
        assert!(followed < secs(50.0), "seed {seed}: {followed}");
        let s7: Vec<_> = w
            .checker
            .violations
            .iter()
            .filter(|v| v.rule == "S7")
            .collect();
        assert!(s7.is_empty(), "seed {seed}: {s7:?}");
    }
}

/// The node and quorum term of the cm_server holding the leader lease (exactly one).
fn lease_holder(w: &World) -> (NodeId, cm_core::QuorumTerm) {
    let holders: Vec<(NodeId, cm_core::QuorumTerm)> = w
        .server_views()
        .iter()
        .filter(|v| v.holds_lease())
        .map(|v| (v.node, v.obs.quorum_term))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    holders[0]
}

/// §15 `/primary` stays 200 through an ordinary CMS leader change (≤ 2 × the maximum election
/// timeout + 2 × the report interval = 5.2 s between answered reports, §8) while standbys
/// stream — and with it the write lease that §14's placement uses. The report window alone
/// (`agent_self_fence_timeout − 2 × agent_report_interval` = 4 s) is shorter; §8's streaming
/// exception carries it. At 40 s the CMS leader's process is killed and its first election
/// round fails, as a split vote would: the two other cm_servers cannot reach each other until
/// 42.2 s. Node 1's newest leader-answered report ages past 4 s in some seeds (asserted), never
/// past 5.2 s. The vip keeps running on node 1 (never stopped, never started again), node 1's
/// `/primary` answers 200 at every event, a new leader takes over and nothing fences.
#[test]
fn the_vip_and_primary_survive_an_ordinary_cms_leader_change_while_standbys_stream() {
    let mut slowest = Duration::ZERO;
    for seed in 1..=12 {
        // Which cm_server leads at 40 s (the run is deterministic up to the faults).
        let mut w = World::new(scenario(VIP_DEFAULT, ""), seed, Box::new(Machines));
        w.run_until(secs(39.9), &mut |_| false);
        let (old, old_term) = lease_holder(&w);
        let others: Vec<u32> = [1, 2, 3].into_iter().filter(|n| *n != old.0).collect();
        let faults = format!(
            "[[fault]]\nat_s = 40\naction = \"crash_cms_leader\"\n\
             [[fault]]\nat_s = 40\naction = \"partition\"\na = [{}]\nb = [{}]\n\
             [[fault]]\nat_s = 42.2\naction = \"heal\"\n",
            others[0], others[1]
        );
        let mut w = World::new(scenario(VIP_DEFAULT, &faults), seed, Box::new(Machines));
        w.run_until(secs(39.9), &mut |_| false);
        let timeline = |w: &World| w.timeline.join("\n");
        assert_eq!(lease_holder(&w), (old, old_term), "seed {seed}");
        assert_eq!(vip_nodes(&w), vec![NodeId(1)], "seed {seed}");
        let starts = |w: &World| {
            w.timeline
                .iter()
                .filter(|l| l.contains("resource 9001 -start") || l.contains("resource 9001 -stop"))
                .count()
        };
        let before = starts(&w);
        let mut broke = None;
        let mut new_leader = None;
        // The longest a leader-answered report of node 1 aged before a newer one was answered.
        let mut oldest = Duration::ZERO;
        w.run_until(secs(70.0), &mut |w| {
            let h = w.agent_health(NodeId(1)).expect("node 1's agent runs");
            let now = w.local_now(NodeId(1)).expect("node 1");
            if let Some(sent) = h.answered_send {
                oldest = oldest.max(now.saturating_since(sent));
            }
            if w.primary_answers_on(NodeId(1)) != vec![InstanceId(6001)] {
                broke = Some(format!("{}: /primary on n1 not 200", w.now()));
                return true;
            }
            if vip_nodes(w) != vec![NodeId(1)] {
                broke = Some(format!("{}: vip on {:?}", w.now(), vip_nodes(w)));
                return true;
            }
            if new_leader.is_none() && w.now() > secs(40.0) {
                new_leader = w
                    .server_views()
                    .iter()
                    .find(|v| v.holds_lease() && v.obs.quorum_term > old_term)
                    .map(|v| (v.node, w.now()));
            }
            false
        });
        if let Some(b) = &broke {
            let tail: Vec<&String> = w
                .timeline
                .iter()
                .filter(|l| l.as_str() > "   39.5")
                .take(120)
                .collect();
            panic!("seed {seed}: {b}\n{tail:#?}");
        }
        let (leader, at) = new_leader.unwrap_or_else(|| panic!("seed {seed}: no new leader"));
        println!(
            "seed {seed}: leader {old} -> {leader} at {at}, newest answered report aged up to {oldest:?}"
        );
        assert!(
            oldest <= Duration::from_millis(5200),
            "seed {seed}: not an ordinary change: {oldest:?}"
        );
        slowest = slowest.max(oldest);
        assert_eq!(
            starts(&w),
            before,
            "seed {seed}: the vip was stopped or restarted"
        );
        assert!(
            !w.timeline.iter().any(|l| l.contains("self-fences")),
            "seed {seed}: a self-fence\n{}",
            timeline(&w)
        );
    }
    assert!(
        slowest > Duration::from_secs(4),
        "no seed outlasted the report window alone: {slowest:?}"
    );
}

/// S7 under the swarm's faults (`swarm-resources`): no seed here breaks it. Seeds 7 and 9 once
/// reported a thawed host's resource before its agent had a turn to stop it (the checker now
/// grants a thawed agent the same grace as for S4). Other failures of these seeds (S6 of DNs,
/// availability) belong to the open classes of `swarm` and are not judged here.
#[test]
fn swarm_resources_seeds_keep_s7() {
    use cm_sim::run::{RunOptions, run};
    for seed in [2, 7, 9] {
        let s = cm_sim::swarm::with_resources(seed);
        assert!(!s.config.resources.is_empty());
        let r = run(
            &s,
            "swarm-resources",
            seed,
            Box::new(Machines),
            RunOptions::default(),
        );
        let s7: Vec<_> = r.violations.iter().filter(|v| v.rule == "S7").collect();
        assert!(
            s7.is_empty(),
            "seed {seed}: {s7:?}\nreproduce: {}",
            r.repro()
        );
    }
}

/// §14's hand-over with a start in flight (issue 14, R1): node 1's vip program is killed at
/// 40 s; its agent restarts it with a `-start` that takes 80–95 % of `time_out` (20 s) and
/// brings the program up only as it ends. Node 1 is cut off at 42.5 s, while that start
/// runs: the CMS fails over, and the new primary's node must not take node 1's last report
/// (an old `Offline` check, or `Stopped` once the lease moved) as proof that it is down — it
/// waits the hand-over time instead. S7 (the simulator's checker) holds throughout.
///
/// Before the fix (node 1 reported the last check while its start was in flight, and
/// `Offline` counted as stopped), seed 1 broke S7: the vip ran on nodes 1 and 2 at once at
/// 58.4 s.
#[test]
fn a_start_in_flight_is_no_hand_over_proof() {
    let vip = VIP.replace("time_out = 1", "time_out = 20");
    for seed in 1..=4 {
        let mut s = scenario(
            &vip,
            "[[fault]]\nat_s = 40\naction = \"kill_resource\"\ninstance = 9001\n\
             [[fault]]\nat_s = 42.5\naction = \"isolate_node\"\nnode = 1\n",
        );
        s.sim
            .resource_models
            .insert(InstanceId(9001), ResourceModel::SlowStart);
        let mut w = World::new(s, seed, Box::new(Machines));
        w.run_until(secs(110.0), &mut |_| false);
        let s7: Vec<_> = w
            .checker
            .violations
            .iter()
            .filter(|v| v.rule == "S7")
            .collect();
        assert!(s7.is_empty(), "seed {seed}: {s7:?}");
        // The scenario did what it is for: node 1's slow start brought the vip up after the
        // cut, and another node's DN became the primary and runs it.
        let promoted = w
            .dbs
            .instances
            .values()
            .find(|i| i.node != NodeId(1) && i.running && i.role == DnRole::Primary)
            .map(|i| i.node);
        let promoted = promoted.unwrap_or_else(|| panic!("seed {seed}: no failover"));
        assert_eq!(vip_nodes(&w), vec![promoted], "seed {seed}: vip follows");
        assert!(
            w.timeline
                .iter()
                .any(|l| l.contains("resource 9001 -start")),
            "seed {seed}: node 1 restarted the vip\n{}",
            w.timeline
                .iter()
                .filter(|l| l.contains("9001")
                    || l.contains("9002")
                    || l.contains("9003")
                    || l.contains("romot"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
