//! cm_ctl stop/start through cm-core's planner, the om_monitor control ports and the real
//! monitor and agent machines (SPEC §2): every instance stops, the agents exit and stay down,
//! nothing restarts (S6); after start the agents and instances come back.

use cm_core::msg::Role;
use cm_core::{Instant, NodeId};
use cm_sim::daemon::Machines;
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

/// The three-node cluster of `manual-stop-start` with other faults (TOML `[[fault]]` tables).
fn cluster_with(faults: &str) -> Scenario {
    let path = format!(
        "{}/scenarios/manual-stop-start.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).expect("file");
    let cluster = &text[text.find("[cluster]").expect("a cluster table")..];
    let head = "name = \"build\"\ndescription = \"cm_ctl build\"\nduration_s = 60\n";
    Scenario::from_toml_str(&format!("{head}\n{faults}\n{cluster}")).expect("parses")
}

fn build_outcome(w: &World) -> Option<&Result<String, String>> {
    w.ctl_outcomes()
        .iter()
        .find(|(label, _)| label == "cm_ctl build")
        .map(|(_, r)| r)
}

const BUILD_6002_AT_20: &str = "[[fault]]\nat_s = 20\naction = \"ctl\"\ncommand = \"build\"\n\
                                instance = 6002\n";

/// `cm_ctl build` through cm-core's planner against the real agent and server machines: done
/// once the agent reports the build's outcome.
#[test]
fn cm_ctl_build_is_done_once_the_agent_reports_the_build() {
    let mut w = World::new(cluster_with(BUILD_6002_AT_20), 1, Box::new(Machines));
    w.run_until(Instant::from_secs(30), &mut |_| false);
    assert_eq!(
        build_outcome(&w),
        Some(&Ok("build of 6002 done".to_string())),
        "{}",
        w.dump()
    );
}

/// Issue 17: the agent is killed mid-build and om_monitor starts a new one, which knows nothing
/// of the build (the leader sends a Build once): `cm_ctl build` fails within seconds with the
/// reason instead of waiting out its timeout (300 s here).
#[test]
fn cm_ctl_build_fails_at_once_when_the_agent_restarts_mid_build() {
    let kill = "[[fault]]\nat_s = 20.3\naction = \"kill_process\"\nnode = 2\nrole = \"agent\"\n";
    let mut w = World::new(
        cluster_with(&format!("{BUILD_6002_AT_20}\n{kill}")),
        1,
        Box::new(Machines),
    );
    w.run_until(Instant::from_secs(35), &mut |_| false);
    let outcome = build_outcome(&w);
    assert!(
        matches!(outcome, Some(Err(m)) if m.starts_with("the build of 6002 was lost: its cm_agent restarted")),
        "{outcome:?}\n{}",
        w.dump()
    );
}
