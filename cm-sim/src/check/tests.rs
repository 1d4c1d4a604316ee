use super::*;

use cm_core::config::ClusterConfig;
use cm_core::dn::History;
use cm_core::history::PromotionReason;
use cm_core::msg::SequencedCommand;
use cm_core::{CmdSeq, Lsn as L, Position, Timeline as Tli};

use crate::db::{Ack, DbTimings, Promotion};

fn checker() -> (Checker, Databases) {
    let cfg = ClusterConfig::from_toml_str(crate::db::tests::CONFIG_1P2S).expect("config");
    (
        Checker::new(&cfg, GroupId(1)),
        Databases::new(&cfg, DbTimings::default()),
    )
}

fn server(node: u32, term: u64, leader: bool, lease_until_s: u64, now_s: u64) -> ServerView {
    ServerView {
        node: NodeId(node),
        local_now: Instant::from_secs(now_s),
        incarnation: 1,
        obs: std::sync::Arc::new(ServerObs {
            quorum_term: QuorumTerm(term),
            leader,
            lease_until: leader.then(|| Instant::from_secs(lease_until_s)),
            ..ServerObs::default()
        }),
    }
}

fn nobody(_: NodeId) -> bool {
    false
}

#[test]
fn s1_two_leases_at_once_is_a_violation_but_an_expired_one_is_not() {
    let (mut c, dbs) = checker();
    let t = Instant::from_secs(1);
    c.check_state(
        t,
        &[server(1, 1, true, 10, 5), server(2, 2, true, 10, 11)],
        &dbs,
        &nobody,
        &nobody,
    );
    assert!(
        c.violations.is_empty(),
        "node 1's lease ran out on its own clock"
    );
    c.check_state(
        t,
        &[server(1, 1, true, 10, 5), server(2, 2, true, 10, 5)],
        &dbs,
        &nobody,
        &nobody,
    );
    assert_eq!(c.violations.len(), 1);
    assert_eq!(c.violations[0].rule, "S1");
}

#[test]
fn s1_two_leaders_of_one_quorum_term_is_a_violation() {
    let (mut c, dbs) = checker();
    c.check_state(
        Instant::ZERO,
        &[server(1, 3, true, 0, 5)],
        &dbs,
        &nobody,
        &nobody,
    );
    c.check_state(
        Instant::ZERO,
        &[server(2, 3, true, 0, 5)],
        &dbs,
        &nobody,
        &nobody,
    );
    assert!(
        c.violations
            .iter()
            .any(|v| v.rule == "S1" && v.message.contains("both lead"))
    );
}

fn failover(instance: u32, term: u64, seq: u64) -> Msg {
    Msg::Command(SequencedCommand {
        instance: InstanceId(instance),
        seq: CmdSeq(seq),
        cmd: CmsCommand::Failover {
            term: Term(term),
            reason: PromotionReason::Failover,
        },
    })
}

#[test]
fn s2_two_failovers_for_one_group_term_is_a_violation_a_resend_is_not() {
    let (mut c, _) = checker();
    let from = Endpoint::server(NodeId(1));
    c.on_send(Instant::ZERO, from, &failover(6002, 4, 7), QuorumTerm(2));
    c.on_send(Instant::ZERO, from, &failover(6002, 4, 7), QuorumTerm(2));
    assert!(
        c.violations.is_empty(),
        "the same command again (duplicate frame) is fine"
    );
    c.on_send(Instant::ZERO, from, &failover(6003, 4, 1), QuorumTerm(3));
    assert_eq!(c.violations[0].rule, "S2");
}

#[test]
fn s2_a_group_term_going_back_on_one_server_is_a_violation() {
    let (mut c, dbs) = checker();
    let mut s = server(1, 1, false, 0, 0);
    std::sync::Arc::make_mut(&mut s.obs)
        .group_terms
        .insert(GroupId(1), Term(5));
    c.check_state(Instant::ZERO, &[s.clone()], &dbs, &nobody, &nobody);
    std::sync::Arc::make_mut(&mut s.obs)
        .group_terms
        .insert(GroupId(1), Term(4));
    c.check_state(Instant::ZERO, &[s.clone()], &dbs, &nobody, &nobody);
    assert_eq!(c.violations[0].rule, "S2");
    s.incarnation = 2;
    std::sync::Arc::make_mut(&mut s.obs)
        .group_terms
        .insert(GroupId(1), Term(3));
    c.check_state(Instant::ZERO, &[s], &dbs, &nobody, &nobody);
    assert_eq!(
        c.violations.len(),
        1,
        "a restarted server catches up from its store"
    );
}

