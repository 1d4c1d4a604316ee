//! F (SPEC §4.4, §4.5; nemesis issue 16): the CMS does not start switchovers again and again.
//! Within any 10 minutes a group begins at most [`FLAP_LIMIT`] switchovers beyond the
//! operator's requests (of any group) in that span. The restart-count rule of §4.4 fires only
//! for a primary restarted more than 3 times in 10 minutes and must not fire again for the same
//! restarts after its switchover aborted; before that fix a failover onto a DN that had
//! crash-restarted, with a standby that did not stream, started and aborted a switchover every
//! few seconds for ten minutes.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::{GroupId, Instant, Term};

use super::{Checker, ServerView};

/// The span of the switchover-flapping check (F): the §4.4 restart window.
pub const FLAP_WINDOW: Duration = Duration::from_secs(600);
/// Switchovers a group may begin within [`FLAP_WINDOW`] beyond the operator's requests.
pub const FLAP_LIMIT: usize = 3;

/// What F remembers.
#[derive(Debug, Default)]
pub(super) struct Flapping {
    /// Switchovers begun (distinct committed switchover terms, as any cm_server shows them):
    /// the group and term → when first seen.
    pub(super) begun: BTreeMap<(GroupId, Term), Instant>,
    /// When the operator asked for a switchover (`ctl switchover`).
    requests: Vec<Instant>,
}

impl Checker {
    /// The operator asked for a switchover now.
    pub fn on_switchover_request(&mut self, at: Instant) {
        self.flapping.requests.push(at);
    }

    pub(super) fn check_switchover_flapping(&mut self, at: Instant, servers: &[ServerView]) {
        let mut fresh = Vec::new();
        for s in servers {
            if !self.obs_changed(s) {
                continue; // showed the same at the last check
            }
            for (g, t) in &s.obs.switchover_terms {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.flapping.begun.entry((*g, *t))
                {
                    e.insert(at);
                    fresh.push(*g);
                }
            }
        }
        for g in fresh {
            let from = at.saturating_sub(FLAP_WINDOW);
            let begun = self
                .flapping
                .begun
                .iter()
                .filter(|((gg, _), t)| *gg == g && **t >= from)
                .count();
            let asked = self
                .flapping
                .requests
                .iter()
                .filter(|t| **t >= from)
                .count();
            if begun > asked + FLAP_LIMIT {
                let m = format!(
                    "F: {g} began {begun} switchovers within {} s with {asked} requested \
                     (a switchover started and aborted again and again, SPEC §4.4/§4.5)",
                    FLAP_WINDOW.as_secs()
                );
                self.violate_keyed(at, "F", format!("{g}"), m);
            }
        }
    }
}
