//! `cm_ctl history [--json]` and the last-promotion lines of `cm_ctl query -v` (SPEC.md §15).
//! The JSON form is the `history` array of the `cm_ctl query --json` object, which is also
//! what an agent's `/history` serves.

use std::fmt::Write as _;

use cm_core::ctl::ClusterStatus;
use cm_core::history::Promotion;

/// The history as a table with a header row, oldest first; one line saying so when empty.
pub fn render_history(s: &ClusterStatus) -> String {
    if s.history.is_empty() {
        return "no promotion recorded\n".to_string();
    }
    let mut rows = vec![
        [
            "group",
            "term",
            "instance",
            "previous",
            "reason",
            "timeline",
            "time (UTC)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(s.history.iter().map(cells));
    crate::ctl_cli::table(&rows)
}

/// `cm_ctl history --json`: the array, pretty-printed.
pub fn history_json(s: &ClusterStatus) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&s.history)
}

/// `query -v`: one line per group with its newest promotion.
pub fn render_last_promotions(s: &ClusterStatus) -> String {
    let mut out = String::new();
    for g in &s.groups {
        let last = s.history.iter().rev().find(|p| p.group == g.group);
        let _ = match last {
            Some(p) => writeln!(
                out,
                "group {}: last promotion {} at term {} ({}, previous {}, {})",
                g.group.0,
                p.instance.0,
                p.term.0,
                p.reason.as_str(),
                previous(p),
                utc_text(p.wall_ms.0)
            ),
            None => writeln!(out, "group {}: no promotion recorded", g.group.0),
        };
    }
    out
}

fn previous(p: &Promotion) -> String {
    p.previous
        .map_or_else(|| "-".to_string(), |i| i.0.to_string())
}

fn cells(p: &Promotion) -> Vec<String> {
    vec![
        p.group.0.to_string(),
        p.term.0.to_string(),
        p.instance.0.to_string(),
        previous(p),
        p.reason.as_str().to_string(),
        p.timeline.0.to_string(),
        utc_text(p.wall_ms.0),
    ]
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), by the civil-from-days
/// algorithm (proleptic Gregorian calendar).
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use cm_core::ctl::{ClusterHealth, GroupStatus};
    use cm_core::history::{Promotion, PromotionReason};
    use cm_core::ids::{GroupId, InstanceId, QuorumTerm, Term, Timeline};
    use cm_core::time::WallMillis;

    use super::*;

    fn status(history: Vec<Promotion>) -> ClusterStatus {
        ClusterStatus {
            cluster: "demo".into(),
            quorum_term: QuorumTerm(1),
            cms: Vec::new(),
            state: ClusterHealth::Normal,
            balanced: true,
            paused: false,
            groups: vec![GroupStatus {
                group: GroupId(1),
                term: Term(2),
                members: Vec::new(),
                switchover: None,
                last_switchover: None,
                commits_acknowledged: true,
            }],
            history,
            resources: Vec::new(),
        }
    }

    fn p(term: u64, instance: u32, previous: Option<u32>, reason: PromotionReason) -> Promotion {
        Promotion {
            group: GroupId(1),
            term: Term(term),
            instance: InstanceId(instance),
            previous: previous.map(InstanceId),
            reason,
            timeline: Timeline(u32::try_from(term).unwrap()),
            wall_ms: WallMillis(1_764_689_731_042 + term * 1000),
        }
    }

    #[test]
    fn utc_text_is_the_civil_date() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc_text(1_764_689_731_042), "2025-12-02 15:35:31.042");
    }

    #[test]
    fn history_prints_a_header_and_one_row_per_promotion_oldest_first() {
        let s = status(vec![
            p(1, 6001, None, PromotionReason::Start),
            p(2, 6002, Some(6001), PromotionReason::Failover),
        ]);
        let text = render_history(&s);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![
                    "group", "term", "instance", "previous", "reason", "timeline", "time", "(UTC)"
                ],
                vec![
                    "1",
                    "1",
                    "6001",
                    "-",
                    "start",
                    "1",
                    "2025-12-02",
                    "15:35:32.042"
                ],
                vec![
                    "1",
                    "2",
                    "6002",
                    "6001",
                    "failover",
                    "2",
                    "2025-12-02",
                    "15:35:33.042"
                ],
            ]
        );
        assert_eq!(render_history(&status(vec![])), "no promotion recorded\n");
    }

    #[test]
    fn history_json_is_the_query_objects_history_array() {
        let s = status(vec![p(2, 6002, Some(6001), PromotionReason::PhonyDead)]);
        let printed: serde_json::Value = serde_json::from_str(&history_json(&s).unwrap()).unwrap();
        let query: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(printed, query["history"]);
        assert_eq!(printed[0]["reason"], "phony-dead");
        assert_eq!(printed[0]["previous"], 6001);
        assert_eq!(printed[0]["wall_ms"], 1_764_689_733_042_u64);
    }

    #[test]
    fn query_v_names_each_groups_last_promotion() {
        let s = status(vec![
            p(1, 6001, None, PromotionReason::Start),
            p(2, 6002, Some(6001), PromotionReason::Switchover),
        ]);
        assert_eq!(
            render_last_promotions(&s),
            "group 1: last promotion 6002 at term 2 (switchover, previous 6001, \
             2025-12-02 15:35:33.042)\n"
        );
        assert_eq!(
            render_last_promotions(&status(vec![])),
            "group 1: no promotion recorded\n"
        );
        let text = crate::ctl_cli::render_query(&s, true, false);
        assert!(text.contains("[  Last promotion   ]"), "{text}");
        assert!(
            text.contains("group 1: last promotion 6002 at term 2"),
            "{text}"
        );
        assert!(!crate::ctl_cli::render_query(&s, false, false).contains("last promotion"));
    }
}
