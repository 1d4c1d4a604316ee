use std::collections::BTreeMap;
use std::time::Duration;

use super::super::test_support::*;
use super::super::{EntryPayload, LogEntry, Quorum, QuorumInput, QuorumMsg, Role};
use crate::ids::{GroupId, InstanceId, Term};
use crate::state::{Change, GroupState};
use crate::time::Instant;

fn failover_config() -> crate::config::ClusterConfig {
    let mut params = crate::params::Params::defaults();
    params.cms_enable_failover_on2nodes = true;
    config_with(2, params)
}

fn entry(term: u64, index: u64, change: Option<Change>) -> LogEntry {
    LogEntry {
        term: t(term),
        index: idx(index),
        payload: change.map_or(EntryPayload::Noop, EntryPayload::Change),
    }
}

fn promote(expected: u64) -> Change {
    Change::Promote {
        group: GroupId(1),
        expected_term: Term(expected),
        static_primary: InstanceId(6001),
        reason: crate::history::PromotionReason::Failover,
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

/// W1 (node 2) after leading term 2 alone: a no-op and a Promote committed at indices 1–2,
/// which moved group 1 from term 0 to term 2 (W1's parity).
fn w1_after_leading_alone(cfg: &crate::config::ClusterConfig) -> Quorum {
    let mut q = started(cfg, 2, ms(0));
    q.term = t(2);
    q.log.append(entry(2, 1, None));
    q.log.append(entry(2, 2, Some(promote(0))));
    q.commit = idx(2);
    q.apply_committed();
    assert_eq!(q.state.groups[&GroupId(1)].term, Term(2));
    q
}

fn groups_at(q: &Quorum) -> BTreeMap<GroupId, GroupState> {
    q.state.groups.clone()
}

fn group_term(q: &Quorum) -> Term {
    q.state.groups[&GroupId(1)].term
}

/// Before the fix this panicked ("leader node1 conflicts with committed entry idx1"): the
/// leader's log (W2's terms 1 and 3) conflicts at index 1 with what W1 committed alone in
/// term 2. W1 now appends nothing, answers `Diverged` with its committed groups (term 2), does
/// not acknowledge the round, and refuses votes until healed.
#[test]
fn a_follower_that_committed_alone_answers_diverged_instead_of_panicking() {
    let cfg = failover_config();
    let mut q = w1_after_leading_alone(&cfg);
    let groups = groups_at(&q);
    let w2_log = vec![entry(1, 1, None), entry(3, 2, None)];
    let out = norm(q.step(ms(30_000), message(1, 3, append((0, 0), w2_log, 2))));
    let persist = Out::Persist {
        token: 1,
        term: 3,
        voted_for: None,
        last_index: 2,
    };
    let diverged = QuorumMsg::Diverged {
        groups,
        round: 1,
        pause: None,
    };
    assert_eq!(out, vec![persist, Out::Send(1, 3, diverged)]);
    assert!(q.diverged);
    assert_eq!(q.log.term_at(idx(1)), Some(t(2)), "nothing appended");
    assert_eq!(q.commit, idx(2));
    assert!(
        !q.can_vote(ms(40_000)),
        "a diverged follower grants no vote"
    );
}

/// The same conflict with a previous entry (`prev_index` 2 of term 3 against W1's committed
/// index 2 of term 2) is caught too.
#[test]
fn a_conflicting_previous_entry_at_a_committed_index_is_caught() {
    let cfg = failover_config();
    let mut q = w1_after_leading_alone(&cfg);
    let out = norm(q.step(ms(30_000), message(1, 3, append((3, 2), vec![], 2))));
    assert!(
        matches!(
            out.last(),
            Some(Out::Send(1, 3, QuorumMsg::Diverged { .. }))
        ),
        "{out:?}"
    );
    assert!(q.diverged);
}

/// Outside two-node mode a conflict with a committed entry breaks Raft's invariants: refused
/// with the commit index as hint, and never a panic (before the fix: a panic).
#[test]
fn outside_two_node_mode_a_committed_conflict_is_refused_not_a_panic() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    q.term = t(1);
    q.log.append(entry(1, 1, None));
    q.log.append(entry(1, 2, Some(Change::SetPaused(true))));
    q.commit = idx(2);
    q.apply_committed();
    let out = norm(q.step(
        ms(10),
        message(3, 2, append((1, 1), vec![entry(2, 2, None)], 2)),
    ));
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(2),
        round: 1,
    };
    let persist = Out::Persist {
        token: 1,
        term: 2,
        voted_for: None,
        last_index: 2,
    };
    assert_eq!(out, vec![persist, Out::Send(3, 2, refusal)]);
    assert_eq!(q.log.term_at(idx(2)), Some(t(1)));
    assert!(q.state.paused);
}

