//! Disk usage (statvfs) and the write + fsync + read-back probe, on real files.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use cm_io::disk::{self, DiskProber, ProbeOutcome};

#[test]
fn usage_is_a_percentage_of_the_real_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let pct = disk::usage_pct(dir.path()).unwrap();
    assert!(pct <= 100);
    // The same filesystem seen through a file path gives the same answer.
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    assert_eq!(
        disk::usage_pct(&f).unwrap(),
        disk::usage_pct(dir.path()).unwrap()
    );
}

#[test]
fn usage_of_a_missing_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = disk::usage_pct(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn data_dir_paths_follow_symlinked_subdirectories_and_tablespaces() {
    let data = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir(data.path().join("base")).unwrap();
    fs::create_dir(data.path().join("global")).unwrap();
    fs::create_dir(elsewhere.path().join("wal")).unwrap();
    fs::create_dir(elsewhere.path().join("ts")).unwrap();
    symlink(elsewhere.path().join("wal"), data.path().join("pg_wal")).unwrap();
    fs::create_dir(data.path().join("pg_tblspc")).unwrap();
    symlink(
        elsewhere.path().join("ts"),
        data.path().join("pg_tblspc/16384"),
    )
    .unwrap();
    symlink(
        elsewhere.path().join("gone"),
        data.path().join("pg_tblspc/16385"),
    )
    .unwrap();
    symlink(elsewhere.path().join("ts"), data.path().join("pg_stat_tmp")).unwrap();

    let paths = disk::data_dir_paths(data.path()).unwrap();
    for p in [
        "",
        "base",
        "global",
        "pg_wal",
        "pg_tblspc/16384",
        "pg_tblspc/16385",
        "pg_stat_tmp",
    ] {
        let want = if p.is_empty() {
            data.path().to_path_buf()
        } else {
            data.path().join(p)
        };
        assert!(paths.contains(&want), "{want:?} missing from {paths:?}");
    }
    // The dangling tablespace link is skipped, not an error.
    let pct = disk::data_dir_usage_pct(data.path()).unwrap();
    let expected = [data.path(), elsewhere.path()]
        .iter()
        .map(|p| disk::usage_pct(p).unwrap())
        .max()
        .unwrap();
    assert_eq!(pct, expected);
}

#[tokio::test]
async fn a_probe_of_a_healthy_directory_is_ok_and_leaves_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let prober = DiskProber::new(dir.path(), Duration::from_secs(30));
    assert_eq!(prober.probe().await, ProbeOutcome::Ok);
    assert_eq!(prober.probe().await, ProbeOutcome::Ok);
    assert!(dir.path().join(DiskProber::FILE_NAME).exists());
    assert!(!prober.busy());
}

#[tokio::test]
async fn a_probe_that_cannot_write_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let prober = DiskProber::new(&missing, Duration::from_secs(30));
    match prober.probe().await {
        ProbeOutcome::Failed(why) => {
            assert!(why.contains(&missing.display().to_string()), "{why}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_probe_is_hung_and_blocks_further_probes_until_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // Opening a FIFO for writing blocks until a reader opens it: a disk that never answers.
    let fifo = dir.path().join("probe.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let prober = DiskProber::with_file(fifo.clone(), Duration::from_millis(50));
    assert_eq!(prober.probe().await, ProbeOutcome::Hung);
    assert!(prober.busy());
    // The stuck thread is still there: no second thread is started.
    assert_eq!(prober.probe().await, ProbeOutcome::Hung);

    // Unblock the stuck thread by reading the FIFO; it then finishes (fsync of a FIFO fails).
    let reader = std::thread::spawn(move || fs::read(&fifo));
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while prober.busy() {
        assert!(
            std::time::Instant::now() < give_up,
            "probe thread never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.join().unwrap().unwrap();
    // The disk answers again: a prober of a healthy directory is Ok.
    let prober = DiskProber::new(dir.path(), Duration::from_secs(30));
    assert_eq!(prober.probe().await, ProbeOutcome::Ok);
}

/// Issue 18 (defects 1, 6): the probe of a data directory is written beside it, never inside
/// (pg_rewind copied a root-owned probe file and failed on it; pg_basebackup found an emptied
/// directory refilled by it), and it is owned by the database's OS user.
#[tokio::test]
async fn the_probe_of_a_data_directory_is_beside_it_and_owned_by_the_database_user() {
    use std::os::unix::fs::MetadataExt as _;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data1");
    fs::create_dir(&data).unwrap();
    let file = disk::probe_file_for(&data);
    assert_eq!(file, root.path().join(".cm_disk_probe.data1"));
    assert!(!file.starts_with(&data));
    // Root (as the tests and the agent run) hands the file to another user; anyone else can
    // only hand it to itself.
    let owner = if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        (nobody.uid, nobody.gid)
    } else {
        (nix::unistd::Uid::effective(), nix::unistd::Gid::effective())
    };
    let prober = DiskProber::for_data_dir(&data, Duration::from_secs(30), owner);
    assert_eq!(prober.file(), file.as_path());
    assert_eq!(prober.probe().await, ProbeOutcome::Ok);
    assert_eq!(prober.probe().await, ProbeOutcome::Ok);
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (owner.0.as_raw(), owner.1.as_raw())
    );
    assert_eq!(
        fs::read_dir(&data).unwrap().count(),
        0,
        "nothing inside the data directory"
    );
}

#[test]
fn a_data_directory_not_created_yet_is_probed_beside_it_and_a_bare_name_inside() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("later");
    assert_eq!(
        disk::probe_file_for(&data),
        root.path().join(".cm_disk_probe.later")
    );
    assert_eq!(
        disk::probe_file_for(std::path::Path::new("/")),
        std::path::Path::new("/pg_stat_tmp/.cm_disk_probe")
    );
}
