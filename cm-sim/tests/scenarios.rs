//! Every SPEC §12 row as a named scenario with the real cm-core machines: no invariant broken,
//! every timing expectation met, liveness reached — for several seeds each. Breaking a rule on
//! purpose (`[test_switches] lock1_quorum_override`) must be caught within a bounded number of seeds.
//! `CM_LONG_TESTS=1` runs more seeds.

use core::time::Duration;

use cm_core::{GroupId, Instant, Term};
use cm_sim::daemon::Machines;
use cm_sim::run::{Report, RunOptions, liveness_bound, liveness_problem, run};
use cm_sim::scenario::Scenario;
use cm_sim::world::World;

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_toml_str(&std::fs::read_to_string(path).expect("file")).expect("parses")
}

fn seeds() -> std::ops::Range<u64> {
    if std::env::var("CM_LONG_TESTS").is_ok_and(|v| v == "1") {
        1..21
    } else {
        1..3
    }
}

fn check(name: &str) -> Vec<Report> {
    let s = shipped(name);
    let reports: Vec<Report> = seeds()
        .map(|seed| run(&s, name, seed, Box::new(Machines), RunOptions::default()))
        .collect();
    for r in &reports {
        assert!(
            r.ok(),
            "{name} seed {}: violations {:?}, misses {:?}\ntimeline:\n{}\nstate:\n{}\nreproduce: {}",
            r.seed,
            r.violations,
            r.misses,
            r.timeline.join("\n"),
            r.dump,
            r.repro()
        );
        assert!(r.acked_writes > 0, "{name}: the client wrote");
    }
    reports
}

#[test]
fn primary_process_killed() {
    check("primary-process-killed");
}

#[test]
fn standby_stream_broken() {
    check("standby-stream-broken");
}

/// Review of issue 18: a standby whose stream flaps (its receiver streams for a second every
/// 5 s and dies) is re-pointed and then rebuilt — before, one report that caught it streaming
/// reset its stream-loss clock and it was never rebuilt (the Build expectation failed on
/// every seed, and the checker's liveness counts a flapping stream as none).
#[test]
fn standby_stream_flapping() {
    check("standby-stream-flapping");
}

/// Issue 18 (`cm_local bench --rejoin`, fast profile): a postmaster kill whose restart
/// outlasts the 5-round wait (1.25 s of 0.25 s reports) is a failover by SPEC §4.2, not a
/// restart in place: a standby is promoted and the old primary follows it (rewound, having
/// WAL the new primary never got).
#[test]
fn primary_process_killed_slow_restart_fast() {
    for r in check("primary-process-killed-slow-restart-fast") {
        let promoted: Vec<&String> = r
            .timeline
            .iter()
            .filter(|l| l.contains("Failover { term: Term(2)"))
            .collect();
        assert!(
            !promoted.is_empty() && promoted.iter().all(|l| !l.contains("on 6001")),
            "seed {}: the standby is promoted, not the slow old primary\n{}",
            r.seed,
            r.timeline.join("\n")
        );
        assert!(
            r.timeline
                .iter()
                .any(|l| l.contains("Build { source: InstanceId(6002)") && l.contains("on 6001")),
            "seed {}: the old primary is rebuilt from the new one\n{}",
            r.seed,
            r.timeline.join("\n")
        );
    }
}

/// Issue 16/18 (nemesis): a standby whose diverged WAL keeps its receiver from ever coming up
/// is rebuilt, not re-pointed for good.
#[test]
fn standby_wal_diverged() {
    check("standby-wal-diverged");
}

/// Issue 18: a standby whose stream start the primary no longer has is rebuilt by a full copy
/// once a rewind did not bring its stream back, not rewound for good.
#[test]
fn standby_wal_removed() {
    let reports = check("standby-wal-removed");
    for r in &reports {
        assert!(
            r.timeline
                .iter()
                .any(|l| l.contains("Build") && l.contains("full: true")),
            "no full copy:\n{}",
            r.timeline.join("\n")
        );
    }
}

/// Issue 16 (nemesis): no restart-count switchover start-abort loop after a failover.
#[test]
fn restart_switchover_after_failover() {
    check("restart-switchover-after-failover");
}

/// Issue 16 (nemesis seed 2): with every DN restarted as often as the primary, the
/// restart-count rule passes the primary to nobody (before: back and forth for good).
#[test]
fn restart_switchover_ping_pong() {
    check("restart-switchover-ping-pong");
}

/// Issue 16 (nemesis seeds 1, 2): a member whose Build failed and left data that cannot
/// start is built again (before: Down for good).
#[test]
fn build_failed_unstartable() {
    check("build-failed-unstartable");
}

/// Issue 16 (nemesis run f2, fault #20): a standby whose recovery stalls "starting up" after
/// a rewind is rewound once, then copied in full (before: rewound after every start bound).
#[test]
fn standby_recovery_stalls() {
    check("standby-recovery-stalls");
}

