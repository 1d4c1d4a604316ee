use super::super::test_support::*;
use super::super::{
    EntryPayload, LogEntry, Membership, Quorum, QuorumInput, QuorumMsg, QuorumOutput, Role, Stored,
};
use crate::NodeId;
use crate::state::Change;

fn blank(node: u32) -> (Quorum, u64) {
    let cfg = config(3);
    let mut q = Quorum::new(&cfg, NodeId(node), 9, None).unwrap();
    let out = norm(q.step(ms(0), QuorumInput::Tick));
    let Membership::Joining { nonce, .. } = q.membership.clone() else {
        panic!("a blank store starts joining");
    };
    let initial = Out::Persist {
        token: 1,
        term: 0,
        voted_for: None,
        last_index: 0,
    };
    let hello = QuorumMsg::Hello {
        nonce,
        rejoining: false,
    };
    let expected = vec![
        initial,
        Out::Send(1, 0, hello.clone()),
        Out::Send(2, 0, hello),
    ];
    assert_eq!(out, expected);
    (q, nonce)
}

fn reply(nonce: u64, counted: bool, last_index: u64) -> QuorumMsg {
    QuorumMsg::HelloReply {
        nonce,
        counted,
        last_index: idx(last_index),
    }
}

#[test]
fn an_empty_store_in_a_fresh_cluster_becomes_a_voter() {
    let (mut q, nonce) = blank(3);
    let _ = q.step(ms(1), message(1, 0, reply(nonce, false, 0)));
    assert!(!q.status(ms(1)).voter, "needs every other CMS to answer");
    let _ = q.step(ms(1), message(2, 0, reply(nonce, false, 0)));
    assert_eq!(q.membership, Membership::Voter);
    assert!(q.status(ms(1)).voter);
}

#[test]
fn an_answer_to_another_incarnation_is_ignored() {
    let (mut q, nonce) = blank(3);
    let _ = q.step(ms(1), message(1, 0, reply(nonce ^ 1, false, 0)));
    let _ = q.step(ms(1), message(2, 0, reply(nonce ^ 1, false, 0)));
    assert!(matches!(q.membership, Membership::Joining { .. }));
}

#[test]
fn an_empty_store_in_a_running_cluster_rejoins_as_a_non_voter_until_re_added() {
    let (mut q, nonce) = blank(3);
    let _ = q.step(ms(1), message(1, 4, reply(nonce, true, 7)));
    assert!(matches!(
        q.membership,
        Membership::Rejoining { marked: false, .. }
    ));
    // It never votes nor campaigns.
    let later = ms(10_000);
    let vote = QuorumMsg::Vote {
        last_term: t(4),
        last_index: idx(7),
    };
    let out = norm(q.step(later, message(2, 5, vote)));
    assert_eq!(
        out,
        vec![Out::Send(2, 0, QuorumMsg::VoteReply { granted: false })]
    );
    // A SetVoter at or below the horizon (older history) does not count.
    let setvoter = |index, voter| LogEntry {
        term: t(4),
        index: idx(index),
        payload: EntryPayload::Change(Change::SetVoter {
            node: NodeId(3),
            voter,
        }),
    };
    let snapshot_state = crate::state::ClusterState::initial(&config(3));
    let snap = QuorumMsg::Snapshot {
        last_index: idx(6),
        last_term: t(4),
        state: snapshot_state,
        round: 1,
    };
    let _ = q.step(later, message(1, 4, snap));
    let entries = vec![setvoter(7, false), setvoter(8, true), setvoter(9, false)];
    let append = QuorumMsg::Append {
        prev_index: idx(6),
        prev_term: t(4),
        entries,
        commit: idx(8),
        round: 2,
    };
    let _ = q.step(later, message(1, 4, append));
    assert!(
        matches!(q.membership, Membership::Rejoining { marked: false, .. }),
        "entries up to the horizon (7) predate the rejoin: {:?}",
        q.membership
    );
    let heartbeat = |commit, round| QuorumMsg::Append {
        prev_index: idx(9),
        prev_term: t(4),
        entries: vec![],
        commit: idx(commit),
        round,
    };
    let _ = q.step(later, message(1, 4, heartbeat(9, 3)));
    assert!(matches!(
        q.membership,
        Membership::Rejoining { marked: true, .. }
    ));
    assert!(!q.status(later).voter);
    let append = QuorumMsg::Append {
        prev_index: idx(9),
        prev_term: t(4),
        entries: vec![setvoter(10, true)],
        commit: idx(10),
        round: 4,
    };
    let _ = q.step(later, message(1, 4, append));
    assert_eq!(q.membership, Membership::Voter);
    assert!(q.status(later).voter);
}

