//! The journal format of SPEC.md §17: what a daemon fed its machine and what came back, so that
//! `cm-sim replay` can rebuild the machine and re-feed the inputs against the identical core.
//!
//! A journal is a sequence of segment files. Each starts with a 4-byte header and holds
//! records:
//!
//! ```text
//! segment: 'C' 'M' VERSION 'J' | record | record | ...
//! record:  body length u32 (LE) | CRC-32 of the body u32 (LE) | body
//! body:    tag u8 | bincode payload (the core's codec configuration)
//! ```
//!
//! Records, in the order a daemon writes them:
//! * [`Opening`]: which machine (kind, node), its configuration, seed and restored persisted
//!   state: enough to build it with its constructor. First in every segment; `start` says
//!   whether the daemon started here (rebuild) or the segment continues a run (rotation).
//! * Snapshot: the whole machine state, second in every segment and after every gap, so a
//!   replay can start from any segment (`--from`).
//! * [`Step`]: `(now, input)`, written **before** the machine steps, so an input that makes the
//!   machine panic is still recorded.
//! * Commands: the commands that step returned, in order.
//! * Gap: the writer dropped records (its queue was full); a snapshot follows.
//!
//! [`Reader`] never panics on any bytes: a truncated tail (the daemon died mid-write) is a
//! clean end, a checksum mismatch or malformed header is an error naming the byte offset.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::config::ClusterConfig;
use crate::ids::NodeId;
use crate::io::Machine;
use crate::monitor::{Monitor, StartKind};
use crate::server::Server;
use crate::time::Instant;

/// Segment magic and version: `CM`, version, `J`.
pub const SEGMENT_HEADER: [u8; 4] = [b'C', b'M', VERSION, b'J'];
/// Journal format version.
pub const VERSION: u8 = 1;
/// Bytes before each record's body (length + CRC).
pub const RECORD_HEADER_LEN: usize = 8;
/// The largest record accepted (a whole-state snapshot of a large cluster stays far below).
pub const MAX_RECORD_LEN: usize = 64 << 20;

const TAG_OPENING: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_STEP: u8 = 3;
const TAG_COMMANDS: u8 = 4;
const TAG_GAP: u8 = 5;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_LEN>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_RECORD_LEN>()
}

/// Which daemon's machine a journal holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DaemonKind {
    /// om_monitor ([`Monitor`]).
    Monitor,
    /// cm_agent ([`Agent`]).
    Agent,
    /// cm_server ([`Server`]).
    Server,
}

impl DaemonKind {
    /// The daemon's name, also the journal's directory name (`<state_dir>/journal/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Monitor => "om_monitor",
            Self::Agent => "cm_agent",
            Self::Server => "cm_server",
        }
    }
}

/// The first record of every segment: what builds the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Opening {
    /// The machine.
    pub kind: DaemonKind,
    /// Its node.
    pub node: NodeId,
    /// The cluster configuration it was built with.
    pub config: ClusterConfig,
    /// The constructor's seed (the agent's incarnation).
    pub seed: u64,
    /// The persisted state it was restored from.
    pub restored: Option<Vec<u8>>,
    /// How the agent was started (ignored by the other machines).
    pub start_kind: StartKind,
    /// True when the daemon started here; false when the segment continues a run after a
    /// rotation (the snapshot that follows then carries the state).
    pub start: bool,
}

/// One input fed to the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step<I> {
    /// The instant the machine stepped at.
    pub now: Instant,
    /// The input.
    pub input: I,
}

/// A machine whose journal can be written and replayed: the three daemons' machines.
pub trait Replayable:
    Machine<
        Input: Serialize + DeserializeOwned + Clone + core::fmt::Debug,
        Command: Serialize + DeserializeOwned + Clone + PartialEq + core::fmt::Debug,
    > + Serialize
    + DeserializeOwned
    + Sized
{
    /// The daemon this machine runs in.
    const KIND: DaemonKind;
    /// Builds the machine as the daemon did from its opening record.
    fn rebuild(opening: &Opening) -> Result<Self, String>;
}

