//! Swarm seeds that once broke the CMS leader's arbitration: each must now keep every
//! invariant and converge. 26, 29, 34: a standby left following a stale upstream (§4.2
//! "Then"); 226: a delayed agent report undid a fresh promotion, a second Failover followed
//! and two members could acknowledge commits (S4); 132: a down report confirmed
//! `SetReadOnly{off}` that never took effect (read-only FSM); 3198, 8031: a re-elected leader
//! resent an inherited `Switchover{term}` (S2; now it commits a fresh term first); 2254, 3167:
//! a restarted agent reported its hung primary's role as Unknown and the group failed over
//! while the primary could resume (S4); 6074, 6261: a Failover target that went silent or
//! hung mid-promotion was passed over without fencing (S4); 8460: an agent restarted during
//! the split-brain wait counted its self-fence from its own start (S4); 5834: an agent
//! restarted (by cron's new om_monitor) beside a primary hung in state D did not know it was
//! a primary and never fenced it (S4; the agent now persists each DN's last read role).

use cm_sim::adapters::Machines;
use cm_sim::run::{RunOptions, run};

#[test]
fn swarm_seeds_that_broke_arbitration_converge() {
    let failed: Vec<String> = [
        26u64, 29, 34, 132, 226, 2254, 3167, 3198, 6074, 6261, 8031, 8460,
    ]
    .into_iter()
    .filter_map(|seed| {
        let s = cm_sim::swarm::scenario(seed);
        let r = run(&s, "swarm", seed, Box::new(Machines), RunOptions::default());
        (!r.ok()).then(|| format!("{:?} {:?} — {}", r.violations, r.misses, r.repro()))
    })
    .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
