use std::time::Duration;

use super::super::test_support::*;
use super::super::{COMPACT_AFTER, EntryPayload, LogEntry, Quorum, QuorumInput, QuorumMsg, Role};
use crate::WriteToken;
use crate::ids::ProposalId;
use crate::state::{Change, ClusterState, Outcome, OutcomeError, ReplicatedState};

fn entry(term: u64, index: u64, change: Option<Change>) -> LogEntry {
    LogEntry {
        term: t(term),
        index: idx(index),
        payload: change.map_or(EntryPayload::Noop, EntryPayload::Change),
    }
}

fn append(prev: (u64, u64), entries: Vec<LogEntry>, commit: u64) -> QuorumMsg {
    QuorumMsg::Append {
        prev_index: idx(prev.1),
        prev_term: t(prev.0),
        entries,
        commit: idx(commit),
        round: 1,
    }
}

fn ack(match_index: u64, round: u64) -> QuorumMsg {
    QuorumMsg::AppendReply {
        success: true,
        match_index: idx(match_index),
        round,
    }
}

#[test]
fn a_follower_acknowledges_entries_only_once_durable() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    let out = norm(q.step(
        ms(10),
        message(1, 1, append((0, 0), vec![entry(1, 1, None)], 0)),
    ));
    let persist = Out::Persist {
        token: 1,
        term: 1,
        voted_for: None,
        last_index: 1,
    };
    assert_eq!(out, vec![persist]);
    let out = norm(q.step(ms(12), done(WriteToken(1))));
    assert_eq!(out, vec![Out::Send(1, 1, ack(1, 1))]);
}

#[test]
fn a_conflicting_uncommitted_suffix_is_replaced_by_the_leaders_entries() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    q.term = t(1);
    q.log.append(entry(1, 1, None));
    q.log.append(entry(1, 2, Some(Change::SetPaused(false))));
    q.commit = idx(1);
    let replacing = vec![entry(2, 2, Some(Change::SetPaused(true)))];
    let out = norm(q.step(ms(10), message(3, 2, append((1, 1), replacing, 2))));
    let persist = Out::Persist {
        token: 1,
        term: 2,
        voted_for: None,
        last_index: 2,
    };
    assert_eq!(out, vec![persist]);
    assert_eq!(q.log.term_at(idx(2)), Some(t(2)));
    assert_eq!(q.commit, idx(2));
    assert!(q.committed().paused);
}

#[test]
fn an_append_after_a_gap_is_refused_at_once_with_a_hint() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    let out = norm(q.step(ms(10), message(1, 1, append((1, 5), vec![], 5))));
    let persist = Out::Persist {
        token: 1,
        term: 1,
        voted_for: None,
        last_index: 0,
    };
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 1,
    };
    assert_eq!(out, vec![persist, Out::Send(1, 1, refusal)]);
}

#[test]
fn entries_of_an_earlier_term_commit_only_through_an_entry_of_the_current_term() {
    let cfg = config(3);
    let mut q = started(&cfg, 1, ms(0));
    q.term = t(2);
    q.log.append(entry(2, 1, Some(Change::SetPaused(true))));
    let now = (ms(0) + q.params.startup_vote_holdoff()).max(q.election_at);
    let _ = q.step(now, QuorumInput::Tick);
    let granted = QuorumMsg::PreVoteReply {
        term: t(3),
        granted: true,
    };
    let out = q.step(now, message(2, 2, granted));
    let _ = q.step(now, done(last_token(&out).unwrap()));
    let out = q.step(now, message(2, 3, QuorumMsg::VoteReply { granted: true }));
    // Node 2 counted for the first time (written first), then the leader's no-op.
    let out = q.step(now, done(last_token(&out).unwrap()));
    let _ = q.step(now, done(last_token(&out).unwrap()));
    assert_eq!(q.role, Role::Leader);
    // A quorum (1 and 2) holds the term-2 entry: still not committed by counting.
    let _ = q.step(now, message(2, 3, ack(1, 1)));
    assert_eq!(q.commit, idx(0));
    assert!(!q.committed().paused);
    // Once the term-3 no-op is on a quorum, both commit.
    let _ = q.step(now, message(2, 3, ack(2, 1)));
    assert_eq!(q.commit, idx(2));
    assert!(q.committed().paused);
}

#[test]
fn a_committed_proposal_reports_its_outcome() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let id = q.propose(Change::SetPaused(true)).unwrap();
    let out = norm(q.step(now, QuorumInput::Flush));
    let persist = Out::Persist {
        token: 5,
        term: 1,
        voted_for: Some(1),
        last_index: 2,
    };
    let app = QuorumMsg::Append {
        prev_index: idx(1),
        prev_term: t(1),
        entries: vec![entry(1, 2, Some(Change::SetPaused(true)))],
        commit: idx(1),
        round: 2,
    };
    assert_eq!(
        out,
        vec![persist, Out::Send(2, 1, app.clone()), Out::Send(3, 1, app)]
    );
    let _ = q.step(now, done(WriteToken(5)));
    assert!(
        q.take_outcomes().is_empty(),
        "one durable copy is not a quorum"
    );
    let _ = q.step(now, message(2, 1, ack(2, 2)));
    let outcome = Outcome {
        id,
        change: Change::SetPaused(true),
        result: Ok(()),
    };
    assert_eq!(q.take_outcomes(), vec![outcome]);
    assert!(q.committed().paused);
}

