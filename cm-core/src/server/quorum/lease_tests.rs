use std::time::Duration;

use super::super::test_support::*;
use super::super::{Quorum, QuorumInput, QuorumMsg, Role};
use crate::NodeId;
use crate::time::Instant;

fn ack(match_index: u64, round: u64) -> QuorumMsg {
    QuorumMsg::AppendReply {
        success: true,
        match_index: idx(match_index),
        round,
    }
}

#[test]
fn the_lease_counts_from_the_send_time_of_the_acknowledged_round() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let sent = now + q.params.quorum_heartbeat_interval();
    let _ = q.step(sent, QuorumInput::Tick);
    let _ = q.step(sent + Duration::from_millis(50), message(3, 1, ack(1, 2)));
    let status = q.status(sent + Duration::from_millis(50));
    assert_eq!(status.lease_until, Some(sent + q.params.leader_lease()));
}

#[test]
fn check_quorum_steps_down_a_leader_that_hears_no_quorum() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let deadline = now + q.params.election_timeout_min();
    assert!(!q.holds_lease(deadline), "the lease ends first");
    let out = norm(q.step(deadline - Duration::from_nanos(1), QuorumInput::Tick));
    assert!(out.iter().all(|o| matches!(o, Out::Send(..))), "{out:?}");
    let out = norm(q.step(deadline, QuorumInput::Tick));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
    assert_eq!(q.role, Role::Follower);
}

/// Leader clock slow by ρ, follower clock fast by ρ: the worst case for the lease.
#[test]
fn the_lease_expires_before_a_voter_that_acknowledged_it_grants_a_vote() {
    let cfg = config(3);
    let rho = cfg.params.max_clock_drift;
    let (leader, leader_origin) = leader(&cfg);
    let mut follower = started(&cfg, 2, ms(0));
    let follower_origin = ms(5_000);
    let heartbeat = QuorumMsg::Append {
        prev_index: idx(0),
        prev_term: t(0),
        entries: vec![],
        commit: idx(0),
        round: 1,
    };
    // Global time 0: the round that gave the lease arrives (at once: the tightest case).
    let _ = follower.step(follower_origin, message(1, 1, heartbeat));
    let local = |origin: Instant, rate: f64, g_us: u64| {
        origin + Duration::from_nanos((g_us as f64 * 1000.0 * rate) as u64)
    };
    let mut lease_end = None;
    let mut grant = None;
    for g_us in (0..2_000_000).step_by(100) {
        let l = local(leader_origin, 1.0 - rho, g_us);
        if lease_end.is_none() && !leader.holds_lease(l) {
            lease_end = Some(g_us);
        }
        let f = local(follower_origin, 1.0 + rho, g_us);
        let vote = QuorumMsg::Vote {
            last_term: t(1),
            last_index: idx(1),
        };
        let _ = follower.step(f, message(3, 2, vote));
        if grant.is_none() && follower.voted_for == Some(NodeId(3)) {
            grant = Some(g_us);
            break;
        }
    }
    let (lease_end, grant) = (lease_end.unwrap(), grant.unwrap());
    assert!(
        lease_end <= grant,
        "lease ends at {lease_end} µs, vote at {grant} µs"
    );
    assert!(
        grant - lease_end < 1_000,
        "the lease is not needlessly short"
    );
}

/// Drives a 3-node leader for `secs`, acknowledging every round from node 2.
fn lead_for(q: &mut Quorum, mut now: Instant, until: Instant) -> (Instant, Vec<Out>) {
    loop {
        let next = q.next_deadline().unwrap();
        if next > until {
            return (now, Vec::new());
        }
        now = next;
        let out = norm(q.step(now, QuorumInput::Tick));
        if out.contains(&Out::SteppedDown(1)) {
            return (now, out);
        }
        if let Some(lead) = q.lead.as_ref() {
            let round = lead.next_round - 1;
            let _ = q.step(now, message(2, 1, ack(1, round)));
        }
    }
}

