//! `cm-sim replay` (SPEC.md §17): rebuild a daemon's machine from its journal, re-feed every
//! recorded input and compare the commands the core returns now with the ones it returned then.
//!
//! * An opening record with `start` (the daemon started there) rebuilds the machine with its
//!   constructor from the recorded configuration, seed and restored state; the snapshot written
//!   right after it is not used, so the replay checks construction too.
//! * Any other snapshot (a rotated segment, or after a gap) replaces the machine with the
//!   recorded state; `--from N` starts at the first snapshot at or after record `N`.
//! * A gap (records the daemon dropped) suspends the comparison until the next snapshot.
//!
//! The result is [`Outcome::Identical`] or the first [`Divergence`], with both command lists.

use std::fmt;
use std::path::Path;

use cm_core::agent::Agent;
use cm_core::io::Machine;
use cm_core::journal::{
    DaemonKind, Opening, RawRecord, Reader, RecordKind, Replayable, Step as StepRecord,
};
use cm_core::monitor::Monitor;
use cm_core::server::Server;
use cm_core::time::Instant;

/// One segment file's bytes, with the name it is reported by.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The file name (or path) shown in messages.
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// The first step whose commands differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Which machine.
    pub kind: DaemonKind,
    /// The step's number among the steps compared (0-based).
    pub step: u64,
    /// The step record's number in the journal (0-based, over all segments; for `--from`).
    pub record: u64,
    /// The segment holding it.
    pub segment: String,
    /// The record's byte offset in that segment.
    pub offset: usize,
    /// The instant the machine stepped at.
    pub now: Instant,
    /// The input (debug form).
    pub input: String,
    /// The commands the daemon's machine returned (debug form, one per command).
    pub recorded: Vec<String>,
    /// The commands this build's machine returns.
    pub replayed: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} diverged at step {} (record {}, {} byte {}), now = {} ns",
            self.kind.name(),
            self.step,
            self.record,
            self.segment,
            self.offset,
            self.now.as_nanos()
        )?;
        writeln!(f, "input: {}", self.input)?;
        let first = self
            .recorded
            .iter()
            .zip(&self.replayed)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| self.recorded.len().min(self.replayed.len()));
        writeln!(f, "first differing command: #{first}")?;
        writeln!(f, "recorded ({} commands):", self.recorded.len())?;
        for (i, c) in self.recorded.iter().enumerate() {
            writeln!(f, "  {i}: {c}")?;
        }
        writeln!(f, "replayed ({} commands):", self.replayed.len())?;
        for (i, c) in self.replayed.iter().enumerate() {
            writeln!(f, "  {i}: {c}")?;
        }
        Ok(())
    }
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step compared returned the recorded commands.
    Identical {
        /// Which machine.
        kind: DaemonKind,
        /// Steps compared.
        steps: u64,
        /// Steps not compared (before `--from`, or between a gap and the next snapshot).
        skipped: u64,
        /// Daemon starts (opening records with `start`) seen.
        starts: u64,
    },
    /// A step returned other commands.
    Diverged(Box<Divergence>),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identical {
                kind,
                steps,
                skipped,
                starts,
            } => write!(
                f,
                "identical: {} {steps} steps compared, {skipped} skipped, {starts} starts",
                kind.name()
            ),
            Self::Diverged(d) => write!(f, "{d}"),
        }
    }
}

/// Reads a journal: one segment file, or every `*.cmj` file of a directory in name order.
pub fn load(path: &Path) -> Result<Vec<Segment>, String> {
    let read = |p: &Path| {
        std::fs::read(p)
            .map(|bytes| Segment {
                name: p.display().to_string(),
                bytes,
            })
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    if !path.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cmj"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no journal segments (*.cmj)", path.display()));
    }
    files.iter().map(|p| read(p)).collect()
}

/// Replays a journal (its segments in order); `from` skips to the first snapshot at or after
/// that record. `Err` when the journal cannot be read (corrupt, not a journal, no machine).
pub fn replay(segments: &[Segment], from: Option<u64>) -> Result<Outcome, String> {
    let kind = first_opening(segments)?.kind;
    match kind {
        DaemonKind::Monitor => replay_as::<Monitor>(segments, from),
        DaemonKind::Agent => replay_as::<Agent>(segments, from),
        DaemonKind::Server => replay_as::<Server>(segments, from),
    }
}

fn first_opening(segments: &[Segment]) -> Result<Opening, String> {
    for s in segments {
        let reader = Reader::new(&s.bytes).map_err(|e| format!("{}: {e}", s.name))?;
        for rec in reader {
            let rec = rec.map_err(|e| format!("{}: {e}", s.name))?;
            if rec.kind == RecordKind::Opening {
                return rec
                    .decode("opening")
                    .map_err(|e| format!("{}: {e}", s.name));
            }
        }
    }
    Err("no opening record: an empty journal".to_owned())
}

