//! The client's history and the checks of SPEC §18 on it: S3 (every acknowledged row on the
//! final primary) and S4 on real PostgreSQL (no acknowledgement from an older timeline of a
//! write sent after a newer timeline acknowledged one, and one node per timeline), the
//! recovery figures per fault and the table.
//!
//! Times are milliseconds since the start of the run (one monotonic clock: the client and the
//! nemesis run in one process).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

/// How one write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// COMMIT returned (autocommit INSERT at `synchronous_commit = on`), on this timeline.
    Ack {
        /// The timeline the row was written on.
        timeline: u32,
    },
    /// The server refused the statement (e.g. a read-only standby): not committed.
    Fail(String),
    /// No answer, or the session broke: it may or may not have committed.
    Unknown(String),
}

/// One write of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The row's unique id.
    pub id: i64,
    /// The client session.
    pub session: u32,
    /// The node the session is connected to.
    pub node: u32,
    /// When the INSERT was sent.
    pub invoked_ms: u64,
    /// When it ended.
    pub completed_ms: u64,
    /// How.
    pub outcome: Outcome,
}

impl Op {
    /// The timeline, when acknowledged.
    pub const fn acked_timeline(&self) -> Option<u32> {
        match self.outcome {
            Outcome::Ack { timeline } => Some(timeline),
            _ => None,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        let (outcome, detail) = match &self.outcome {
            Outcome::Ack { timeline } => ("ack", json!(timeline)),
            Outcome::Fail(m) => ("fail", json!(m)),
            Outcome::Unknown(m) => ("unknown", json!(m)),
        };
        json!({
            "id": self.id, "session": self.session, "node": self.node,
            "invoked_ms": self.invoked_ms, "completed_ms": self.completed_ms,
            "outcome": outcome, "detail": detail,
        })
    }
}

/// Acknowledged writes missing from the final primary's rows (S3).
pub fn lost_acks<'a>(ops: &'a [Op], present: &HashSet<i64>) -> Vec<&'a Op> {
    ops.iter()
        .filter(|o| o.acked_timeline().is_some() && !present.contains(&o.id))
        .collect()
}

/// An acknowledgement S4 forbids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S4Violation {
    /// The offending write.
    pub op: Op,
    /// Its timeline.
    pub timeline: u32,
    /// The timeline that had already acknowledged (equal to `timeline` when two nodes
    /// acknowledged on one timeline).
    pub newer_timeline: u32,
    /// The node that acknowledged on it first.
    pub newer_node: u32,
    /// When that timeline's (or node's) first acknowledgement returned.
    pub newer_first_ack_ms: u64,
}

/// S4 on the history: with sessions open on every member, an acknowledgement on timeline t of
/// a write *sent after* a newer timeline had acknowledged one means two members acknowledged
/// commits at once; so does a second node acknowledging on a timeline another node
/// acknowledged on first (two promotions to one timeline id). A write sent before the newer
/// timeline's first acknowledgement and answered after it is a late answer to a commit the old
/// primary had already replicated ([`late_acks`]); S3 decides whether it survived.
pub fn s4_violations(ops: &[Op]) -> Vec<S4Violation> {
    // Each timeline's first acknowledgement: (time, node).
    let mut first: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
    let mut acks: Vec<&Op> = ops
        .iter()
        .filter(|o| o.acked_timeline().is_some())
        .collect();
    acks.sort_by_key(|o| (o.completed_ms, o.id));
    for o in &acks {
        let tl = o.acked_timeline().unwrap_or_default();
        first.entry(tl).or_insert((o.completed_ms, o.node));
    }
    let mut out = Vec::new();
    for o in acks {
        let tl = o.acked_timeline().unwrap_or_default();
        let (own_first, owner) = first[&tl];
        if o.node != owner {
            out.push(S4Violation {
                op: o.clone(),
                timeline: tl,
                newer_timeline: tl,
                newer_node: owner,
                newer_first_ack_ms: own_first,
            });
            continue;
        }
        // The earliest first-acknowledgement of any newer timeline.
        if let Some((&newer, &(at, node))) =
            first.range(tl + 1..).min_by_key(|(t, (at, _))| (*at, **t))
            && at < o.invoked_ms
        {
            out.push(S4Violation {
                op: o.clone(),
                timeline: tl,
                newer_timeline: newer,
                newer_node: node,
                newer_first_ack_ms: at,
            });
        }
    }
    out
}

