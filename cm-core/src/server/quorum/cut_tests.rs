use std::time::Duration;

use super::super::test_support::*;
use super::super::{Quorum, QuorumInput, QuorumMsg, Role};
use super::CUT_AFTER;
use crate::config::{ClusterConfig, MemberConfig};
use crate::ids::InstanceId;
use crate::time::Instant;

const NS: Duration = Duration::from_nanos(1);

/// `n` CMS nodes, every one hosting a member of the group (D = n).
fn dn_config(n: u32) -> ClusterConfig {
    let mut cfg = config(n);
    cfg.groups[0].members = (1..=n)
        .map(|i| MemberConfig {
            instance: InstanceId(6000 + i),
            node: n_(i),
            data_dir: "/d".into(),
            port: 5432,
        })
        .collect();
    cfg
}

fn n_(i: u32) -> crate::ids::NodeId {
    n(i)
}

fn heard(count: usize) -> QuorumInput {
    QuorumInput::DnAgentsHeard { count }
}

fn view(from: u32, term: u64, dn_agents: u32) -> QuorumInput {
    message(from, term, QuorumMsg::AgentView { dn_agents })
}

fn ack(round: u64) -> QuorumMsg {
    QuorumMsg::AppendReply {
        success: true,
        match_index: idx(1),
        round,
    }
}

/// Leads until `until` (inclusive), completing every write at once: every round acknowledged by node 2, which also sends
/// `follower_view` (if any) with each acknowledgement. Returns the instant it stepped down.
fn lead_until(q: &mut Quorum, until: Instant, follower_view: Option<u32>) -> Option<Instant> {
    lead_until_with(q, until, follower_view, 2)
}

/// [`lead_until`] with `follower` as the acknowledging node.
fn lead_until_with(
    q: &mut Quorum,
    until: Instant,
    follower_view: Option<u32>,
    follower: u32,
) -> Option<Instant> {
    loop {
        let next = q.next_deadline().unwrap();
        if next > until {
            return None;
        }
        let mut raw = q.step(next, QuorumInput::Tick);
        // Every write completes at once, as a working store's do.
        let mut out = Vec::new();
        while let Some(token) = last_token(&raw) {
            out.extend(norm(raw));
            raw = q.step(next, done(token));
        }
        out.extend(norm(raw));
        if out.contains(&Out::SteppedDown(1)) {
            return Some(next);
        }
        if let Some(lead) = q.lead.as_ref() {
            let round = lead.next_round - 1;
            let mut inputs = vec![message(follower, 1, ack(round))];
            inputs.extend(follower_view.map(|v| view(follower, 1, v)));
            for input in inputs {
                let mut raw = q.step(next, input);
                while let Some(token) = last_token(&raw) {
                    raw = q.step(next, done(token));
                }
            }
        }
    }
}

#[test]
fn a_leader_hearing_fewer_dn_agents_than_a_follower_steps_down_at_exactly_10_s() {
    let cfg = dn_config(3);
    let (mut q, now) = leader(&cfg);
    let _ = q.step(now, heard(1));
    let _ = q.step(now, view(2, 1, 3));
    assert_eq!(lead_until(&mut q, now + CUT_AFTER - NS, Some(3)), None);
    assert_eq!(q.role, Role::Leader, "not 1 ns early");
    assert_eq!(q.next_deadline(), Some(now + CUT_AFTER));
    let out = norm(q.step(now + CUT_AFTER, QuorumInput::Tick));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
    assert_eq!(q.role, Role::Follower);
}

#[test]
fn equal_views_never_trigger_it() {
    for (own, follower) in [(0, 0), (1, 1)] {
        let cfg = dn_config(3);
        let (mut q, now) = leader(&cfg);
        let _ = q.step(now, heard(own));
        let _ = q.step(now, view(2, 1, follower));
        let horizon = now + Duration::from_secs(40);
        assert_eq!(
            lead_until(&mut q, horizon, Some(follower)),
            None,
            "own {own}, follower {follower}"
        );
        assert_eq!(q.role, Role::Leader);
    }
}

#[test]
fn a_leader_hearing_a_majority_of_the_dn_agents_stays() {
    let cfg = dn_config(3);
    let (mut q, now) = leader(&cfg);
    let _ = q.step(now, heard(2));
    let _ = q.step(now, view(2, 1, 3));
    assert_eq!(
        lead_until(&mut q, now + Duration::from_secs(40), Some(3)),
        None
    );
}

#[test]
fn the_10_s_must_be_continuous() {
    let cfg = dn_config(3);
    let (mut q, now) = leader(&cfg);
    let _ = q.step(now, heard(1));
    let _ = q.step(now, view(2, 1, 3));
    let back = now + Duration::from_secs(6);
    assert_eq!(lead_until(&mut q, back, Some(3)), None);
    let _ = q.step(back, heard(2));
    let again = now + Duration::from_secs(7);
    assert_eq!(lead_until(&mut q, again, Some(3)), None);
    let _ = q.step(again, heard(1));
    assert_eq!(
        lead_until(&mut q, again + Duration::from_secs(20), Some(3)),
        Some(again + CUT_AFTER)
    );
}