impl Replayable for Monitor {
    const KIND: DaemonKind = DaemonKind::Monitor;
    fn rebuild(o: &Opening) -> Result<Self, String> {
        Ok(Self::new(&o.config, o.node, o.seed, o.restored.clone()))
    }
}

impl Replayable for Agent {
    const KIND: DaemonKind = DaemonKind::Agent;
    fn rebuild(o: &Opening) -> Result<Self, String> {
        Self::new(&o.config, o.node, o.seed, o.restored.clone())
            .map(|a| a.with_start_kind(o.start_kind))
            .map_err(|e| e.to_string())
    }
}

impl Replayable for Server {
    const KIND: DaemonKind = DaemonKind::Server;
    fn rebuild(o: &Opening) -> Result<Self, String> {
        Self::new(&o.config, o.node, o.seed, o.restored.clone()).map_err(|e| e.to_string())
    }
}

/// Why a record could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalEncodeError {
    /// The record would exceed [`MAX_RECORD_LEN`].
    #[error("journal record exceeds {MAX_RECORD_LEN} bytes")]
    TooLarge,
    /// The serializer failed.
    #[error("cannot encode a journal record: {0}")]
    Serialize(String),
}

/// Why a journal could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The segment does not start with [`SEGMENT_HEADER`].
    #[error("not a journal segment: header {0:02x?} (expected {SEGMENT_HEADER:02x?})")]
    BadHeader(Vec<u8>),
    /// A record's declared length exceeds [`MAX_RECORD_LEN`].
    #[error("record at byte {offset}: length {len} exceeds the limit of {MAX_RECORD_LEN}")]
    TooLarge {
        /// Byte offset of the record in the segment.
        offset: usize,
        /// Declared length.
        len: usize,
    },
    /// A record's checksum does not match its body (corruption).
    #[error("record at byte {offset}: checksum mismatch (corrupt journal)")]
    Checksum {
        /// Byte offset of the record in the segment.
        offset: usize,
    },
    /// A record's body is empty or carries an unknown tag.
    #[error("record at byte {offset}: unknown record tag {tag:?}")]
    UnknownTag {
        /// Byte offset of the record in the segment.
        offset: usize,
        /// The tag (`None`: empty body).
        tag: Option<u8>,
    },
    /// A record's payload does not decode as the expected type.
    #[error("record at byte {offset}: malformed {what}: {reason}")]
    Malformed {
        /// Byte offset of the record in the segment.
        offset: usize,
        /// What was expected.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

/// A record's kind, with its payload still encoded (typed by [`RawRecord::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// [`Opening`].
    Opening,
    /// A whole machine state.
    Snapshot,
    /// [`Step`].
    Step,
    /// The commands of the preceding step (`Vec<Command>`).
    Commands,
    /// Records dropped before this point (`u64`: how many).
    Gap,
}

/// One record as read: its offset, kind and encoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Byte offset of the record in its segment.
    pub offset: usize,
    /// Its kind.
    pub kind: RecordKind,
    /// The bincode payload.
    pub payload: &'a [u8],
}

impl RawRecord<'_> {
    /// Decodes the payload as `T` (all of it).
    pub fn decode<T: DeserializeOwned>(&self, what: &'static str) -> Result<T, JournalError> {
        let malformed = |reason: String| JournalError::Malformed {
            offset: self.offset,
            what,
            reason,
        };
        let (value, used) = bincode::serde::decode_from_slice::<T, _>(self.payload, config())
            .map_err(|e| malformed(e.to_string()))?;
        if used != self.payload.len() {
            return Err(malformed(format!(
                "{} trailing bytes",
                self.payload.len() - used
            )));
        }
        Ok(value)
    }
}

/// Reads the records of one segment. Never panics: yields `Err` once and then ends on a
/// corrupt record; ends cleanly on a truncated tail.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
    truncated: bool,
}

