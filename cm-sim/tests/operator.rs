//! cm_ctl stop/start through cm-core's planner, the om_monitor control ports and the real
//! monitor and agent machines (SPEC §2): every instance stops, the agents exit and stay down,
//! nothing restarts (S6); after start the agents and instances come back.

use cm_core::msg::Role;
use cm_core::{Instant, NodeId};
use cm_sim::adapters::Machines;
use cm_sim::scenario::Scenario;
use cm_sim::world::World;

fn manual_stop_start() -> Scenario {
    let path = format!(
        "{}/scenarios/manual-stop-start.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    Scenario::from_toml_str(&std::fs::read_to_string(path).expect("file")).expect("parses")
}

fn agents(w: &World) -> usize {
    w.hosts
        .values()
        .filter(|h| h.procs.contains_key(&Role::Agent))
        .count()
}

fn running_dns(w: &World) -> usize {
    w.dbs.instances.values().filter(|i| i.running).count()
}

#[test]
fn cluster_stop_stops_everything_and_start_brings_it_back() {
    let mut w = World::new(manual_stop_start(), 1, Box::new(Machines));
    w.run_until(Instant::from_secs(29), &mut |_| false);
    assert_eq!((agents(&w), running_dns(&w)), (3, 3), "up before the stop");
    // The stop at 30 s: leader told (none answers yet), flags written, agents stop and exit.
    w.run_until(Instant::from_secs(59), &mut |_| false);
    assert_eq!(running_dns(&w), 0, "{}", w.dump());
    assert_eq!(agents(&w), 0, "agents exited and were not restarted");
    for n in 1..=3 {
        assert!(w.hosts[&NodeId(n)].flags.cluster_manual_start.is_some());
    }
    // The start at 60 s removes the flags; the monitors start the agents, which start the DNs.
    w.run_until(Instant::from_secs(70), &mut |_| false);
    assert_eq!((agents(&w), running_dns(&w)), (3, 3), "{}", w.dump());
    assert!(
        w.hosts
            .values()
            .all(|h| h.flags.cluster_manual_start.is_none())
    );
    assert!(
        w.checker.violations.iter().all(|v| v.rule != "S6"),
        "{:?}",
        w.checker.violations
    );
}