#[test]
fn proposals_are_dropped_when_leadership_is_lost() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let appended = q.propose(Change::SetPaused(true)).unwrap();
    let _ = q.step(now, QuorumInput::Flush);
    let queued = q.propose(Change::SetStopping(true)).unwrap();
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 2,
    };
    let out = norm(q.step(now, message(2, 5, refusal)));
    let persist = Out::Persist {
        token: 6,
        term: 5,
        voted_for: None,
        last_index: 2,
    };
    assert_eq!(out, vec![persist, Out::SteppedDown(1)]);
    let dropped = |id: ProposalId, change| Outcome {
        id,
        change,
        result: Err(OutcomeError::Dropped),
    };
    assert_eq!(
        q.take_outcomes(),
        vec![
            dropped(appended, Change::SetPaused(true)),
            dropped(queued, Change::SetStopping(true))
        ]
    );
    assert_eq!(q.propose(Change::SetPaused(true)), None);
}

#[test]
fn a_leader_proposes_only_while_its_lease_holds() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let expiry = now + q.params.leader_lease();
    let _ = q.step(
        expiry - Duration::from_millis(1),
        QuorumInput::AgentsConnected {
            count: 3,
            includes_local: true,
        },
    );
    assert!(q.propose(Change::SetPaused(true)).is_some());
    let _ = q.step(
        expiry,
        QuorumInput::AgentsConnected {
            count: 3,
            includes_local: true,
        },
    );
    assert_eq!(q.role, Role::Leader);
    assert_eq!(q.propose(Change::SetPaused(true)), None);
}

#[test]
fn a_snapshot_replaces_the_state_and_is_acknowledged_once_durable() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    let mut state = ClusterState::initial(&cfg);
    state.paused = true;
    let snap = QuorumMsg::Snapshot {
        last_index: idx(200),
        last_term: t(1),
        state,
        round: 3,
    };
    let out = norm(q.step(ms(10), message(1, 1, snap)));
    let persist = Out::Persist {
        token: 1,
        term: 1,
        voted_for: None,
        last_index: 200,
    };
    assert_eq!(out, vec![persist]);
    assert!(q.committed().paused);
    assert_eq!((q.commit, q.applied), (idx(200), idx(200)));
    let out = norm(q.step(ms(11), done(WriteToken(1))));
    let reply = QuorumMsg::SnapshotReply {
        last_index: idx(200),
        round: 3,
    };
    assert_eq!(out, vec![Out::Send(1, 1, reply)]);
    let restored = Quorum::new(&cfg, crate::NodeId(2), 1, Some(stored_bytes(&q))).unwrap();
    assert!(
        restored.committed().paused,
        "the snapshot survives a restart"
    );
}

fn stored_bytes(q: &Quorum) -> Vec<u8> {
    crate::codec::encode_persisted(&q.stored()).unwrap()
}

#[test]
fn the_log_is_compacted_and_a_lagging_follower_gets_the_snapshot() {
    let cfg = config(3);
    let (mut q, mut now) = leader(&cfg);
    for i in 0..COMPACT_AFTER - 1 {
        q.propose(Change::SetParam {
            name: "k".into(),
            value: i.to_string(),
        })
        .unwrap();
        let out = q.step(now, QuorumInput::Flush);
        let _ = q.step(now, done(last_token(&out).unwrap()));
        let round = q.lead.as_ref().unwrap().next_round - 1;
        let _ = q.step(now, message(2, 1, ack(i + 2, round)));
        now += Duration::from_millis(1);
    }
    assert_eq!(q.applied, idx(COMPACT_AFTER));
    assert_eq!(q.log.snapshot_index(), idx(COMPACT_AFTER));
    assert!(q.log.entries.is_empty());
    let heartbeat_at = q.lead.as_ref().unwrap().heartbeat_at;
    let out = q.step(heartbeat_at, QuorumInput::Tick);
    let to_3: Vec<_> = norm(out)
        .into_iter()
        .filter(|o| matches!(o, Out::Send(3, ..)))
        .collect();
    assert_eq!(to_3.len(), 1);
    let Out::Send(
        _,
        _,
        QuorumMsg::Snapshot {
            last_index, state, ..
        },
    ) = &to_3[0]
    else {
        panic!("expected a snapshot, got {to_3:?}");
    };
    assert_eq!(*last_index, idx(COMPACT_AFTER));
    assert_eq!(state, q.committed());
}

