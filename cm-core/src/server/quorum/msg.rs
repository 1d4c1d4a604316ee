//! Messages of the CMS quorum protocol (Raft-style, SPEC.md §5). They travel inside
//! [`crate::msg::Envelope`], whose `quorum_term` is the sender's current term.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::ids::{GroupId, LogIndex, QuorumTerm};
use crate::state::{Change, ClusterState, GroupState};
use crate::time::WallMillis;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The term of the leader that created it.
    pub term: QuorumTerm,
    /// Its index.
    pub index: LogIndex,
    /// What it carries.
    pub payload: EntryPayload,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader so that it can commit entries of earlier terms.
    Noop,
    /// A change to the cluster state.
    Change(Change),
}

/// The quorum protocol's messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QuorumMsg {
    /// "Would you vote for me at `term`?" (not binding; no term change).
    PreVote {
        /// The term the candidate would campaign at.
        term: QuorumTerm,
        /// Term and index of the candidate's last log entry.
        last_term: QuorumTerm,
        /// Index of the candidate's last log entry.
        last_index: LogIndex,
    },
    /// Answer to a pre-vote.
    PreVoteReply {
        /// The term asked about.
        term: QuorumTerm,
        /// Granted or not.
        granted: bool,
    },
    /// Request for a vote at the envelope's term.
    Vote {
        /// Term of the candidate's last log entry.
        last_term: QuorumTerm,
        /// Index of the candidate's last log entry.
        last_index: LogIndex,
    },
    /// Answer to a vote request.
    VoteReply {
        /// Granted or not.
        granted: bool,
    },
    /// Log replication and heartbeat.
    Append {
        /// Index of the entry before `entries`.
        prev_index: LogIndex,
        /// Term of the entry before `entries`.
        prev_term: QuorumTerm,
        /// New entries (empty for a heartbeat).
        entries: Vec<LogEntry>,
        /// The leader's commit index.
        commit: LogIndex,
        /// Identifies the heartbeat round (lease accounting, §5.2).
        round: u64,
    },
    /// Answer to an append.
    AppendReply {
        /// Whether the entries matched and were appended (after persistence).
        success: bool,
        /// On success the highest index known to match; on failure a hint for backing off.
        match_index: LogIndex,
        /// The round answered.
        round: u64,
    },
    /// Whole-state snapshot for a follower far behind or new.
    Snapshot {
        /// Index of the last entry the snapshot covers.
        last_index: LogIndex,
        /// Term of that entry.
        last_term: QuorumTerm,
        /// The state.
        state: ClusterState,
        /// The round.
        round: u64,
    },
    /// Answer to a snapshot (sent once the snapshot is durable).
    SnapshotReply {
        /// Index installed.
        last_index: LogIndex,
        /// The round answered.
        round: u64,
    },
    /// Sent by a CMS that started with an empty store: "did you ever count my vote or my
    /// acknowledgement?" The answers decide whether it joins as a voter or rejoins as a
    /// non-voter (§5.1).
    Hello {
        /// Echoed in the reply, so that an answer to an earlier incarnation is not taken.
        nonce: u64,
        /// The sender already knows it lost a store it had written (it rejoins as a
        /// non-voter): a leader marks it so.
        rejoining: bool,
    },
    /// Answer to a [`QuorumMsg::Hello`].
    HelloReply {
        /// The nonce of the hello.
        nonce: u64,
        /// True when the sender has counted a vote or an acknowledgement of the hello's sender
        /// (its durable `counted` set holds it): the hello's sender lost a store it had written.
        counted: bool,
        /// The sender's last log index (the rejoining node ignores membership changes at or
        /// below the largest one it hears, as they predate its rejoin).
        last_index: LogIndex,
    },
    /// §5.3 (ours): how many agents of DN-hosting nodes the sender heard within
    /// `instance_heartbeat_timeout`. Followers send it to their leader with their heartbeat
    /// acknowledgements (on a change, and at least every second); candidates send it before
    /// their pre-votes. (A variant of its own, last, so that frames of older versions decode.)
    AgentView {
        /// The count.
        dn_agents: u32,
    },
    /// Two-node mode, healing (§5.4): the leader's log conflicts with entries this follower
    /// committed (both sides led alone). It appends nothing and sends its committed groups,
    /// which the leader merges before it overwrites this log with a snapshot (`heal.rs`).
    /// (Last, so that frames of older versions decode.)
    Diverged {
        /// The follower's committed groups.
        groups: BTreeMap<GroupId, GroupState>,
        /// The round answered (it does not acknowledge it).
        round: u64,
        /// Its pause and when the operator asked for it, if it was ever stamped.
        pause: Option<(bool, WallMillis)>,
    },
}
