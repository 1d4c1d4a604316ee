//! Flag files (SPEC.md §2) in a real temporary state directory.

use std::collections::BTreeMap;
use std::fs;

use cm_core::InstanceId;
use cm_core::dn::StopMode;
use cm_core::flags::{Flag, FlagSet};
use cm_io::flags::FlagDir;
use cm_io::statedir::FileOp;

#[test]
fn an_empty_state_directory_has_no_flags() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(FlagDir::new(dir.path()).read().unwrap(), FlagSet::default());
}

#[test]
fn written_flags_are_read_back_with_their_stop_modes() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagDir::new(dir.path());
    flags
        .write(Flag::ClusterManualStart, StopMode::Immediate)
        .unwrap();
    flags
        .write(Flag::InstanceManualStart(InstanceId(6001)), StopMode::Smart)
        .unwrap();
    flags
        .write(Flag::ClusterManualStarting, StopMode::Fast)
        .unwrap();
    flags.write(Flag::DilatationStatus, StopMode::Fast).unwrap();
    fs::write(dir.path().join("unrelated_file"), b"x").unwrap();
    let set = flags.read().unwrap();
    assert_eq!(
        set,
        FlagSet {
            cluster_manual_start: Some(StopMode::Immediate),
            instance_manual_start: BTreeMap::from([(InstanceId(6001), StopMode::Smart)]),
            cluster_manual_starting: true,
            dilatation: true,
        }
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("cluster_manual_start")).unwrap(),
        "immediate\n"
    );
}

#[test]
fn unreadable_content_of_a_present_flag_means_fast() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cluster_manual_start"), b"\xff\xfe garbage").unwrap();
    fs::write(dir.path().join("instance_manual_start_6002"), b"").unwrap();
    let set = FlagDir::new(dir.path()).read().unwrap();
    assert_eq!(set.cluster_manual_start, Some(StopMode::Fast));
    assert_eq!(
        set.instance_manual_start.get(&InstanceId(6002)),
        Some(&StopMode::Fast)
    );
}

#[test]
fn removing_a_flag_clears_it_and_absent_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagDir::new(dir.path());
    flags
        .write(Flag::ClusterManualStarting, StopMode::Fast)
        .unwrap();
    assert!(flags.remove(Flag::ClusterManualStarting).unwrap());
    assert!(!flags.remove(Flag::ClusterManualStarting).unwrap());
    assert!(!flags.read().unwrap().cluster_manual_starting);
}

#[test]
fn remove_manual_start_removes_cluster_and_instance_flags_only() {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagDir::new(dir.path());
    flags
        .write(Flag::ClusterManualStart, StopMode::Fast)
        .unwrap();
    flags
        .write(Flag::InstanceManualStart(InstanceId(6001)), StopMode::Fast)
        .unwrap();
    flags
        .write(Flag::InstanceManualStart(InstanceId(6003)), StopMode::Fast)
        .unwrap();
    flags.write(Flag::DilatationStatus, StopMode::Fast).unwrap();
    let removed = flags.remove_manual_start().unwrap();
    assert_eq!(
        removed,
        vec![
            Flag::ClusterManualStart,
            Flag::InstanceManualStart(InstanceId(6001)),
            Flag::InstanceManualStart(InstanceId(6003)),
        ]
    );
    assert_eq!(
        flags.read().unwrap(),
        FlagSet {
            dilatation: true,
            ..FlagSet::default()
        }
    );
    assert_eq!(flags.remove_manual_start().unwrap(), vec![]);
}

#[test]
fn a_missing_state_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let err = FlagDir::new(&missing).read().unwrap_err();
    assert_eq!(err.op, FileOp::Read);
    assert!(err.to_string().contains(&missing.display().to_string()));
    let err = FlagDir::new(&missing)
        .write(Flag::ClusterManualStart, StopMode::Fast)
        .unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn a_flag_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where a flag file should be: listing finds it, reading its content fails.
    let path = dir.path().join("instance_manual_start_6001");
    fs::create_dir(&path).unwrap();
    let err = FlagDir::new(dir.path()).read().unwrap_err();
    assert_eq!(err.op, FileOp::Read);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
