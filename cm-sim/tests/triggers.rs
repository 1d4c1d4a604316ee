//! A trigger never delays a decision (SPEC §15): with every event trigger configured — each a
//! script that, in the simulator, never finishes — a failover runs exactly as without them:
//! same timings, same event trace.

use cm_core::config::EventTriggers;
use cm_sim::daemon::Machines;
use cm_sim::run::{RunOptions, run};
use cm_sim::scenario::Scenario;

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_toml_str(&std::fs::read_to_string(path).expect("file")).expect("parses")
}

fn every_trigger() -> EventTriggers {
    let hook = |n: &str| Some(format!("/opt/cm/hooks/{n}"));
    EventTriggers {
        on_start: hook("start"),
        on_stop: hook("stop"),
        on_failover: hook("failover"),
        on_switchover: hook("switchover"),
        on_role_change: hook("role"),
    }
}

/// Triggers the agents ordered, summed from the run's final dump (`triggers=N` per agent; a
/// restarted agent counts from its restart).
fn fired(dump: &str) -> u64 {
    dump.split("triggers=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn hanging_triggers_leave_failover_timings_and_the_trace_unchanged() {
    for name in ["primary-node-crash", "primary-process-killed"] {
        let plain = shipped(name);
        let mut hooked = plain.clone();
        hooked.config.event_triggers = every_trigger();
        for seed in 1..3 {
            let a = run(
                &plain,
                name,
                seed,
                Box::new(Machines),
                RunOptions::default(),
            );
            let b = run(
                &hooked,
                name,
                seed,
                Box::new(Machines),
                RunOptions::default(),
            );
            assert!(
                b.ok(),
                "{name} seed {seed}: {:?} {:?}",
                b.violations,
                b.misses
            );
            assert!(
                a.timings
                    .get("failover_sent_s")
                    .is_some_and(Option::is_some)
                    || a.timings
                        .get("writable_again_s")
                        .is_some_and(Option::is_some),
                "{name}: the run has a failover to compare"
            );
            assert_eq!(a.timings, b.timings, "{name} seed {seed}");
            assert_eq!(a.trace_hash, b.trace_hash, "{name} seed {seed}");
            // Not vacuous: the agents of the hooked run ordered triggers, the others none.
            assert!(fired(&b.dump) > 0, "no trigger fired:\n{}", b.dump);
            assert_eq!(fired(&a.dump), 0, "{}", a.dump);
        }
    }
}
