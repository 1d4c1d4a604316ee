//! Runs the event triggers cm-core decided on (SPEC.md §15): each on its own tokio task through
//! cm-io's script runner — its own process group, stdin closed, SIGKILLed with its group after
//! [`TRIGGER_TIMEOUT`], output kept bounded and written to the log. Nothing waits for a trigger
//! and nothing it does comes back to the agent: the loop only counts it.
//!
//! At most [`MAX_RUNNING`] triggers run at once; one more is not started, but logged and
//! counted as failed (a script that hangs every time must not pile up processes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cm_core::agent::{TRIGGER_TIMEOUT, TriggerRun};
use cm_io::script::{self, ScriptOutcome, ScriptSpec};

/// Triggers running at once, at most.
pub const MAX_RUNNING: u64 = 16;

/// Trigger counters, from the agent's start (exported as metrics).
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// Triggers started.
    pub runs: AtomicU64,
    /// Triggers that failed: exit code not 0, killed, timed out, not startable, or not started
    /// because [`MAX_RUNNING`] were running.
    pub failures: AtomicU64,
    /// Triggers running now.
    pub running: AtomicU64,
}

/// Starts `run` in the background and returns at once.
pub fn spawn(run: TriggerRun, stats: Arc<TriggerStats>) {
    let name = run.event.key();
    if stats.running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
        stats.running.fetch_sub(1, Ordering::AcqRel);
        stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(trigger = name, instance = %run.instance, program = %run.program,
            "event trigger not started: {MAX_RUNNING} triggers are still running");
        return;
    }
    stats.runs.fetch_add(1, Ordering::Relaxed);
    let spec = ScriptSpec::new(&run.program, run.args(), TRIGGER_TIMEOUT);
    tokio::spawn(async move {
        tracing::info!(trigger = name, command = %spec.display(), "event trigger started");
        let result = script::run(&spec).await;
        stats.running.fetch_sub(1, Ordering::AcqRel);
        let ok = result.outcome == ScriptOutcome::Exited(0);
        if !ok {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        let (out, err) = (result.stdout.summary(), result.stderr.summary());
        if ok {
            tracing::info!(trigger = name, command = %spec.display(), stdout = %out,
                stderr = %err, elapsed_ms = result.elapsed.as_millis() as u64,
                "event trigger finished");
        } else {
            tracing::error!(trigger = name, command = %spec.display(), outcome = ?result.outcome,
                stdout = %out, stderr = %err, elapsed_ms = result.elapsed.as_millis() as u64,
                "event trigger failed");
        }
    });
}