/// Review of issue 18: a host crash in the middle of a standby's pg_rewind leaves cm-io's
/// rewind marker, so its data will not start; the CMS must build it again after the restart
/// (fails on main: Down for good, started every second).
#[test]
fn rewind_interrupted_by_node_crash() {
    check("rewind-interrupted-by-node-crash");
}

#[test]
fn primary_node_crash() {
    check("primary-node-crash");
}

#[test]
fn primary_agent_cut() {
    check("primary-agent-cut");
}

#[test]
fn cms_leader_crash() {
    check("cms-leader-crash");
}

#[test]
fn primary_frozen_1p4s_two_az() {
    check("primary-frozen-1p4s-two-az");
}

#[test]
fn primary_hang_d_state() {
    check("primary-hang-d-state");
}

#[test]
fn disk_over_threshold() {
    check("disk-over-threshold");
}

/// Issue 11 defect 3 (§5.3, second rule): the CMS leader cut from the DN agents but not from
/// its peers, and the primary host crashes: the leader steps down and a follower fails over.
/// Before the rule: no writable primary until the cut healed (`writable_again_s` ≈ 57 s).
#[test]
fn cms_leader_cut_from_agents() {
    check("cms-leader-cut-from-agents");
}

#[test]
fn minority_az_isolated() {
    check("minority-az-isolated");
}

/// Issue 11 defect 1 (§5.1): a CMS powered on 3 s late joins as a voter, so the majority AZ
/// still arbitrates after the AZ with the primary and one CMS is cut. Failed on every seed
/// but a few before (`writable_again_s` ≈ 64 s).
#[test]
fn late_cms_cold_start() {
    check("late-cms-cold-start");
}

/// Issue 11 defect 2 (§4.1, §5.4): two CMS with the gateway rule, W2 isolated: W1 leads alone
/// after the isolation wait and its Failover is confirmed and executed (before: never, the
/// agent wanted 2 of 2 confirmations). Then healing converges (before: the follower's quorum
/// panicked on the leader's conflicting entries).
#[test]
fn two_node_w2_isolated() {
    check("two-node-w2-isolated");
}

/// SPEC §5.4's healing, in `two-node-w2-isolated`: at the end of the safety phase W2 (node 1,
/// isolated) and W1 (node 2, which failed over alone) show group 1 at different terms; after
/// healing both show the higher one, exactly one CMS holds a lease, the group has one writable
/// primary with every standby streaming, and nothing broke S1–S6 meanwhile.
#[test]
fn two_node_w2_isolated_heals_to_the_higher_group_term() {
    let s = shipped("two-node-w2-isolated");
    let group_terms = |w: &World| -> Vec<Term> {
        w.server_views()
            .iter()
            .filter_map(|v| v.obs.group_terms.get(&GroupId(1)).copied())
            .collect()
    };
    for seed in seeds() {
        let mut w = World::new(s.clone(), seed, Box::new(Machines));
        let end = Instant::ZERO + s.duration;
        w.run_until(end, &mut |_| false);
        let before = group_terms(&w);
        assert_eq!(before.len(), 2, "seed {seed}: both CMS up");
        assert_ne!(before[0], before[1], "seed {seed}: the sides diverged");
        let max = before.iter().copied().max().unwrap_or_default();
        w.heal_all();
        let mut next = end;
        let converged = w.run_until(end + liveness_bound(&s), &mut |w| {
            if w.now() < next {
                return false;
            }
            next = w.now() + Duration::from_millis(100);
            liveness_problem(w).is_none()
        });
        assert!(
            converged,
            "seed {seed}: {:?}\n{}",
            liveness_problem(&w),
            w.dump()
        );
        let settled = w.now() + Duration::from_secs(5);
        w.run_until(settled, &mut |_| false);
        assert_eq!(
            group_terms(&w),
            vec![max, max],
            "seed {seed}: before {before:?}"
        );
        assert!(
            w.checker.violations.is_empty(),
            "seed {seed}: {:?}",
            w.checker.violations
        );
    }
}

#[test]
fn manual_stop_start() {
    check("manual-stop-start");
}

/// Issue 11 defect 4: a switchover to a standby that just crashed is aborted at once, and the
/// waiting cm_ctl reports the abort.
#[test]
fn switchover_target_crashed() {
    for r in check("switchover-target-crashed") {
        assert!(
            r.timeline
                .iter()
                .any(|l| l.contains("cm_ctl switchover: Err(\"switchover aborted")),
            "seed {}: cm_ctl did not report the abort\n{}",
            r.seed,
            r.timeline.join("\n")
        );
    }
}

