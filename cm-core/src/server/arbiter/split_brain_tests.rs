//! The split-brain rule of §8.

use core::time::Duration;

use crate::ids::{InstanceId, NodeId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::server::harness::{G, H, cluster, cmds, dn};
use crate::server::leader::LeaderOutput;
use crate::state::Change;
use crate::time::Instant;

fn promoted(h: &H) -> bool {
    h.queued()
        .iter()
        .any(|c| matches!(c, Change::Promote { .. }))
}

/// The primary's agent goes silent at t0 while its standbys keep streaming from it, one
/// second at a time, until the first Lock1; returns (t0, every output until then).
fn agent_cut(h: &mut H) -> (Instant, Vec<LeaderOutput>) {
    h.healthy_round(3);
    let t0 = h.now;
    let mut all = Vec::new();
    for _ in 0..200 {
        h.advance_ms(1000);
        let mut out = h.tick();
        out.extend(h.reports(vec![dn(2).upstream(1, 200), dn(3).upstream(1, 200)]));
        let lock = !cmds(&out).is_empty();
        all.extend(out);
        if lock {
            return (t0, all);
        }
    }
    panic!("no Lock1");
}

#[test]
fn split_brain_timeout_is_63_seconds_with_defaults() {
    assert_eq!(
        Params::defaults().split_brain_timeout(3),
        Duration::from_secs(63)
    );
}

#[test]
fn no_lock1_while_fresh_evidence_lasts_until_the_split_brain_timeout() {
    let mut h = H::new(3);
    let (t0, out) = agent_cut(&mut h);
    assert_eq!(h.now - t0, Duration::from_secs(63));
    let alarm = LeaderOutput::Alarm(Alarm::PrimaryAliveButSilent {
        group: G,
        instance: InstanceId(6001),
    });
    // The alarm once (when 6001 turned Unknown at 3 s), then Lock1 at 63 s and nothing between.
    let n = out.len();
    assert_eq!(out[0], alarm);
    assert_eq!(
        cmds(&out[1..]),
        vec![(6002, CmsCommand::Lock1), (6003, CmsCommand::Lock1)]
    );
    assert_eq!(n, 3);
}

#[test]
fn split_brain_timeout_follows_the_formula_for_other_parameters() {
    let mut p = Params::defaults();
    p.agent_connect_timeout = 2.0;
    p.agent_connect_retries = 5;
    p.agent_heartbeat_timeout = 4.0;
    // 3 CMS × 2 s × 5 + 4 s + 10 s.
    assert_eq!(p.split_brain_timeout(3), Duration::from_secs(44));
    assert_eq!(p.split_brain_timeout(5), Duration::from_secs(64));
    let mut h = H::with(cluster(&[("AZ1", 1)], &["AZ1"; 3], p));
    let (t0, _) = agent_cut(&mut h);
    assert_eq!(h.now - t0, Duration::from_secs(44));
}

#[test]
fn failover_waits_for_the_fence_wait_after_the_standbys_stopped_streaming() {
    let mut h = H::new(3);
    let (_, _) = agent_cut(&mut h);
    // The reports right after the Lock1 still stream (received 200 ms before): the last
    // message from the old primary.
    let last_stream = h.now - Duration::from_millis(200);
    h.advance_ms(1000);
    h.reports(vec![h.locked(2), h.locked(3)]);
    assert!(!promoted(&h));
    let at = last_stream + Params::defaults().split_brain_fence_wait();
    assert_eq!(
        Params::defaults().split_brain_fence_wait(),
        Duration::from_nanos(3_570_707_071)
    );
    let mut guard = 0;
    while !promoted(&h) {
        let next = h.leader.next_deadline().unwrap();
        h.now = next;
        h.tick();
        assert!(h.now <= at, "promoted late");
        guard += 1;
        assert!(guard < 20);
    }
    assert_eq!(h.now, at);
}

#[test]
fn the_fence_command_runs_at_the_timeout_and_its_success_allows_the_failover() {
    let mut p = Params::defaults();
    p.fence_command = "/usr/local/bin/fence".into();
    let mut h = H::with(cluster(&[("AZ1", 1)], &["AZ1"; 3], p));
    let (_, out) = agent_cut(&mut h);
    let tail: Vec<LeaderOutput> = out[1..].to_vec();
    assert_eq!(
        tail[0],
        LeaderOutput::RunFenceCommand {
            group: G,
            instance: InstanceId(6001),
            node: NodeId(1)
        }
    );
    assert_eq!(cmds(&tail).len(), 2);
    h.advance_ms(1000);
    h.reports(vec![h.locked(2), h.locked(3)]);
    assert!(!promoted(&h));
    h.advance_ms(100);
    h.leader.on_fence_command_done(h.now, G, true, &mut h.state);
    assert!(h.queued().contains(&Change::Promote {
        group: G,
        expected_term: Term(1),
        static_primary: InstanceId(6002),
        reason: crate::history::PromotionReason::Failover,
    }));
}

#[test]
fn evidence_that_stops_before_the_timeout_resumes_the_normal_path() {
    let mut h = H::new(3);
    h.healthy_round(3);
    for _ in 0..10 {
        h.advance_ms(1000);
        h.tick();
        h.reports(vec![dn(2).upstream(1, 200), dn(3).upstream(1, 200)]);
    }
    h.advance_ms(1000);
    assert_eq!(cmds(&h.tick()), vec![]);
    assert_eq!(
        cmds(&h.report(dn(2))),
        vec![],
        "6003 still shows fresh evidence"
    );
    assert_eq!(
        cmds(&h.report(dn(3))),
        vec![(6002, CmsCommand::Lock1), (6003, CmsCommand::Lock1)]
    );
}
