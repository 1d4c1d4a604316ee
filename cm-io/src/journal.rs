//! The daemons' journal (SPEC.md §17): every step of the machine, written to rotated, bounded
//! segment files in the state directory by a writer thread, in cm-core's journal format
//! ([`cm_core::journal`]).
//!
//! The event loop never waits for the disk: records go through a bounded queue
//! ([`QUEUE_CAPACITY`]) to the writer thread. When the queue is full the records are dropped
//! and counted, and the next step writes a gap record and a whole-state snapshot, so a replay
//! resumes there. Segments are `<dir>/NNNNNNNN.cmj`; each starts with the opening record and a
//! snapshot, so any segment can be replayed on its own. The oldest segments are deleted to keep
//! the directory under its bound.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use cm_core::Instant;
use cm_core::agent::Agent;
use cm_core::io::Machine;
use cm_core::journal::{
    self, JournalEncodeError, Opening, Replayable, SEGMENT_HEADER, encode_commands, encode_gap,
    encode_opening, encode_snapshot, encode_step,
};
use cm_core::monitor::Monitor;

use crate::event_loop::Journal;

/// Records the loop may queue ahead of the writer thread.
pub const QUEUE_CAPACITY: usize = 4096;
/// The smallest segment (a tiny bound still rotates sensibly).
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Segment file extension.
pub const SEGMENT_EXT: &str = "cmj";

/// A machine the event loop drives whose journal holds a cm-core machine: the core machine
/// itself, or a daemon's wrapper around one (cm_server's adds parameter text to commands).
pub trait Journaled: Machine {
    /// The cm-core machine journaled and replayed.
    type Core: Replayable;
    /// The core machine's state.
    fn core(&self) -> &Self::Core;
    /// The core's input behind the loop's input.
    fn core_input(input: &Self::Input) -> &<Self::Core as Machine>::Input;
    /// The core's commands behind the loop's commands, in the same order.
    fn core_commands(commands: &[Self::Command]) -> Cow<'_, [<Self::Core as Machine>::Command]>;
}

impl Journaled for Agent {
    type Core = Self;
    fn core(&self) -> &Self {
        self
    }
    fn core_input(input: &Self::Input) -> &Self::Input {
        input
    }
    fn core_commands(commands: &[Self::Command]) -> Cow<'_, [Self::Command]> {
        Cow::Borrowed(commands)
    }
}

impl Journaled for Monitor {
    type Core = Self;
    fn core(&self) -> &Self {
        self
    }
    fn core_input(input: &Self::Input) -> &Self::Input {
        input
    }
    fn core_commands(commands: &[Self::Command]) -> Cow<'_, [Self::Command]> {
        Cow::Borrowed(commands)
    }
}

/// Counters a daemon exports on `/metrics`.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Records written to disk.
    pub records_written: AtomicU64,
    /// Bytes written to disk (headers included).
    pub bytes_written: AtomicU64,
    /// Records dropped (queue full, or a record that could not be encoded or written).
    pub records_dropped: AtomicU64,
    /// Segment files started.
    pub segments_started: AtomicU64,
}

struct Shared {
    stats: Arc<JournalStats>,
    /// Set by the writer when the current segment is full: the next step sends a snapshot,
    /// which starts a new segment.
    need_snapshot: AtomicBool,
}

enum Item {
    Record(Vec<u8>),
    /// A snapshot, after a gap of this many dropped records; a new segment may start here.
    Snapshot {
        gap: Option<u64>,
        record: Vec<u8>,
    },
}

/// The journal of one daemon: a [`Journal`] for the event loop, written by its own thread.
pub struct FileJournal {
    tx: Option<SyncSender<Item>>,
    shared: Arc<Shared>,
    /// Records dropped since the last snapshot that reached the queue.
    gap: u64,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileJournal")
            .field("gap", &self.gap)
            .finish()
    }
}

/// Where a daemon's journal lives: `<state_dir>/journal/<daemon>`.
pub fn journal_dir(state_dir: &Path, kind: journal::DaemonKind) -> PathBuf {
    state_dir.join("journal").join(kind.name())
}

impl FileJournal {
    /// Opens the journal in `dir` (created if absent) bounded to `max_bytes` in total;
    /// `None` when `max_bytes` is 0 (journaling off). New segments are numbered after the
    /// existing ones, so a restarted daemon keeps its predecessor's journal.
    pub fn open(dir: &Path, opening: &Opening, max_bytes: u64) -> io::Result<Option<Self>> {
        Self::open_with_capacity(dir, opening, max_bytes, QUEUE_CAPACITY)
    }

    /// [`FileJournal::open`] with another queue capacity (tests).
    pub fn open_with_capacity(
        dir: &Path,
        opening: &Opening,
        max_bytes: u64,
        capacity: usize,
    ) -> io::Result<Option<Self>> {
        if max_bytes == 0 {
            return Ok(None);
        }
        fs::create_dir_all(dir)?;
        let next = segments(dir)?.last().map_or(0, |(n, _)| n + 1);
        let encode = |start| {
            encode_opening(&Opening {
                start,
                ..opening.clone()
            })
            .map_err(io::Error::other)
        };
        let stats = Arc::new(JournalStats::default());
        let shared = Arc::new(Shared {
            stats,
            need_snapshot: AtomicBool::new(true),
        });
        let writer = Writer {
            dir: dir.to_owned(),
            openings: [encode(true)?, encode(false)?],
            segment_bytes: (max_bytes / 4).max(MIN_SEGMENT_BYTES),
            max_bytes,
            next,
            current: None,
            rotate: false,
            failed: false,
            shared: Arc::clone(&shared),
        };
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let handle = std::thread::Builder::new()
            .name(format!("journal-{}", opening.kind.name()))
            .spawn(move || writer.run(rx))?;
        Ok(Some(Self {
            tx: Some(tx),
            shared,
            gap: 0,
            writer: Some(handle),
        }))
    }

