//! SPEC §14 in the simulator: custom resources driven by the real agent and cm_server machines
//! through simulated scripts, with the timings of §14 asserted in virtual time.

use core::time::Duration;

use cm_core::dn::DnRole;
use cm_core::flags::Flag;
use cm_core::{InstanceId, Instant, NodeId};
use cm_sim::adapters::Machines;
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
/// The failover itself comes ≈ 8–9 s after that report, so the 2 s bound holds for a
/// `time_out` of 1 s (hand-over ≈ 9.7 s); with the default 10 s the start waits ≈ 28 s after
/// the last report (≈ 19 s after the promotion) — the price of never running it twice.
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
