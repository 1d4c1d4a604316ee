//! Flag files in a node's state directory (SPEC.md §2): reading them into a
//! [`FlagSet`], writing and removing them. Their names and meaning live in
//! [`cm_core::flags`]; this module only touches the files.
//!
//! Writes are atomic ([`crate::statedir::write_atomic`]): a reader never sees a half-written
//! flag, and a flag written by `cm_ctl stop` survives a crash right after the reply.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cm_core::dn::StopMode;
use cm_core::flags::{Flag, FlagSet, stop_mode_from_content};

use crate::statedir::{self, FileError, FileOp};

/// The flag files of one node's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagDir {
    dir: PathBuf,
}

impl FlagDir {
    /// The flags of the state directory `dir` (which must exist when they are read).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one flag file.
    pub fn path(&self, flag: Flag) -> PathBuf {
        self.dir.join(flag.file_name())
    }

    /// The flags whose files exist, in [`Flag`] order (names only; contents are not read).
    pub fn list(&self) -> Result<Vec<Flag>, FileError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| FileError::new(FileOp::Read, &self.dir, e))?;
        let mut flags = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FileError::new(FileOp::Read, &self.dir, e))?;
            if let Some(flag) = entry.file_name().to_str().and_then(Flag::from_file_name) {
                flags.push(flag);
            }
        }
        flags.sort();
        Ok(flags)
    }

    /// Reads every flag present. Files that are not flags are ignored; a flag removed while
    /// the directory is being read counts as absent. Content that is not a stop mode means
    /// `fast` ([`stop_mode_from_content`]); a flag whose content cannot be read at all is an
    /// error naming it, because guessing would hide a broken disk from the operator.
    pub fn read(&self) -> Result<FlagSet, FileError> {
        let mut set = FlagSet::default();
        for flag in self.list()? {
            match flag {
                Flag::ClusterManualStart => {
                    if let Some(mode) = self.read_mode(flag)? {
                        set.cluster_manual_start = Some(mode);
                    }
                }
                Flag::InstanceManualStart(id) => {
                    if let Some(mode) = self.read_mode(flag)? {
                        set.instance_manual_start.insert(id, mode);
                    }
                }
                Flag::ClusterManualStarting => set.cluster_manual_starting = true,
                Flag::DilatationStatus => set.dilatation = true,
            }
        }
        Ok(set)
    }

    /// The stop mode inside a manual-start flag; `None` when it vanished meanwhile.
    fn read_mode(&self, flag: Flag) -> Result<Option<StopMode>, FileError> {
        let path = self.path(flag);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(stop_mode_from_content(&String::from_utf8_lossy(
                &bytes,
            )))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::new(FileOp::Read, &path, e)),
        }
    }

    /// Writes a flag atomically; its content is the stop mode (meaningful for the
    /// manual-start flags, harmless for the others).
    pub fn write(&self, flag: Flag, mode: StopMode) -> Result<(), FileError> {
        let content = format!("{}\n", mode.as_str());
        statedir::write_atomic(&self.path(flag), content.as_bytes())
    }

    /// Removes a flag; `Ok(false)` when it was absent.
    pub fn remove(&self, flag: Flag) -> Result<bool, FileError> {
        statedir::remove(&self.path(flag))
    }

    /// Removes `cluster_manual_start` and every `instance_manual_start_*` (what `cm_ctl start`
    /// does on each node); returns the flags that were removed, in [`Flag`] order.
    pub fn remove_manual_start(&self) -> Result<Vec<Flag>, FileError> {
        let mut removed = Vec::new();
        for flag in self.list()? {
            let manual = matches!(
                flag,
                Flag::ClusterManualStart | Flag::InstanceManualStart(_)
            );
            if manual && self.remove(flag)? {
                removed.push(flag);
            }
        }
        Ok(removed)
    }
}
