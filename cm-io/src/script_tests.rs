use std::time::Duration;

use super::*;

fn sh(body: &str, timeout_ms: u64) -> ScriptSpec {
    ScriptSpec::new(
        "/bin/sh",
        vec!["-c".into(), body.into()],
        Duration::from_millis(timeout_ms),
    )
}

fn pid_alive(pid: i32) -> bool {
    crate::process::proc_state(pid).is_some_and(|s| s != cm_core::dn::ProcState::Zombie)
}

#[tokio::test]
async fn exit_codes_and_output_come_back() {
    let r = run(&sh("echo hello; echo oops >&2; exit 3", 10_000)).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(3));
    assert_eq!(r.outcome.code(), Some(3));
    assert_eq!(r.stdout.head, b"hello\n");
    assert_eq!(r.stderr.head, b"oops\n");
    assert_eq!(r.stdout.dropped, 0);
    // A garbage code is still just a code: the core decides what it means.
    let r = run(&sh("exit 77", 10_000)).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(77));
}

#[tokio::test]
async fn arguments_are_passed_one_by_one() {
    let spec = ScriptSpec::new(
        "/bin/sh",
        vec![
            "-c".into(),
            "printf '%s|' \"$@\"".into(),
            "sh".into(),
            "-check".into(),
            "7".into(),
            "a b".into(),
        ],
        Duration::from_secs(10),
    );
    let r = run(&spec).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    assert_eq!(r.stdout.head, b"-check|7|a b|");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure_not_a_panic() {
    let spec = ScriptSpec::new("/nonexistent/cm-script", vec![], Duration::from_secs(1));
    let r = run(&spec).await;
    match r.outcome {
        ScriptOutcome::SpawnFailed(msg) => assert!(msg.contains("/nonexistent/cm-script"), "{msg}"),
        other => panic!("expected a spawn failure, got {other:?}"),
    }
}

#[tokio::test]
async fn megabytes_of_output_are_bounded_and_counted() {
    // 4 MiB on stdout, 1 MiB on stderr.
    let r = run(&sh(
        "head -c 4194304 /dev/zero; head -c 1048576 /dev/zero >&2; exit 0",
        20_000,
    ))
    .await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    assert_eq!(r.stdout.head.len(), DEFAULT_OUTPUT_LIMIT);
    assert_eq!(r.stdout.dropped, 4_194_304 - DEFAULT_OUTPUT_LIMIT as u64);
    assert_eq!(r.stderr.head.len(), DEFAULT_OUTPUT_LIMIT);
    assert_eq!(r.stderr.dropped, 1_048_576 - DEFAULT_OUTPUT_LIMIT as u64);
    assert!(r.stdout.summary().contains("more bytes dropped"));
}

#[tokio::test]
async fn a_hung_script_is_killed_with_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let body = format!(
        "sleep 600 & echo $! > {}; echo started; wait",
        pidfile.display()
    );
    let r = run(&sh(&body, 300)).await;
    assert_eq!(r.outcome, ScriptOutcome::TimedOut);
    assert_eq!(r.stdout.head, b"started\n");
    assert!(r.elapsed >= Duration::from_millis(300), "{:?}", r.elapsed);
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is delivered at once; reaping by init may take a moment.
    for _ in 0..100 {
        if !pid_alive(grandchild) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the script's background child {grandchild} survived the timeout kill");
}

#[tokio::test]
async fn a_background_daemon_holding_stdout_neither_blocks_nor_dies() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon");
    // The daemon inherits stdout and stays: the runner returns when the script exits.
    let body = format!("sleep 600 & echo $! > {}; echo up", pidfile.display());
    let r = run(&sh(&body, 30_000)).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    assert!(
        r.elapsed < Duration::from_secs(20),
        "waited for the daemon: {:?}",
        r.elapsed
    );
    let daemon: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(daemon), "a successful -start's daemon was killed");
    let _ = nix::sys::signal::kill(Pid::from_raw(daemon), Signal::SIGKILL);
}

#[tokio::test]
async fn a_daemon_writing_after_the_drain_is_not_killed_by_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("mark");
    // The daemon writes to the inherited stdout well after the drain (200 ms) ended, then
    // leaves a mark: with the readers aborted, that write would kill it with SIGPIPE.
    let body = format!(
        "(sleep 0.6; echo late; echo late >&2; echo alive > {}) & echo up",
        mark.display()
    );
    let r = run(&sh(&body, 30_000)).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    assert_eq!(r.stdout.head, b"up\n");
    let mut waited = Duration::ZERO;
    while !mark.exists() && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert!(mark.exists(), "the daemon died writing to its stdout");
}

#[tokio::test]
async fn a_script_run_as_another_user_keeps_none_of_roots_groups() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let user = OsUser::lookup("nobody").expect("the nobody user");
    let mut spec = sh("id -u; id -G", 10_000);
    spec.user = Some(user.clone());
    let r = run(&spec).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&r.stdout.head),
        format!("{}\n{}\n", user.uid, user.gid),
        "uid, then the primary gid alone (no supplementary group of root)"
    );
}

#[tokio::test]
async fn a_hung_script_does_not_hold_up_other_work() {
    let hung = tokio::spawn(async { run(&sh("sleep 600", 2_000)).await });
    let quick = run(&sh("exit 0", 10_000)).await;
    assert_eq!(quick.outcome, ScriptOutcome::Exited(0));
    assert!(
        !hung.is_finished(),
        "the hung script ended before its timeout"
    );
    assert_eq!(hung.await.unwrap().outcome, ScriptOutcome::TimedOut);
}

#[test]
fn captured_keeps_the_head_and_counts_the_rest() {
    let mut c = Captured::default();
    c.push(b"abc", 4);
    c.push(b"defg", 4);
    assert_eq!(c.head, b"abcd");
    assert_eq!(c.dropped, 3);
    assert_eq!(c.summary(), "abcd [... 3 more bytes dropped]");
}

async fn gone(pid: i32) -> bool {
    for _ in 0..100 {
        if !pid_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn kill_group_on_exit_leaves_no_background_child_and_the_tracker_kills_running_groups() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child");
    let body = format!("sleep 600 & echo $! > {}; echo up", pidfile.display());
    let mut spec = sh(&body, 30_000);
    spec.kill_group_on_exit = true;
    let tracker = GroupTracker::default();
    spec.tracker = Some(tracker.clone());
    let r = run(&spec).await;
    assert_eq!(r.outcome, ScriptOutcome::Exited(0));
    let child: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let survived = !gone(child).await;
    if survived {
        let _ = nix::sys::signal::kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    assert!(
        !survived,
        "the background child {child} outlived its script"
    );
    assert!(tracker.running().is_empty());

    // A script still running is registered; its owner's exit kills its group.
    let mut hung = sh("sleep 600", 60_000);
    hung.tracker = Some(tracker.clone());
    let task = tokio::spawn(async move { run(&hung).await });
    let mut pgid = None;
    for _ in 0..100 {
        pgid = tracker.running().first().copied();
        if pgid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pgid = pgid.expect("the running script is registered");
    tracker.kill_all();
    let r = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the killed script did not end")
        .unwrap();
    assert_eq!(r.outcome, ScriptOutcome::Signaled(9));
    assert!(gone(pgid).await);
}