/// Acknowledgements from an older timeline returned after a newer timeline's first one, of
/// writes sent before it (the strict reading of SPEC §18's ordering; reported, not a failure
/// on its own: a frozen primary whose standby had confirmed the commit answers it on thaw).
pub fn late_acks(ops: &[Op]) -> Vec<&Op> {
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    for o in ops {
        if let Some(tl) = o.acked_timeline() {
            let e = first.entry(tl).or_insert(o.completed_ms);
            *e = (*e).min(o.completed_ms);
        }
    }
    ops.iter()
        .filter(|o| {
            o.acked_timeline().is_some_and(|tl| {
                first
                    .range(tl + 1..)
                    .any(|(_, at)| *at < o.completed_ms && *at >= o.invoked_ms)
            })
        })
        .collect()
}

/// Milliseconds during which two members acknowledged: per older timeline (and node) with
/// violations, from the send of its first violating write (necessarily after the newer
/// timeline acknowledged) to its last violating acknowledgement — the window observed on the
/// old member, not the time it spent frozen or cut off before it.
pub fn dual_writable_ms(violations: &[S4Violation]) -> u64 {
    let mut windows: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
    for v in violations {
        let w = windows
            .entry((v.timeline, v.op.node))
            .or_insert((v.op.invoked_ms, v.op.completed_ms));
        w.0 = w.0.min(v.op.invoked_ms);
        w.1 = w.1.max(v.op.completed_ms);
    }
    windows.values().map(|(a, b)| b.saturating_sub(*a)).sum()
}

/// Whole-node freezes of the primary with the client's sessions kept open on it (issue 16
/// item 3): what the thawed old primary acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OldPrimaryFreezes {
    /// Freezes of the primary's node.
    pub freezes: usize,
    /// Writes the old primary acknowledged after a newer timeline had acknowledged one, of
    /// writes sent after that (S4 violations on it).
    pub dual_acks: usize,
    /// The window of those, summed over freezes (see [`dual_writable_ms`]).
    pub dual_ms: u64,
    /// Late answers on it: writes sent before the newer timeline's first acknowledgement.
    pub late: usize,
    /// Acknowledged writes of its sessions lost (S3): acknowledged between the previous
    /// fault's convergence and the next fault.
    pub lost: usize,
}

/// Sums [`OldPrimaryFreezes`] over the freezes of a primary's node: per freeze, the old
/// primary's node and the window from the previous fault's convergence (or the start) to the
/// next fault (or the end).
pub fn old_primary_freezes(
    faults: &[FaultRecord],
    ops: &[Op],
    lost: &[&Op],
    s4: &[S4Violation],
) -> OldPrimaryFreezes {
    let late = late_acks(ops);
    let mut out = OldPrimaryFreezes::default();
    for (i, f) in faults.iter().enumerate() {
        if f.kind != "freeze" || !f.role.starts_with("primary") {
            continue;
        }
        let from = i
            .checked_sub(1)
            .and_then(|p| faults[p].converged_ms)
            .unwrap_or(0);
        let to = faults.get(i + 1).map_or(u64::MAX, |n| n.started_ms);
        let on = |o: &Op| o.node == f.node && o.completed_ms >= from && o.completed_ms < to;
        let mine: Vec<S4Violation> = s4.iter().filter(|v| on(&v.op)).cloned().collect();
        out.freezes += 1;
        out.dual_acks += mine.len();
        out.dual_ms += dual_writable_ms(&mine);
        out.late += late.iter().filter(|o| on(o)).count();
        out.lost += lost.iter().filter(|o| on(o)).count();
    }
    out
}

