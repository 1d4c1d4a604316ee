//! The directory swap of a full copy (issue 18) and its crash recovery, kept apart from
//! PostgreSQL so every step can be tested on plain directories.
//!
//! A full copy is written to `<parent>/<name>.cm_build`; once it is complete the marker
//! `<parent>/<name>.cm_build.done` is written, the current data moves to `<name>.cm_old` and the
//! copy to `<name>`, then the marker goes. The parent directory is fsynced after every step, so a
//! crash anywhere leaves either the old data, or a complete copy with its marker and the old
//! data beside it, which [`recover`] puts back together.

use std::fs;
use std::path::{Path, PathBuf};

use super::DriverError;

/// A sibling of the data directory: `<parent>/<name>.<suffix>`. A trailing `/` on the data
/// directory does not matter (the sibling is never inside it).
pub(super) fn sibling(data: &Path, suffix: &str) -> PathBuf {
    let name = data
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let parent = data.parent().unwrap_or_else(|| Path::new("/"));
    parent.join(format!("{name}.{suffix}"))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Removes a directory tree; a missing one is fine.
pub(super) fn remove_tree(dir: &Path) -> Result<(), DriverError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_at(dir)(e)),
        _ => Ok(()),
    }
}

fn remove_file(path: &Path) -> Result<(), DriverError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

/// Makes the renames and removals in the data directory's parent durable.
fn sync_parent(data: &Path) -> Result<(), DriverError> {
    let parent = data.parent().unwrap_or_else(|| Path::new("/"));
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(parent))
}

fn has_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file()
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut it| it.next().is_none())
}

/// pg_rewind rewrites the data directory in place: one that stops partway (the source died
/// mid-copy) leaves data that is neither the old cluster nor the source's. The marker
/// `<data>.cm_rewinding` is written (durably) before pg_rewind starts and removed only once
/// the data directory is whole again (the rewind or a full copy succeeded); while it exists
/// the DN is not started and the next Build copies in full (review of issue 18).
pub(super) fn rewind_marker(data: &Path) -> PathBuf {
    sibling(data, "cm_rewinding")
}

/// Writes the rewind marker before pg_rewind touches the data directory.
pub(super) fn mark_rewinding(data: &Path) -> Result<(), DriverError> {
    let marker = rewind_marker(data);
    fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&marker))?;
    sync_parent(data)
}

/// Removes the rewind marker: the data directory is whole again.
pub(super) fn clear_rewinding(data: &Path) -> Result<(), DriverError> {
    remove_file(&rewind_marker(data))?;
    sync_parent(data)
}

/// The rewind marker, when a pg_rewind left the data directory half-rewound.
pub(super) fn half_rewound(data: &Path) -> Option<PathBuf> {
    let marker = rewind_marker(data);
    marker.exists().then_some(marker)
}

/// Swaps the complete copy in `<data>.cm_build` in as the data directory; the current data
/// moves to `<data>.cm_old`. A `cm_old` left from an earlier copy (its data never restarted,
/// or the agent adopted a running postmaster and never removed it) is removed first: it is the
/// oldest of the three. The current data directory is never deleted, only set aside.
pub(super) fn swap_in(data: &Path) -> Result<(), DriverError> {
    let build = sibling(data, "cm_build");
    let done = sibling(data, "cm_build.done");
    let old = sibling(data, "cm_old");
    fs::write(&done, b"").map_err(io_at(&done))?;
    sync_parent(data)?;
    remove_tree(&old)?;
    if data.exists() {
        fs::rename(data, &old).map_err(io_at(data))?;
    }
    sync_parent(data)?;
    fs::rename(&build, data).map_err(io_at(&build))?;
    sync_parent(data)?;
    remove_file(&done)?;
    sync_parent(data)
}

/// What [`recover`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recovered {
    /// Nothing to do.
    Nothing,
    /// A complete copy (marker present) was swapped in.
    FinishedSwap,
    /// The data set aside by an interrupted swap was put back.
    RestoredOld,
}

/// Run at driver start and before every start: puts back together what a crash in the middle of
/// [`swap_in`] left. Only acts when the data directory is missing or an empty directory, so live
/// data is never touched.
pub(super) fn recover(data: &Path) -> Result<Recovered, DriverError> {
    let build = sibling(data, "cm_build");
    let done = sibling(data, "cm_build.done");
    let old = sibling(data, "cm_old");
    let data_absent = !data.exists() || is_empty_dir(data);
    if !data_absent {
        // The swap had not set the data aside yet, or had finished: the marker is stale.
        if done.exists() {
            remove_file(&done)?;
            sync_parent(data)?;
        }
        return Ok(Recovered::Nothing);
    }
    let put_in_place = |from: &Path| -> Result<(), DriverError> {
        if data.exists() {
            fs::remove_dir(data).map_err(io_at(data))?;
        }
        fs::rename(from, data).map_err(io_at(from))?;
        sync_parent(data)
    };
    if done.exists() && has_cluster(&build) {
        put_in_place(&build)?;
        remove_file(&done)?;
        sync_parent(data)?;
        return Ok(Recovered::FinishedSwap);
    }
    if has_cluster(&old) {
        put_in_place(&old)?;
        return Ok(Recovered::RestoredOld);
    }
    Ok(Recovered::Nothing)
}