/// W2 (node 1) alone: elected in term 1 at the end of its start-up hold-off, a quorum alone
/// (having heard its peer as it started: its weight counts).
fn w2_leader(cfg: &crate::config::ClusterConfig) -> (Quorum, Instant) {
    let mut q = started(cfg, 1, ms(0));
    q.peer_heard_since_start = true;
    let at = (ms(0) + q.params.startup_vote_holdoff()).max(q.election_at);
    let out = q.step(at, QuorumInput::Tick);
    let out = q.step(at, done(last_token(&out).unwrap()));
    assert_eq!(q.role, Role::Leader);
    let _ = q.step(at, done(last_token(&out).unwrap()));
    assert!(q.holds_lease(at));
    assert_eq!(q.commit, idx(1));
    (q, at)
}

/// The leader's side of healing. W2 leads term 1 (group 1 at term 0, its no-op at index 1);
/// W1 reports `Diverged` with group 1 at term 2. W2 appends `MergeDiverged` at index 2 and
/// commits it alone: group 1 takes term 2. The next `Diverged` is covered: W2 folds its log
/// into a snapshot at index 2 and sends it, with term 2, to W1.
#[test]
fn a_leader_merges_a_diverged_followers_higher_group_terms_then_sends_its_snapshot() {
    let cfg = failover_config();
    let (mut q, at) = w2_leader(&cfg);
    let w1 = w1_after_leading_alone(&cfg);
    let theirs = groups_at(&w1);
    let at = at + Duration::from_millis(10);
    let diverged = QuorumMsg::Diverged {
        groups: theirs.clone(),
        round: 1,
        pause: None,
    };
    let out = q.step(at, message(2, 1, diverged.clone()));
    let merge = entry(1, 2, Some(Change::MergeDiverged { groups: theirs }));
    let sent = norm(out.clone());
    // W1 never acknowledged anything of W2's: the append starts at index 1 (round 2).
    let replicate = QuorumMsg::Append {
        prev_index: idx(0),
        prev_term: t(0),
        entries: vec![entry(1, 1, None), merge],
        commit: idx(1),
        round: 2,
    };
    assert_eq!(sent[1..], [Out::Send(2, 1, replicate)], "{sent:?}");
    assert_eq!(q.lead.as_ref().and_then(|l| l.merge_at), Some(idx(2)));
    // A second report while the merge is in flight appends nothing more.
    let again = norm(q.step(at, message(2, 1, diverged.clone())));
    assert!(again.is_empty(), "{again:?}");
    let _ = q.step(at, done(last_token(&out).unwrap()));
    assert_eq!(q.commit, idx(2));
    assert_eq!(group_term(&q), Term(2));
    assert_eq!(q.state.groups[&GroupId(1)].static_primary, InstanceId(6001));
    // Covered now: the follower gets the leader's snapshot (index 2, term 1, group term 2).
    let out = norm(q.step(at, message(2, 1, diverged)));
    let snapshot = QuorumMsg::Snapshot {
        last_index: idx(2),
        last_term: t(1),
        state: q.state.clone(),
        round: 2,
    };
    assert_eq!(out[1..], [Out::Send(2, 1, snapshot)], "{out:?}");
    assert_eq!(q.log.snapshot_index(), idx(2));
}

/// The follower's side: a snapshot that lacks its committed group term (1 < 2) is refused
/// with `Diverged`; one that covers it (term 2) replaces its log, ends the divergence, and is
/// acknowledged once durable.
#[test]
fn a_diverged_follower_installs_only_a_snapshot_that_covers_its_group_terms() {
    let cfg = failover_config();
    let mut q = w1_after_leading_alone(&cfg);
    let _ = q.step(ms(30_000), message(1, 3, append((3, 2), vec![], 2)));
    assert!(q.diverged);
    let mut leader_state = q.state.clone();
    leader_state.groups.get_mut(&GroupId(1)).unwrap().term = Term(1);
    let short = QuorumMsg::Snapshot {
        last_index: idx(3),
        last_term: t(3),
        state: leader_state.clone(),
        round: 2,
    };
    let out = norm(q.step(ms(30_200), message(1, 3, short)));
    let diverged = QuorumMsg::Diverged {
        groups: groups_at(&q),
        round: 2,
        pause: None,
    };
    assert_eq!(out, vec![Out::Send(1, 3, diverged)]);
    assert_eq!(q.log.last_index(), idx(2), "not installed");

    leader_state.groups.get_mut(&GroupId(1)).unwrap().term = Term(3);
    let covering = QuorumMsg::Snapshot {
        last_index: idx(3),
        last_term: t(3),
        state: leader_state.clone(),
        round: 3,
    };
    let out = q.step(ms(30_400), message(1, 3, covering));
    assert!(!q.diverged);
    assert_eq!(q.log.snapshot_index(), idx(3));
    assert_eq!(q.log.term_at(idx(3)), Some(t(3)));
    assert_eq!(q.commit, idx(3));
    assert_eq!(group_term(&q), Term(3));
    let out = norm(q.step(ms(30_400), done(last_token(&out).unwrap())));
    let ack = QuorumMsg::SnapshotReply {
        last_index: idx(3),
        round: 3,
    };
    assert_eq!(out, vec![Out::Send(1, 3, ack)]);
    assert!(q.can_vote(ms(40_000)));
}

