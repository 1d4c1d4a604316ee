//! Runs the event triggers cm-core decided on (SPEC.md §15): each on its own tokio task through
//! cm-io's script runner — its own process group, stdin closed, SIGKILLed with its group after
//! [`TRIGGER_TIMEOUT`], output kept bounded and written to the log. Nothing waits for a trigger
//! and nothing it does comes back to the agent: the loop only counts it.
//!
//! A trigger's whole process group is also killed when the trigger exits (nothing it put in the
//! background survives it) and, for the triggers still running, when the agent exits.
//!
//! At most [`MAX_RUNNING`] triggers run at once; one more is not started, but logged and
//! counted as failed (a script that hangs every time must not pile up processes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cm_core::agent::{TRIGGER_TIMEOUT, TriggerRun};
use cm_io::script::{self, ScriptOutcome, ScriptSpec};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Triggers running at once, at most.
pub const MAX_RUNNING: u64 = 16;

/// Trigger counters, from the agent's start.
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// Triggers started.
    pub runs: Counter,
    /// Triggers that failed: exit code not 0, killed, timed out, not startable, or not started
    /// because [`MAX_RUNNING`] were running.
    pub failures: Counter,
    /// Triggers running now.
    pub running: AtomicU64,
    /// Their process groups, killed when the agent exits.
    pub groups: script::GroupTracker,
}

impl TriggerStats {
    /// Registers the counters in the agent's metrics registry (`…trigger_runs_total`,
    /// `…trigger_failures_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trigger_runs",
            "Event trigger scripts started (SPEC 15)",
            self.runs.clone(),
        );
        registry.register(
            "trigger_failures",
            "Event triggers that failed: exit code not 0, killed, timed out after 30 s, not startable, or not started because 16 were running",
            self.failures.clone(),
        );
    }
}

/// Starts `run` in the background and returns at once.
pub fn spawn(run: TriggerRun, stats: Arc<TriggerStats>) {
    let name = run.event.key();
    if stats.running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
        stats.running.fetch_sub(1, Ordering::AcqRel);
        stats.failures.inc();
        tracing::error!(trigger = name, instance = %run.instance, program = %run.program,
            "event trigger not started: {MAX_RUNNING} triggers are still running");
        return;
    }
    stats.runs.inc();
    let mut spec = ScriptSpec::new(&run.program, run.args(), TRIGGER_TIMEOUT);
    // A trigger leaves nothing running behind it, and nothing outlives the agent.
    spec.kill_group_on_exit = true;
    spec.tracker = Some(stats.groups.clone());
    tokio::spawn(async move {
        tracing::info!(trigger = name, command = %spec.display(), "event trigger started");
        let result = script::run(&spec).await;
        stats.running.fetch_sub(1, Ordering::AcqRel);
        let ok = result.outcome == ScriptOutcome::Exited(0);
        if !ok {
            stats.failures.inc();
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use cm_core::agent::TriggerEvent;
    use cm_core::dn::DnRole;
    use cm_core::ids::{InstanceId, Term};

    use super::*;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    fn run(program: String) -> TriggerRun {
        TriggerRun {
            program,
            event: TriggerEvent::Stop,
            instance: InstanceId(6001),
            role: DnRole::Primary,
            term: Term(3),
        }
    }

    /// Kills the process groups whose leaders wrote their pid into the file, when dropped (also
    /// when the test fails).
    struct KillGroupsIn(std::path::PathBuf);

    impl Drop for KillGroupsIn {
        fn drop(&mut self) {
            for pid in std::fs::read_to_string(&self.0).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    async fn settled(stats: &TriggerStats) {
        for _ in 0..200 {
            if stats.running.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the trigger did not finish");
    }

    #[tokio::test]
    async fn a_trigger_gets_its_arguments_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("args");
        let ok = script(
            dir.path(),
            "ok.sh",
            &format!("echo \"$@\" > {}", out.display()),
        );
        let stats = Arc::new(TriggerStats::default());
        spawn(run(ok), Arc::clone(&stats));
        settled(&stats).await;
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "on_stop 6001 primary 3\n"
        );
        assert_eq!((stats.runs.get(), stats.failures.get()), (1, 0));
        let bad = script(dir.path(), "bad.sh", "exit 3");
        spawn(run(bad), Arc::clone(&stats));
        spawn(run("/nonexistent/trigger".into()), Arc::clone(&stats));
        settled(&stats).await;
        assert_eq!((stats.runs.get(), stats.failures.get()), (3, 2));
        let mut registry = Registry::with_prefix("cm_agent");
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("cm_agent_trigger_failures_total 2"), "{text}");
        assert!(
            text.contains("# HELP cm_agent_trigger_runs Event trigger"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn spawning_returns_at_once_and_beyond_the_limit_a_trigger_is_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let hang = script(
            dir.path(),
            "hang.sh",
            &format!("echo $$ >> {}\nexec sleep 600", pids.display()),
        );
        let stats = Arc::new(TriggerStats::default());
        let kill = KillGroupsIn(pids.clone());
        let started = std::time::Instant::now();
        for _ in 0..MAX_RUNNING + 1 {
            spawn(run(hang.clone()), Arc::clone(&stats));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "spawn waited");
        assert_eq!(stats.runs.get(), MAX_RUNNING);
        assert_eq!(stats.failures.get(), 1);
        assert_eq!(stats.running.load(Ordering::Acquire), MAX_RUNNING);
        // Every hanging script wrote its pid; kill their process groups.
        for _ in 0..200 {
            let n = std::fs::read_to_string(&pids)
                .unwrap_or_default()
                .lines()
                .count();
            if n as u64 == MAX_RUNNING {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(kill);
        settled(&stats).await;
        assert_eq!(
            stats.failures.get(),
            1 + MAX_RUNNING,
            "killed ones count as failed"
        );
    }

    #[tokio::test]
    async fn what_a_trigger_puts_in_the_background_is_killed_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child");
        let bg = script(
            dir.path(),
            "bg.sh",
            &format!("sleep 600 & echo $! > {}", pidfile.display()),
        );
        let stats = Arc::new(TriggerStats::default());
        spawn(run(bg), Arc::clone(&stats));
        settled(&stats).await;
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = || {
            cm_io::process::proc_state(child).is_some_and(|s| s != cm_core::dn::ProcState::Zombie)
        };
        for _ in 0..100 {
            if !alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let survived = alive();
        if survived {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(!survived, "the trigger's background child outlived it");
        assert!(stats.groups.running().is_empty());
    }
}
