//! The quorum log: a whole-state snapshot followed by the entries after it.
//!
//! Index 0 is the empty prefix (term 0, state `ClusterState::initial`). Compaction folds applied
//! entries into the snapshot, so the log stays bounded however long the cluster runs.

use serde::{Deserialize, Serialize};

use super::msg::LogEntry;
use crate::ids::{LogIndex, QuorumTerm};
use crate::state::ClusterState;

/// The snapshot part: the state after applying every entry up to `index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    /// Index of the last entry folded in.
    pub(crate) index: LogIndex,
    /// Its term.
    pub(crate) term: QuorumTerm,
    /// The state at `index`.
    pub(crate) state: ClusterState,
}

/// Snapshot plus the entries after it (indices `snapshot.index + 1 ..`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Log {
    pub(crate) snapshot: SnapshotMeta,
    pub(crate) entries: Vec<LogEntry>,
}

impl Log {
    /// An empty log whose state before index 1 is `initial`.
    pub(crate) fn new(initial: ClusterState) -> Self {
        Self {
            snapshot: SnapshotMeta {
                index: LogIndex(0),
                term: QuorumTerm(0),
                state: initial,
            },
            entries: Vec::new(),
        }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot.index
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> QuorumTerm {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// The term of the entry at `index`, when it is the snapshot's or still in the log.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<QuorumTerm> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&LogEntry> {
        let first = self.snapshot.index.0 + 1;
        if index.0 < first {
            return None;
        }
        self.entries.get(usize::try_from(index.0 - first).ok()?)
    }

    /// Up to `max` entries starting at `from` (which must be after the snapshot).
    pub(crate) fn entries_from(&self, from: LogIndex, max: usize) -> Vec<LogEntry> {
        let first = self.snapshot.index.0 + 1;
        let skip = usize::try_from(from.0.saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries.iter().skip(skip).take(max).cloned().collect()
    }

    /// Appends the next entry. Panics when it is not the next index: that would break log
    /// matching, and stopping is safer than replicating a hole.
    pub(crate) fn append(&mut self, entry: LogEntry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "log append out of order"
        );
        self.entries.push(entry);
    }

    /// Removes every entry at or after `index` (which must be after the snapshot).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.snapshot.index,
            "truncating into the snapshot ({index} <= {})",
            self.snapshot.index
        );
        let keep = usize::try_from(index.0 - self.snapshot.index.0 - 1).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Folds the entries up to `index` into a snapshot whose state is `state`.
    pub(crate) fn compact(&mut self, index: LogIndex, state: ClusterState) {
        let Some(term) = self.term_at(index) else {
            return;
        };
        if index <= self.snapshot.index {
            return;
        }
        let drop = usize::try_from(index.0 - self.snapshot.index.0).unwrap_or(usize::MAX);
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = SnapshotMeta { index, term, state };
    }

    /// Installs a leader's snapshot: keeps the entries after it when the log agrees with it at
    /// `index` (Raft §7), otherwise discards the whole log.
    pub(crate) fn install(&mut self, snapshot: SnapshotMeta) {
        if self.term_at(snapshot.index) == Some(snapshot.term)
            && snapshot.index > self.snapshot.index
        {
            let drop = usize::try_from(snapshot.index.0 - self.snapshot.index.0).unwrap_or(0);
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.snapshot = snapshot;
    }

    /// Raft's election restriction: is a log ending at (`last_term`, `last_index`) at least as
    /// up to date as this one?
    pub(crate) fn is_behind_or_equal(&self, last_term: QuorumTerm, last_index: LogIndex) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}
