//! The data behind `cm_ctl query` (§10): the CMS table, the cluster state
//! (Normal / Degraded / Unavailable, balanced) and one row per DN, as the leader sees them.

use std::collections::BTreeMap;

use crate::config::ClusterConfig;
use crate::ctl::{ClusterHealth, ClusterStatus, CmsRow, DnRow, GroupStatus};
use crate::dn::{DbState, DnRole};
use crate::ids::{GroupId, QuorumTerm};
use crate::params::Params;
use crate::state::ClusterState;
use crate::time::Instant;

use super::arbiter::candidate::lock1_quorum;
use super::arbiter::{GroupArbiter, Member};
use crate::params::SyncMode;

/// Builds the cluster status at `now`.
pub fn cluster_status(
    config: &ClusterConfig,
    groups: &BTreeMap<GroupId, GroupArbiter>,
    state: &ClusterState,
    params: &Params,
    now: Instant,
    cms: Vec<CmsRow>,
    quorum_term: QuorumTerm,
) -> ClusterStatus {
    let mut out = Vec::new();
    for gcfg in &config.groups {
        let Some(gs) = state.groups.get(&gcfg.id) else {
            continue;
        };
        let arb = groups.get(&gcfg.id);
        let install_primary = gs.initial_primary;
        let mut members: Vec<DnRow> = gcfg
            .members
            .iter()
            .map(|mc| {
                let node = config.node(mc.node);
                let m = arb.and_then(|a| a.member(mc.instance));
                let report = m.and_then(|m| m.report.as_ref());
                let role = m.map_or(DnRole::Unknown, |m| m.role(now, params));
                // A member not heard from has no state: its last report is history.
                let state = match (role, report) {
                    (DnRole::Unknown, _) | (_, None) => DbState::Unknown,
                    (_, Some(r)) => r.db_state,
                };
                let position = report.map(|r| r.position).unwrap_or_default();
                DnRow {
                    node: mc.node,
                    node_name: node.map(|n| n.name.clone()).unwrap_or_default(),
                    address: node.map(|n| n.address.clone()).unwrap_or_default(),
                    instance: mc.instance,
                    data_dir: mc.data_dir.clone(),
                    port: mc.port,
                    static_primary: gs.static_primary == mc.instance,
                    install_primary: install_primary == mc.instance,
                    role,
                    state,
                    term: report.map(|r| r.term).unwrap_or_default(),
                    position,
                    lsn: position.lsn_text(),
                    lag_bytes: None,
                    read_only: report.is_some_and(|r| r.read_only),
                    not_streaming_ms: m.and_then(|m| not_streaming_ms(m, now, params)),
                    last_build: report.map(|r| r.last_build.clone()).unwrap_or_default(),
                }
            })
            .collect::<Vec<DnRow>>();
        fill_lag(&mut members);
        let commits_acknowledged = commits_acknowledged(&members, params);
        out.push(GroupStatus {
            group: gcfg.id,
            term: gs.term,
            members,
            switchover: gs.switchover.clone(),
            last_switchover: gs.last_switchover.clone(),
            commits_acknowledged,
        });
    }
    let balanced = out.iter().all(|g| {
        let initial = state.groups.get(&g.group).map(|s| s.initial_primary);
        g.members
            .iter()
            .any(|r| r.role == DnRole::Primary && Some(r.instance) == initial)
    });
    ClusterStatus {
        cluster: config.name.clone(),
        quorum_term,
        cms,
        state: health(&out),
        balanced,
        paused: state.paused,
        groups: out,
        history: state.promotions.entries().cloned().collect(),
        resources: Vec::new(),
    }
}

/// How long a standby has not streamed from the valid primary, as its group's arbiter tracks
/// it (only while it is a standby heard from, and not while its newest report found it
/// streaming: it acknowledges commits then, even if the arbiter waits for its stream to hold
/// before it ends the loss).
fn not_streaming_ms(m: &Member, now: Instant, params: &Params) -> Option<u64> {
    if m.role(now, params) != DnRole::Standby || m.streaming_since.is_some() {
        return None;
    }
    let loss = m.stream_loss?;
    let ms = now.saturating_since(loss.since).as_millis();
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A serving primary, and with `dn_sync_mode = quorum` at least k = n − q streaming standbys
/// (the `ANY k` of §9): otherwise no commit is acknowledged (issue 18: with `ANY 1` and the
/// only other standby broken, none was for 150 s while `query` said Normal).
pub fn commits_acknowledged(members: &[DnRow], params: &Params) -> bool {
    let primaries = members.iter().filter(|r| r.role == DnRole::Primary).count();
    if primaries != 1 {
        return false;
    }
    if params.dn_sync_mode == SyncMode::Off {
        return true;
    }
    let n = members.len();
    let k = n.saturating_sub(lock1_quorum(n, params.test.lock1_quorum_override));
    let streaming = members
        .iter()
        .filter(|r| r.role == DnRole::Standby && r.not_streaming_ms.is_none())
        .count();
    streaming >= k
}

/// Replication lag of every standby behind the group's one primary, on the same timeline.
fn fill_lag(members: &mut [DnRow]) {
    let mut primaries = members.iter().filter(|r| r.role == DnRole::Primary);
    let (Some(primary), None) = (primaries.next(), primaries.next()) else {
        return;
    };
    let head = primary.position;
    for r in members.iter_mut() {
        if r.role == DnRole::Standby && r.position.timeline == head.timeline {
            r.lag_bytes = Some(head.lsn.0.saturating_sub(r.position.lsn.0));
        }
    }
}

/// Unavailable if some group has no serving primary; Normal if every primary and standby is
/// Normal and writable, every standby streams, every group acknowledges commits (and no member
/// is missing, unknown or down); Degraded otherwise.
pub fn health(groups: &[GroupStatus]) -> ClusterHealth {
    let mut normal = true;
    for g in groups {
        let primaries = g
            .members
            .iter()
            .filter(|r| r.role == DnRole::Primary)
            .count();
        if primaries == 0 {
            return ClusterHealth::Unavailable;
        }
        normal &= primaries == 1
            && g.commits_acknowledged
            && g.members.iter().all(|r| {
                matches!(r.role, DnRole::Primary | DnRole::Standby)
                    && r.state == DbState::Normal
                    && r.not_streaming_ms.is_none()
                    && !r.read_only
            });
    }
    if normal {
        ClusterHealth::Normal
    } else {
        ClusterHealth::Degraded
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