#[test]
fn the_leader_marks_a_node_it_counted_that_says_hello_as_a_non_voter() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let out = norm(q.step(
        now,
        message(
            3,
            0,
            QuorumMsg::Hello {
                nonce: 5,
                rejoining: false,
            },
        ),
    ));
    let persist = Out::Persist {
        token: 5,
        term: 1,
        voted_for: Some(1),
        last_index: 2,
    };
    assert_eq!(out, vec![persist, Out::Send(3, 1, reply(5, true, 1))]);
    let expected = EntryPayload::Change(Change::SetVoter {
        node: NodeId(3),
        voter: false,
    });
    assert_eq!(
        q.log.entry(idx(2)).map(|e| e.payload.clone()),
        Some(expected)
    );
    // A repeated hello does not append the same change twice.
    let out = norm(q.step(
        now,
        message(
            3,
            0,
            QuorumMsg::Hello {
                nonce: 5,
                rejoining: false,
            },
        ),
    ));
    assert_eq!(out, vec![Out::Send(3, 1, reply(5, true, 2))]);
}

/// §5.1: a CMS merely late to the first election (its peers already elected a leader and
/// appended entries, but none ever counted it) joins as a voter, once every peer answered.
#[test]
fn a_late_empty_store_that_no_peer_counted_joins_as_a_voter() {
    let (mut q, nonce) = blank(3);
    let _ = q.step(ms(1), message(1, 1, reply(nonce, false, 1)));
    assert!(matches!(q.membership, Membership::Joining { .. }));
    let _ = q.step(ms(2), message(2, 1, reply(nonce, false, 1)));
    assert_eq!(q.membership, Membership::Voter);
    assert!(q.status(ms(2)).voter);
}

/// Node 1 of a 3-CMS cluster, leader of term 1 with node 2's vote and acknowledgement only:
/// node 3 was never counted.
fn leader_without_node3() -> (Quorum, crate::time::Instant) {
    let cfg = config(3);
    let mut q = started(&cfg, 1, ms(0));
    let now = (crate::time::Instant::ZERO + q.params.startup_vote_holdoff()).max(q.election_at);
    let _ = q.step(now, QuorumInput::Tick);
    let granted = QuorumMsg::PreVoteReply {
        term: t(1),
        granted: true,
    };
    let out = q.step(now, message(2, 0, granted));
    let _ = q.step(now, done(last_token(&out).unwrap()));
    let out = q.step(now, message(2, 1, QuorumMsg::VoteReply { granted: true }));
    let out = q.step(now, done(last_token(&out).unwrap()));
    let _ = q.step(now, done(last_token(&out).unwrap()));
    let ack = QuorumMsg::AppendReply {
        success: true,
        match_index: idx(1),
        round: 1,
    };
    let _ = q.step(now, message(2, 1, ack));
    assert_eq!(q.role, Role::Leader);
    assert!(q.holds_lease(now));
    assert_eq!(q.counted, [n(2)].into_iter().collect());
    (q, now)
}

