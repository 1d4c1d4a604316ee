//! Finding and killing the processes of a local cluster through /proc. Every daemon and every
//! postmaster leads its own process group, so a node is killed by killing the groups of its
//! om_monitor's process tree plus its postmasters' groups — all at once, as a crash would.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// One process as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: i32,
    /// Its parent.
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// Its state letter.
    pub state: char,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
}

/// Parses `/proc/<pid>/stat` (the command name may contain spaces and parentheses, so fields
/// are counted after the last `)`).
pub fn parse_stat(text: &str) -> Option<(i32, char, i32, i32)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((pid, state, ppid, pgrp))
}

/// Every process now.
pub fn snapshot() -> Vec<ProcInfo> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, state, ppid, pgrp)) = parse_stat(&stat) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push(ProcInfo {
            pid,
            ppid,
            pgrp,
            state,
            cmdline,
        });
    }
    out
}

/// `root` and every process below it.
pub fn descendants(procs: &[ProcInfo], root: i32) -> Vec<&ProcInfo> {
    let mut found: BTreeSet<i32> = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for p in procs {
            if found.contains(&p.ppid) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    procs.iter().filter(|p| found.contains(&p.pid)).collect()
}

/// The pid of the live postmaster of a data directory.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    cm_io::process::adopt_postmaster(data_dir).map(|(s, _)| s.pid())
}

/// The process group of a pid.
pub fn pgrp_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, _, _, g)| g)
}

/// The process groups of one node: its om_monitor's tree (agent, server, anything they
/// spawned) and the postmasters of its data directories.
pub fn node_groups(monitor_pid: Option<i32>, data_dirs: &[PathBuf]) -> BTreeSet<i32> {
    let procs = snapshot();
    let mut groups = BTreeSet::new();
    if let Some(m) = monitor_pid {
        groups.extend(descendants(&procs, m).iter().map(|p| p.pgrp));
    }
    groups.extend(
        data_dirs
            .iter()
            .filter_map(|d| postmaster_pid(d))
            .filter_map(pgrp_of),
    );
    groups
}

/// The process groups of every process whose command line names `config` (the daemons all
/// get `-c <config>`), plus the postmasters of `data_dirs`.
pub fn cluster_groups(config: &Path, data_dirs: &[PathBuf]) -> BTreeSet<i32> {
    let want = crate::ctl::check::canonical(Path::new("/"), &config.display().to_string());
    let mut groups: BTreeSet<i32> = snapshot()
        .iter()
        .filter(|p| {
            // However it was started: `-c /abs/cluster.toml`, `-c cluster.toml` in the
            // cluster directory, `--config=../x/cluster.toml`, ...
            let args: Vec<String> = p.cmdline.split(' ').map(str::to_owned).collect();
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", p.pid))
                .unwrap_or_else(|_| PathBuf::from("/"));
            crate::ctl::check::names_path(args.get(1..).unwrap_or(&[]), &want, &cwd)
        })
        .map(|p| p.pgrp)
        .collect();
    groups.extend(
        data_dirs
            .iter()
            .filter_map(|d| postmaster_pid(d))
            .filter_map(pgrp_of),
    );
    groups
}

/// SIGKILLs every group at once (never our own), then waits up to `timeout` until none has a
/// live (non-zombie) member. Returns the groups that still had one.
pub fn kill_groups(groups: &BTreeSet<i32>, timeout: Duration) -> Vec<i32> {
    let own = pgrp_of(std::process::id() as i32);
    let targets: Vec<i32> = groups
        .iter()
        .copied()
        .filter(|g| *g > 1 && Some(*g) != own)
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        for g in &targets {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
        let procs = snapshot();
        let alive: Vec<i32> = targets
            .iter()
            .copied()
            .filter(|g| procs.iter().any(|p| p.pgrp == *g && p.state != 'Z'))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let s = "4242 (cm agent) (x)) S 17 4242 4242 0 -1 4194560 100";
        assert_eq!(parse_stat(s), Some((4242, 'S', 17, 4242)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("12 (x) R"), None);
    }

    #[test]
    fn descendants_follow_parent_links_transitively() {
        let p = |pid, ppid| ProcInfo {
            pid,
            ppid,
            pgrp: pid,
            state: 'S',
            cmdline: String::new(),
        };
        let procs = vec![p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(20, 1), p(13, 10)];
        let mut got: Vec<i32> = descendants(&procs, 10).iter().map(|p| p.pid).collect();
        got.sort_unstable();
        assert_eq!(got, vec![10, 11, 12, 13]);
    }

    #[test]
    fn a_daemon_started_with_a_relative_config_path_is_found_by_the_cluster_directory() {
        use std::os::unix::process::CommandExt as _;
        let dir = std::env::temp_dir().join(format!("cm-procs-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("cluster.toml");
        std::fs::write(&config, "").unwrap();
        // As an operator restarting a node by hand from the cluster directory:
        // `om_monitor -c cluster.toml` (here `sh -c ... cluster.toml`).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60; :", "cluster.toml"])
            .current_dir(&dir)
            .process_group(0)
            .spawn()
            .unwrap();
        let g = child.id() as i32;
        let mut found = false;
        for _ in 0..200 {
            if cluster_groups(&config, &[]).contains(&g) {
                found = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = kill_groups(&BTreeSet::from([g]), Duration::from_secs(5));
        let _ = child.wait();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(found, "the process of the cluster was not found");
        assert!(left.is_empty());
    }

    #[test]
    fn a_killed_group_is_reported_gone() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let g = child.id() as i32;
        // Reap as soon as it dies so it does not stay a zombie of ours.
        let reaper = std::thread::spawn(move || child.wait());
        let left = kill_groups(&BTreeSet::from([g]), Duration::from_secs(10));
        assert!(left.is_empty(), "{left:?}");
        let status = reaper.join().unwrap().unwrap();
        assert!(!status.success());
    }
}
