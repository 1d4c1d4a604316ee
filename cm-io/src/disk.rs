//! The agent's disk loop (SPEC.md §3): usage percent of data and log paths (statvfs), and a
//! write + fsync + read-back probe with a timeout. The decisions (3 bad probes → `DiskDamaged`,
//! read-only thresholds) are cm-core's; this module only measures.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::statvfs::statvfs;
use nix::unistd::{Gid, Uid};

use crate::statedir::{FileError, FileOp};

/// Usage percent of the filesystem holding `path` (symlinks followed), rounded up like `df`:
/// used / (used + available to unprivileged users), so the reserved blocks count as full.
pub fn usage_pct(path: &Path) -> Result<u8, FileError> {
    let st = statvfs(path).map_err(|e| FileError::new(FileOp::Statfs, path, io::Error::from(e)))?;
    let used = u128::from(st.blocks().saturating_sub(st.blocks_free()));
    let total = used + u128::from(st.blocks_available());
    if total == 0 {
        return Ok(0);
    }
    let pct = (used * 100).div_ceil(total);
    Ok(u8::try_from(pct.min(100)).unwrap_or(100))
}

/// The paths whose filesystems hold a PostgreSQL data directory's data: the directory itself,
/// `base`, `global`, `pg_wal`, every tablespace link in `pg_tblspc`, and any other top-level
/// entry that is a symlink (a relocated `pg_wal`, say). Missing entries are skipped.
pub fn data_dir_paths(data_dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let mut paths = vec![data_dir.to_path_buf()];
    for sub in ["base", "global", "pg_wal"] {
        paths.push(data_dir.join(sub));
    }
    paths.extend(symlinked_entries(data_dir)?);
    let tblspc = data_dir.join("pg_tblspc");
    match fs::read_dir(&tblspc) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(|e| FileError::new(FileOp::Read, &tblspc, e))?;
                paths.push(e.path());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::new(FileOp::Read, &tblspc, e)),
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn symlinked_entries(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| FileError::new(FileOp::Read, dir, e))?;
    for e in entries {
        let e = e.map_err(|e| FileError::new(FileOp::Read, dir, e))?;
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// The highest usage percent over the filesystems a data directory's data lives on
/// ([`data_dir_paths`]). A path that vanished or is a dangling link is skipped; any other
/// failure (EIO on a tablespace's filesystem, say) is an error naming that path.
pub fn data_dir_usage_pct(data_dir: &Path) -> Result<u8, FileError> {
    let mut max = usage_pct(data_dir)?;
    for path in data_dir_paths(data_dir)? {
        match usage_pct(&path) {
            Ok(pct) => max = max.max(pct),
            Err(e) if e.source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(max)
}

/// The result of one disk probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Written, flushed and read back intact.
    Ok,
    /// An I/O error or a read-back mismatch, with what and where.
    Failed(String),
    /// No answer within the timeout, or an earlier probe is still stuck in the kernel.
    Hung,
}

/// Probes one directory by writing a small file, fsyncing it and reading it back, on a
/// blocking thread. A probe that exceeds the timeout is reported [`ProbeOutcome::Hung`] and
/// its thread is left to finish; until it does, further probes report `Hung` at once instead
/// of piling more stuck threads onto a dead disk.
#[derive(Debug)]
pub struct DiskProber {
    file: PathBuf,
    owner: Option<(Uid, Gid)>,
    timeout: Duration,
    in_flight: Arc<AtomicBool>,
    seq: AtomicU64,
}

/// Clears the in-flight mark when the blocking probe ends, even by a panic.
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl DiskProber {
    /// The probe file's name inside the probed directory.
    pub const FILE_NAME: &'static str = ".cm_disk_probe";

    /// A prober of directory `dir` with the given timeout (`disk_check_timeout`).
    pub fn new(dir: &Path, timeout: Duration) -> Self {
        Self::with_file(dir.join(Self::FILE_NAME), timeout)
    }

    /// A prober of the filesystem of a database data directory: its file is
    /// [`probe_file_for`] the directory, owned by `owner` (the database's OS user), so that
    /// neither pg_rewind nor pg_basebackup, running as that user, ever copies or trips on it.
    pub fn for_data_dir(data_dir: &Path, timeout: Duration, owner: (Uid, Gid)) -> Self {
        let mut p = Self::with_file(probe_file_for(data_dir), timeout);
        p.owner = Some(owner);
        p
    }

    /// The file this prober writes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// A prober writing exactly `file`.
    pub fn with_file(file: PathBuf, timeout: Duration) -> Self {
        Self {
            file,
            owner: None,
            timeout,
            in_flight: Arc::new(AtomicBool::new(false)),
            seq: AtomicU64::new(0),
        }
    }

    /// Whether an earlier probe's thread is still running (stuck).
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs one probe. Must be called inside a tokio runtime.
    pub async fn probe(&self) -> ProbeOutcome {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return ProbeOutcome::Hung;
        }
        let guard = InFlight(Arc::clone(&self.in_flight));
        let file = self.file.clone();
        let owner = self.owner;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let content = format!("cm disk probe pid {} seq {seq}\n", std::process::id());
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            write_and_read_back(&file, content.as_bytes(), owner)
        });
        match tokio::time::timeout(self.timeout, task).await {
            Err(_elapsed) => ProbeOutcome::Hung,
            Ok(Err(join)) => ProbeOutcome::Failed(format!("probe thread failed: {join}")),
            Ok(Ok(Err(e))) => ProbeOutcome::Failed(e.to_string()),
            Ok(Ok(Ok(()))) => ProbeOutcome::Ok,
        }
    }
}

