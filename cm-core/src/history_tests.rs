use super::*;
use crate::codec;
use crate::ids::{LogIndex, NodeId, QuorumTerm};
use crate::msg::{Endpoint, Envelope, Msg};
use crate::server::quorum::QuorumMsg;
use crate::state::{ClusterState, Conflict};

fn promo(group: u32, term: u64) -> Promotion {
    Promotion {
        group: GroupId(group),
        term: Term(term),
        instance: InstanceId(6001),
        previous: Some(InstanceId(6002)),
        reason: PromotionReason::Failover,
        timeline: Timeline(2),
        wall_ms: WallMillis(1_764_000_000_000),
    }
}

#[test]
fn a_group_keeps_its_newest_twenty() {
    let mut log = PromotionLog::default();
    for t in 1..=25 {
        assert!(log.record(promo(1, t)));
    }
    assert_eq!(log.len(), PER_GROUP);
    let terms: Vec<u64> = log.entries().map(|p| p.term.0).collect();
    assert_eq!(terms, (6..=25).collect::<Vec<_>>());
    assert_eq!(log.last_of(GroupId(1)).map(|p| p.term), Some(Term(25)));
}

#[test]
fn one_busy_group_does_not_push_out_another_groups_entries() {
    let mut log = PromotionLog::default();
    log.record(promo(2, 1));
    for t in 1..=30 {
        log.record(promo(1, t));
    }
    assert_eq!(log.last_of(GroupId(2)).map(|p| p.term), Some(Term(1)));
    assert_eq!(log.len(), PER_GROUP + 1);
}

#[test]
fn the_cluster_keeps_at_most_one_thousand_oldest_out_first() {
    let mut log = PromotionLog::default();
    // 60 groups × 20 = 1,200 > 1,000: the first 200 recorded go.
    for t in 1..=20 {
        for g in 1..=60 {
            log.record(promo(g, t));
        }
    }
    assert_eq!(log.len(), TOTAL);
    let first = log.entries().next().unwrap();
    assert_eq!((first.group, first.term), (GroupId(21), Term(4)));
    let last = log.entries().next_back().unwrap();
    assert_eq!((last.group, last.term), (GroupId(60), Term(20)));
}

#[test]
fn a_repeated_group_term_is_refused() {
    let mut log = PromotionLog::default();
    assert!(log.record(promo(1, 4)));
    let mut again = promo(1, 4);
    again.instance = InstanceId(6003);
    assert!(!log.record(again));
    assert_eq!(log.len(), 1);
    assert_eq!(log.entries().next().unwrap().instance, InstanceId(6001));
}

/// The worst case: 1,000 entries with every integer at its widest varint, inside a snapshot
/// message frame, stays far below the frame limit (under 2 % of it).
#[test]
fn a_full_history_in_a_snapshot_frame_stays_far_below_the_frame_limit() {
    let mut state = ClusterState::default();
    for i in 0..TOTAL {
        let i = u32::try_from(i).unwrap();
        state.promotions.record(Promotion {
            group: GroupId(u32::MAX - i / 20),
            // Increasing within a group (as recorded), still at the widest varint.
            term: Term(u64::MAX - 2_000 + u64::from(i)),
            instance: InstanceId(u32::MAX),
            previous: Some(InstanceId(u32::MAX)),
            reason: PromotionReason::Switchover,
            timeline: Timeline(u32::MAX),
            wall_ms: WallMillis(u64::MAX),
        });
    }
    assert_eq!(state.promotions.len(), TOTAL);
    let bare = codec::encode_persisted(&state).unwrap().len();
    let frame = codec::encode(&Envelope {
        from: Endpoint::server(NodeId(1)),
        to: Endpoint::server(NodeId(2)),
        quorum_term: QuorumTerm(u64::MAX),
        msg: Msg::Quorum(QuorumMsg::Snapshot {
            last_index: LogIndex(u64::MAX),
            last_term: QuorumTerm(u64::MAX),
            state,
            round: u64::MAX,
        }),
    })
    .unwrap()
    .len();
    // 5 varint u32 (≤ 5 B), 2 varint u64 (≤ 9 B), a tag and an option byte: ≤ 45 B a row.
    assert!(bare <= 45 * TOTAL + 64, "{bare} bytes");
    assert!(frame <= codec::MAX_BODY_LEN / 50, "{frame} bytes");
}

#[test]
fn reasons_print_as_their_json_names() {
    for r in [
        PromotionReason::Start,
        PromotionReason::Failover,
        PromotionReason::Switchover,
        PromotionReason::PhonyDead,
        PromotionReason::Disk,
    ] {
        let json = serde_json_free_name(r);
        assert_eq!(json, r.as_str());
    }
}

/// The kebab-case serde name without a JSON dependency in cm-core: TOML serialises a unit
/// variant as its name.
fn serde_json_free_name(r: PromotionReason) -> String {
    #[derive(Serialize)]
    struct W {
        r: PromotionReason,
    }
    let s = toml::to_string(&W { r }).unwrap();
    s.trim()
        .trim_start_matches("r = \"")
        .trim_end_matches('"')
        .to_string()
}

#[test]
fn applying_a_record_needs_the_group_to_have_reached_its_term_and_happens_once() {
    let cfg = crate::config::ClusterConfig::from_toml_str(crate::config::EXAMPLE_CONFIG).unwrap();
    let mut state = ClusterState::initial(&cfg);
    let change = crate::state::Change::RecordPromotion(promo(1, 1));
    assert_eq!(
        state.apply(&change),
        Err(Conflict::TermMoved {
            expected: Term(1),
            actual: Term(0)
        })
    );
    state.groups.get_mut(&GroupId(1)).unwrap().term = Term(1);
    assert_eq!(state.apply(&change), Ok(()));
    assert_eq!(state.apply(&change), Err(Conflict::AlreadyRecorded));
    assert_eq!(
        state.apply(&crate::state::Change::RecordPromotion(promo(9, 1))),
        Err(Conflict::NoSuchGroup(GroupId(9)))
    );
    assert_eq!(state.promotions.len(), 1);
}

#[test]
fn with_more_than_fifty_groups_a_groups_newest_promotion_is_never_dropped_nor_rerecorded() {
    let mut log = PromotionLog::default();
    // 51 groups × 20 promotions = 1020 > TOTAL: the cluster's oldest entries are group 1's.
    for g in 1..=51 {
        for t in 1..=20 {
            assert!(log.record(promo(g, t)));
        }
    }
    assert_eq!(log.len(), TOTAL);
    assert_eq!(log.last_of(GroupId(1)).map(|p| p.term), Some(Term(20)));
    assert!(log.contains(GroupId(1), Term(20)));
    // Re-driven by a new leader, group 1's term 20 is not recorded a second time ...
    assert!(!log.record(promo(1, 20)));
    // ... nor an older term the bound dropped.
    assert!(!log.record(promo(1, 3)));
    assert_eq!(log.len(), TOTAL);
    // Group 1 lost its 19 oldest and one of group 2's went; every group still has its newest.
    assert_eq!(log.entries().filter(|p| p.group == GroupId(1)).count(), 1);
    assert_eq!(log.entries().filter(|p| p.group == GroupId(2)).count(), 19);
    for g in 1..=51 {
        assert_eq!(log.last_of(GroupId(g)).map(|p| p.term), Some(Term(20)));
    }
}
