//! Running the configured `fence_command` (SPEC.md §8): `sh -c COMMAND` with the target in the
//! environment (`CM_FENCE_NODE`, `CM_FENCE_INSTANCE`, `CM_FENCE_GROUP`), in its own process
//! group so that a timeout kills everything it started. Success means exit status 0 within the
//! time limit; anything else (non-zero, signal, timeout, cannot start) is a failure, and the
//! core then waits out the staleness bound of §8 instead.

use std::process::Stdio;
use std::time::Duration;

use cm_core::ids::{GroupId, InstanceId, NodeId};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Whom the fence command fences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The group fenced for.
    pub group: GroupId,
    /// The silent primary.
    pub instance: InstanceId,
    /// Its node.
    pub node: NodeId,
}

/// Most bytes of the command's output kept for the log.
const OUTPUT_LOG_BYTES: usize = 2048;

/// Runs `command` for `target`, bounded by `limit`; true iff it exited 0 in time.
pub async fn run(command: &str, target: Target, limit: Duration) -> bool {
    if command.trim().is_empty() {
        tracing::warn!(
            group = target.group.0,
            "no fence_command configured; nothing run"
        );
        return false;
    }
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CM_FENCE_NODE", target.node.0.to_string())
        .env("CM_FENCE_INSTANCE", target.instance.0.to_string())
        .env("CM_FENCE_GROUP", target.group.0.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%command, "cannot start the fence command: {e}");
            return false;
        }
    };
    let pgid = child.id();
    tracing::warn!(
        %command,
        node = target.node.0,
        instance = target.instance.0,
        group = target.group.0,
        "running the fence command"
    );
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = |b: &[u8]| {
                String::from_utf8_lossy(&b[..b.len().min(OUTPUT_LOG_BYTES)]).into_owned()
            };
            let ok = out.status.success();
            tracing::warn!(
                %command,
                status = %out.status,
                stdout = %text(&out.stdout),
                stderr = %text(&out.stderr),
                success = ok,
                "fence command finished"
            );
            ok
        }
        Ok(Err(e)) => {
            tracing::error!(%command, "fence command failed: {e}");
            false
        }
        Err(_) => {
            if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                // The group may already be gone; there is nothing more to do then.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tracing::error!(%command, limit_s = limit.as_secs(), "fence command timed out; killed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Target = Target {
        group: GroupId(3),
        instance: InstanceId(6002),
        node: NodeId(2),
    };
    const LIMIT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn exit_zero_is_success_and_anything_else_is_failure() {
        assert!(run("exit 0", T, LIMIT).await);
        assert!(!run("exit 3", T, LIMIT).await);
        assert!(!run("kill -9 $$", T, LIMIT).await);
        assert!(!run("   ", T, LIMIT).await);
    }

    #[tokio::test]
    async fn the_target_is_in_the_environment() {
        let check = r#"test "$CM_FENCE_NODE" = 2 && test "$CM_FENCE_INSTANCE" = 6002 && test "$CM_FENCE_GROUP" = 3"#;
        assert!(run(check, T, LIMIT).await);
        assert!(!run(r#"test "$CM_FENCE_NODE" = 1"#, T, LIMIT).await);
    }

    #[tokio::test]
    async fn a_command_over_its_time_limit_fails_and_its_children_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        assert!(!run(&cmd, T, Duration::from_secs(2)).await);
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Patience only: a killed child disappears (or is a zombie awaiting its reaper).
        for _ in 0..200 {
            match std::fs::read_to_string(&stat) {
                Err(_) => return,
                Ok(s)
                    if s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!(
            "the fence command's background child {} survived",
            pid.trim()
        );
    }
}