#[test]
fn a_follower_that_lost_its_store_is_replicated_from_scratch_without_a_storm() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    assert_eq!(q.lead.as_ref().unwrap().matched[&crate::NodeId(3)], idx(1));
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 1,
    };
    let out = norm(q.step(now, message(3, 1, refusal.clone())));
    let from_scratch = QuorumMsg::Append {
        prev_index: idx(0),
        prev_term: t(0),
        entries: vec![entry(1, 1, None)],
        commit: idx(1),
        round: 1,
    };
    assert_eq!(out, vec![Out::Send(3, 1, from_scratch)]);
    assert_eq!(q.lead.as_ref().unwrap().matched[&crate::NodeId(3)], idx(0));
    let out = norm(q.step(now, message(3, 1, refusal)));
    assert_eq!(out, vec![], "a duplicated refusal starts no second stream");
}

/// §4.1's group-term confirmation (swarm seed 1475): a node answers with the highest term its
/// log holds for the group — an entry not yet committed or applied counts (a committed one may
/// not be applied on a follower yet), other groups' entries do not.
#[test]
fn the_group_term_bound_counts_entries_not_yet_applied() {
    use crate::history::PromotionReason;
    use crate::ids::{GroupId, InstanceId, Term};
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    let g = GroupId(1);
    let promote = |group, expected| Change::Promote {
        group,
        expected_term: Term(expected),
        static_primary: InstanceId(6002),
        reason: PromotionReason::Failover,
    };
    assert_eq!(q.group_term_bound(g), Term(0));
    q.term = t(1);
    q.log.append(entry(1, 1, None));
    q.log.append(entry(1, 2, Some(promote(g, 0))));
    q.log.append(entry(1, 3, Some(promote(GroupId(2), 6))));
    q.commit = idx(1);
    assert_eq!(q.group_term_bound(g), Term(1));
    q.log.append(entry(1, 4, Some(promote(g, 1))));
    assert_eq!(q.group_term_bound(g), Term(2));
}

/// Issue 11's scale question, measured: the whole-state snapshot (what the quorum persists and
/// sends as one frame) of 10,000 groups of three members, each with five terms of timeline
/// history (forks growing with the timeline), a read-only entry per member, and the promotion
/// history full (§15: 20 per group, 1,000 in all). Printed, and held under half of the 4 MiB
/// frame limit so that such a cluster fits with room to spare.
#[test]
fn a_snapshot_of_10000_groups_fits_in_half_a_frame() {
    use crate::codec::{MAX_BODY_LEN, encode_persisted};
    use crate::dn::History;
    use crate::history::{Promotion, PromotionReason};
    use crate::ids::{GroupId, InstanceId, Lsn, Term, Timeline};
    use crate::state::{GroupState, ReadOnlyState};
    let mut state = ClusterState::default();
    for g in 1..=10_000u32 {
        let first = InstanceId(6000 + g * 10);
        let timelines = (1..=5u64)
            .map(|t| {
                let forks = (1..t).map(|f| (Timeline(f as u32), Lsn(f << 24))).collect();
                let history = History {
                    timeline: Timeline(t as u32),
                    forks,
                };
                (Term(t), history)
            })
            .collect();
        let read_only = (0..3)
            .map(|m| (InstanceId(first.0 + m), ReadOnlyState::Off))
            .collect();
        let group = GroupState {
            term: Term(5),
            static_primary: first,
            initial_primary: first,
            timelines,
            read_only,
            phony_dead_cooldown: Default::default(),
            switchover: None,
            last_switchover: None,
            term_reason: Some(PromotionReason::Failover),
        };
        state.groups.insert(GroupId(g), group);
        if g <= 50 {
            for t in 1..=20u64 {
                state.promotions.record(Promotion {
                    group: GroupId(g),
                    term: Term(t),
                    instance: first,
                    previous: Some(InstanceId(first.0 + 1)),
                    reason: PromotionReason::Failover,
                    timeline: Timeline(t as u32),
                    wall_ms: crate::time::WallMillis(1_700_000_000_000 + t),
                });
            }
        }
    }
    assert_eq!(state.promotions.len(), 1_000);
    let bytes = encode_persisted(&state).expect("encodes");
    println!(
        "snapshot of 10,000 groups: {} bytes ({:.1} per group; frame limit {MAX_BODY_LEN})",
        bytes.len(),
        bytes.len() as f64 / 10_000.0
    );
    assert!(bytes.len() < MAX_BODY_LEN / 2, "{} bytes", bytes.len());
}

/// A store grown past the budget refuses changes instead of reaching the frame limit (where
/// encoding it would fail and stop the node): the leader keeps leading, proposals get `None`.
#[test]
fn a_store_past_its_budget_refuses_proposals() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    assert!(q.holds_lease(now));
    assert!(q.store_len > 0 && q.store_len < super::super::STORE_BUDGET);
    assert!(q.propose(Change::SetPaused(true)).is_some());
    q.store_len = super::super::STORE_BUDGET + 1;
    assert_eq!(q.propose(Change::SetPaused(false)), None);
    assert!(q.holds_lease(now));
}