#[test]
fn a_stale_follower_view_does_not_count() {
    let cfg = dn_config(3);
    let (mut q, now) = leader(&cfg);
    let _ = q.step(now, heard(1));
    let _ = q.step(now, view(2, 1, 3));
    // Node 2 acknowledges but stops sending views: after 3 s its view is stale.
    assert_eq!(
        lead_until(&mut q, now + Duration::from_secs(40), None),
        None
    );
    assert_eq!(q.role, Role::Leader);
}

/// Node 1 led term 1 and stepped down under the rule at the returned instant.
fn stepped_down(cfg: &ClusterConfig) -> (Quorum, Instant) {
    let (mut q, now) = leader(cfg);
    let _ = q.step(now, heard(1));
    let _ = q.step(now, view(2, 1, 3));
    let at = lead_until(&mut q, now + Duration::from_secs(20), Some(3)).unwrap();
    assert_eq!(at, now + CUT_AFTER);
    (q, at)
}

#[test]
fn after_stepping_down_it_campaigns_only_after_10_s_even_if_agents_return() {
    let cfg = dn_config(3);
    let (mut q, down) = stepped_down(&cfg);
    // CM's rule would release on two agents seen; this one does not.
    let _ = q.step(
        down,
        QuorumInput::AgentsConnected {
            count: 3,
            includes_local: true,
        },
    );
    let _ = q.step(down, heard(3));
    let mut ticks = 0;
    loop {
        let at = q.next_deadline().unwrap();
        let out = norm(q.step(at, QuorumInput::Tick));
        let pre_vote = out
            .iter()
            .any(|o| matches!(o, Out::Send(_, _, QuorumMsg::PreVote { .. })));
        if at < down + CUT_AFTER {
            assert!(!pre_vote, "campaigned while held at {at:?}: {out:?}");
            ticks += 1;
        } else if pre_vote {
            assert!(at <= down + CUT_AFTER + q.params.election_timeout_max());
            break;
        }
    }
    assert!(ticks >= 5, "election timers fired {ticks} times while held");
}

fn pre_vote(from: u32) -> QuorumInput {
    message(
        from,
        1,
        QuorumMsg::PreVote {
            term: t(2),
            last_term: t(1),
            last_index: idx(1),
        },
    )
}

fn granted(out: Vec<Out>) -> bool {
    match out.as_slice() {
        [Out::Send(_, _, QuorumMsg::PreVoteReply { granted, .. })] => *granted,
        other => panic!("expected one pre-vote reply: {other:?}"),
    }
}

#[test]
fn while_held_pre_votes_go_only_to_candidates_hearing_as_many_dn_agents() {
    let cfg = dn_config(3);
    let (mut q, down) = stepped_down(&cfg);
    let at = down + Duration::from_secs(2);
    // Own count 1: a candidate hearing none is refused, one hearing 1 or 3 granted.
    let _ = q.step(at, view(3, 1, 0));
    assert!(!granted(norm(q.step(at, pre_vote(3)))));
    let _ = q.step(at, view(3, 1, 1));
    assert!(granted(norm(q.step(at, pre_vote(3)))));
    let _ = q.step(at, view(2, 1, 3));
    assert!(granted(norm(q.step(at, pre_vote(2)))));
    // A candidate without a fresh view hears none.
    let later = at + Duration::from_secs(4);
    assert!(!granted(norm(q.step(later, pre_vote(2)))));
    // Once the hold is over the condition no longer applies.
    let _ = q.step(down + CUT_AFTER, view(3, 1, 0));
    assert!(granted(norm(q.step(down + CUT_AFTER, pre_vote(3)))));
}

#[test]
fn a_follower_sends_its_view_on_a_change_a_new_leader_and_every_second() {
    let cfg = dn_config(3);
    let mut f = started(&cfg, 2, ms(0));
    let _ = f.step(ms(0), heard(2));
    let append = |round| {
        message(
            1,
            1,
            QuorumMsg::Append {
                prev_index: idx(0),
                prev_term: t(0),
                entries: vec![],
                commit: idx(0),
                round,
            },
        )
    };
    assert_eq!(views_sent(&f.step(ms(100), append(1))), vec![(1, 2)]);
    assert_eq!(views_sent(&f.step(ms(300), append(2))), vec![]);
    let _ = f.step(ms(400), heard(3));
    assert_eq!(views_sent(&f.step(ms(500), append(3))), vec![(1, 3)]);
    assert_eq!(views_sent(&f.step(ms(1499), append(4))), vec![]);
    assert_eq!(views_sent(&f.step(ms(1500), append(5))), vec![(1, 3)]);
}