/// One fault as it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Its kind's name.
    pub kind: &'static str,
    /// The node it hit.
    pub node: u32,
    /// What the node was when it started (e.g. `primary`, `standby`, `cms leader`).
    pub role: String,
    /// When it started.
    pub started_ms: u64,
    /// When it healed.
    pub healed_ms: u64,
    /// When the cluster was Normal again with commits acknowledged (None: never, within the
    /// bound).
    pub converged_ms: Option<u64>,
    /// What went wrong, in words (which state the cluster was stuck in).
    pub anomaly: Option<String>,
}

impl FaultRecord {
    /// Milliseconds from the fault to the first acknowledgement of a write sent after it.
    pub fn write_recovery_ms(&self, ops: &[Op]) -> Option<u64> {
        ops.iter()
            .filter(|o| o.acked_timeline().is_some() && o.invoked_ms >= self.started_ms)
            .map(|o| o.completed_ms)
            .min()
            .map(|t| t - self.started_ms)
    }

    /// Milliseconds from healing to convergence.
    pub fn converge_ms(&self) -> Option<u64> {
        self.converged_ms.map(|c| c.saturating_sub(self.healed_ms))
    }
}

/// Index of the fault whose window (its start up to the next one's) holds `t`.
fn fault_at(faults: &[FaultRecord], t: u64) -> Option<usize> {
    faults.iter().rposition(|f| f.started_ms <= t)
}

fn median(v: &mut [u64]) -> Option<u64> {
    v.sort_unstable();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some(v[n / 2 - 1].midpoint(v[n / 2])),
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |m| format!("{:.1}", m as f64 / 1000.0))
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The fault kind.
    pub kind: &'static str,
    /// How many.
    pub count: usize,
    /// Write recovery median and max (ms).
    pub write_recovery: (Option<u64>, Option<u64>),
    /// Convergence median and max (ms).
    pub converge: (Option<u64>, Option<u64>),
    /// Faults that never converged.
    pub not_converged: usize,
    /// Acknowledged writes lost in this kind's windows.
    pub lost: usize,
    /// Dual-acknowledging milliseconds in this kind's windows.
    pub dual_ms: u64,
}

/// The table of SPEC §18: per fault kind, count, median and max recovery, lost acks and
/// dual-writable ms (lost writes and violations counted in the window of the fault during
/// which the write was sent).
pub fn table(faults: &[FaultRecord], ops: &[Op], lost: &[&Op], s4: &[S4Violation]) -> Vec<Row> {
    let kinds: BTreeSet<&'static str> = faults.iter().map(|f| f.kind).collect();
    let mut rows = Vec::new();
    for kind in kinds {
        let idx: Vec<usize> = (0..faults.len())
            .filter(|i| faults[*i].kind == kind)
            .collect();
        let mut wr: Vec<u64> = idx
            .iter()
            .filter_map(|i| faults[*i].write_recovery_ms(ops))
            .collect();
        let mut cv: Vec<u64> = idx
            .iter()
            .filter_map(|i| faults[*i].converge_ms())
            .collect();
        let in_kind = |t: u64| fault_at(faults, t).is_some_and(|i| faults[i].kind == kind);
        let lost_n = lost.iter().filter(|o| in_kind(o.invoked_ms)).count();
        let mine: Vec<S4Violation> = s4
            .iter()
            .filter(|v| in_kind(v.op.invoked_ms))
            .cloned()
            .collect();
        rows.push(Row {
            kind,
            count: idx.len(),
            write_recovery: (median(&mut wr), wr.iter().max().copied()),
            converge: (median(&mut cv), cv.iter().max().copied()),
            not_converged: idx
                .iter()
                .filter(|i| faults[**i].converged_ms.is_none())
                .count(),
            lost: lost_n,
            dual_ms: dual_writable_ms(&mine),
        });
    }
    rows
}

