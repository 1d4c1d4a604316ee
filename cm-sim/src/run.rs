//! One run of a scenario: the safety phase with its faults, then (optionally) the liveness phase
//! with every fault healed; the report carries violations, timings and expectation misses.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::Instant;

use crate::check::Violation;
pub use crate::check::liveness::liveness_problem;
use crate::daemon::DaemonFactory;
use crate::scenario::{Expect, Scenario, TIMING_NAMES};
use crate::world::World;

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The scenario's path or name, as given to `run`.
    pub source: String,
    /// Seed.
    pub seed: u64,
    /// Invariant violations.
    pub violations: Vec<Violation>,
    /// Expectations that did not hold.
    pub misses: Vec<String>,
    /// Timing figures (SPEC §12 names), null when absent.
    pub timings: BTreeMap<&'static str, Option<f64>>,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Hash of the event trace (determinism).
    pub trace_hash: u64,
    /// Seconds the liveness phase took to converge (None: no liveness phase or no convergence).
    pub liveness_s: Option<f64>,
    /// Notable events.
    pub timeline: Vec<String>,
    /// Per-node state at the end (or at the first violation).
    pub dump: String,
    /// Acknowledged writes.
    pub acked_writes: u64,
}

impl Report {
    /// Whether the run passed (no violation, no miss).
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.misses.is_empty()
    }

    /// The command that reproduces this run.
    pub fn repro(&self) -> String {
        format!(
            "cargo run -p cm-sim --release -- run {} --seed {}",
            self.source, self.seed
        )
    }
}

/// Options of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Print every event.
    pub trace: bool,
}

/// The liveness bound of SPEC §13: max(60 s, split-brain timeout + 2 × max election timeout,
/// the longest build), plus the host boot time and the scenario's slack.
pub fn liveness_bound(s: &Scenario) -> Duration {
    let p = &s.config.params;
    let cms = s.config.cms_nodes().len();
    let longest_build = Duration::from_secs_f64(s.db.rewind_ms[1].max(0.0) / 1000.0);
    let sbt = p.split_brain_timeout(cms) + 2 * p.election_timeout_max();
    let core = Duration::from_secs(60).max(sbt).max(longest_build);
    core + Duration::from_secs_f64(s.sim.boot_s + s.sim.liveness_slack_s)
}

/// Runs a scenario with a seed.
pub fn run(
    scenario: &Scenario,
    source: &str,
    seed: u64,
    factory: Box<dyn DaemonFactory>,
    opts: RunOptions,
) -> Report {
    let mut w = World::new(scenario.clone(), seed, factory);
    w.verbose = opts.trace;
    let safety_end = Instant::ZERO + scenario.duration;
    w.run_until(safety_end, &mut |_| false);
    let mut liveness_s = None;
    if scenario.liveness {
        w.heal_all();
        let mut bound = liveness_bound(scenario);
        // A DN whose recovery still stalls "starting up" (`stall_recovery`) is damaged data
        // that no heal cures: SPEC §13's bound presumes healed faults and counts one Build. The
        // core cures it in two start bounds from its latest start (a rewind after the first,
        // a full copy after the second, `standby-recovery-stalls`), each seen a heartbeat
        // timeout late, plus that copy (one Build, counted already).
        if w.dbs.instances.values().any(|i| i.recovery_stalls) {
            let p = &scenario.config.params;
            bound += 2 * (p.dn_start_bound() + p.instance_heartbeat_timeout());
        }
        let mut next_check = safety_end;
        let converged = w.run_until(safety_end + bound, &mut |w| {
            if w.now() < next_check {
                return false;
            }
            next_check = w.now() + Duration::from_millis(100);
            liveness_problem(w).is_none()
        });
        if converged {
            liveness_s = Some((w.now() - safety_end).as_secs_f64());
        } else {
            let why = liveness_problem(&w).unwrap_or_default();
            let now = w.now();
            let m = format!(
                "L: not converged {} s after healing: {why}",
                bound.as_secs()
            );
            w.checker.violate(now, "L", m);
        }
    }
    let end = w.now();
    w.checker.finish(end);
    let hb = scenario.config.params.instance_heartbeat_timeout();
    let timings = w.checker.timings(hb, end);
    let misses = expectation_misses(scenario, &timings);
    for c in std::mem::take(&mut w.checker.conceded) {
        w.timeline.push(format!(
            "{:.3} REPORTED (two-node mode, both sides reach the gateway, SPEC §5.4): {}",
            c.at.as_secs_f64(),
            c.message
        ));
    }
    Report {
        scenario: scenario.name.clone(),
        source: source.to_owned(),
        seed,
        violations: w.checker.violations.clone(),
        misses,
        timings,
        sim_seconds: end.as_secs_f64(),
        events: w.events,
        trace_hash: w.trace.0,
        liveness_s,
        timeline: std::mem::take(&mut w.timeline),
        dump: w.dump(),
        acked_writes: w.checker.acks_total,
    }
}

/// Every expectation of the scenario that the timings break.
pub fn expectation_misses(
    s: &Scenario,
    timings: &BTreeMap<&'static str, Option<f64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in TIMING_NAMES {
        let Some(e) = s.expect.get(*name) else {
            continue;
        };
        let got = timings.get(name).copied().flatten();
        match (e, got) {
            (Expect::Never, Some(v)) => out.push(format!("{name} = {v:.3}, expected never")),
            (Expect::Within(lo, hi), None) => {
                out.push(format!("{name} = null, expected [{lo}, {hi}]"))
            }
            (Expect::Within(lo, hi), Some(v)) if v < *lo || v > *hi => {
                out.push(format!("{name} = {v:.3}, expected [{lo}, {hi}]"));
            }
            _ => {}
        }
    }
    out
}
