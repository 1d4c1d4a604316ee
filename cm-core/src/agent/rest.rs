//! The agent's HTTP endpoints (SPEC.md §15) as one pure function: ([`AgentHealth`], `now`,
//! path, query) → status and body. The daemon serves it (and renders the body as JSON); the
//! simulator evaluates the same conditions.
//!
//! | path | 200 when |
//! |---|---|
//! | `/primary`, `/read-write` | [`InstanceHealth::primary`] |
//! | `/replica` | a running standby, state Normal, its status query answered, streaming from the group's current primary (as the leader last named it) with a message younger than `wal_receiver_timeout`; with `?lag=N` also replay lag (from `pg_last_wal_replay_lsn()`) ≤ N bytes against the primary position the leader sent, which must be at most 2 × `agent_report_interval` old |
//! | `/read-only` | `/primary` or `/replica` |
//! | `/health` | the DN runs and its last status query answered |
//! | `/liveness` | the agent stepped within 2 × `agent_report_interval` |
//! | `/readiness` | `/primary`, or `/replica?lag=rest_max_lag` |
//! | `/cluster`, `/history` | a leader is known and its cluster status is under [`CLUSTER_STATUS_MAX_AGE`] old |
//!
//! `?instance=ID` picks a DN; it may be left out when the node has one. `?lag=` takes bytes
//! with an optional `kB`/`MB`/`GB`/`TB` suffix (powers of 1024, as PostgreSQL's units);
//! `?replication_state=streaming` is implied and accepted. A bad query is 400, an unknown path
//! or instance 404; a member endpoint's body is the member's [`MemberView`] either way.

use core::time::Duration;
use std::sync::Arc;

use serde::Serialize;

use super::health::{AgentHealth, InstanceHealth};
use crate::ctl::ClusterStatus;
use crate::dn::{DbState, DnRole};
use crate::ids::{InstanceId, NodeId, Term};
use crate::time::Instant;

/// A cluster status older than this is not served (`/cluster`, `/history`): the agent asks
/// for one every second while a leader is connected.
pub const CLUSTER_STATUS_MAX_AGE: Duration = Duration::from_secs(5);

/// An endpoint's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RestAnswer {
    /// HTTP status: 200, 503, 400 or 404.
    pub status: u16,
    /// What to render.
    pub body: RestBody,
}

/// The body of an answer (rendered as JSON by the daemon).
#[derive(Clone, Debug, PartialEq)]
pub enum RestBody {
    /// A member endpoint's view of the DN.
    Member(Box<MemberView>),
    /// The cluster status as received from the leader (`/cluster`).
    Cluster(Arc<ClusterStatus>),
    /// The cluster status whose promotion history `/history` serves.
    History(Arc<ClusterStatus>),
    /// `/liveness`: how long ago the agent stepped.
    Liveness {
        /// Milliseconds since the agent's latest step.
        stepped_ms_ago: u64,
    },
    /// What was wrong (400, 404, and 503 of `/cluster` and `/history`).
    Error(String),
}

/// A DN as a member endpoint shows it (Patroni-like field names where they exist).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// This node.
    pub node: NodeId,
    /// The instance.
    pub instance: InstanceId,
    /// `primary`, `standby`, `pending`, `down`, `unknown`.
    pub role: String,
    /// The HA state of the newest status read (`Normal`, `CatchUp`, ...), if any.
    pub state: Option<String>,
    /// The DN's CM term.
    pub term: Term,
    /// The group's term as the leader last said it.
    pub group_term: Option<Term>,
    /// The group's primary as the leader last said it.
    pub group_primary: Option<InstanceId>,
    /// Timeline of the position.
    pub timeline: Option<u32>,
    /// LSN of the position (primary: flush; standby: max of receive and replay).
    pub lsn: Option<u64>,
    /// A standby's replay LSN.
    pub replay_lsn: Option<u64>,
    /// Replay lag: bytes from the replay LSN to the primary's position the leader sent
    /// (standbys).
    pub lag_bytes: Option<u64>,
    /// `default_transaction_read_only` is on.
    pub read_only: bool,
    /// Standbys streaming from it (primary).
    pub streaming: Vec<InstanceId>,
    /// The member it streams from (standby).
    pub upstream: Option<InstanceId>,
    /// The CMS leader the agent follows.
    pub cms_leader: Option<NodeId>,
    /// The lease-and-role part of `/primary` holds.
    pub write_lease: bool,
    /// Why the endpoint's condition does not hold (absent on 200).
    pub reason: Option<String>,
}