/// The table as text.
pub fn render_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| fault | count | write recovery median / max (s) | converged median / max (s) | \
         not converged | lost acks | dual-writable ms |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} |",
            r.kind,
            r.count,
            secs(r.write_recovery.0),
            secs(r.write_recovery.1),
            secs(r.converge.0),
            secs(r.converge.1),
            r.not_converged,
            r.lost,
            r.dual_ms
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: i64, node: u32, tl: u32, invoked: u64, completed: u64) -> Op {
        Op {
            id,
            session: node,
            node,
            invoked_ms: invoked,
            completed_ms: completed,
            outcome: Outcome::Ack { timeline: tl },
        }
    }

    fn fail(id: i64, node: u32, at: u64) -> Op {
        Op {
            id,
            session: node,
            node,
            invoked_ms: at,
            completed_ms: at + 1,
            outcome: Outcome::Fail("read-only".into()),
        }
    }

    #[test]
    fn an_acknowledged_row_missing_from_the_final_primary_is_lost_and_others_are_not() {
        let ops = vec![
            ack(1, 1, 1, 0, 5),
            ack(2, 1, 1, 10, 15),
            fail(3, 2, 20),
            Op {
                outcome: Outcome::Unknown("connection closed".into()),
                ..ack(4, 1, 1, 30, 40)
            },
        ];
        let present: HashSet<i64> = [1].into();
        let lost: Vec<i64> = lost_acks(&ops, &present).iter().map(|o| o.id).collect();
        // Row 2 was acknowledged and is gone; the failed and the unknown writes may be absent.
        assert_eq!(lost, vec![2]);
        assert!(lost_acks(&ops, &[1, 2].into()).is_empty());
    }

    #[test]
    fn a_timeline_moving_forward_is_no_violation() {
        let ops = vec![
            ack(1, 1, 1, 0, 5),
            ack(2, 1, 1, 6, 9),
            fail(3, 1, 20),
            ack(4, 2, 2, 30, 35),
            ack(5, 2, 2, 36, 40),
            ack(6, 3, 3, 50, 55),
        ];
        assert!(s4_violations(&ops).is_empty());
        assert!(late_acks(&ops).is_empty());
        assert_eq!(dual_writable_ms(&s4_violations(&ops)), 0);
    }

    #[test]
    fn the_old_primary_acknowledging_a_write_sent_after_the_new_one_acknowledged_is_s4() {
        let ops = vec![
            ack(1, 1, 1, 0, 5),
            ack(2, 2, 2, 100, 110),
            // Sent to the old primary (timeline 1) after timeline 2 acknowledged at 110.
            ack(3, 1, 1, 120, 130),
            ack(4, 1, 1, 140, 150),
        ];
        let v = s4_violations(&ops);
        let ids: Vec<i64> = v.iter().map(|v| v.op.id).collect();
        assert_eq!(ids, vec![3, 4]);
        assert_eq!((v[0].newer_timeline, v[0].newer_node), (2, 2));
        assert_eq!(v[0].newer_first_ack_ms, 110);
        // The old member acknowledged writes sent from 120 on until 150.
        assert_eq!(dual_writable_ms(&v), 30);
    }

    #[test]
    fn a_late_answer_to_a_write_sent_before_the_failover_is_reported_but_is_not_s4() {
        // Sent at 50 to the primary of timeline 1, which froze; timeline 2 acknowledged at
        // 110; the thawed old primary answered at 200.
        let ops = vec![
            ack(1, 1, 1, 0, 5),
            ack(2, 1, 1, 50, 200),
            ack(3, 2, 2, 100, 110),
        ];
        assert!(s4_violations(&ops).is_empty());
        let late: Vec<i64> = late_acks(&ops).iter().map(|o| o.id).collect();
        assert_eq!(late, vec![2]);
        // Whether it survived is S3's question.
        assert_eq!(lost_acks(&ops, &[1, 3].into()).len(), 1);
    }

    #[test]
    fn two_nodes_acknowledging_on_one_timeline_is_s4() {
        // Both standbys promoted to timeline 2 (split brain with equal timeline ids).
        let ops = vec![
            ack(1, 1, 1, 0, 5),
            ack(2, 2, 2, 100, 110),
            ack(3, 3, 2, 105, 120),
        ];
        let v = s4_violations(&ops);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].op.id, v[0].newer_node, v[0].timeline), (3, 2, 2));
    }

    #[test]
    fn the_table_counts_recovery_lost_and_dual_ms_per_kind() {
        let faults = vec![
            FaultRecord {
                kind: "kill",
                node: 1,
                role: "primary".into(),
                started_ms: 100,
                healed_ms: 2_000,
                converged_ms: Some(5_000),
                anomaly: None,
            },
            FaultRecord {
                kind: "freeze",
                node: 2,
                role: "primary".into(),
                started_ms: 10_000,
                healed_ms: 20_000,
                converged_ms: None,
                anomaly: Some("stuck".into()),
            },
        ];
        let ops = vec![
            ack(1, 1, 1, 0, 50),
            // Kill of node 1 at 100: first ack of a write sent after it at 8_100.
            ack(2, 2, 2, 7_000, 8_100),
            // Freeze of node 2 at 10_000; node 3 acknowledges on timeline 3 at 15_000.
            ack(3, 3, 3, 14_000, 15_000),
            // The thawed node 2 acknowledges a write sent after that: S4, and it is lost.
            ack(4, 2, 2, 16_000, 20_500),
        ];
        let present: HashSet<i64> = [1, 2, 3].into();
        let lost = lost_acks(&ops, &present);
        let s4 = s4_violations(&ops);
        let rows = table(&faults, &ops, &lost, &s4);
        let kill = rows.iter().find(|r| r.kind == "kill").unwrap();
        assert_eq!(kill.count, 1);
        assert_eq!(kill.write_recovery, (Some(8_000), Some(8_000)));
        assert_eq!(kill.converge, (Some(3_000), Some(3_000)));
        assert_eq!((kill.lost, kill.dual_ms, kill.not_converged), (0, 0, 0));
        let freeze = rows.iter().find(|r| r.kind == "freeze").unwrap();
        assert_eq!(freeze.write_recovery, (Some(5_000), Some(5_000)));
        assert_eq!(freeze.converge, (None, None));
        assert_eq!(
            (freeze.lost, freeze.dual_ms, freeze.not_converged),
            (1, 4_500, 1)
        );
        let text = render_table(&rows);
        assert!(
            text.contains("| freeze | 1 | 5.0 / 5.0 | - / - | 1 | 1 | 4500 |"),
            "{text}"
        );
        assert!(
            text.contains("| kill | 1 | 8.0 / 8.0 | 3.0 / 3.0 | 0 | 0 | 0 |"),
            "{text}"
        );
    }

    fn freeze(node: u32, role: &str, started: u64, converged: u64) -> FaultRecord {
        FaultRecord {
            kind: "freeze",
            node,
            role: role.into(),
            started_ms: started,
            healed_ms: started + 10,
            converged_ms: Some(converged),
            anomaly: None,
        }
    }

    /// Issue 16 item 3: per freeze of the primary's node, what the thawed old primary
    /// acknowledged — after the new primary's first acknowledgement (S4), late answers, lost.
    #[test]
    fn a_thawed_old_primary_is_judged_within_its_freeze() {
        let faults = vec![
            freeze(2, "standby", 0, 50),
            freeze(1, "primary", 100, 300),
            freeze(3, "primary + cms leader", 400, 500),
        ];
        let ops = vec![
            // Node 1 on timeline 1 until its freeze at 100; node 2 promoted (timeline 2) acks
            // at 150.
            ack(1, 1, 1, 60, 70),
            ack(2, 2, 2, 140, 150),
            // Sent before 150, answered by the thawed node 1 after it: late.
            ack(3, 1, 1, 90, 200),
            // Sent after 150 and acknowledged by the thawed node 1: dual.
            ack(4, 1, 1, 160, 210),
            ack(5, 1, 1, 170, 230),
            // Node 2 again, and node 1 in the next fault's window (not this freeze's).
            ack(6, 2, 2, 240, 250),
            ack(7, 1, 1, 420, 430),
        ];
        let s4 = s4_violations(&ops);
        let lost_ids: Vec<&Op> = ops.iter().filter(|o| o.id == 1).collect();
        let o = old_primary_freezes(&faults, &ops, &lost_ids, &s4);
        assert_eq!(o.freezes, 2);
        assert_eq!(o.late, 1);
        // 4 and 5 within freeze 2 (160 → 230); 7 on node 1 is not in freeze 3's node.
        assert_eq!((o.dual_acks, o.dual_ms), (2, 70));
        assert_eq!(o.lost, 1);
    }
}