#[test]
fn a_leader_seeing_at_most_its_own_agent_for_10_s_steps_down_and_waits() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let only_local = QuorumInput::AgentsConnected {
        count: 1,
        includes_local: true,
    };
    let _ = q.step(now, only_local);
    let (at, out) = lead_for(&mut q, now, now + Duration::from_secs(11));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
    assert_eq!(at, now + Duration::from_secs(10));
    // No campaign while demoted (10 s), though election timers fire.
    let mut t_ = at;
    let mut ticks = 0;
    while q.next_deadline().unwrap() < at + super::DEMOTE_AFTER {
        t_ = q.next_deadline().unwrap();
        let out = norm(q.step(t_, QuorumInput::Tick));
        assert!(out.is_empty(), "campaigned while demoted: {out:?}");
        ticks += 1;
    }
    assert!(ticks >= 5, "election timers fired {ticks} times");
    // Seeing two agents lifts the demotion at once.
    let two = QuorumInput::AgentsConnected {
        count: 2,
        includes_local: true,
    };
    let _ = q.step(t_, two);
    let t_ = q.next_deadline().unwrap();
    let out = norm(q.step(t_, QuorumInput::Tick));
    assert_eq!(out.len(), 2, "pre-votes to both peers: {out:?}");
    assert_eq!(q.role, Role::PreCandidate);
}

#[test]
fn a_remote_agent_alone_does_not_demote() {
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let one_remote = QuorumInput::AgentsConnected {
        count: 1,
        includes_local: false,
    };
    let _ = q.step(now, one_remote);
    let (_, out) = lead_for(&mut q, now, now + Duration::from_secs(12));
    assert!(out.is_empty());
    assert_eq!(q.role, Role::Leader);
}

#[test]
fn with_two_cms_the_first_is_a_quorum_alone_and_the_second_is_not() {
    let cfg = config(2);
    let mut first = started(&cfg, 1, ms(0));
    let mut second = started(&cfg, 2, ms(0));
    let at = (ms(0) + first.params.startup_vote_holdoff()).max(first.election_at);
    let out = first.step(at, QuorumInput::Tick);
    assert_eq!(first.role, Role::Candidate);
    let _ = first.step(at, done(last_token(&out).unwrap()));
    assert_eq!(first.role, Role::Leader);
    assert!(first.holds_lease(at));

    let at = (ms(0) + second.params.startup_vote_holdoff()).max(second.election_at);
    let out = norm(second.step(at, QuorumInput::Tick));
    let pre = QuorumMsg::PreVote {
        term: t(1),
        last_term: t(0),
        last_index: idx(0),
    };
    assert_eq!(out, vec![Out::Send(1, 0, pre)]);
    assert_eq!(second.role, Role::PreCandidate);
}

fn failover_config() -> crate::config::ClusterConfig {
    let mut params = crate::params::Params::defaults();
    params.cms_enable_failover_on2nodes = true;
    config_with(2, params)
}

/// Ticks `q` at its deadlines up to `until` (inclusive), completing every write at once;
/// returns every output with the instant it came at.
fn tick_until(q: &mut Quorum, until: Instant) -> Vec<(Instant, Out)> {
    let mut seen = Vec::new();
    while let Some(at) = q.next_deadline().filter(|d| *d <= until) {
        let mut out = q.step(at, QuorumInput::Tick);
        // Every write completes at once, as a working store's do (a leader whose store stops
        // completing writes stops counting itself).
        while let Some(token) = last_token(&out) {
            seen.extend(norm(out).into_iter().map(|o| (at, o)));
            out = q.step(at, done(token));
        }
        seen.extend(norm(out).into_iter().map(|o| (at, o)));
    }
    seen
}

fn probes(seen: &[(Instant, Out)]) -> Vec<Instant> {
    seen.iter()
        .filter(|(_, o)| *o == Out::ProbeGateways)
        .map(|(at, _)| *at)
        .collect()
}

fn sends(seen: &[(Instant, Out)]) -> usize {
    seen.iter()
        .filter(|(_, o)| matches!(o, Out::Send(..)))
        .count()
}

