//! Commands from the CMS leader (SPEC.md §3, §4.1): acceptance (leader only, quorum-term
//! fencing, stamp ordering), persistence before execution, execution into DN actions, and the
//! term check that must pass before a Failover/Switchover promotes.

use std::collections::BTreeMap;

use core::time::Duration;

use super::{Agent, AgentCommand, Persisted, PersistedInstance};
use crate::codec::encode_persisted;
use crate::dn::DnAction;
use crate::history::PromotionReason;
use crate::ids::{CmdStamp, InstanceId, NodeId, QuorumTerm, Term, WriteToken};
use crate::io::{PersistState, WriteCompleted};
use crate::msg::{CmsCommand, Msg, SequencedCommand};
use crate::quorum_math;
use crate::time::Instant;

/// Commands accepted but not yet durable are bounded; beyond it a command is dropped (the CMS
/// resends: its stamp is not reported as applied).
const MAX_QUEUED_COMMANDS: usize = 256;

/// A command accepted and waiting for its stamp to be durable.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Deferred {
    instance: InstanceId,
    stamp: CmdStamp,
    qterm: QuorumTerm,
    cmd: CmsCommand,
    /// For Failover/Switchover: the command's term is not below the DN's term.
    promote_ok: bool,
}

/// The persistence pipeline: at most one write in flight, later commands queued behind it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Batch {
    in_flight: Option<(WriteToken, Vec<Deferred>, Persisted)>,
    queued: Vec<Deferred>,
}

impl Batch {
    /// A Build of `instance` accepted and not yet durable (so not yet run).
    pub(super) fn has_build(&self, instance: InstanceId) -> bool {
        self.in_flight
            .iter()
            .flat_map(|(_, d, _)| d)
            .chain(&self.queued)
            .any(|d| d.instance == instance && matches!(d.cmd, CmsCommand::Build { .. }))
    }
}

/// A Failover/Switchover waiting for a quorum of CMS voters to confirm no higher quorum term.
/// Each CMS reports the weight its confirmation carries, as its quorum state says (0 for a
/// non-voter: it may have lost a store and forgotten a term; 2 for the first of two CMS nodes;
/// the whole total for a node that is a quorum alone by §5.4's gateway rule); the agent adds
/// them up with [`crate::quorum_math::confirmation_is_quorum`] over the configured CMS nodes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct TermCheck {
    pub(super) nonce: u64,
    pub(super) term: Term,
    pub(super) qterm: QuorumTerm,
    pub(super) started: Instant,
    /// When the CMS nodes that have not answered were last asked.
    asked_at: Instant,
    /// Confirming CMS nodes and the weight each reported.
    ok: BTreeMap<NodeId, u32>,
}

/// One CMS's answer to a term check: its highest quorum term, the weight its confirmation
/// carries, and (to a [`Msg::GroupTermCheck`]) the group's highest term in its log.
pub(super) struct TermAnswer {
    pub(super) highest: QuorumTerm,
    pub(super) weight: u32,
    pub(super) group_term: Option<Term>,
}

impl TermCheck {
    /// When the CMS nodes that have not answered are asked again.
    pub(super) fn retry_at(&self) -> Instant {
        self.asked_at + TERM_CHECK_RETRY
    }
}

/// How often a term check asks again the CMS nodes that have not answered: a lost request or
/// reply must not stall a promotion until the check times out (a sent Switchover is not sent
/// again, so its group waited for the switchover timeout: swarm seed 387).
const TERM_CHECK_RETRY: Duration = Duration::from_millis(500);