fn ack(lsn: u64, tli: u32) -> Ack {
    Ack {
        group: GroupId(1),
        instance: InstanceId(6001),
        position: Position::new(tli, lsn),
        accepted_at: Instant::ZERO,
    }
}

#[test]
fn s5_promoting_a_member_behind_an_acknowledged_write_loses_it() {
    let (mut c, dbs) = checker();
    c.on_acks(
        Instant::ZERO,
        &[ack(100, 1), ack(200, 1), ack(300, 1)],
        &dbs,
    );
    let promo = |lsn: u64| Promotion {
        group: GroupId(1),
        instance: InstanceId(6002),
        before: Position::new(1, lsn),
        history: History::root(Tli(1)).branch(L(lsn), Tli(2)),
    };
    c.on_promotion(Instant::ZERO, &promo(300));
    assert!(c.violations.is_empty());
    assert_eq!(c.lost_acked_writes, 0);
    c.on_promotion(Instant::ZERO, &promo(150));
    assert_eq!(c.lost_acked_writes, 2);
    assert_eq!(c.violations[0].rule, "S3");
    c.on_promotion(Instant::ZERO, &promo(150));
    assert_eq!(c.lost_acked_writes, 2, "each lost write counts once");
}

#[test]
fn s6_starting_an_instance_kept_stopped_or_while_paused_is_a_violation() {
    let (mut c, _) = checker();
    c.on_dn_action(
        Instant::ZERO,
        InstanceId(6001),
        &DnAction::StartPending,
        false,
        false,
    );
    assert!(c.violations.is_empty());
    c.on_dn_action(
        Instant::ZERO,
        InstanceId(6001),
        &DnAction::StartPending,
        true,
        false,
    );
    c.on_dn_action(
        Instant::ZERO,
        InstanceId(6001),
        &DnAction::StartPending,
        false,
        true,
    );
    assert_eq!(c.violations.len(), 2);
    assert!(c.violations.iter().all(|v| v.rule == "S6"));
}

#[test]
fn timings_are_relative_to_the_first_fault_and_null_when_absent() {
    let (mut c, _) = checker();
    let from = Endpoint::server(NodeId(1));
    c.on_send(
        Instant::from_secs(1),
        from,
        &failover(6002, 1, 1),
        QuorumTerm(1),
    );
    c.on_fault(Instant::from_secs(30), Some(NodeId(1)));
    c.on_report(NodeId(2), Instant::from_millis(35_000));
    c.on_report(NodeId(1), Instant::from_millis(29_000));
    c.on_report(NodeId(1), Instant::from_millis(29_500));
    c.on_report(NodeId(1), Instant::from_millis(45_000));
    c.on_send(
        Instant::from_millis(37_500),
        from,
        &failover(6002, 2, 2),
        QuorumTerm(1),
    );
    let t = c.timings(Duration::from_secs(6), Instant::from_secs(60));
    assert_eq!(t["fault_at_s"], Some(30.0));
    assert_eq!(
        t["failover_sent_s"],
        Some(7.5),
        "the failover before the fault does not count"
    );
    assert_eq!(t["agent_last_report_s"], Some(-0.5));
    assert_eq!(t["restart_sent_s"], None);
    assert_eq!(t["lost_acked_writes"], Some(0.0));
}

/// The timings map has exactly the SPEC §12 names of `TIMING_NAMES`, no more, no fewer.
#[test]
fn timings_name_exactly_the_timing_names() {
    let (c, _) = checker();
    let t = c.timings(Duration::from_secs(6), Instant::from_secs(60));
    let mut want: Vec<&str> = crate::scenario::TIMING_NAMES.to_vec();
    want.sort_unstable();
    assert_eq!(t.keys().copied().collect::<Vec<_>>(), want);
}

#[test]
fn two_node_concession_reports_simultaneous_leases_but_never_two_leaders_of_a_term() {
    let (mut c, dbs) = checker();
    let t = Instant::from_secs(1);
    c.two_node_concession = true;
    c.check_state(
        t,
        &[server(1, 4, true, 10, 5), server(2, 5, true, 10, 5)],
        &dbs,
        &nobody,
        &nobody,
    );
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.conceded.len(), 1);
    assert_eq!(c.conceded[0].rule, "S1");
    // One leader per quorum term holds even under the concession.
    c.check_state(t, &[server(1, 5, true, 10, 5)], &dbs, &nobody, &nobody);
    assert_eq!(c.violations.len(), 1);
    assert!(c.violations[0].message.contains("both lead"));
    // Outside the span (one side lost the gateway) two leases fail again.
    c.two_node_concession = false;
    c.check_state(
        Instant::from_secs(2),
        &[server(1, 6, true, 10, 5), server(2, 7, true, 10, 5)],
        &dbs,
        &nobody,
        &nobody,
    );
    assert_eq!(c.violations.len(), 2);
    assert_eq!(c.violations[1].rule, "S1");
}