/// Parses a `?lag=` value: bytes, optionally followed by `B`, `kB`, `MB`, `GB` or `TB`
/// (case-insensitive, powers of 1024; a space before the unit is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("lag `{text}` is not a number of bytes"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" => 10,
        "mb" => 20,
        "gb" => 30,
        "tb" => 40,
        _ => return Err(format!("lag `{text}`: unit must be B, kB, MB, GB or TB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("lag `{text}` is too large"))
}

/// What a request asks of a member endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Primary,
    Replica,
    ReadOnly,
    Health,
    Readiness,
}

/// The answer to `path?query` at `now`.
pub fn answer(h: &AgentHealth, now: Instant, path: &str, query: &[(String, String)]) -> RestAnswer {
    let check = match path.trim_end_matches('/') {
        "/primary" | "/read-write" => Check::Primary,
        "/replica" => Check::Replica,
        "/read-only" => Check::ReadOnly,
        "/health" => Check::Health,
        "/readiness" => Check::Readiness,
        "/liveness" => return liveness(h, now),
        "/cluster" => return cluster(h, now, false),
        "/history" => return cluster(h, now, true),
        _ => return error(404, format!("no endpoint {path}")),
    };
    let param = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    if let Some(state) = param("replication_state").filter(|s| *s != "streaming") {
        return error(
            400,
            format!("replication_state `{state}`: only `streaming` is served"),
        );
    }
    let lag = match param("lag").map(|v| parse_size(v)).transpose() {
        Ok(lag) => lag,
        Err(e) => return error(400, e),
    };
    let inst = match pick(h, param("instance").map(String::as_str)) {
        Ok(i) => i,
        Err(a) => return a,
    };
    let verdict = match check {
        Check::Primary => inst.primary(&h.params, now).map_err(|e| e.to_string()),
        Check::Replica => replica(h, inst, now, lag),
        Check::ReadOnly => inst
            .primary(&h.params, now)
            .map_err(|e| e.to_string())
            .or_else(|p| replica(h, inst, now, lag).map_err(|r| format!("{p}; {r}"))),
        Check::Health => health(inst),
        Check::Readiness => inst
            .primary(&h.params, now)
            .map_err(|e| e.to_string())
            .or_else(|p| {
                replica(h, inst, now, Some(h.params.rest_max_lag)).map_err(|r| format!("{p}; {r}"))
            }),
    };
    let mut view = member_view(h, inst, now);
    let status = match verdict {
        Ok(()) => 200,
        Err(reason) => {
            view.reason = Some(reason);
            503
        }
    };
    RestAnswer {
        status,
        body: RestBody::Member(Box::new(view)),
    }
}

fn error(status: u16, what: String) -> RestAnswer {
    RestAnswer {
        status,
        body: RestBody::Error(what),
    }
}

/// The DN the request is about: `?instance=`, or the node's only one.
fn pick<'a>(h: &'a AgentHealth, instance: Option<&str>) -> Result<&'a InstanceHealth, RestAnswer> {
    let Some(text) = instance else {
        return match h.instances.as_slice() {
            [one] => Ok(one),
            [] => Err(error(404, format!("{} runs no DN", h.node))),
            many => {
                let ids: Vec<String> = many.iter().map(|i| i.instance.to_string()).collect();
                Err(error(
                    400,
                    format!(
                        "this node runs several DNs ({}): add ?instance=ID",
                        ids.join(", ")
                    ),
                ))
            }
        };
    };
    let id: u32 = text
        .trim()
        .parse()
        .map_err(|_| error(400, format!("instance `{text}` is not an instance id")))?;
    h.instances
        .iter()
        .find(|i| i.instance == InstanceId(id))
        .ok_or_else(|| error(404, format!("no instance {id} on {}", h.node)))
}

