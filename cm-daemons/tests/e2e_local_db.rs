//! End-to-end: the launcher's database creation on real PostgreSQL (no daemon needed): DN 1 is
//! initdb'd, DNs 2 and 3 are base backups of it naming their own `application_name`, and
//! nothing is left running.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use cm_daemons::local::{DEFAULT_PG_BIN, Paths, Ports, db, instance_of, procs};

#[test]
fn e2e_local_db_three_data_directories_from_one_initdb() {
    if !Path::new(DEFAULT_PG_BIN).join("initdb").exists() {
        eprintln!("skipped: no PostgreSQL in {DEFAULT_PG_BIN}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = Paths {
        dir: t.path().to_path_buf(),
    };
    let ports = Ports::pick().unwrap();
    db::create_databases(&paths, &ports, Path::new(DEFAULT_PG_BIN), false).expect("databases");
    let pg_uid = cm_io::process::OsUser::lookup("postgres")
        .unwrap()
        .uid
        .as_raw();
    for n in 1..=3 {
        let d = paths.data_dir(n);
        assert!(d.join("PG_VERSION").exists(), "{}", d.display());
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), pg_uid);
        assert!(procs::postmaster_pid(&d).is_none(), "DN {n} left running");
        let standby = d.join("standby.signal").exists();
        assert_eq!(standby, n != 1, "standby.signal of DN {n}");
        if n != 1 {
            let auto = std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap();
            let want = format!("application_name=dn_{}", instance_of(n));
            assert!(auto.contains(&want), "{auto}");
        }
        // §16: the database password, not trust, and the same passfile on every node.
        let hba = std::fs::read_to_string(d.join("pg_hba.conf")).unwrap();
        assert!(
            hba.lines()
                .all(|l| l.trim_start().starts_with('#') || !l.contains("trust")),
            "{hba}"
        );
        let passfile = cm_io::postgres::credential::passfile_path(&paths.state_dir(n));
        let meta = std::fs::metadata(&passfile).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (pg_uid, 0o600));
        assert_eq!(
            std::fs::read(&passfile).unwrap(),
            std::fs::read(cm_io::postgres::credential::passfile_path(
                &paths.state_dir(1)
            ))
            .unwrap()
        );
        let conf = std::fs::read_to_string(d.join("postgresql.conf")).unwrap();
        assert!(conf.contains("fsync = off"));
        assert!(conf.contains("wal_keep_size = 256MB"));
    }
}

/// Issue 17 item 7: every binary answers `-V` (and `--version`) with its name and the crate's
/// version, exit 0, without a config.
#[test]
fn every_binary_answers_dash_v_with_its_name_and_version() {
    let bins = [
        ("om_monitor", env!("CARGO_BIN_EXE_om_monitor")),
        ("cm_agent", env!("CARGO_BIN_EXE_cm_agent")),
        ("cm_server", env!("CARGO_BIN_EXE_cm_server")),
        ("cm_ctl", env!("CARGO_BIN_EXE_cm_ctl")),
        ("cm_local", env!("CARGO_BIN_EXE_cm_local")),
    ];
    for (name, path) in bins {
        for flag in ["-V", "--version"] {
            let out = std::process::Command::new(path).arg(flag).output().unwrap();
            assert!(out.status.success(), "{name} {flag}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("{name} {}", env!("CARGO_PKG_VERSION")),
                "{name} {flag}"
            );
        }
    }
}

/// A `cm_local up` launcher in its own process group, reaped by a thread as soon as it exits
/// (`cm_local down` waits for the launcher's process to be gone, zombie included); torn down
/// (without keeping anything) and killed when dropped, also when the test fails.
struct Launcher {
    pid: i32,
    exited: std::sync::mpsc::Receiver<std::process::ExitStatus>,
    dir: std::path::PathBuf,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if self.exited.try_recv().is_err() {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_cm_local"))
                .args(["down", "--dir"])
                .arg(&self.dir)
                .output();
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for pgrp in procs::cluster_groups(&self.dir.join("cluster.toml"), &[]) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgrp),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Issue 17 item 7: `cm_local down --dir X --keep` keeps X when the running launcher was
/// started without `--keep` (the flag of `down` wins): the launcher tears the cluster down
/// (no process of it is left) and leaves the data and logs.
#[test]
fn e2e_local_down_keep_through_a_running_launcher_keeps_the_directory() {
    use std::io::{BufRead as _, BufReader};
    if !Path::new(DEFAULT_PG_BIN).join("initdb").exists() {
        eprintln!("skipped: no PostgreSQL in {DEFAULT_PG_BIN}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = t.path().join("cluster");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cm_local"))
        .args(["up", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, exited) = std::sync::mpsc::channel();
    let pid = i32::try_from(child.id()).unwrap();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(status);
        }
    });
    let launcher = Launcher {
        pid,
        exited,
        dir: dir.clone(),
    };
    // Up once it prints its hints (bounded by the launcher's own 120 s wait for Normal).
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("The cluster is") || line.contains("tearing down") {
            break;
        }
    }
    // The launcher prints until it exits: keep its stdout open and drained.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    assert!(seen.contains("The cluster is"), "cm_local up:\n{seen}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cm_local"))
        .args(["down", "--keep", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("asking the launcher"),
        "down went through the launcher: {out:?}"
    );
    let status = launcher
        .exited
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the launcher exited");
    let rest = rest.join().unwrap().join("\n");
    assert!(
        status.success(),
        "launcher exit: {status}; its output:\n{rest}"
    );
    for n in 1..=3 {
        assert!(
            paths_of(&dir).data_dir(n).join("PG_VERSION").exists(),
            "DN {n} kept"
        );
    }
    assert!(dir.join("cluster.toml").exists() && dir.join("logs").is_dir());
    assert!(
        !dir.join(cm_daemons::local::KEEP_MARKER).exists(),
        "marker consumed"
    );
    assert!(
        procs::cluster_groups(&dir.join("cluster.toml"), &[]).is_empty(),
        "no process of the cluster is left"
    );
}

fn paths_of(dir: &Path) -> Paths {
    Paths {
        dir: dir.to_path_buf(),
    }
}
