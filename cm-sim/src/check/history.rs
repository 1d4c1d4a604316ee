//! H (SPEC §15): the promotion history tells the truth about why — a promotion that replaced
//! no primary (none recorded, none heard of) is the group's start, never a failover. Found
//! from outside first: on real PostgreSQL under load the first Failover's term could not be
//! confirmed, the leader decided again at the next term, and the history's first row said
//! "failover".

use cm_core::Instant;
use cm_core::history::PromotionReason;

use super::{Checker, ServerView};

impl Checker {
    pub(super) fn check_history(&mut self, at: Instant, servers: &[ServerView]) {
        for s in servers {
            let Some(p) = &s.obs.newest_promotion else {
                continue;
            };
            if p.previous.is_none() && p.reason != PromotionReason::Start {
                let m = format!(
                    "H: {} recorded {} promoted at {} {} replacing no primary, reason {}",
                    s.node,
                    p.instance,
                    p.group,
                    p.term,
                    p.reason.as_str()
                );
                self.violate(at, "H", m);
            }
        }
    }
}
