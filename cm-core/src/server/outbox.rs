//! What the CMS leader emits, and the per-instance command sequencing (§3).

use std::collections::BTreeMap;

use crate::ctl::CtlReply;
use crate::ids::{ClientId, CmdSeq, CmdStamp, GroupId, InstanceId, NodeId, QuorumTerm};
use crate::io::Alarm;
use crate::msg::{CmsCommand, SequencedCommand};

/// One order of the CMS leader, executed by the `Server` in the order returned.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LeaderOutput {
    /// A command to the agent of `node`; the Server wraps it in an Envelope with its quorum term.
    Command {
        /// The node whose agent runs the instance.
        node: NodeId,
        /// The sequenced command.
        cmd: SequencedCommand,
    },
    /// A reply to a cm_ctl client (some come only after a commit).
    Reply {
        /// The client.
        client: ClientId,
        /// The reply.
        reply: CtlReply,
    },
    /// An alarm raised.
    Alarm(Alarm),
    /// Run the configured `fence_command` against a silent primary's node (§8); the outcome
    /// comes back through `Leader::on_fence_command_done`.
    RunFenceCommand {
        /// The group.
        group: GroupId,
        /// The silent primary.
        instance: InstanceId,
        /// Its node.
        node: NodeId,
    },
}

/// Collects outputs and numbers commands per instance.
///
/// Sequence numbers restart at 1 with each quorum term: a stamp is (quorum term, seq), so a new
/// leader's commands are newer than anything a previous leader sent (§3).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Outbox {
    quorum_term: QuorumTerm,
    seqs: BTreeMap<InstanceId, CmdSeq>,
    out: Vec<LeaderOutput>,
}

impl Outbox {
    /// Starts a new quorum term: sequence numbers restart.
    pub fn start_term(&mut self, quorum_term: QuorumTerm) {
        assert!(
            quorum_term >= self.quorum_term,
            "quorum term went backwards: {quorum_term} after {}",
            self.quorum_term
        );
        if quorum_term != self.quorum_term {
            self.seqs.clear();
        }
        self.quorum_term = quorum_term;
    }

    /// The quorum term commands are stamped with.
    pub fn quorum_term(&self) -> QuorumTerm {
        self.quorum_term
    }

    /// Queues a command and returns the stamp the agent will report once it applied it.
    pub fn command(&mut self, node: NodeId, instance: InstanceId, cmd: CmsCommand) -> CmdStamp {
        let seq = self.seqs.entry(instance).or_default();
        *seq = seq.next();
        let seq = *seq;
        self.out.push(LeaderOutput::Command {
            node,
            cmd: SequencedCommand { instance, seq, cmd },
        });
        CmdStamp {
            quorum_term: self.quorum_term,
            seq,
        }
    }

    /// Queues a reply to a cm_ctl client.
    pub fn reply(&mut self, client: ClientId, reply: CtlReply) {
        self.out.push(LeaderOutput::Reply { client, reply });
    }

    /// Queues an alarm.
    pub fn alarm(&mut self, alarm: Alarm) {
        self.out.push(LeaderOutput::Alarm(alarm));
    }

    /// Queues a fence command run.
    pub fn fence(&mut self, group: GroupId, instance: InstanceId, node: NodeId) {
        self.out.push(LeaderOutput::RunFenceCommand {
            group,
            instance,
            node,
        });
    }

    /// Takes everything queued, in order.
    pub fn take(&mut self) -> Vec<LeaderOutput> {
        std::mem::take(&mut self.out)
    }
}