/// §5.4 with defaults (isolation 20 s, ρ = 0.01, lease 0.784158415 s): the second CMS (W1),
/// its peer silent since it started at 0, probes the gateways from 19.603960396 s
/// (20 × 0.99/1.01) but may lead alone only from 23.228602860 s ((20 + 2) × 1.01/0.99 + the
/// lease), on a probe sent at or after that instant — by then W2's weight and lease have
/// lapsed on any clock within ρ. It campaigns for an even term (W2's are odd). Before the fix it
/// led alone from the first answered probe at 20 s, in the term after W2's.
#[test]
fn an_isolated_second_cms_leads_alone_only_after_the_peers_lease_must_have_lapsed() {
    let cfg = failover_config();
    let mut q = started(&cfg, 2, ms(0));
    let first = Instant::from_nanos(19_603_960_396);
    let alone = Instant::from_nanos(23_228_602_860);
    assert_eq!(q.lead_alone_from(), alone);
    let seen = tick_until(&mut q, first);
    assert_eq!(probes(&seen), vec![first]);
    // An answer to that early probe does not let it lead: it stays silent, a follower.
    let _ = q.step(first + Duration::from_millis(100), gateways(true));
    let just_before = alone - Duration::from_nanos(1);
    let seen = tick_until(&mut q, just_before);
    assert_eq!(sends(&seen), 0, "{seen:?}");
    assert_eq!(q.role, Role::Follower);
    // The probes sent meanwhile (every 1.6 s) answer too: still too early.
    assert_eq!(probes(&seen).len(), 2, "{seen:?}");
    for _ in probes(&seen) {
        let _ = q.step(just_before, gateways(true));
    }
    assert!(!q.alone_is_quorum(just_before));
    // A probe goes out exactly at the instant; its answer lets it lead, in term 2.
    let seen = tick_until(&mut q, alone);
    assert_eq!(probes(&seen).last(), Some(&alone));
    let answered = alone + Duration::from_millis(100);
    let _ = q.step(answered, gateways(true));
    assert!(q.alone_is_quorum(answered));
    let seen = tick_until(&mut q, answered + Duration::from_secs(2));
    assert!(
        seen.iter().any(|(_, o)| *o == Out::BecameLeader(2)),
        "{seen:?}"
    );
    assert!(q.holds_lease(answered + Duration::from_secs(2)));
    // The gateways stop answering: it demotes at once.
    let at = q.probe_at;
    let seen = tick_until(&mut q, at);
    assert_eq!(probes(&seen), vec![at]);
    let out = norm(q.step(at, gateways(false)));
    assert_eq!(out, vec![Out::SteppedDown(2)]);
}

/// §5.4: W2 (weight 2) leads alone while its weight counts; once its peer has been silent for
/// 19.603960396 s it stops using its lease and steps down at once (before: it kept leading on
/// its weight, beside a W1 leading alone). A probe sent after that instant that answers gives
/// the weight back, and it leads again in its next odd term.
#[test]
fn w2_stops_using_its_lease_when_its_weight_stops_counting() {
    let cfg = failover_config();
    let mut q = started(&cfg, 1, ms(0));
    heard_peer(&mut q, ms(0));
    let until = Instant::from_nanos(19_603_960_396);
    let before = until - Duration::from_nanos(1);
    let seen = tick_until(&mut q, before);
    assert!(
        seen.iter().any(|(_, o)| *o == Out::BecameLeader(1)),
        "{seen:?}"
    );
    assert!(q.holds_lease(before));
    let seen = tick_until(&mut q, until);
    assert!(!q.holds_lease(until));
    assert!(seen.contains(&(until, Out::SteppedDown(1))), "{seen:?}");
    assert_eq!(probes(&seen), vec![until]);
    let answered = until + Duration::from_millis(100);
    let _ = q.step(answered, gateways(true));
    let seen = tick_until(&mut q, answered + Duration::from_secs(2));
    assert!(
        seen.iter().any(|(_, o)| *o == Out::BecameLeader(3)),
        "{seen:?}"
    );
}

/// The term confirmation weight a CMS reports (§4.1): W2 the whole total (3) while its weight
/// counts, 1 once it does not.
#[test]
fn w2_reports_its_weight_only_while_it_counts() {
    let cfg = failover_config();
    let mut q = started(&cfg, 1, ms(0));
    heard_peer(&mut q, ms(0));
    let until = Instant::from_nanos(19_603_960_396);
    let _ = tick_until(&mut q, until - Duration::from_nanos(1));
    assert_eq!(q.confirmation_weight(), 3);
    let _ = tick_until(&mut q, until);
    assert_eq!(q.confirmation_weight(), 1);
}