/// Two-node mode: an append that lies wholly below the follower's snapshot cannot be checked
/// against what it committed; it is refused with the snapshot index as the hint.
#[test]
fn an_append_wholly_below_the_snapshot_is_refused_in_two_node_mode() {
    let cfg = failover_config();
    let mut q = w1_after_leading_alone(&cfg);
    q.log.compact(idx(2), q.state.clone());
    let out = norm(q.step(
        ms(30_000),
        message(1, 2, append((0, 0), vec![entry(1, 1, None)], 1)),
    ));
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(2),
        round: 1,
    };
    assert_eq!(out, vec![Out::Send(1, 2, refusal)]);
}

/// §5.4: group terms step by the parity of the quorum term of the entry that carries the
/// change: a Promote from group term 0 committed in W1's term 4 moves it to 2; in W2's term 3,
/// to 1; and outside two-node mode to 1 whatever the entry's term.
#[test]
fn committed_promotions_move_group_terms_by_the_entrys_parity() {
    let cases = [
        (failover_config(), 4, 2),
        (failover_config(), 3, 1),
        (config(2), 4, 1),
    ];
    for (cfg, qterm, want) in cases {
        let mut q = started(&cfg, 2, ms(0));
        let out = q.step(
            ms(10),
            message(
                1,
                qterm,
                append((0, 0), vec![entry(qterm, 1, Some(promote(0)))], 1),
            ),
        );
        assert!(!out.is_empty());
        assert_eq!(group_term(&q), Term(want), "entry term {qterm}");
    }
}

/// W2 (node 1) committed a Promote alone in its term 1 (group 1 to term 1), then restarted:
/// its commit index is not persisted, so the entry looks uncommitted. W1's leader log
/// conflicts with it at index 2. Before the fix W2 cut the entry (an uncommitted suffix) and
/// group 1 went back to term 0 on it, while 6001 had been promoted at term 1 (swarm seed 285).
/// Now an entry of its own parity counts as possibly committed: W2 answers `Diverged` with
/// the groups of its whole log applied (group 1 at term 1).
#[test]
fn a_restarted_side_treats_its_own_entries_as_possibly_committed() {
    let cfg = failover_config();
    let mut q = started(&cfg, 1, ms(0));
    q.term = t(1);
    q.log.append(entry(1, 1, None));
    q.log.append(entry(1, 2, Some(promote(0))));
    assert_eq!(q.commit, idx(0));
    let mut groups = groups_at(&q);
    let g1 = groups.get_mut(&GroupId(1)).unwrap();
    g1.term = Term(1);
    g1.term_reason = Some(crate::history::PromotionReason::Failover);
    let w1_log = vec![entry(2, 2, None)];
    let out = norm(q.step(ms(30_000), message(2, 2, append((1, 1), w1_log, 2))));
    let persist = Out::Persist {
        token: 1,
        term: 2,
        voted_for: None,
        last_index: 2,
    };
    let diverged = QuorumMsg::Diverged {
        groups,
        round: 1,
        pause: None,
    };
    assert_eq!(out, vec![persist, Out::Send(2, 2, diverged)]);
    assert_eq!(q.log.term_at(idx(2)), Some(t(1)), "its entry is kept");
}

/// Swarm seed 233: W2 led term 1 alone while W1 led its side and granted write leases there.
/// The first message W2 hears from W1 at term 1 (W1 answers at this term only after it stopped
/// leading) is the latest instant those leases can have been granted: W2 keeps it, for the
/// arbiter's fencing floor, and a later message does not move it.
#[test]
fn a_leader_keeps_when_it_first_heard_the_peer_it_led_without() {
    use crate::state::ReplicatedState;
    let cfg = failover_config();
    let (mut q, at) = w2_leader(&cfg);
    assert_eq!(
        q.other_side_ended_at(),
        None,
        "led alone, nothing heard yet"
    );
    let heard = at + Duration::from_millis(1_250);
    let reply = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 1,
    };
    let _ = q.step(heard, message(2, 1, reply.clone()));
    assert_eq!(q.other_side_ended_at(), Some(heard));
    let _ = q.step(heard + Duration::from_secs(3), message(2, 1, reply));
    assert_eq!(
        q.other_side_ended_at(),
        Some(heard),
        "only the first message counts"
    );
}

