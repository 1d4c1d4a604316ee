//! Determinism is itself tested (rust-anchors rule 44): the same seeds run twice give identical
//! event traces, on shipped scenarios and on swarm draws with the real cm-core machines.

use cm_sim::daemon::Machines;
use cm_sim::run::{RunOptions, run};
use cm_sim::scenario::Scenario;
use cm_sim::swarm;

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_toml_str(&std::fs::read_to_string(path).expect("file")).expect("parses")
}

fn fingerprint(s: &Scenario, seed: u64) -> (u64, u64, Vec<String>) {
    let r = run(s, &s.name, seed, Box::new(Machines), RunOptions::default());
    (r.trace_hash, r.events, r.timeline)
}

#[test]
fn a_smoke_sweep_run_twice_gives_identical_traces() {
    let seeds = 0..3u64;
    let first: Vec<_> = seeds
        .clone()
        .map(|s| fingerprint(&swarm::scenario(s), s))
        .collect();
    let second: Vec<_> = seeds.map(|s| fingerprint(&swarm::scenario(s), s)).collect();
    assert_eq!(first, second);
    assert_ne!(first[0].0, first[1].0, "different seeds differ");
}

#[test]
fn a_shipped_scenario_is_a_function_of_its_seed() {
    let s = shipped("primary-node-crash");
    assert_eq!(fingerprint(&s, 5), fingerprint(&s, 5));
    assert_ne!(fingerprint(&s, 5).0, fingerprint(&s, 6).0);
}