/// A message from node 2 reaches `q` at `at` (an answer to no hello of `q`'s: only heard).
fn heard_peer(q: &mut Quorum, at: Instant) {
    let reply = QuorumMsg::HelloReply {
        nonce: u64::MAX,
        counted: false,
        last_index: idx(0),
    };
    let _ = q.step(at, message(2, 0, reply));
}

/// Swarm seed 1222 (S1): W2 restarted while W1 led alone (W2's messages had not reached W1 for
/// 20 s) and counted its weight from its start, as if it had just heard W1: two leases. A W2
/// that has not heard its peer since it started does not count its weight — not in the first
/// 19.6 s, whatever its election timer says — until a gateway probe answers.
#[test]
fn a_restarted_w2_that_has_not_heard_its_peer_does_not_count_its_weight() {
    let cfg = failover_config();
    let mut q = started(&cfg, 1, ms(0));
    let until = Instant::from_nanos(19_603_960_396);
    let seen = tick_until(&mut q, until - Duration::from_nanos(1));
    assert!(
        !seen.iter().any(|(_, o)| matches!(o, Out::BecameLeader(_))),
        "{seen:?}"
    );
    assert_eq!(q.confirmation_weight(), 1);
    let seen = tick_until(&mut q, until);
    assert_eq!(probes(&seen), vec![until]);
    let answered = until + Duration::from_millis(100);
    let _ = q.step(answered, gateways(true));
    let seen = tick_until(&mut q, answered + Duration::from_secs(2));
    assert!(
        seen.iter().any(|(_, o)| matches!(o, Out::BecameLeader(_))),
        "{seen:?}"
    );
}

fn gateways(reachable: bool) -> QuorumInput {
    QuorumInput::GatewaysProbed { reachable }
}

/// Runs a 3-CMS leader for `span` with heartbeat rounds every interval, node 2 acknowledging
/// each round at once and node 3 silent; when `hang` the leader's store write issued at the
/// start never completes. Returns when it stepped down, if it did.
fn lead_with_one_follower(hang: bool, span: Duration) -> (Option<Instant>, Instant, Quorum) {
    use crate::state::{Change, ReplicatedState};
    let cfg = config(3);
    let (mut q, now) = leader(&cfg);
    let h = q.params.quorum_heartbeat_interval();
    let issued = now + Duration::from_millis(10);
    assert!(q.propose(Change::SetPaused(true)).is_some());
    let out = q.step(issued, QuorumInput::Flush);
    let token = last_token(&out).expect("the append is written");
    if !hang {
        let _ = q.step(issued, done(token));
    }
    let mut at = now + h;
    while at <= now + span {
        for o in norm(q.step(at, QuorumInput::Tick)) {
            match o {
                Out::SteppedDown(_) => return (Some(at), issued, q),
                Out::Send(2, term, QuorumMsg::Append { round, .. }) => {
                    let _ = q.step(at, message(2, term, ack(0, round)));
                }
                _ => {}
            }
        }
        at += h;
    }
    (None, issued, q)
}

/// Swarm seed 494: the leader's disk hung for 44 s; with one follower it kept its lease (it
/// counted itself in every round) and committed nothing until the hang ended. Now, from
/// `instance_heartbeat_timeout` after its oldest write was issued, its rounds do not count it:
/// the last round counted is the last one sent before then, and check-quorum steps it down
/// `election_timeout_min` after that round (a tick grid of one heartbeat interval).
#[test]
fn a_leader_whose_store_stopped_completing_writes_steps_down() {
    let (down, issued, q) = lead_with_one_follower(true, Duration::from_secs(20));
    let p = &q.params;
    let h = p.quorum_heartbeat_interval();
    let stuck_at = issued + p.instance_heartbeat_timeout();
    // Rounds go out at now + k·h (now = leader()'s instant, a whole number of h from 0 here).
    let start = issued - Duration::from_millis(10);
    let mut last_counted = start;
    while last_counted + h < stuck_at {
        last_counted += h;
    }
    let deadline = last_counted + p.election_timeout_min();
    let mut expected = start;
    while expected < deadline {
        expected += h;
    }
    assert_eq!(down, Some(expected));
    assert_eq!(q.role, Role::Follower);
    let (down, _, q) = lead_with_one_follower(false, Duration::from_secs(20));
    assert_eq!(down, None, "a working store keeps the leader");
    assert_eq!(q.role, Role::Leader);
}