impl Agent {
    pub(super) fn on_command(&mut self, from: NodeId, qterm: QuorumTerm, sc: SequencedCommand) {
        if self.cms.leader != Some(from) {
            tracing::warn!(cms = %from, cmd = %sc.cmd, "command from a CMS that is not the leader rejected");
            let why = format!(
                "it came from the cm_server of node {}, not this agent's leader",
                from.0
            );
            self.refuse_build(qterm, &sc, &why);
            return;
        }
        if qterm < self.highest_qterm {
            tracing::warn!(cms = %from, %qterm, highest = %self.highest_qterm, "command from a deposed term rejected");
            self.refuse_build(
                qterm,
                &sc,
                &format!(
                    "it came from quorum term {}, below {}",
                    qterm.0, self.highest_qterm.0
                ),
            );
            return;
        }
        if self.batch.queued.len() >= MAX_QUEUED_COMMANDS {
            tracing::warn!(cmd = %sc.cmd, "command queue full: dropped, the CMS will resend");
            self.refuse_build(qterm, &sc, "the agent's command queue is full");
            return;
        }
        self.observe_qterm(qterm);
        let Some(inst) = self.insts.get_mut(&sc.instance) else {
            tracing::warn!(instance = %sc.instance, "command for an instance not on this node");
            return;
        };
        let stamp = CmdStamp {
            quorum_term: qterm,
            seq: sc.seq,
        };
        if stamp <= inst.accepted {
            tracing::debug!(%stamp, last = %inst.accepted, "command already applied");
            return;
        }
        inst.accepted = stamp;
        match sc.cmd {
            CmsCommand::Lock1 | CmsCommand::Demote | CmsCommand::Restart => {
                inst.stepping_down = true;
            }
            CmsCommand::Unlock { .. }
            | CmsCommand::Lock2 { .. }
            | CmsCommand::NotifyStandby { .. } => {
                inst.stepping_down = false;
            }
            _ => {}
        }
        let promote_ok = match sc.cmd {
            CmsCommand::Failover { term, .. } | CmsCommand::Switchover { term } => {
                // A DN term never decreases: a command for a lower term is stale.
                let ok = term >= inst.accepted_term;
                inst.accepted_term = inst.accepted_term.max(term);
                ok
            }
            _ => true,
        };
        self.batch.queued.push(Deferred {
            instance: sc.instance,
            stamp,
            qterm,
            cmd: sc.cmd,
            promote_ok,
        });
    }

    /// A rejected Build is reported as a failed one (issue 17): the leader sends a Build once,
    /// on an operator's request, so `cm_ctl build` would otherwise wait out its timeout. Not a
    /// duplicate or stale one (its stamp not above the last accepted: a deposed leader's resend
    /// of a Build already taken), nor while a Build of the instance is pending: either would
    /// overwrite the outcome of the Build the operator waits for.
    fn refuse_build(&mut self, qterm: QuorumTerm, sc: &SequencedCommand, why: &str) {
        let CmsCommand::Build { .. } = sc.cmd else {
            return;
        };
        let batched = self.batch.has_build(sc.instance);
        let Some(inst) = self.insts.get_mut(&sc.instance) else {
            return;
        };
        let stamp = CmdStamp {
            quorum_term: qterm,
            seq: sc.seq,
        };
        if stamp <= inst.accepted || batched || inst.build_pending() {
            tracing::debug!(%stamp, last = %inst.accepted, "rejected Build not recorded: a duplicate, stale, or a Build is pending");
            return;
        }
        inst.refuse_build(why);
    }

