//! Swarm seeds that once failed liveness with two writable primaries in a group after healing
//! (SPEC §13): each must now keep every invariant and converge. In all of them the swarm killed
//! a node's om_monitor and later its cm_agent. The simulator did not model the system scheduler
//! that keeps om_monitor alive (SPEC §1: cron at second 0 of every minute, or systemd), so the
//! node stayed without an agent for good: nothing reported its DNs, so the stale primary there
//! never got the Restart of §4.4. Cron now restarts the monitor, which restarts the agent,
//! whose report of the stale primary gets it restarted.

use cm_sim::adapters::Machines;
use cm_sim::run::{RunOptions, run};

#[test]
fn swarm_seeds_with_a_stale_primary_after_healing_converge() {
    let seeds = [
        1426u64, 2126, 4035, 4085, 4332, 5609, 5967, 6194, 7480, 7827, 9032,
    ];
    let failed: Vec<String> = seeds
        .into_iter()
        .filter_map(|seed| {
            let s = cm_sim::swarm::scenario(seed);
            let r = run(&s, "swarm", seed, Box::new(Machines), RunOptions::default());
            (!r.ok()).then(|| format!("{:?} {:?} — {}", r.violations, r.misses, r.repro()))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