/// `/replica` (with the lag bound `max_lag` when asked).
fn replica(
    h: &AgentHealth,
    inst: &InstanceHealth,
    now: Instant,
    max_lag: Option<u64>,
) -> Result<(), String> {
    health(inst)?;
    if inst.role != Some(DnRole::Standby) {
        return Err(format!(
            "the instance is {}, not a standby",
            role_name(inst.role)
        ));
    }
    if inst.db_state != Some(DbState::Normal) {
        let state = inst
            .db_state
            .map_or_else(|| "unknown".into(), |s| format!("{s:?}"));
        return Err(format!("the standby's state is {state}, not Normal"));
    }
    let view = inst
        .view
        .ok_or("no CMS leader has named the group's primary to this agent yet")?;
    let sample_age = now.saturating_since(inst.status_at);
    let streaming = inst.upstream.is_some_and(|u| {
        u.instance == view.primary
            && u.last_msg_age.saturating_add(sample_age) < h.params.freshness_window()
    });
    if !streaming {
        return Err(format!(
            "not streaming from the current primary {}",
            view.primary
        ));
    }
    let Some(max) = max_lag else {
        return Ok(());
    };
    let lag = lag_bytes(h, inst, now)?;
    if lag > max {
        return Err(format!("replay lag {lag} bytes exceeds {max}"));
    }
    Ok(())
}

/// Replay lag: bytes between the standby's replay position and the primary's position, if the
/// leader's copy of that is fresh enough (2 × `agent_report_interval`). Replay, not receive:
/// a standby that receives but does not apply WAL serves stale reads.
fn lag_bytes(h: &AgentHealth, inst: &InstanceHealth, now: Instant) -> Result<u64, String> {
    let fresh = inst
        .view
        .and_then(|v| v.primary_position)
        .filter(|(_, at)| now.saturating_since(*at) <= h.params.report_interval() * 2);
    let Some((primary, _)) = fresh else {
        return Err(
            "the primary's position from the CMS leader is missing or older than 2 report \
             intervals"
                .into(),
        );
    };
    let replay = inst
        .replay
        .ok_or("the standby has no replay position (pg_last_wal_replay_lsn() is NULL)")?;
    Ok(primary.lsn.0.saturating_sub(replay.0))
}

fn health(inst: &InstanceHealth) -> Result<(), String> {
    if !inst.running || inst.fencing {
        return Err("the instance is not running or is being killed".into());
    }
    if !inst.query_ok {
        return Err("the instance's last status query failed".into());
    }
    Ok(())
}

fn liveness(h: &AgentHealth, now: Instant) -> RestAnswer {
    let ago = now.saturating_since(h.stepped_at);
    RestAnswer {
        status: if ago <= h.params.report_interval() * 2 {
            200
        } else {
            503
        },
        body: RestBody::Liveness {
            stepped_ms_ago: u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
        },
    }
}

fn cluster(h: &AgentHealth, now: Instant, history: bool) -> RestAnswer {
    if h.leader.is_none() {
        return error(503, "no CMS leader answers this agent".into());
    }
    match &h.cluster {
        Some((at, status)) if now.saturating_since(*at) <= CLUSTER_STATUS_MAX_AGE => RestAnswer {
            status: 200,
            body: if history {
                RestBody::History(Arc::clone(status))
            } else {
                RestBody::Cluster(Arc::clone(status))
            },
        },
        Some((at, _)) => error(
            503,
            format!(
                "the CMS leader's cluster status is {:.1} s old",
                now.saturating_since(*at).as_secs_f64()
            ),
        ),
        None => error(
            503,
            "no cluster status received from the CMS leader yet".into(),
        ),
    }
}

fn role_name(role: Option<DnRole>) -> String {
    role.map_or_else(
        || "unknown".into(),
        |r| format!("{r:?}").to_ascii_lowercase(),
    )
}

fn member_view(h: &AgentHealth, inst: &InstanceHealth, now: Instant) -> MemberView {
    MemberView {
        node: h.node,
        instance: inst.instance,
        role: if inst.running {
            role_name(inst.role)
        } else {
            "down".into()
        },
        state: inst.db_state.map(|s| format!("{s:?}")),
        term: inst.term,
        group_term: inst.view.map(|v| v.term),
        group_primary: inst.view.map(|v| v.primary),
        timeline: inst.position.map(|p| p.timeline.0),
        lsn: inst.position.map(|p| p.lsn.0),
        replay_lsn: inst.replay.map(|l| l.0),
        lag_bytes: (inst.role == Some(DnRole::Standby))
            .then(|| lag_bytes(h, inst, now).ok())
            .flatten(),
        read_only: inst.read_only,
        streaming: inst.downstreams.iter().map(|d| d.instance).collect(),
        upstream: inst.upstream.map(|u| u.instance),
        cms_leader: h.leader,
        write_lease: inst.write_lease(&h.params, now).is_ok(),
        reason: None,
    }
}

#[cfg(test)]
#[path = "rest_tests.rs"]
mod tests;