    /// Writes the agent's state when accepted commands or a higher quorum term are not yet
    /// durable and no write is in flight.
    pub(super) fn persist_if_needed(&mut self, out: &mut Vec<AgentCommand>) {
        let contact_due = self.cms.answered_send.is_some_and(|a| {
            self.durable_contact
                .is_none_or(|d| a >= d + super::CONTACT_PERSIST_STEP)
        });
        let role_changed = self
            .insts
            .values()
            .any(|i| i.role_to_save() != i.saved_role);
        if self.batch.in_flight.is_some()
            || (self.batch.queued.is_empty()
                && self.highest_qterm <= self.durable_qterm
                && !contact_due
                && !role_changed)
        {
            return;
        }
        let snapshot = Persisted {
            contact: self.cms.answered_send.max(self.durable_contact),
            highest_quorum_term: self.highest_qterm,
            instances: self
                .insts
                .iter()
                .map(|(&id, i)| {
                    let p = PersistedInstance {
                        term: i.accepted_term,
                        last_applied: i.accepted,
                        role: i.role_to_save(),
                    };
                    (id, p)
                })
                .collect(),
        };
        let bytes = match encode_persisted(&snapshot) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the agent state");
                return;
            }
        };
        let token = self.token();
        let batch = core::mem::take(&mut self.batch.queued);
        self.batch.in_flight = Some((token, batch, snapshot));
        out.push(AgentCommand::PersistState(PersistState { token, bytes }));
    }

    pub(super) fn on_write_completed(
        &mut self,
        now: Instant,
        w: WriteCompleted,
        out: &mut Vec<AgentCommand>,
    ) {
        let Some((token, batch, snapshot)) = self.batch.in_flight.take() else {
            return;
        };
        if token != w.token {
            self.batch.in_flight = Some((token, batch, snapshot));
            return;
        }
        if let Err(e) = w.result {
            tracing::error!(error = %e, dropped = batch.len(), "agent state write failed");
            // The contact is only a lower bound: an older one on disk fences earlier, never
            // later. Retry it one step later, and the role at its next change, instead of on
            // every frame.
            self.durable_contact = snapshot.contact;
            for (id, p) in &snapshot.instances {
                if let Some(inst) = self.insts.get_mut(id) {
                    inst.saved_role = p.role;
                }
            }
            self.roll_back_accepted();
            return;
        }
        self.durable_qterm = snapshot.highest_quorum_term;
        self.durable_contact = snapshot.contact;
        for (id, p) in &snapshot.instances {
            if let Some(inst) = self.insts.get_mut(id) {
                assert!(
                    p.term >= inst.term,
                    "DN {id} term would decrease from {} to {}",
                    inst.term,
                    p.term
                );
                inst.term = p.term;
                inst.applied = p.last_applied;
                inst.saved_role = p.role;
            }
        }
        for d in batch {
            self.execute(now, d, out);
        }
        self.persist_if_needed(out);
    }

    /// After a failed write: what is accepted is what is durable plus what is still queued
    /// (commands accepted after the failed write was issued).
    fn roll_back_accepted(&mut self) {
        for inst in self.insts.values_mut() {
            inst.accepted = inst.applied;
            inst.accepted_term = inst.term;
        }
        for d in &self.batch.queued {
            if let Some(inst) = self.insts.get_mut(&d.instance) {
                inst.accepted = inst.accepted.max(d.stamp);
                if let CmsCommand::Failover { term, .. } | CmsCommand::Switchover { term } = d.cmd {
                    inst.accepted_term = inst.accepted_term.max(term);
                }
            }
        }
    }

    fn execute(&mut self, now: Instant, d: Deferred, out: &mut Vec<AgentCommand>) {
        let id = d.instance;
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if !matches!(
            d.cmd,
            CmsCommand::Failover { .. } | CmsCommand::Switchover { .. }
        ) {
            // A newer command supersedes a promotion still waiting for its term check.
            inst.term_check = None;
        }
        let reason = match d.cmd {
            CmsCommand::Failover { reason, .. } => reason,
            _ => PromotionReason::Switchover,
        };
        let action = match d.cmd {
            CmsCommand::Lock1 => {
                inst.watch.prohibit = true;
                DnAction::Lock1
            }
            CmsCommand::Lock2 { primary } => DnAction::Lock2 { primary },
            CmsCommand::Unlock { primary } => DnAction::Unlock { primary },
            CmsCommand::NotifyStandby { primary } => DnAction::NotifyStandby { primary },
            CmsCommand::Build { source, full } => DnAction::Build { source, full },
            CmsCommand::SetReadOnly { on } => {
                inst.watch.read_only = Some(on);
                DnAction::SetReadOnly { on }
            }
            CmsCommand::SetSyncStandbys { k, members } => DnAction::SetSyncStandbys { k, members },
            CmsCommand::Demote => {
                inst.planned_stop = true;
                DnAction::Demote
            }
            CmsCommand::Restart => {
                self.fence(id, "Restart command", out);
                return;
            }
            CmsCommand::Failover { term, .. } | CmsCommand::Switchover { term } => {
                if d.promote_ok {
                    self.triggers.on_promotion_ordered(id, term, reason);
                    self.start_term_check(now, id, term, d.qterm, out);
                } else {
                    tracing::warn!(instance = %id, %term, "promotion to a term below the DN's refused");
                }
                return;
            }
        };
        self.run_action(id, action, super::instance::ActionKind::Other, out);
    }

    fn start_term_check(
        &mut self,
        now: Instant,
        id: InstanceId,
        term: Term,
        qterm: QuorumTerm,
        out: &mut Vec<AgentCommand>,
    ) {
        let nonce = self.op().0;
        let Some(group) = self.insts.get(&id).map(|i| i.gid) else {
            return;
        };
        if let Some(inst) = self.insts.get_mut(&id) {
            inst.term_check = Some(TermCheck {
                nonce,
                term,
                qterm,
                started: now,
                asked_at: now,
                ok: BTreeMap::new(),
            });
        }
        for n in self.cms_nodes.clone() {
            out.push(self.envelope(n, Msg::GroupTermCheck { nonce, group }));
        }
    }

    pub(super) fn on_term_check_reply(
        &mut self,
        from: NodeId,
        nonce: u64,
        answer: TermAnswer,
        qterm: QuorumTerm,
        out: &mut Vec<AgentCommand>,
    ) {
        let TermAnswer {
            highest,
            weight,
            group_term,
        } = answer;
        self.observe_qterm(qterm.max(highest));
        let cms_count = self.cms_nodes.len();
        let Some((&id, inst)) = self
            .insts
            .iter_mut()
            .find(|(_, i)| i.term_check.as_ref().is_some_and(|t| t.nonce == nonce))
        else {
            return;
        };
        let Some(tc) = inst.term_check.as_mut() else {
            return;
        };
        if highest > tc.qterm {
            tracing::warn!(instance = %id, cms = %from, %highest, ordered_in = %tc.qterm,
                "a CMS knows a higher quorum term: promotion abandoned");
            inst.term_check = None;
            return;
        }
        if let Some(group_term) = group_term.filter(|g| *g > tc.term) {
            tracing::warn!(instance = %id, cms = %from, %group_term, ordered = %tc.term,
                "the group has a newer term than the Failover's: promotion abandoned");
            inst.term_check = None;
            return;
        }
        tc.ok.insert(from, weight);
        if quorum_math::confirmation_is_quorum(tc.ok.values().copied(), cms_count) {
            let term = tc.term;
            inst.term_check = None;
            self.promote(id, term, out);
        }
    }

    fn promote(&mut self, id: InstanceId, term: Term, out: &mut Vec<AgentCommand>) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        assert!(
            inst.last_promoted.is_none_or(|t| term > t),
            "DN {id}: a second promotion for term {term}"
        );
        inst.last_promoted = Some(term);
        inst.stepping_down = false;
        inst.watch.primary = true;
        self.run_action(
            id,
            DnAction::Promote { term },
            super::instance::ActionKind::Other,
            out,
        );
    }

    /// A term check that got no majority within `agent_heartbeat_timeout` is abandoned: a
    /// promotion long after the command could act on a stale decision. Until then the CMS
    /// nodes that have not answered are asked again every [`TERM_CHECK_RETRY`].
    pub(super) fn term_check_timeouts(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let limit = self.params.agent_heartbeat_timeout();
        let mut ask = Vec::new();
        for (id, inst) in &mut self.insts {
            let Some(tc) = inst.term_check.as_mut() else {
                continue;
            };
            if now >= tc.started + limit {
                tracing::warn!(instance = %id, "term check got no majority: promotion abandoned");
                inst.term_check = None;
            } else if now >= tc.asked_at + TERM_CHECK_RETRY {
                tc.asked_at = now;
                let silent = self.cms_nodes.iter().filter(|n| !tc.ok.contains_key(n));
                ask.extend(silent.map(|n| (*n, tc.nonce, inst.gid)));
            }
        }
        for (n, nonce, group) in ask {
            out.push(self.envelope(n, Msg::GroupTermCheck { nonce, group }));
        }
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