    /// The journal's counters.
    pub fn stats(&self) -> Arc<JournalStats> {
        Arc::clone(&self.shared.stats)
    }

    fn drop_one(&mut self) {
        self.gap += 1;
        self.shared
            .stats
            .records_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    fn send(&mut self, item: Item) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.drop_one();
                false
            }
        }
    }

    fn encoded(&mut self, r: Result<Vec<u8>, JournalEncodeError>) -> Option<Vec<u8>> {
        match r {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!("journal record dropped: {e}");
                self.drop_one();
                None
            }
        }
    }
}

impl<M: Journaled> Journal<M> for FileJournal {
    fn before_step(&mut self, machine: &M, now: Instant, input: &M::Input) {
        let resync = self.gap > 0 || self.shared.need_snapshot.load(Ordering::Relaxed);
        if resync {
            let Some(record) = self.encoded(encode_snapshot(machine.core())) else {
                return;
            };
            let gap = (self.gap > 0).then_some(self.gap);
            if !self.send(Item::Snapshot { gap, record }) {
                return;
            }
            self.gap = 0;
            self.shared.need_snapshot.store(false, Ordering::Relaxed);
        }
        if let Some(r) = self.encoded(encode_step(now, M::core_input(input))) {
            self.send(Item::Record(r));
        }
    }

    fn after_step(&mut self, _machine: &M, commands: &[M::Command]) {
        if self.gap > 0 {
            // The step itself was lost: its commands alone would mislead a replay.
            self.drop_one();
            return;
        }
        if let Some(r) = self.encoded(encode_commands(&M::core_commands(commands))) {
            self.send(Item::Record(r));
        }
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The segment files of `dir`, oldest first, with their sizes.
fn segments(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(&format!(".{SEGMENT_EXT}")))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.metadata()?.len()));
    }
    out.sort_unstable();
    Ok(out)
}

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:08}.{SEGMENT_EXT}")
}

struct Segment {
    n: u64,
    out: BufWriter<File>,
    bytes: u64,
}

struct Writer {
    dir: PathBuf,
    /// The opening record: `[start, continuation]`.
    openings: [Vec<u8>; 2],
    segment_bytes: u64,
    max_bytes: u64,
    next: u64,
    current: Option<Segment>,
    rotate: bool,
    failed: bool,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Item>) {
        while let Ok(item) = rx.recv() {
            self.handle(item);
            while let Ok(item) = rx.try_recv() {
                self.handle(item);
            }
            if let Some(s) = &mut self.current
                && let Err(e) = s.out.flush()
            {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            tracing::error!(
                "journal write failed in {}, journaling stops: {e}",
                self.dir.display()
            );
        }
        self.failed = true;
        self.current = None;
    }

    fn handle(&mut self, item: Item) {
        if self.failed {
            self.shared
                .stats
                .records_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let r = match item {
            Item::Snapshot { gap, record } => self.snapshot(gap, &record),
            Item::Record(r) => match self.current.is_some() {
                true => self.write(&r),
                // Only a snapshot opens a segment; the loop sends one first.
                false => Ok(()),
            },
        };
        if let Err(e) = r {
            self.fail(&e);
            return;
        }
        if let Some(s) = &self.current
            && s.bytes >= self.segment_bytes
            && !self.rotate
        {
            self.rotate = true;
            self.shared.need_snapshot.store(true, Ordering::Relaxed);
        }
    }

    fn snapshot(&mut self, gap: Option<u64>, record: &[u8]) -> io::Result<()> {
        if self.current.is_none() || self.rotate {
            self.start_segment()?;
        }
        if let Some(n) = gap {
            self.write(&encode_gap(n).map_err(io::Error::other)?)?;
        }
        self.write(record)
    }

    fn start_segment(&mut self) -> io::Result<()> {
        if let Some(mut s) = self.current.take() {
            s.out.flush()?;
        }
        let n = self.next;
        self.next += 1;
        let f = File::create(self.dir.join(segment_name(n)))?;
        let first = self.shared.stats.segments_started.load(Ordering::Relaxed) == 0;
        self.current = Some(Segment {
            n,
            out: BufWriter::with_capacity(64 << 10, f),
            bytes: 0,
        });
        self.shared
            .stats
            .segments_started
            .fetch_add(1, Ordering::Relaxed);
        self.rotate = false;
        self.write_raw(&SEGMENT_HEADER)?;
        let opening = self.openings[usize::from(!first)].clone();
        self.write(&opening)?;
        self.prune()
    }

    /// Deletes the oldest segments while the journal exceeds its bound (never the current).
    fn prune(&mut self) -> io::Result<()> {
        let current = self.current.as_ref().map(|s| s.n);
        let mut all = segments(&self.dir)?;
        let mut total: u64 = all.iter().map(|(_, b)| b).sum::<u64>() + self.segment_bytes;
        all.retain(|(n, _)| Some(*n) != current);
        for (n, bytes) in all {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(self.dir.join(segment_name(n))) {
                Ok(()) => total = total.saturating_sub(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(s) = &mut self.current else {
            return Ok(());
        };
        s.out.write_all(bytes)?;
        s.bytes += bytes.len() as u64;
        self.shared
            .stats
            .bytes_written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        self.write_raw(record)?;
        self.shared
            .stats
            .records_written
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