/// A lease granted while both sides reached the gateway runs out after the span ends: that
/// tail is reported with the span, but a lease renewed after it (a later lease end) beside
/// another one fails S1 (seed 5 of the widened swarm failed on the tail at the heal).
#[test]
fn a_lease_from_the_two_node_span_may_outlive_it_but_not_be_renewed_beside_another() {
    let (mut c, dbs) = checker();
    c.two_node_concession = true;
    let span = [server(1, 13, true, 10, 5), server(2, 10, true, 10, 5)];
    c.check_state(Instant::from_secs(5), &span, &dbs, &nobody, &nobody);
    c.two_node_concession = false;
    // Healed: node 1 renews (lease end 11), node 2 still holds its lease from the span.
    let tail = [server(1, 13, true, 11, 6), server(2, 10, true, 10, 6)];
    c.check_state(Instant::from_secs(6), &tail, &dbs, &nobody, &nobody);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.conceded.len(), 1, "{:?}", c.conceded);
    // Node 2 renews too (lease end 12): two leases outside the span.
    let both = [server(1, 13, true, 11, 7), server(2, 10, true, 12, 7)];
    c.check_state(Instant::from_secs(7), &both, &dbs, &nobody, &nobody);
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.violations[0].rule, "S1");
}

#[test]
fn two_node_concession_reports_s4_and_fails_it_once_the_span_ends() {
    let (mut c, mut dbs) = checker();
    for i in [6001, 6002] {
        let d = dbs.instances.get_mut(&InstanceId(i)).expect("member");
        d.running = true;
        d.role = cm_core::dn::DnRole::Primary;
        d.sync_k = 0;
    }
    c.two_node_concession = true;
    c.check_state(Instant::from_secs(1), &[], &dbs, &nobody, &nobody);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.conceded.len(), 1);
    assert_eq!(c.conceded[0].rule, "S4");
    c.check_state(Instant::from_secs(2), &[], &dbs, &nobody, &nobody);
    assert!(c.violations.is_empty());
    // One side lost the gateway while both members can still acknowledge: S4 fails now.
    c.two_node_concession = false;
    c.check_state(Instant::from_secs(3), &[], &dbs, &nobody, &nobody);
    assert_eq!(c.violations.len(), 1);
    assert_eq!(c.violations[0].rule, "S4");
    assert_eq!(c.violations[0].at, Instant::from_secs(3));
}

/// A dual window opened in the two-node span may outlast it while healing fences the lower
/// side's primary (`heal_fence_bound`), and fails S4 once that bound has passed (seed 285 of
/// the widened swarm failed at the instant the two CMS heard each other).
#[test]
fn a_dual_window_from_the_span_fails_only_after_the_healing_fence_bound() {
    let (mut c, mut dbs) = checker();
    c.heal_fence_bound = Duration::from_secs(5);
    for i in [6001, 6002] {
        let d = dbs.instances.get_mut(&InstanceId(i)).expect("member");
        d.running = true;
        d.role = cm_core::dn::DnRole::Primary;
        d.sync_k = 0;
    }
    c.two_node_concession = true;
    c.check_state(Instant::from_secs(1), &[], &dbs, &nobody, &nobody);
    c.two_node_concession = false;
    for s in [3, 7] {
        c.check_state(Instant::from_secs(s), &[], &dbs, &nobody, &nobody);
    }
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    c.check_state(Instant::from_secs(8), &[], &dbs, &nobody, &nobody);
    assert_eq!(c.violations.len(), 1);
    assert_eq!(c.violations[0].rule, "S4");
    assert_eq!(c.violations[0].at, Instant::from_secs(8));
}

/// S8 (SPEC §15): two members of one group answering `/primary` with 200 at once is a
/// violation, reported once per pair; one member, or members of different groups, are not.
#[test]
fn s8_primary_answered_by_two_members_of_a_group_at_once() {
    let (mut c, _) = checker();
    let t = Instant::from_secs(5);
    c.check_primary_answers(t, &[(NodeId(1), InstanceId(6001))]);
    assert!(c.violations.is_empty());
    let two = [(NodeId(1), InstanceId(6001)), (NodeId(2), InstanceId(6002))];
    c.check_primary_answers(t, &two);
    c.check_primary_answers(Instant::from_secs(6), &two);
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.violations[0].rule, "S8");
    assert_eq!(c.violations[0].at, t);
    // Under §5.4's two-node concession it is reported, not failed.
    let (mut c, _) = checker();
    c.two_node_concession = true;
    c.check_primary_answers(t, &two);
    assert!(c.violations.is_empty());
    assert_eq!(c.conceded.len(), 1);
}

