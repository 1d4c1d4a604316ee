use super::super::test_support::*;
use super::super::{LogEntry, Quorum, QuorumInput, QuorumMsg, Role};
use crate::ids::NodeId;
use crate::state::{Change, ReplicatedState};

fn vote(last_term: u64, last_index: u64) -> QuorumMsg {
    QuorumMsg::Vote {
        last_term: t(last_term),
        last_index: idx(last_index),
    }
}

fn heartbeat() -> QuorumMsg {
    QuorumMsg::Append {
        prev_index: idx(0),
        prev_term: t(0),
        entries: Vec::new(),
        commit: idx(0),
        round: 1,
    }
}

/// A follower past its start-up hold-off, at the returned instant.
fn settled(node: u32) -> (Quorum, crate::Instant) {
    let cfg = config(3);
    let q = started(&cfg, node, ms(0));
    let now = ms(0) + q.params.startup_vote_holdoff() + std::time::Duration::from_millis(1);
    (q, now)
}

#[test]
fn a_vote_is_answered_only_after_it_is_durable() {
    let (mut q, now) = settled(2);
    let out = norm(q.step(now, message(1, 1, vote(0, 0))));
    let persist = Out::Persist {
        token: 1,
        term: 1,
        voted_for: Some(1),
        last_index: 0,
    };
    assert_eq!(out, vec![persist]);
    let out = norm(q.step(now, done(crate::WriteToken(1))));
    assert_eq!(
        out,
        vec![Out::Send(1, 1, QuorumMsg::VoteReply { granted: true })]
    );
}

#[test]
fn one_vote_per_term() {
    let (mut q, now) = settled(2);
    let _ = q.step(now, message(1, 1, vote(0, 0)));
    let out = norm(q.step(now, message(3, 1, vote(0, 0))));
    assert_eq!(
        out,
        vec![Out::Send(3, 1, QuorumMsg::VoteReply { granted: false })]
    );
    assert_eq!(q.voted_for, Some(n(1)));
}

#[test]
fn a_candidate_with_a_less_up_to_date_log_is_refused() {
    let (mut q, now) = settled(2);
    q.term = t(2);
    q.log.append(LogEntry {
        term: t(2),
        index: idx(1),
        payload: super::super::EntryPayload::Noop,
    });
    let out = norm(q.step(now, message(3, 3, vote(1, 5))));
    let persist = Out::Persist {
        token: 1,
        term: 3,
        voted_for: None,
        last_index: 1,
    };
    assert_eq!(
        out,
        vec![
            persist,
            Out::Send(3, 3, QuorumMsg::VoteReply { granted: false })
        ]
    );
}

#[test]
fn a_freshly_started_cms_grants_no_vote_during_the_holdoff() {
    let cfg = config(3);
    let mut q = started(&cfg, 2, ms(0));
    let holdoff = q.params.startup_vote_holdoff();
    let just_before = ms(0) + holdoff - std::time::Duration::from_millis(1);
    let out = norm(q.step(just_before, message(1, 1, vote(0, 0))));
    assert_eq!(
        out,
        vec![Out::Send(1, 0, QuorumMsg::VoteReply { granted: false })]
    );
    assert_eq!(
        q.term,
        t(0),
        "a refused vote request does not move the term"
    );
    let out = norm(q.step(ms(0) + holdoff, message(1, 1, vote(0, 0))));
    assert_eq!(out.len(), 1, "granted once the hold-off is over: {out:?}");
    assert_eq!(q.voted_for, Some(n(1)));
}

