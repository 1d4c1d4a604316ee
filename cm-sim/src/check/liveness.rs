//! Liveness (SPEC §13): after every fault is healed, the cluster converges within the bound
//! (`run::liveness_bound`): one lease, one writable primary per group that acknowledges
//! writes, every other member streaming from it (a broken or flapping stream is none),
//! nothing read-only below the disk threshold.

use core::time::Duration;

use cm_core::dn::DnRole;

use crate::world::World;

/// Why the cluster has not converged yet (None: it has, SPEC §13 liveness).
pub fn liveness_problem(w: &World) -> Option<String> {
    let now = w.now();
    let leases = w.server_views().iter().filter(|s| s.holds_lease()).count();
    if leases != 1 {
        return Some(format!("{leases} cm_server(s) hold a lease"));
    }
    let threshold = w.scenario.config.params.datastorage_threshold_value_check as f64;
    for g in &w.scenario.config.groups {
        let members: Vec<_> = w.dbs.group_members(g.id).collect();
        let primaries: Vec<_> = members
            .iter()
            .filter(|i| i.accepts_writes() && w.host_runs(i.node))
            .collect();
        let [p] = primaries.as_slice() else {
            return Some(format!("{}: {} writable primaries", g.id, primaries.len()));
        };
        let fresh = w
            .checker
            .last_ack
            .get(&g.id)
            .is_some_and(|t| now - *t < Duration::from_secs(1));
        if !fresh {
            return Some(format!(
                "{}: no write acknowledged in the last second",
                g.id
            ));
        }
        for s in members.iter().filter(|i| i.id != p.id) {
            // A receiver that gets nothing (a broken stream), or one caught in a moment of a
            // flapping stream, is no stream: only a Build cures those.
            let streaming = s.running
                && s.role == DnRole::Standby
                && !s.stream_broken
                && !s.stream_flaps
                && s.receiver.is_some_and(|r| r.upstream == p.id);
            if !streaming {
                return Some(format!("{}: {} is not streaming from {}", g.id, s.id, p.id));
            }
        }
        for i in &members {
            let over = w
                .hosts
                .get(&i.node)
                .is_some_and(|h| h.disk.usage_pct(now) >= threshold);
            if i.read_only && !over {
                return Some(format!("{} is read-only below the disk threshold", i.id));
            }
        }
    }
    None
}
