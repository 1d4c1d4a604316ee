//! S2 (SPEC §13): one promotion per group term — no two `Failover`/`Switchover` commands for
//! one group term name different members or stamps, no two members are promoted with one
//! term — and the group terms a cm_server shows never go back within one incarnation.

use std::collections::BTreeMap;

use cm_core::dn::DnAction;
use cm_core::msg::Endpoint;
use cm_core::{CmdStamp, GroupId, InstanceId, Instant, NodeId, Term};

use super::{Checker, ServerView};

/// What S2 remembers.
#[derive(Debug, Default)]
pub(super) struct S2 {
    /// The first promotion command sent for each group term.
    commands: BTreeMap<(GroupId, Term), (InstanceId, CmdStamp)>,
    /// The member promoted with each group term.
    promote_terms: BTreeMap<(GroupId, Term), InstanceId>,
    /// The group terms each cm_server incarnation showed last.
    terms_seen: BTreeMap<(NodeId, u64), BTreeMap<GroupId, Term>>,
}

impl Checker {
    /// A promotion command for `group` at `term` left `from`.
    pub(super) fn s2_promotion_sent(
        &mut self,
        at: Instant,
        from: Endpoint,
        group: GroupId,
        term: Term,
        instance: InstanceId,
        stamp: CmdStamp,
    ) {
        match self.s2.commands.get(&(group, term)) {
            Some((inst, s)) if *inst != instance || *s != stamp => {
                let msg = format!(
                    "S2: two promotions sent for {group} {term}: {inst} ({s}) and {instance} ({stamp}) by {from}"
                );
                self.violate(at, "S2", msg);
            }
            Some(_) => {}
            None => {
                self.s2.commands.insert((group, term), (instance, stamp));
            }
        }
    }

    /// A DN action ran: a promotion's term must not have promoted another member.
    pub(super) fn s2_action(&mut self, at: Instant, instance: InstanceId, action: &DnAction) {
        if let DnAction::Promote { term } = action {
            let group = self.group_of.get(&instance).copied().unwrap_or_default();
            if let Some(prev) = self.s2.promote_terms.insert((group, *term), instance)
                && prev != instance
            {
                let m = format!("S2: {prev} and {instance} both promoted with {group} {term}");
                self.violate(at, "S2", m);
            }
        }
    }

    pub(super) fn check_terms(&mut self, at: Instant, servers: &[ServerView]) {
        for s in servers {
            if !self.obs_changed(s) {
                continue; // showed the same at the last check
            }
            let seen = self
                .s2
                .terms_seen
                .entry((s.node, s.incarnation))
                .or_default();
            let mut bad = Vec::new();
            for (g, t) in &s.obs.group_terms {
                if let Some(prev) = seen.insert(*g, *t)
                    && *t < prev
                {
                    bad.push(format!("S2: {} saw {g} go from {prev} back to {t}", s.node));
                }
            }
            for m in bad {
                self.violate(at, "S2", m);
            }
        }
    }
}