impl<'a> Reader<'a> {
    /// A reader over a whole segment (header included).
    pub fn new(buf: &'a [u8]) -> Result<Self, JournalError> {
        if buf.len() < SEGMENT_HEADER.len() {
            // An empty or torn header: a segment the daemon created and never wrote to.
            if SEGMENT_HEADER.starts_with(buf) {
                return Ok(Self {
                    buf,
                    pos: buf.len(),
                    failed: false,
                    truncated: !buf.is_empty(),
                });
            }
            return Err(JournalError::BadHeader(buf.to_vec()));
        }
        if buf[..SEGMENT_HEADER.len()] != SEGMENT_HEADER {
            return Err(JournalError::BadHeader(
                buf[..SEGMENT_HEADER.len()].to_vec(),
            ));
        }
        Ok(Self {
            buf,
            pos: SEGMENT_HEADER.len(),
            failed: false,
            truncated: false,
        })
    }

    /// Whether the segment ended with a partial record (the writer died mid-record).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    fn read(&mut self) -> Result<Option<RawRecord<'a>>, JournalError> {
        let offset = self.pos;
        let rest = &self.buf[offset..];
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < RECORD_HEADER_LEN {
            self.truncated = true;
            return Ok(None);
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD_LEN {
            return Err(JournalError::TooLarge { offset, len });
        }
        let Some(body) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
            self.truncated = true;
            return Ok(None);
        };
        if crc32(body) != crc {
            return Err(JournalError::Checksum { offset });
        }
        let kind = match body.first() {
            Some(&TAG_OPENING) => RecordKind::Opening,
            Some(&TAG_SNAPSHOT) => RecordKind::Snapshot,
            Some(&TAG_STEP) => RecordKind::Step,
            Some(&TAG_COMMANDS) => RecordKind::Commands,
            Some(&TAG_GAP) => RecordKind::Gap,
            tag => {
                return Err(JournalError::UnknownTag {
                    offset,
                    tag: tag.copied(),
                });
            }
        };
        self.pos = offset + RECORD_HEADER_LEN + len;
        Ok(Some(RawRecord {
            offset,
            kind,
            payload: &body[1..],
        }))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<RawRecord<'a>, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn record<T: Serialize + ?Sized>(tag: u8, value: &T) -> Result<Vec<u8>, JournalEncodeError> {
    let mut out = vec![0; RECORD_HEADER_LEN];
    out.push(tag);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| JournalEncodeError::Serialize(e.to_string()))?;
    let len = out.len() - RECORD_HEADER_LEN;
    if len > MAX_RECORD_LEN {
        return Err(JournalEncodeError::TooLarge);
    }
    let len32 = u32::try_from(len).map_err(|_| JournalEncodeError::TooLarge)?;
    let crc = crc32(&out[RECORD_HEADER_LEN..]);
    out[..4].copy_from_slice(&len32.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// An opening record.
pub fn encode_opening(opening: &Opening) -> Result<Vec<u8>, JournalEncodeError> {
    record(TAG_OPENING, opening)
}

/// A snapshot record of the whole machine.
pub fn encode_snapshot<M: Serialize>(machine: &M) -> Result<Vec<u8>, JournalEncodeError> {
    record(TAG_SNAPSHOT, machine)
}

/// A step record: the input about to be fed at `now`.
pub fn encode_step<I: Serialize>(now: Instant, input: &I) -> Result<Vec<u8>, JournalEncodeError> {
    #[derive(Serialize)]
    struct StepRef<'a, I> {
        now: Instant,
        input: &'a I,
    }
    record(TAG_STEP, &StepRef { now, input })
}

/// A commands record: what the preceding step returned.
pub fn encode_commands<C: Serialize>(commands: &[C]) -> Result<Vec<u8>, JournalEncodeError> {
    record(TAG_COMMANDS, commands)
}

/// A gap record: `dropped` records were lost before this point.
pub fn encode_gap(dropped: u64) -> Result<Vec<u8>, JournalEncodeError> {
    record(TAG_GAP, &dropped)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), table-driven: every journal record is checksummed.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