/// Issue 11 defect 5: switchovers after an aborted and a refused one stick (no restart-count
/// switchover triggered by planned demotions).
#[test]
fn switchover_after_abort_no_flap() {
    for r in check("switchover-after-abort-no-flap") {
        let done = r
            .timeline
            .iter()
            .filter(|l| l.contains("cm_ctl switchover: Ok(\"switchover done"))
            .count();
        assert_eq!(done, 6, "seed {}:\n{}", r.seed, r.timeline.join("\n"));
    }
}

/// SPEC §15: the isolated primary's `/primary` (evaluated by the agent's own cm-core function)
/// turns 503 at least two report intervals before its agent self-fences when it is cut off with
/// its AZ (1.9 s here: both are counted on the agent's clock, which may run up to ρ = 1 % slow
/// against simulated time) — and no later than the fence when its standbys kept it alive
/// through the 63 s rule; the CMS leader's crash never makes it 503 (`cms-leader-crash` expects
/// "never").
#[test]
fn the_primary_endpoint_turns_503_before_the_self_fence() {
    for (name, margin) in [("minority-az-isolated", 1.9), ("primary-agent-cut", 0.0)] {
        for r in check(name) {
            let lost = r.timings["primary_http_lost_s"].expect("the endpoint turned 503");
            let fenced = r.timings["self_fenced_s"].expect("the agent fenced");
            assert!(
                lost + margin <= fenced,
                "{name} seed {}: /primary 503 at {lost:.3} s, self-fence at {fenced:.3} s",
                r.seed
            );
        }
    }
}

#[test]
fn breaking_the_lock1_quorum_on_purpose_is_caught() {
    let broken = shipped("broken-lock1-quorum");
    let caught = (1..=5u64).find_map(|seed| {
        let r = run(
            &broken,
            "broken-lock1-quorum",
            seed,
            Box::new(Machines),
            RunOptions::default(),
        );
        r.violations
            .iter()
            .any(|v| v.rule == "S3" || v.rule == "S4" || v.rule == "S5")
            .then_some(r)
    });
    let r = caught.expect("a violation within 5 seeds");
    assert!(
        r.timings["lost_acked_writes"].unwrap_or(0.0) > 0.0
            || r.timings["dual_writable_ms"].unwrap_or(0.0) > 0.0
    );
    // The same cluster and faults with the rule intact stay safe.
    let mut fixed = broken;
    fixed.config.params.test.lock1_quorum_override = 0;
    let r = run(
        &fixed,
        "broken-lock1-quorum",
        r.seed,
        Box::new(Machines),
        RunOptions::default(),
    );
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

/// Opt-in (`CM_LONG_TESTS=1`): a swarm sweep must keep every invariant and converge.
#[test]
fn long_swarm_sweep() {
    if !std::env::var("CM_LONG_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    let failed = cm_sim::swarm::failures(0..200);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Negative control of the availability check (issue 11): with a Lock1 quorum the group can
/// never reach (`[test_switches] lock1_quorum_override` = 3 of two standbys), a crashed primary is never
/// replaced; the CMS majority side holds both standbys, so once the crash has been stable for
/// B (28.8 s with defaults) the run fails with an `A` violation at that instant. The same
/// cluster with the rule intact is writable again in time and passes.
#[test]
fn availability_check_fails_a_group_left_without_a_primary() {
    let mut s = shipped("primary-node-crash");
    s.expect.clear();
    s.config.params.test.lock1_quorum_override = 3;
    let r = run(
        &s,
        "primary-node-crash",
        1,
        Box::new(Machines),
        RunOptions::default(),
    );
    let a: Vec<_> = r.violations.iter().filter(|v| v.rule == "A").collect();
    assert_eq!(a.len(), 1, "{:?}", r.violations);
    let at = a[0].at.as_secs_f64();
    assert!((58.8..59.1).contains(&at), "{at}: {}", a[0].message);
    assert!(a[0].message.contains("group1"), "{}", a[0].message);
    s.config.params.test.lock1_quorum_override = 0;
    let r = run(
        &s,
        "primary-node-crash",
        1,
        Box::new(Machines),
        RunOptions::default(),
    );
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

/// Review 19 (issue 18's stream-hold rule): a healthy standby that stalls 1.5 s in every 4 s
/// is never away from its stream for instance_heartbeat_timeout and must not be rebuilt. On
/// main (7fe06e4) it is rebuilt ~13-18 s after the first stall on 20 seeds of 20 (the loss
/// the first stall opened never ends, since the stream never holds 6 s); with the rule before
/// it (any streaming report ends the loss) 0 of 20 fail.
#[test]
#[ignore = "open (issue 18, review 19): while a status query is in flight the agent reports the previous sample as if fresh; the CMS reads it as a stream that stopped advancing"]
fn review19_standby_short_stalls() {
    check("review19-standby-short-stalls");
}