/// Where the disk probe of a data directory is written: beside the directory, named after it
/// (`<parent>/.cm_disk_probe.<name>`), so it is on the data's filesystem but outside what
/// pg_rewind and pg_basebackup copy (issue 18: a probe file inside the data directory, owned by
/// root, made every pg_rewind fail and refilled an emptied directory before pg_basebackup).
/// When the data directory is itself a mount point, its parent is another filesystem: the
/// probe then goes into its `pg_stat_tmp`, whose contents both tools skip.
pub fn probe_file_for(data_dir: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let inside = data_dir.join("pg_stat_tmp").join(DiskProber::FILE_NAME);
    let Some(parent) = data_dir
        .parent()
        .filter(|p| !name.is_empty() && !p.as_os_str().is_empty())
    else {
        return inside;
    };
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(parent), dev(data_dir)) {
        (Some(a), Some(b)) if a != b => inside,
        // Same filesystem, or not created yet (the usual layout then): beside it.
        _ => parent.join(format!("{}.{name}", DiskProber::FILE_NAME)),
    }
}

fn in_missing_pg_stat_tmp(file: &Path) -> bool {
    file.parent()
        .is_some_and(|dir| dir.file_name() == Some("pg_stat_tmp".as_ref()) && !dir.exists())
}

fn write_and_read_back(
    file: &Path,
    content: &[u8],
    owner: Option<(Uid, Gid)>,
) -> Result<(), FileError> {
    let mut f = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(file)
    {
        Ok(f) => f,
        // A data directory that is a mount point is probed in its pg_stat_tmp, which does not
        // exist before initdb nor during an in-place full copy: nothing to probe then, not a
        // failed disk (issue 18 review K). Creating it would make initdb/pg_basebackup refuse
        // the non-empty directory.
        Err(e) if e.kind() == io::ErrorKind::NotFound && in_missing_pg_stat_tmp(file) => {
            return Ok(());
        }
        Err(e) => return Err(FileError::new(FileOp::Write, file, e)),
    };
    if let Some((uid, gid)) = owner {
        use std::os::unix::fs::MetadataExt as _;
        let meta = f
            .metadata()
            .map_err(|e| FileError::new(FileOp::Read, file, e))?;
        if (meta.uid(), meta.gid()) != (uid.as_raw(), gid.as_raw()) {
            nix::unistd::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| FileError::new(FileOp::Write, file, io::Error::from(e)))?;
        }
    }
    f.write_all(content)
        .map_err(|e| FileError::new(FileOp::Write, file, e))?;
    f.sync_all()
        .map_err(|e| FileError::new(FileOp::Sync, file, e))?;
    drop(f);
    let back = fs::read(file).map_err(|e| FileError::new(FileOp::Read, file, e))?;
    if back != content {
        return Err(FileError::new(
            FileOp::Read,
            file,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "read back differs from what was written",
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod pg_stat_tmp_tests {
    use super::*;

    /// Review finding K of issue 18: a missing pg_stat_tmp (before initdb, during an in-place
    /// copy) is no probe, not a failed one; any other missing directory still fails.
    #[tokio::test]
    async fn a_missing_pg_stat_tmp_is_no_probe_but_other_missing_dirs_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        let in_stat_tmp = data.join("pg_stat_tmp").join(DiskProber::FILE_NAME);
        let p = DiskProber::with_file(in_stat_tmp.clone(), Duration::from_secs(10));
        assert_eq!(p.probe().await, ProbeOutcome::Ok);
        assert!(!data.join("pg_stat_tmp").exists(), "not created");
        fs::create_dir(data.join("pg_stat_tmp")).unwrap();
        assert_eq!(p.probe().await, ProbeOutcome::Ok);
        assert!(in_stat_tmp.exists(), "probed once it exists");
        let elsewhere = DiskProber::with_file(
            data.join("gone").join(DiskProber::FILE_NAME),
            Duration::from_secs(10),
        );
        assert!(matches!(elsewhere.probe().await, ProbeOutcome::Failed(_)));
    }
}
