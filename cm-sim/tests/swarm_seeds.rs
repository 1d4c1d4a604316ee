//! Swarm seeds that once failed (found by `cm-sim sweep`): each must now keep every invariant
//! of SPEC §13 and converge. The seeds below were found before the swarm was widened (issue
//! 11); they keep their meaning through the original generator: reproduce one with
//! `cargo run -p cm-sim --release -- run swarm-classic --seed N`.

fn assert_clean(seeds: &[u64]) {
    let failed = cm_sim::swarm::failures_of(cm_sim::swarm::SWARM_CLASSIC, seeds.iter().copied());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Swarm seeds that once broke the CMS leader's arbitration: each must now keep every
/// invariant and converge. 26, 29, 34: a standby left following a stale upstream (§4.2
/// "Then"); 226: a delayed agent report undid a fresh promotion, a second Failover followed
/// and two members could acknowledge commits (S4); 132: a down report confirmed
/// `SetReadOnly{off}` that never took effect (read-only FSM); 3198, 8031: a re-elected leader
/// resent an inherited `Switchover{term}` (S2; now it commits a fresh term first); 2254, 3167:
/// a restarted agent reported its hung primary's role as Unknown and the group failed over
/// while the primary could resume (S4); 6074, 6261: a Failover target that went silent or
/// hung mid-promotion was passed over without fencing (S4); 8460: an agent restarted during
/// the split-brain wait counted its self-fence from its own start (S4); 5834: an agent
/// restarted (by cron's new om_monitor) beside a primary hung in state D did not know it was
/// a primary and never fenced it (S4; the agent now persists each DN's last read role).
#[test]
fn swarm_seeds_that_broke_arbitration_converge() {
    assert_clean(&[
        26, 29, 34, 132, 226, 2254, 3167, 3198, 5834, 6074, 6261, 8031, 8460,
    ]);
}

/// Swarm seeds that once failed liveness with two writable primaries in a group after healing
/// (SPEC §13): each must now keep every invariant and converge. In all of them the swarm killed
/// a node's om_monitor and later its cm_agent. The simulator did not model the system scheduler
/// that keeps om_monitor alive (SPEC §1: cron at second 0 of every minute, or systemd), so the
/// node stayed without an agent for good: nothing reported its DNs, so the stale primary there
/// never got the Restart of §4.4. Cron now restarts the monitor, which restarts the agent,
/// whose report of the stale primary gets it restarted.
#[test]
fn swarm_seeds_with_a_stale_primary_after_healing_converge() {
    assert_clean(&[
        1426, 2126, 4035, 4085, 4332, 5609, 5967, 6194, 7480, 7827, 9032,
    ]);
}

/// Swarm seeds that once failed the liveness check of SPEC §13 after every fault healed; each
/// must now keep every invariant and converge.
/// - 2530, 3320, 3424, 4859, 5213, 5259, 6805, 8758: om_monitor was killed and nothing
///   restarted it (the simulator lacked the cron line of §1), so a cm_agent killed later
///   stayed dead: its DNs were never restarted or re-pointed ("not streaming"), and with a
///   single cm_server nothing restarted that either ("0 cm_server(s) hold a lease").
/// - 7506, 8885: a standby hung (state Z) when Lock2 to the new primary arrived; its agent
///   made the command durable, so the CMS took it as applied and never re-sent it, and the
///   standby kept following nobody (§4.2 "Then").
/// - 5623: the Failover target hung during its promotion and the simulated database kept
///   reporting Promoting after the action failed, so the CMS waited on it for good ("0
///   writable primaries").
#[test]
fn swarm_seeds_that_did_not_converge_after_healing_converge() {
    assert_clean(&[
        2530, 3320, 3424, 4859, 5213, 5259, 5623, 6805, 7506, 8758, 8885,
    ]);
}