/// Removes `<data>/.cm_disk_probe`, the disk probe of clusters deployed before it moved out of
/// the data directory: written by root, it makes `pg_rewind` fail (issue 18).
pub(super) fn remove_legacy_probe(data: &Path) -> Result<bool, DriverError> {
    let path = data.join(crate::disk::DiskProber::FILE_NAME);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(dir: &Path, tag: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("PG_VERSION"), "16\n").unwrap();
        fs::write(dir.join("tag"), tag).unwrap();
    }

    fn tag(dir: &Path) -> String {
        fs::read_to_string(dir.join("tag")).unwrap()
    }

    #[test]
    fn siblings_of_a_data_dir_with_a_trailing_slash_are_outside_it() {
        assert_eq!(
            sibling(Path::new("/var/lib/pg/dn1/"), "cm_build"),
            PathBuf::from("/var/lib/pg/dn1.cm_build")
        );
        assert_eq!(
            sibling(Path::new("/var/lib/pg/dn1"), "cm_old"),
            PathBuf::from("/var/lib/pg/dn1.cm_old")
        );
    }

    #[test]
    fn a_swap_sets_the_current_data_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&data, "live");
        cluster(&sibling(&data, "cm_build"), "copy");
        swap_in(&data).unwrap();
        assert_eq!(tag(&data), "copy");
        assert_eq!(tag(&sibling(&data, "cm_old")), "live");
        assert!(!sibling(&data, "cm_build").exists());
        assert!(!sibling(&data, "cm_build.done").exists());
    }

    /// Review finding M: a `cm_old` left behind (the agent adopted a running postmaster, so the
    /// start that removes it never ran) made the next swap delete the live data directory.
    #[test]
    fn a_leftover_cm_old_never_costs_the_live_data() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&sibling(&data, "cm_old"), "leftover");
        cluster(&data, "live");
        cluster(&sibling(&data, "cm_build"), "copy");
        swap_in(&data).unwrap();
        assert_eq!(tag(&data), "copy");
        assert_eq!(
            tag(&sibling(&data, "cm_old")),
            "live",
            "live data set aside"
        );
    }

    /// Review finding C: a crash between the two renames left no data directory.
    #[test]
    fn a_crash_between_the_renames_is_finished_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&sibling(&data, "cm_old"), "live");
        cluster(&sibling(&data, "cm_build"), "copy");
        fs::write(sibling(&data, "cm_build.done"), "").unwrap();
        assert_eq!(recover(&data).unwrap(), Recovered::FinishedSwap);
        assert_eq!(tag(&data), "copy");
        assert_eq!(tag(&sibling(&data, "cm_old")), "live");
        assert!(!sibling(&data, "cm_build.done").exists());
    }

    #[test]
    fn an_incomplete_copy_is_not_swapped_in_the_old_data_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&sibling(&data, "cm_old"), "live");
        fs::create_dir_all(sibling(&data, "cm_build")).unwrap();
        fs::create_dir_all(&data).unwrap(); // an empty directory counts as missing
        assert_eq!(recover(&data).unwrap(), Recovered::RestoredOld);
        assert_eq!(tag(&data), "live");
        assert!(!sibling(&data, "cm_old").exists());
    }

    #[test]
    fn live_data_is_left_alone_by_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&data, "live");
        cluster(&sibling(&data, "cm_old"), "older");
        cluster(&sibling(&data, "cm_build"), "copy"); // a crash before the data moved aside
        fs::write(sibling(&data, "cm_build.done"), "").unwrap();
        assert_eq!(recover(&data).unwrap(), Recovered::Nothing);
        assert_eq!(tag(&data), "live");
        assert!(!sibling(&data, "cm_build.done").exists(), "stale marker");
        let empty = tmp.path().join("none");
        assert_eq!(recover(&empty).unwrap(), Recovered::Nothing);
    }

    /// Review finding A: the root-owned probe of an old deployment inside the data directory.
    #[test]
    fn a_rewind_marker_is_set_beside_the_data_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&data, "old");
        assert_eq!(half_rewound(&data), None);
        mark_rewinding(&data).unwrap();
        let marker = half_rewound(&data).expect("marked");
        assert_eq!(marker, tmp.path().join("dn1.cm_rewinding"));
        assert!(
            !data.join("dn1.cm_rewinding").exists(),
            "outside the data directory"
        );
        // Recovery of an interrupted swap leaves a half-rewound directory marked.
        recover(&data).unwrap();
        assert_eq!(half_rewound(&data), Some(marker));
        clear_rewinding(&data).unwrap();
        assert_eq!(half_rewound(&data), None);
        clear_rewinding(&data).expect("clearing twice is fine");
    }

    #[test]
    fn the_legacy_probe_inside_the_data_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        cluster(&data, "live");
        fs::write(data.join(".cm_disk_probe"), "x").unwrap();
        assert!(remove_legacy_probe(&data).unwrap());
        assert!(!data.join(".cm_disk_probe").exists());
        assert!(!remove_legacy_probe(&data).unwrap(), "missing is fine");
    }
}