struct Pending<I, C> {
    record: u64,
    segment: usize,
    offset: usize,
    now: Instant,
    input: I,
    commands: Vec<C>,
}

struct Replay<'a, M: Machine> {
    segments: &'a [Segment],
    from: u64,
    machine: Option<M>,
    /// The snapshot after a start opening is not loaded (the constructor built the machine).
    skip_snapshot: bool,
    pending: Option<Pending<M::Input, M::Command>>,
    steps: u64,
    skipped: u64,
    starts: u64,
    /// The instant of the last step fed to the current machine.
    last_now: Option<Instant>,
}

fn replay_as<M: Replayable>(segments: &[Segment], from: Option<u64>) -> Result<Outcome, String> {
    let mut r = Replay::<M> {
        segments,
        from: from.unwrap_or(0),
        machine: None,
        skip_snapshot: false,
        pending: None,
        steps: 0,
        skipped: 0,
        starts: 0,
        last_now: None,
    };
    let mut index = 0u64;
    for (si, s) in segments.iter().enumerate() {
        let reader = Reader::new(&s.bytes).map_err(|e| format!("{}: {e}", s.name))?;
        for rec in reader {
            let rec = rec.map_err(|e| format!("{}: {e}", s.name))?;
            if let Some(d) = r
                .record(index, si, &rec)
                .map_err(|e| format!("{}: {e}", s.name))?
            {
                return Ok(Outcome::Diverged(Box::new(d)));
            }
            index += 1;
        }
    }
    Ok(Outcome::Identical {
        kind: M::KIND,
        steps: r.steps,
        skipped: r.skipped,
        starts: r.starts,
    })
}

impl<M: Replayable> Replay<'_, M> {
    fn record(
        &mut self,
        index: u64,
        segment: usize,
        rec: &RawRecord<'_>,
    ) -> Result<Option<Divergence>, String> {
        let started = index >= self.from;
        match rec.kind {
            RecordKind::Opening => {
                let o: Opening = rec.decode("opening").map_err(|e| e.to_string())?;
                if o.kind != M::KIND {
                    return Err(format!(
                        "byte {}: a {} journal mixed into a {} journal",
                        rec.offset,
                        o.kind.name(),
                        M::KIND.name()
                    ));
                }
                self.pending = None;
                if o.start {
                    self.skip_snapshot = false;
                    self.machine = None;
                    if started {
                        self.starts += 1;
                        self.last_now = None;
                        self.machine = Some(M::rebuild(&o).map_err(|e| {
                            format!("byte {}: cannot rebuild the machine: {e}", rec.offset)
                        })?);
                        self.skip_snapshot = true;
                    }
                }
            }
            RecordKind::Snapshot => {
                self.pending = None;
                if std::mem::take(&mut self.skip_snapshot) {
                    return Ok(None);
                }
                if started {
                    self.machine = Some(rec.decode("snapshot").map_err(|e| e.to_string())?);
                    self.last_now = None;
                }
            }
            RecordKind::Gap => {
                self.pending = None;
                self.machine = None;
                self.skip_snapshot = false;
            }
            RecordKind::Step => {
                self.skip_snapshot = false;
                let s: StepRecord<M::Input> = rec.decode("step").map_err(|e| e.to_string())?;
                let Some(m) = self.machine.as_mut() else {
                    self.skipped += 1;
                    self.pending = None;
                    return Ok(None);
                };
                if self.last_now.is_some_and(|t| s.now < t) {
                    return Err(format!(
                        "byte {}: time goes backwards ({} ns after {} ns): a corrupt journal",
                        rec.offset,
                        s.now.as_nanos(),
                        self.last_now.map_or(0, Instant::as_nanos)
                    ));
                }
                self.last_now = Some(s.now);
                // A machine that panics on a recorded input reproduces a daemon's crash: say
                // where, instead of taking the replay down with it.
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    m.step(s.now, s.input.clone())
                }));
                let commands = stepped.map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!(
                        "byte {}: the machine panicked at step {} (record {index}), input {:?}: {msg}",
                        rec.offset, self.steps, s.input
                    )
                })?;
                self.pending = Some(Pending {
                    record: index,
                    segment,
                    offset: rec.offset,
                    now: s.now,
                    input: s.input,
                    commands,
                });
            }
            RecordKind::Commands => {
                let Some(p) = self.pending.take() else {
                    return Ok(None);
                };
                let recorded: Vec<M::Command> =
                    rec.decode("commands").map_err(|e| e.to_string())?;
                let step = self.steps;
                self.steps += 1;
                if recorded != p.commands {
                    let text = |cs: &[M::Command]| cs.iter().map(|c| format!("{c:?}")).collect();
                    return Ok(Some(Divergence {
                        kind: M::KIND,
                        step,
                        record: p.record,
                        segment: self.segments[p.segment].name.clone(),
                        offset: p.offset,
                        now: p.now,
                        input: format!("{:?}", p.input),
                        recorded: text(&recorded),
                        replayed: text(&p.commands),
                    }));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
