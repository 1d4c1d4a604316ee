//! Phony-dead handling on the CMS (§6).

use core::time::Duration;

use crate::dn::DnRole;
use crate::ids::{InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, cmds, command, dn};
use crate::server::leader::LeaderOutput;
use crate::state::Change;

fn static_moves(h: &H) -> Vec<Change> {
    h.queued()
        .into_iter()
        .filter(|c| matches!(c, Change::SetStaticPrimary { .. }))
        .collect()
}

#[test]
fn phony_dead_at_the_fifth_hit_not_the_fourth() {
    let mut h = H::new(3);
    h.healthy_round(3);
    assert_eq!(h.report(dn(1).primary(1).hits(4)), vec![]);
    let out = h.report(dn(1).primary(1).hits(5));
    assert_eq!(
        out,
        vec![
            LeaderOutput::Alarm(Alarm::PhonyDead {
                instance: InstanceId(6001)
            }),
            command(1, 1, CmsCommand::Restart),
            // Its role is Unknown now: the group has no valid primary and locks its standbys.
            command(2, 1, CmsCommand::Lock1),
            command(3, 1, CmsCommand::Lock1),
        ]
    );
    let m = h.leader.groups()[&G]
        .member(InstanceId(6001))
        .unwrap()
        .clone();
    assert_eq!(m.role(h.now, h.leader.params()), DnRole::Unknown);
    assert_eq!(
        static_moves(&h),
        vec![],
        "nobody is strictly ahead: the static primary stays"
    );
}

#[test]
fn the_static_primary_moves_to_a_member_strictly_ahead_that_is_not_hung() {
    let mut h = H::new(3);
    h.reports(vec![
        dn(1).primary(1),
        dn(2).pos(1, 150).hits(5),
        dn(3).pos(1, 120),
    ]);
    h.report(dn(1).primary(1).hits(5));
    assert_eq!(
        static_moves(&h),
        vec![Change::SetStaticPrimary {
            group: G,
            expected_term: Term(1),
            instance: InstanceId(6003)
        }]
    );
}

#[test]
fn the_cooldown_starts_when_the_member_reports_zero_hits() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.report(dn(1).primary(1).hits(5));
    h.advance_ms(1000);
    h.report(dn(1).pending().hits(0));
    let until = h.wall.saturating_add(Duration::from_secs(21600));
    assert!(h.queued().contains(&Change::PhonyDeadCooldown {
        group: G,
        instance: InstanceId(6001),
        until: Some(until)
    }));
}

#[test]
fn no_second_hang_restart_of_a_standby_during_the_cooldown() {
    let mut h = H::new(3);
    let until = h.wall.saturating_add(Duration::from_secs(100));
    h.group_mut()
        .phony_dead_cooldown
        .insert(InstanceId(6002), until);
    h.healthy_round(3);
    assert_eq!(h.report(dn(2).upstream(1, 100).hits(5)), vec![]);
    // After the cool-down the hang-restart is back.
    h.wall = until;
    assert_eq!(
        cmds(&h.report(dn(2).upstream(1, 100).hits(6))),
        vec![(6002, CmsCommand::Restart)]
    );
}

#[test]
fn a_hung_primary_is_still_killed_during_the_cooldown() {
    let mut h = H::new(3);
    let until = h.wall.saturating_add(Duration::from_secs(100));
    h.group_mut()
        .phony_dead_cooldown
        .insert(InstanceId(6001), until);
    h.healthy_round(3);
    let out = h.report(dn(1).primary(1).hits(5));
    assert_eq!(
        cmds(&out),
        vec![
            (6001, CmsCommand::Restart),
            (6002, CmsCommand::Lock1),
            (6003, CmsCommand::Lock1)
        ]
    );
    assert!(!out.iter().any(|o| matches!(o, LeaderOutput::Alarm(_))));
}

#[test]
fn nothing_is_restarted_while_paused() {
    let mut h = H::new(3);
    h.healthy_round(3);
    h.state.state_mut().paused = true;
    assert_eq!(h.report(dn(1).primary(1).hits(9)), vec![]);
}
