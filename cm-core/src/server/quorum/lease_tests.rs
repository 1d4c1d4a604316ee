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

#[test]
fn an_isolated_second_cms_leads_alone_only_while_the_gateways_answer() {
    let cfg = failover_config();
    let mut q = started(&cfg, 2, ms(0));
    let isolation = q.params.cms_network_isolation_timeout();
    let mut at = ms(0);
    // Before the isolation timeout it only pre-votes (and gets nowhere).
    while at < ms(0) + isolation {
        at = q.next_deadline().unwrap();
        let out = norm(q.step(at, QuorumInput::Tick));
        if at == ms(0) + isolation {
            assert_eq!(out, vec![Out::ProbeGateways]);
        }
    }
    let _ = q.step(at, QuorumInput::GatewaysProbed { reachable: false });
    let at2 = q.election_at;
    let out = norm(q.step(at2, QuorumInput::Tick));
    assert!(!out.iter().any(|o| matches!(o, Out::Send(..))), "{out:?}");
    let _ = q.step(at2, QuorumInput::GatewaysProbed { reachable: true });
    let at3 = q.election_at;
    let out = q.step(at3, QuorumInput::Tick);
    assert_eq!(q.role, Role::Candidate);
    let _ = q.step(at3, done(last_token(&out).unwrap()));
    assert_eq!(q.role, Role::Leader);
    // The gateways stop answering: it demotes.
    let out = norm(q.step(at3, QuorumInput::GatewaysProbed { reachable: false }));
    assert_eq!(out, vec![Out::SteppedDown(1)]);
}