/// A message from a lower term is refused before it counts, and outside two-node mode (a
/// quorum never leads without a majority) nothing is kept.
#[test]
fn only_messages_at_the_term_in_two_node_failover_mode_mark_the_other_side() {
    use crate::state::ReplicatedState;
    let cfg = failover_config();
    let (mut q, at) = w2_leader(&cfg);
    let stale = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 1,
    };
    let _ = q.step(at + Duration::from_millis(5), message(2, 0, stale.clone()));
    assert_eq!(
        q.other_side_ended_at(),
        None,
        "a stale term is refused first"
    );

    let (mut q3, at3) = leader(&config(3));
    let _ = q3.step(at3 + Duration::from_millis(5), message(3, q3.term.0, stale));
    assert_eq!(q3.other_side_ended_at(), None);
}

/// Swarm seeds 212 and 236: W1 committed an operator's `resume` alone (wall 1_700_000_200_000)
/// while W2's committed state still said paused (stamped 1_700_000_100_000). W2's merge keeps
/// the newer request: it appends `SetPausedAt { paused: false }` with W1's stamp, commits it
/// alone, and only then overwrites W1 with its snapshot. An older or equal request is not
/// merged.
#[test]
fn a_leader_merges_the_other_sides_newer_pause_request() {
    use crate::time::WallMillis;
    let cfg = failover_config();
    let (mut q, at) = w2_leader(&cfg);
    let older = WallMillis(1_700_000_100_000);
    let newer = WallMillis(1_700_000_200_000);
    q.state.paused = true;
    q.state.paused_at = Some(older);
    let groups = groups_at(&q);
    let at = at + Duration::from_millis(10);
    let diverged = |pause| QuorumMsg::Diverged {
        groups: groups.clone(),
        round: 1,
        pause,
    };
    // Older than W2's own request: nothing to merge, W1 gets the snapshot.
    let out = norm(q.step(at, message(2, 1, diverged(Some((false, WallMillis(1)))))));
    assert!(
        matches!(
            out.last(),
            Some(Out::Send(2, 1, QuorumMsg::Snapshot { .. }))
        ),
        "{out:?}"
    );
    let out = q.step(at, message(2, 1, diverged(Some((false, newer)))));
    let merge = entry(
        1,
        2,
        Some(Change::SetPausedAt {
            paused: false,
            at: newer,
        }),
    );
    assert_eq!(
        q.log.entry(idx(2)),
        Some(&merge),
        "appended after the no-op"
    );
    let _ = q.step(at, done(last_token(&out).unwrap()));
    assert!(!q.state.paused, "the newer resume stands");
    assert_eq!(q.state.paused_at, Some(newer));
    let out = norm(q.step(at, message(2, 1, diverged(Some((false, newer))))));
    assert!(
        matches!(
            out.last(),
            Some(Out::Send(2, 1, QuorumMsg::Snapshot { .. }))
        ),
        "{out:?}"
    );
}

/// The follower's side: a snapshot whose pause is older than the one this follower's log
/// holds, and differs, is refused with `Diverged` carrying the follower's stamped request.
#[test]
fn a_diverged_follower_refuses_a_snapshot_that_would_drop_its_newer_resume() {
    use crate::time::WallMillis;
    let cfg = failover_config();
    let mut q = w1_after_leading_alone(&cfg);
    let newer = WallMillis(1_700_000_200_000);
    q.state.paused_at = Some(newer);
    let _ = q.step(ms(30_000), message(1, 3, append((3, 2), vec![], 2)));
    assert!(q.diverged);
    let mut leader_state = q.state.clone();
    leader_state.groups.get_mut(&GroupId(1)).unwrap().term = Term(3);
    leader_state.paused = true;
    leader_state.paused_at = Some(WallMillis(1_700_000_100_000));
    let stale = QuorumMsg::Snapshot {
        last_index: idx(3),
        last_term: t(3),
        state: leader_state,
        round: 2,
    };
    let out = norm(q.step(ms(30_200), message(1, 3, stale)));
    let diverged = QuorumMsg::Diverged {
        groups: groups_at(&q),
        round: 2,
        pause: Some((false, newer)),
    };
    assert_eq!(out, vec![Out::Send(1, 3, diverged)]);
    assert_eq!(q.log.last_index(), idx(2), "not installed");
}
