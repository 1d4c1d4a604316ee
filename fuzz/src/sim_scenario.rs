//! The `sim_scenario` target: the fuzz bytes choose a swarm scenario (seed, topology,
//! parameters, faults) and a shortened safety phase; the simulator runs it against the real
//! machines and any safety violation (S1–S6) is a crash. Liveness (L) is not asserted here: a
//! shortened run may end before convergence.

use std::time::Duration;

use cm_sim::daemon::Machines;
use cm_sim::run::{RunOptions, run};
use cm_sim::swarm;

/// The target.
pub fn sim_scenario(data: &[u8]) {
    let mut seed_bytes = [0u8; 8];
    for (slot, b) in seed_bytes.iter_mut().zip(data) {
        *slot = *b;
    }
    let seed = u64::from_le_bytes(seed_bytes);
    let mut s = swarm::scenario(seed);
    // 30..=157 s of faults keeps one execution near a tenth of a second.
    let secs = 30 + u64::from(data.get(8).copied().unwrap_or(0) & 0x7f);
    s.duration = Duration::from_secs(secs);
    s.faults.retain(|f| f.at < s.duration);
    s.liveness = false;
    let r = run(&s, "fuzz", seed, Box::new(Machines), RunOptions::default());
    let safety: Vec<_> = r.violations.iter().filter(|v| v.rule != "L").collect();
    assert!(
        safety.is_empty(),
        "seed {seed}, {secs} s: {safety:?}\n{}",
        r.dump
    );
}