#[test]
fn a_voter_that_heard_a_live_leader_refuses_pre_votes_and_votes() {
    let (mut q, now) = settled(2);
    let _ = q.step(now, message(1, 1, heartbeat()));
    let later = now + std::time::Duration::from_millis(700);
    let pre = QuorumMsg::PreVote {
        term: t(2),
        last_term: t(0),
        last_index: idx(0),
    };
    let out = norm(q.step(later, message(3, 1, pre)));
    let refused = QuorumMsg::PreVoteReply {
        term: t(2),
        granted: false,
    };
    assert_eq!(out, vec![Out::Send(3, 1, refused)]);
    let out = norm(q.step(later, message(3, 2, vote(0, 0))));
    assert_eq!(
        out,
        vec![Out::Send(3, 1, QuorumMsg::VoteReply { granted: false })]
    );
    assert_eq!(q.term, t(1), "a disruptive candidate cannot move the term");
    assert_eq!(q.leader, Some(n(1)));
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_inflating_its_term() {
    let (mut q, now) = settled(1);
    let mut at = now.max(q.election_at);
    for _ in 0..5 {
        let out = norm(q.step(at, QuorumInput::Tick));
        let pre = QuorumMsg::PreVote {
            term: t(1),
            last_term: t(0),
            last_index: idx(0),
        };
        assert_eq!(
            out,
            vec![Out::Send(2, 0, pre.clone()), Out::Send(3, 0, pre)]
        );
        assert_eq!(q.role, Role::PreCandidate);
        at = q.next_deadline().unwrap();
    }
    assert_eq!(q.term, t(0));
    assert_eq!(q.status(at).pending_writes, 0);
}

#[test]
fn messages_of_a_lower_term_are_refused_with_the_current_term() {
    let (mut q, now) = settled(2);
    q.term = t(3);
    let out = norm(q.step(now, message(1, 2, heartbeat())));
    let refusal = QuorumMsg::AppendReply {
        success: false,
        match_index: idx(0),
        round: 1,
    };
    assert_eq!(out, vec![Out::Send(1, 3, refusal)]);
    assert_eq!(q.leader, None);
}

#[test]
fn a_candidate_asks_for_votes_only_after_its_term_and_vote_are_durable() {
    let (mut q, now) = settled(1);
    let at = now.max(q.election_at);
    let _ = q.step(at, QuorumInput::Tick);
    let granted = QuorumMsg::PreVoteReply {
        term: t(1),
        granted: true,
    };
    let out = norm(q.step(at, message(2, 0, granted)));
    let persist = Out::Persist {
        token: 1,
        term: 1,
        voted_for: Some(1),
        last_index: 0,
    };
    assert_eq!(out, vec![persist]);
    assert_eq!(q.role, Role::Candidate);
    let out = norm(q.step(at, done(crate::WriteToken(1))));
    assert_eq!(
        out,
        vec![Out::Send(2, 1, vote(0, 0)), Out::Send(3, 1, vote(0, 0))]
    );
}

#[test]
fn a_single_cms_elects_itself_after_persisting() {
    let cfg = config(1);
    let mut q = Quorum::new(&cfg, NodeId(1), 7, None).unwrap();
    let out = norm(q.step(ms(0), QuorumInput::Tick));
    let initial = Out::Persist {
        token: 1,
        term: 0,
        voted_for: None,
        last_index: 0,
    };
    assert_eq!(out, vec![initial]);
    let at = q.next_deadline().unwrap();
    let out = norm(q.step(at, QuorumInput::Tick));
    let campaign = Out::Persist {
        token: 2,
        term: 1,
        voted_for: Some(1),
        last_index: 0,
    };
    assert_eq!(out, vec![campaign]);
    assert_eq!(
        q.role,
        Role::Candidate,
        "not leader before the vote is durable"
    );
    let out = norm(q.step(at, done(crate::WriteToken(2))));
    let noop = Out::Persist {
        token: 3,
        term: 1,
        voted_for: Some(1),
        last_index: 1,
    };
    assert_eq!(out, vec![noop, Out::BecameLeader(1)]);
    assert!(q.holds_lease(at));
    assert_eq!(q.commit, idx(0), "the no-op commits once durable");
    let _ = q.step(at, done(crate::WriteToken(3)));
    assert_eq!(q.commit, idx(1));
    assert!(q.propose(Change::SetPaused(true)).is_some());
}