#[test]
fn a_candidate_sends_its_view_before_each_pre_vote() {
    let cfg = dn_config(3);
    let mut c = started(&cfg, 1, ms(0));
    let _ = c.step(ms(0), heard(3));
    let at = (Instant::ZERO + c.params.startup_vote_holdoff()).max(c.election_at);
    let out = c.step(at, QuorumInput::Tick);
    assert_eq!(c.role, Role::PreCandidate);
    assert_eq!(views_sent(&out), vec![(2, 3), (3, 3)]);
}

#[test]
fn a_single_cms_skips_it_two_and_more_apply_it() {
    for (cms, applies) in [(1, false), (2, true), (3, true), (5, true)] {
        let cfg = dn_config(cms);
        let q = started(&cfg, 1, ms(0));
        assert_eq!(q.cut_rule_applies(), applies, "{cms} CMS");
    }
}

/// W1 (node 2) of two CMS, elected in term 1 with W2's pre-vote and vote.
fn w1_leader(cfg: &ClusterConfig) -> (Quorum, Instant) {
    let mut q = started(cfg, 2, ms(0));
    let now = (Instant::ZERO + q.params.startup_vote_holdoff()).max(q.election_at);
    let _ = q.step(now, QuorumInput::Tick);
    assert_eq!(q.role, Role::PreCandidate);
    let granted = QuorumMsg::PreVoteReply {
        term: t(1),
        granted: true,
    };
    let mut out = q.step(now, message(1, 0, granted));
    while let Some(token) = last_token(&out) {
        out = q.step(now, done(token));
    }
    let mut out = q.step(now, message(1, 1, QuorumMsg::VoteReply { granted: true }));
    while let Some(token) = last_token(&out) {
        out = q.step(now, done(token));
    }
    assert_eq!(q.role, Role::Leader);
    (q, now)
}

/// Two-node mode (swarm seeds 30, 83): W1 leading, cut from the agents W2 hears, steps down at
/// exactly 10 s, as with three CMS, so that W2 — which confirms terms alone — leads; before,
/// W1 kept a lease it could not use and no group failed over until the cut healed.
#[test]
fn a_w1_leader_hearing_fewer_dn_agents_than_w2_steps_down_at_exactly_10_s() {
    let cfg = dn_config(2);
    let (mut q, now) = w1_leader(&cfg);
    let _ = q.step(now, heard(0));
    let _ = q.step(now, view(1, 1, 2));
    assert_eq!(
        lead_until_with(&mut q, now + CUT_AFTER - NS, Some(2), 1),
        None
    );
    assert_eq!(q.role, Role::Leader, "not 1 ns early");
    let out = norm(q.step(now + CUT_AFTER, QuorumInput::Tick));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
    assert_eq!(q.role, Role::Follower);
}

/// A W2 leader cut from the agents W1 hears steps down at exactly 10 s too (swarm seeds 824 and
/// 1284: W2 led, cut from every agent, and a group that needed only a `Notify standby` or a
/// Build — a restarted or rebuilt standby of a synchronous group — got none until the cut
/// healed). Before, W2 was exempt because every term confirmation needs its weight; but a W2
/// that no agent reaches cannot confirm any either, whoever leads, while W1 leading can still
/// send every command that needs no promotion.
#[test]
fn a_w2_leader_hearing_fewer_dn_agents_than_w1_steps_down_at_exactly_10_s() {
    let cfg = dn_config(2);
    let mut q = started(&cfg, 1, ms(0));
    let now = (ms(0) + q.params.startup_vote_holdoff()).max(q.election_at);
    let mut out = q.step(now, QuorumInput::Tick);
    while let Some(token) = last_token(&out) {
        out = q.step(now, done(token));
    }
    assert_eq!(q.role, Role::Leader);
    let _ = q.step(now, heard(0));
    let _ = q.step(now, view(2, 1, 2));
    assert_eq!(
        lead_until_with(&mut q, now + CUT_AFTER - NS, Some(2), 2),
        None
    );
    assert_eq!(q.role, Role::Leader, "not 1 ns early");
    let out = norm(q.step(now + CUT_AFTER, QuorumInput::Tick));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
    assert_eq!(q.role, Role::Follower);
}

#[test]
fn a_two_cms_follower_sends_its_view() {
    let cfg = dn_config(2);
    let mut f = started(&cfg, 2, ms(0));
    let _ = f.step(ms(0), heard(2));
    let append = message(
        1,
        1,
        QuorumMsg::Append {
            prev_index: idx(0),
            prev_term: t(0),
            entries: vec![],
            commit: idx(0),
            round: 1,
        },
    );
    assert_eq!(views_sent(&f.step(ms(100), append)), vec![(1, 2)]);
}