/// The leader answers a hello from a node it never counted with `counted: false` and marks
/// nothing: the late node becomes a voter (before: `SetVoter { node3, false }`).
#[test]
fn the_leader_does_not_mark_a_late_node_it_never_counted() {
    let (mut q, now) = leader_without_node3();
    let hello = QuorumMsg::Hello {
        nonce: 5,
        rejoining: false,
    };
    let out = norm(q.step(now, message(3, 0, hello)));
    assert_eq!(out, vec![Out::Send(3, 1, reply(5, false, 1))]);
    assert_eq!(q.log.last_index(), idx(1));
    // A node that already knows it lost its store says so, and is marked.
    let hello = QuorumMsg::Hello {
        nonce: 6,
        rejoining: true,
    };
    let out = norm(q.step(now, message(3, 0, hello)));
    assert!(
        matches!(out[0], Out::Persist { last_index: 2, .. }),
        "{out:?}"
    );
    let marked = EntryPayload::Change(Change::SetVoter {
        node: NodeId(3),
        voter: false,
    });
    assert_eq!(q.log.entry(idx(2)).map(|e| e.payload.clone()), Some(marked));
}

/// A peer's first vote or acknowledgement counts only once `counted` (holding it) is durable;
/// the write carries it.
#[test]
fn a_first_acknowledgement_counts_only_after_counted_is_written() {
    let (mut q, now) = leader_without_node3();
    let ack = QuorumMsg::AppendReply {
        success: true,
        match_index: idx(1),
        round: 1,
    };
    let out = q.step(now, message(3, 1, ack));
    let [QuorumOutput::Persist(p)] = &out[..] else {
        panic!("{out:?}");
    };
    let stored: Stored = crate::codec::decode_persisted(&p.bytes).unwrap();
    assert!(stored.counted.contains(&n(3)));
    assert_eq!(q.lead.as_ref().unwrap().matched[&n(3)], idx(0), "not yet");
    let _ = q.step(now, done(p.token));
    assert_eq!(q.lead.as_ref().unwrap().matched[&n(3)], idx(1));
}

/// After a hello, replies that an earlier incarnation sent are not counted: a candidate drops
/// the peer's vote in this candidacy, a leader its acknowledgements of earlier rounds.
#[test]
fn replies_of_an_earlier_incarnation_are_not_counted_after_its_hello() {
    let (mut q, now) = leader_without_node3();
    let hello = QuorumMsg::Hello {
        nonce: 5,
        rejoining: false,
    };
    let _ = q.step(now, message(2, 0, hello));
    assert_eq!(q.lead.as_ref().unwrap().matched[&n(2)], idx(0));
    // Round 1 was sent before the hello.
    let ack = QuorumMsg::AppendReply {
        success: true,
        match_index: idx(1),
        round: 1,
    };
    assert!(q.step(now, message(2, 1, ack)).is_empty());
    assert_eq!(q.lead.as_ref().unwrap().matched[&n(2)], idx(0));

    let cfg = config(3);
    let mut c = started(&cfg, 1, ms(0));
    let at = (crate::time::Instant::ZERO + c.params.startup_vote_holdoff()).max(c.election_at);
    let _ = c.step(at, QuorumInput::Tick);
    let granted = QuorumMsg::PreVoteReply {
        term: t(1),
        granted: true,
    };
    let out = c.step(at, message(2, 0, granted));
    let _ = c.step(at, done(last_token(&out).unwrap()));
    assert_eq!(c.role, Role::Candidate);
    let hello = QuorumMsg::Hello {
        nonce: 7,
        rejoining: false,
    };
    let _ = c.step(at, message(2, 0, hello));
    let out = c.step(at, message(2, 1, QuorumMsg::VoteReply { granted: true }));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.role, Role::Candidate);
}

/// A store written before `counted` existed still restores, with every peer counted (the
/// conservative answer: such a node may have counted anyone).
#[test]
fn a_store_without_counted_restores_with_every_peer_counted() {
    let cfg = config(3);
    let v1 = super::super::StoredV1 {
        term: t(4),
        voted_for: Some(NodeId(2)),
        membership: Membership::Voter,
        log: super::super::log::Log::new(crate::state::ClusterState::initial(&cfg)),
    };
    let bytes = crate::codec::encode_persisted(&v1).unwrap();
    let q = Quorum::new(&cfg, NodeId(1), 1, Some(bytes)).unwrap();
    assert_eq!(q.term, t(4));
    assert_eq!(q.counted, [n(2), n(3)].into_iter().collect());
}
