//! Seeds on which the agent once misbehaved, kept as regressions with the real machines.

use cm_sim::daemon::Machines;
use cm_sim::run::{RunOptions, run};
use cm_sim::scenario::Scenario;

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_toml_str(&std::fs::read_to_string(path).expect("file")).expect("parses")
}

/// SPEC §6: the process restarted after a hang starts counting phony-dead hits from 0. Seed 19
/// used to carry the old process's 5 hits into each new one, so the CMS restarted the
/// won-back primary every 5 s until the group failed over elsewhere.
#[test]
fn frozen_primary_restarted_once_wins_its_role_back_seed_19() {
    let name = "primary-frozen-1p4s-two-az";
    let r = run(
        &shipped(name),
        name,
        19,
        Box::new(Machines),
        RunOptions::default(),
    );
    let restarts = r
        .timeline
        .iter()
        .filter(|l| l.contains("Restart on 6001"))
        .count();
    assert!(
        r.ok() && restarts == 1,
        "restarts {restarts}, violations {:?}, misses {:?}\ntimeline:\n{}\nreproduce: {}",
        r.violations,
        r.misses,
        r.timeline.join("\n"),
        r.repro()
    );
}
