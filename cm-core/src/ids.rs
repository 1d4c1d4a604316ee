//! Identifier and counter newtypes. No bare integers in signatures.

use core::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_newtype!(
    /// A host of the cluster, as numbered in the cluster config.
    NodeId(u32), "node"
);
id_newtype!(
    /// A database instance (DN), numbered as in CM (e.g. 6001).
    InstanceId(u32), ""
);
id_newtype!(
    /// A DN group: one primary plus its standbys (a shard).
    GroupId(u32), "group"
);
id_newtype!(
    /// A group's promotion counter, owned by the CMS quorum. Never decreases.
    Term(u64), "term"
);
id_newtype!(
    /// The CMS quorum's election term; every command a leader sends carries it (fencing).
    QuorumTerm(u64), "qterm"
);
id_newtype!(
    /// Index of an entry in the CMS quorum log.
    LogIndex(u64), "idx"
);
id_newtype!(
    /// A write-ahead-log position inside one timeline.
    Lsn(u64), ""
);
id_newtype!(
    /// A database timeline (PostgreSQL TLI). A promotion starts a new one.
    Timeline(u32), "tli"
);
id_newtype!(
    /// Per-member sequence number of CMS → agent commands (§3).
    CmdSeq(u64), "cmd"
);
id_newtype!(
    /// Identifies one agent report, so that a reply can be matched to its send time (§8).
    ReportSeq(u64), "report"
);
id_newtype!(
    /// Identifies an asynchronous write (`PersistState` ↔ `WriteCompleted`).
    WriteToken(u64), "write"
);
id_newtype!(
    /// Identifies a probe or action the core asked a driver to run, to match its completion.
    OpId(u64), "op"
);
id_newtype!(
    /// Identifies a control client connection (cm_ctl) on a daemon.
    ClientId(u64), "client"
);
id_newtype!(
    /// Identifies a proposal to the replicated cluster state.
    ProposalId(u64), "proposal"
);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl QuorumTerm {
    /// The term after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl CmdSeq {
    /// The sequence number after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// The stamp of a CMS command: (quorum term of the leader that sent it, its per-member
/// sequence number). Stamps order lexicographically, so a new leader (higher quorum term) may
/// restart its sequence numbers at 1 and its commands are still newer (§3).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CmdStamp {
    /// The quorum term of the sending leader.
    pub quorum_term: QuorumTerm,
    /// The per-member sequence number within that term.
    pub seq: CmdSeq,
}

impl fmt::Display for CmdStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.quorum_term, self.seq)
    }
}

/// The name of an availability zone, as in the cluster config.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AzName(pub String);

impl fmt::Display for AzName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AzName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A position in the WAL: (timeline, LSN). Compared by timeline, then LSN; whether two positions
/// lie on one history is a separate question (`dn::History`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The timeline the position is on.
    pub timeline: Timeline,
    /// The LSN within that timeline.
    pub lsn: Lsn,
}

impl Position {
    /// A position from its parts.
    pub const fn new(timeline: u32, lsn: u64) -> Self {
        Self {
            timeline: Timeline(timeline),
            lsn: Lsn(lsn),
        }
    }
}

impl Position {
    /// The LSN as PostgreSQL prints it with a zero-padded low half (`1/0000A0B8`).
    pub fn lsn_text(&self) -> String {
        format!("{:X}/{:08X}", self.lsn.0 >> 32, self.lsn.0 & 0xffff_ffff)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{:X}/{:X}",
            self.timeline.0,
            self.lsn.0 >> 32,
            self.lsn.0 & 0xffff_ffff
        )
    }
}
