//! Atomic, durable state files: real files in a temporary directory.

use std::fs;

use cm_io::statedir::{self, FileOp};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_then_read_returns_the_bytes_and_overwrite_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("term");
    statedir::write_atomic(&path, b"first").unwrap();
    assert_eq!(
        statedir::read(&path).unwrap().as_deref(),
        Some(&b"first"[..])
    );
    statedir::write_atomic(&path, b"2").unwrap();
    assert_eq!(statedir::read(&path).unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(
        names(dir.path()),
        ["term"],
        "no temporary file is left behind"
    );
}

#[test]
fn reading_an_absent_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(statedir::read(&dir.path().join("nope")).unwrap(), None);
}

#[test]
fn remove_reports_whether_the_file_existed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    statedir::write_atomic(&path, b"x").unwrap();
    assert!(statedir::remove(&path).unwrap());
    assert!(!path.exists());
    assert!(!statedir::remove(&path).unwrap());
}

#[test]
fn a_write_into_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("term");
    let err = statedir::write_atomic(&path, b"x").unwrap_err();
    assert_eq!(err.op, FileOp::Write);
    let msg = err.to_string();
    assert!(msg.contains("cannot write"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("missing").display().to_string()),
        "{msg}"
    );
}

#[test]
fn a_failed_rename_keeps_the_old_content_and_removes_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: the rename over it fails.
    let target = dir.path().join("state");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside"), b"old").unwrap();
    let err = statedir::write_atomic(&target, b"new").unwrap_err();
    assert_eq!(err.op, FileOp::Rename);
    assert!(err.to_string().contains(&target.display().to_string()));
    assert_eq!(names(dir.path()), ["state"]);
    assert_eq!(fs::read(target.join("inside")).unwrap(), b"old");
}

#[test]
fn reading_a_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = statedir::read(dir.path()).unwrap_err();
    assert_eq!(err.op, FileOp::Read);
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}
