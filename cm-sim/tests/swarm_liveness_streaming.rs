//! Swarm seeds that once failed the liveness check of SPEC §13 after every fault healed; each
//! must now keep every invariant and converge.
//! - 2530, 3320, 3424, 4859, 5213, 5259, 6805, 8758: om_monitor was killed and nothing
//!   restarted it (the simulator lacked the cron line of §1), so a cm_agent killed later
//!   stayed dead: its DNs were never restarted or re-pointed ("not streaming"), and with a
//!   single cm_server nothing restarted that either ("0 cm_server(s) hold a lease").
//! - 7506, 8885: a standby hung (state Z) when Lock2 to the new primary arrived; its agent
//!   made the command durable, so the CMS took it as applied and never re-sent it, and the
//!   standby kept following nobody (§4.2 "Then").
//! - 5623: the Failover target hung during its promotion and the simulated database kept
//!   reporting Promoting after the action failed, so the CMS waited on it for good ("0
//!   writable primaries").

use cm_sim::adapters::Machines;
use cm_sim::run::{RunOptions, run};

#[test]
fn swarm_seeds_that_did_not_converge_after_healing_converge() {
    let seeds = [
        2530u64, 3320, 3424, 4859, 5213, 5259, 5623, 6805, 7506, 8758, 8885,
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