/// S8 like S4: two `/primary` 200s that began in the two-node span may outlast it while healing
/// fences the lower side (`heal_fence_bound` after the span ended), and fail after that (swarm
/// seeds 121, 233, 285, 293 once S8 was checked).
#[test]
fn s8_from_the_two_node_span_fails_only_after_the_healing_fence_bound() {
    let (mut c, dbs) = checker();
    c.heal_fence_bound = Duration::from_secs(5);
    let two = [(NodeId(1), InstanceId(6001)), (NodeId(2), InstanceId(6002))];
    c.two_node_concession = true;
    c.check_state(Instant::from_secs(1), &[], &dbs, &nobody, &nobody);
    c.check_primary_answers(Instant::from_secs(1), &two);
    c.two_node_concession = false;
    for s in [3, 7] {
        c.check_state(Instant::from_secs(s), &[], &dbs, &nobody, &nobody);
        c.check_primary_answers(Instant::from_secs(s), &two);
    }
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    c.check_state(Instant::from_secs(8), &[], &dbs, &nobody, &nobody);
    c.check_primary_answers(Instant::from_secs(8), &two);
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.violations[0].rule, "S8");
    assert_eq!(c.violations[0].at, Instant::from_secs(8));
}

/// S7's "never on two nodes" like S8: a `with_primary_of` resource running on both sides of
/// §5.4's two-node span is reported, not failed; having begun there it may outlast the span by
/// the healing fence bound plus the resource's stop grace, and fails after that; one that
/// begins outside the span fails at once (swarm-resources seeds 78 and 121, once the vip drew
/// the default time_out).
#[test]
fn s7_twice_from_the_two_node_span_fails_only_after_the_fence_bound_and_grace() {
    let (mut c, dbs) = checker();
    c.heal_fence_bound = Duration::from_secs(5);
    let grace = Duration::from_secs(2);
    let twice = || {
        vec![(
            "S7 vip two".to_owned(),
            "S7: `vip` runs on [1, 2] at once".to_owned(),
            grace,
        )]
    };
    c.two_node_concession = true;
    c.check_state(Instant::from_secs(1), &[], &dbs, &nobody, &nobody);
    c.check_resources_twice(Instant::from_secs(1), twice());
    assert_eq!(c.conceded.len(), 1);
    assert_eq!(c.conceded[0].rule, "S7");
    c.two_node_concession = false;
    // The span ended at 3 s: excused until 3 + 5 + 2 = 10 s.
    for s in [3, 7, 9] {
        c.check_state(Instant::from_secs(s), &[], &dbs, &nobody, &nobody);
        c.check_resources_twice(Instant::from_secs(s), twice());
    }
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    c.check_state(Instant::from_secs(10), &[], &dbs, &nobody, &nobody);
    c.check_resources_twice(Instant::from_secs(10), twice());
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.violations[0].rule, "S7");
    assert_eq!(c.violations[0].at, Instant::from_secs(10));
    // Outside any span: a violation at once.
    let (mut c, dbs) = checker();
    c.check_state(Instant::from_secs(1), &[], &dbs, &nobody, &nobody);
    c.check_resources_twice(Instant::from_secs(1), twice());
    assert_eq!(c.violations.len(), 1);
    assert!(c.conceded.is_empty());
}

#[test]
fn h_a_promotion_replacing_no_primary_must_be_the_start() {
    use cm_core::history::{Promotion, PromotionReason};
    let (mut c, dbs) = checker();
    let promotion = |reason| Promotion {
        group: GroupId(1),
        term: Term(2),
        instance: InstanceId(6001),
        previous: None,
        reason,
        timeline: cm_core::Timeline(2),
        wall_ms: cm_core::time::WallMillis(0),
    };
    let mut s = server(1, 1, true, 10, 1);
    std::sync::Arc::make_mut(&mut s.obs).newest_promotion = Some(promotion(PromotionReason::Start));
    c.check_state(Instant::from_secs(1), &[s.clone()], &dbs, &nobody, &nobody);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    std::sync::Arc::make_mut(&mut s.obs).newest_promotion = Some(Promotion {
        previous: Some(InstanceId(6002)),
        ..promotion(PromotionReason::Failover)
    });
    c.check_state(Instant::from_secs(2), &[s.clone()], &dbs, &nobody, &nobody);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    std::sync::Arc::make_mut(&mut s.obs).newest_promotion =
        Some(promotion(PromotionReason::Failover));
    c.check_state(Instant::from_secs(3), &[s], &dbs, &nobody, &nobody);
    assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    assert_eq!(c.violations[0].rule, "H");
}
