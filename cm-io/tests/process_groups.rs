//! Process control against real processes: groups, states from /proc, kill and reap, adoption.

use std::process::Command;
use std::time::Duration;

use cm_core::dn::ProcState;
use cm_io::process::{
    OsUser, PostmasterPid, Supervised, group_members, proc_state, remove_stale_pid_file,
    start_ticks,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills whatever a test started, even when an assertion fails.
struct Guard(Vec<Supervised>);

impl Drop for Guard {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = s.kill_group(Duration::from_secs(2));
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// SPEC §3 "Kill means fence": every process of the instance, also the descendants that left
/// its process group (PostgreSQL's backends each call `setsid`), is killed and confirmed.
#[test]
fn kill_reaches_descendants_that_lead_sessions_of_their_own() {
    let child = Supervised::spawn(sh("setsid sleep 30 & wait"), None).expect("spawn");
    let guard = Guard(vec![child.clone()]);
    let mut escaped = None;
    wait_until("a child in a session of its own", || {
        escaped = cm_io::process::all_pids().into_iter().find(|p| {
            cm_io::process::read_stat(*p).is_some_and(|s| s.ppid == child.pid() && s.pgrp == s.pid)
        });
        escaped.is_some()
    });
    let escaped = escaped.unwrap();
    let start = start_ticks(escaped).expect("its start time");
    // Not a member of the leader's group: a group kill alone would miss it.
    assert!(group_members(child.pid()).iter().all(|m| m.pid != escaped));
    child.kill_group(Duration::from_secs(5)).expect("fenced");
    wait_until("the escaped child gone", || {
        start_ticks(escaped) != Some(start) || proc_state(escaped) == Some(ProcState::Zombie)
    });
    drop(guard);
}

#[test]
fn spawned_child_leads_its_own_group_and_is_reaped_when_killed() {
    let child = Supervised::spawn(sh("sleep 30 & sleep 30 & wait"), None).expect("spawn");
    let guard = Guard(vec![child.clone()]);
    wait_until("3 group members", || group_members(child.pid()).len() == 3);
    let members = group_members(child.pid());
    assert!(
        members.iter().all(|m| m.state == ProcState::Running),
        "{members:?}"
    );

    let left = child.kill_group(Duration::from_secs(5)).expect("fenced");
    assert!(
        left.iter().all(|m| m.state == ProcState::Zombie),
        "{left:?}"
    );
    assert!(!child.is_alive());
    assert!(child.exit_status().is_some(), "the leader was reaped");
    // Reaped: the leader's pid no longer exists at all (no zombie of ours).
    assert_eq!(proc_state(child.pid()), None);
    drop(guard);
}

#[test]
fn sigstop_shows_as_stopped_and_sigcont_as_running() {
    let child = Supervised::spawn(sh("exec sleep 30"), None).expect("spawn");
    let _guard = Guard(vec![child.clone()]);
    let pid = Pid::from_raw(child.pid());
    kill(pid, Signal::SIGSTOP).expect("stop");
    wait_until("state T", || {
        proc_state(child.pid()) == Some(ProcState::Stopped)
    });
    assert_eq!(group_members(child.pid())[0].state, ProcState::Stopped);
    kill(pid, Signal::SIGCONT).expect("cont");
    wait_until("running", || {
        proc_state(child.pid()) == Some(ProcState::Running)
    });
    // A stopped group is still killed: SIGKILL needs no SIGCONT.
    kill(pid, Signal::SIGSTOP).expect("stop");
    child.kill_group(Duration::from_secs(5)).expect("fenced");
    assert!(!child.is_alive());
}

#[test]
fn exited_child_is_reaped_without_anyone_waiting() {
    let child = Supervised::spawn(sh("exit 3"), None).expect("spawn");
    assert!(child.wait_exit(Duration::from_secs(5)));
    assert_eq!(child.exit_status().and_then(|s| s.code()), Some(3));
    assert_eq!(proc_state(child.pid()), None, "no zombie left behind");
}

#[test]
fn runs_as_the_given_os_user() {
    let Ok(user) = OsUser::lookup("postgres") else {
        eprintln!("skipped: no `postgres` OS user on this machine");
        return;
    };
    let dir = std::env::temp_dir().join(format!("cm-io-proc-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    user.chown(&dir).expect("chown");
    let out = dir.join("id");
    let child =
        Supervised::spawn(sh(&format!("id -u > {}", out.display())), Some(&user)).expect("spawn");
    assert!(child.wait_exit(Duration::from_secs(5)));
    let uid = std::fs::read_to_string(&out).expect("output");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(uid.trim(), user.uid.to_string());
}

#[test]
fn adoption_checks_the_start_time_not_just_the_pid() {
    let child = Supervised::spawn(sh("exec sleep 30"), None).expect("spawn");
    let _guard = Guard(vec![child.clone()]);
    let ticks = start_ticks(child.pid()).expect("ticks");
    let adopted = Supervised::adopt(child.pid(), ticks).expect("same process");
    assert!(adopted.is_alive());
    assert!(!adopted.is_child());
    assert!(
        Supervised::adopt(child.pid(), ticks + 1).is_none(),
        "recycled pid refused"
    );
    adopted.kill_group(Duration::from_secs(5)).expect("fenced");
    assert!(!child.is_alive());
}

#[test]
fn stale_pid_file_of_a_dead_or_recycled_postmaster_is_removed_live_one_kept() {
    let dir = std::env::temp_dir().join(format!("cm-io-pidfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = sh("exec sleep 30");
    cmd.current_dir(&dir);
    let child = Supervised::spawn(cmd, None).expect("spawn");
    let _guard = Guard(vec![child.clone()]);
    let write = |pid: u32| {
        let text = format!("{pid}\n{}\n1\n5432\n", dir.display());
        std::fs::write(dir.join("postmaster.pid"), text).expect("write")
    };
    write(child.pid() as u32);
    assert!(
        !remove_stale_pid_file(&dir).expect("check"),
        "live postmaster: kept"
    );
    assert_eq!(PostmasterPid::read(&dir).map(|f| f.pid), Some(child.pid()));
    // A live process working elsewhere holds a recycled pid: the file is stale.
    write(std::process::id());
    assert!(
        remove_stale_pid_file(&dir).expect("check"),
        "recycled pid: removed"
    );
    write(child.pid() as u32);
    child.kill_group(Duration::from_secs(5)).expect("fenced");
    assert!(
        remove_stale_pid_file(&dir).expect("check"),
        "dead postmaster: removed"
    );
    assert!(!dir.join("postmaster.pid").exists());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The group walked from its live leader (issue 16: no full /proc scan per sample) holds the
/// same processes as a full scan: grandchildren in the group are members, a child that left
/// for a session of its own (as every PostgreSQL child does) is not; once the leader is killed
/// alone, its re-parented children are still found.
#[test]
fn group_walk_from_the_leader_matches_a_full_scan() {
    let child = Supervised::spawn(
        sh("sh -c 'sleep 30 & wait' & setsid sleep 30 & sleep 30 & wait"),
        None,
    )
    .expect("spawn");
    let guard = Guard(vec![child.clone()]);
    let pgid = child.pid();
    // Leader, the inner sh, its sleep and the plain sleep: 4 members; the setsid one is not.
    wait_until("4 group members", || group_members(pgid).len() == 4);
    let scan: Vec<i32> = cm_io::process::all_pids()
        .into_iter()
        .filter_map(cm_io::process::read_stat)
        .filter(|s| s.pgrp == pgid)
        .map(|s| s.pid)
        .collect();
    let mut scan = scan;
    scan.sort_unstable();
    let walked: Vec<i32> = group_members(pgid).iter().map(|m| m.pid).collect();
    assert_eq!(walked, scan);
    let outsider = cm_io::process::all_pids()
        .into_iter()
        .filter_map(cm_io::process::read_stat)
        .find(|s| s.ppid == pgid && s.pgrp != pgid)
        .expect("the setsid child");

    kill(Pid::from_raw(pgid), Signal::SIGKILL).expect("kill the leader alone");
    wait_until("the leader gone", || !child.is_alive());
    let orphans = group_members(pgid);
    assert_eq!(orphans.len(), 3, "re-parented members: {orphans:?}");
    child.kill_group(Duration::from_secs(5)).expect("fenced");
    let _ = kill(Pid::from_raw(outsider.pid), Signal::SIGKILL);
    drop(guard);
}
