//! Disk-threshold read-only protection (§7.2).

use core::time::Duration;

use crate::ids::InstanceId;
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, Rb, cluster, cmds, dn};
use crate::server::leader::LeaderOutput;
use crate::state::{Change, ReadOnlyState};

fn ro(i: u32, from: ReadOnlyState, to: ReadOnlyState) -> Change {
    Change::ReadOnly {
        group: G,
        instance: InstanceId(6000 + i),
        from,
        to,
    }
}

/// Reports with the given standby 6002, then the check 10 s after the election.
fn check(h: &mut H, standby: Rb) -> Vec<LeaderOutput> {
    h.now = crate::time::Instant::from_secs(109);
    h.reports(vec![dn(1).primary(1).disk(50), standby, dn(3).disk(50)]);
    h.now = crate::time::Instant::from_secs(110);
    h.tick()
}

fn read_only_changes(h: &H) -> Vec<Change> {
    h.queued()
        .into_iter()
        .filter(|c| matches!(c, Change::ReadOnly { .. } | Change::BeginSwitchover { .. }))
        .collect()
}

#[test]
fn read_only_at_85_percent_then_on_once_the_dn_reports_it() {
    let mut h = H::new(3);
    let out = check(&mut h, dn(2).disk(85));
    assert_eq!(
        out,
        vec![LeaderOutput::Alarm(Alarm::TransactionReadOnly {
            instance: InstanceId(6002)
        })]
    );
    assert_eq!(
        read_only_changes(&h),
        vec![ro(2, ReadOnlyState::Off, ReadOnlyState::ExpectOn)]
    );
    assert_eq!(
        cmds(&h.commit()),
        vec![(6002, CmsCommand::SetReadOnly { on: true })]
    );
    h.report(dn(2).disk(85).ro(true));
    assert_eq!(
        read_only_changes(&h),
        vec![ro(2, ReadOnlyState::ExpectOn, ReadOnlyState::On)]
    );
}

#[test]
fn pre_alarm_at_68_percent_nothing_at_67() {
    let mut h = H::new(3);
    assert_eq!(check(&mut h, dn(2).disk(67)), vec![]);
    let mut h = H::new(3);
    assert_eq!(
        check(&mut h, dn(2).disk(68)),
        vec![LeaderOutput::Alarm(Alarm::StorageThresholdPreAlarm {
            instance: InstanceId(6002),
            usage_pct: 68
        })]
    );
    let mut h = H::new(3);
    let out = check(&mut h, dn(2).disk(84));
    assert_eq!(out.len(), 1, "84 %: pre-alarm only");
    assert_eq!(read_only_changes(&h), vec![]);
}

#[test]
fn cleared_only_below_80_percent() {
    let mut h = H::new(3);
    h.group_mut()
        .read_only
        .insert(InstanceId(6002), ReadOnlyState::On);
    check(&mut h, dn(2).disk(80).ro(true));
    assert_eq!(read_only_changes(&h), vec![]);
    h.now += Duration::from_secs(9);
    h.reports(vec![
        dn(1).primary(1).disk(50),
        dn(2).disk(79).ro(true),
        dn(3).disk(50),
    ]);
    h.now += Duration::from_secs(1);
    h.tick();
    assert_eq!(
        read_only_changes(&h),
        vec![ro(2, ReadOnlyState::On, ReadOnlyState::ExpectOff)]
    );
    assert_eq!(
        cmds(&h.commit()),
        vec![(6002, CmsCommand::SetReadOnly { on: false })]
    );
    h.report(dn(2).disk(79).ro(false));
    assert_eq!(
        read_only_changes(&h),
        vec![ro(2, ReadOnlyState::ExpectOff, ReadOnlyState::Off)]
    );
}

#[test]
fn read_only_set_by_hand_is_left_alone() {
    let mut h = H::new(3);
    check(&mut h, dn(2).disk(90).ro(true));
    assert_eq!(read_only_changes(&h), vec![]);
}

#[test]
fn the_static_primary_over_the_threshold_makes_its_group_read_only_and_asks_for_a_switchover() {
    let mut h = H::new(3);
    h.now = crate::time::Instant::from_secs(109);
    h.reports(vec![
        dn(1).primary(1).disk(90),
        dn(2).disk(50),
        dn(3).disk(50),
    ]);
    h.now = crate::time::Instant::from_secs(110);
    h.tick();
    let changes = read_only_changes(&h);
    assert_eq!(
        changes[..3],
        [
            ro(1, ReadOnlyState::Off, ReadOnlyState::ExpectOn),
            ro(2, ReadOnlyState::Off, ReadOnlyState::ExpectOn),
            ro(3, ReadOnlyState::Off, ReadOnlyState::ExpectOn),
        ]
    );
    assert!(matches!(
        &changes[3],
        Change::BeginSwitchover { switchover, .. } if switchover.target == InstanceId(6002)
    ));
}

/// Swarm seed 290: the disk rule's switchover goes to a standby the restart-count rule (§4.4:
/// more than 3 restarts in 10 minutes, or 8 in an hour) would not switch away from at once.
#[test]
fn the_disk_rule_skips_a_frequently_restarted_standby() {
    for (restarts, target) in [((4, 4), 6003), ((3, 9), 6003), ((3, 8), 6002)] {
        let mut h = H::new(3);
        h.now = crate::time::Instant::from_secs(109);
        h.reports(vec![
            dn(1).primary(1).disk(90),
            dn(2).disk(50).restarts(restarts.0, restarts.1),
            dn(3).disk(50),
        ]);
        h.now = crate::time::Instant::from_secs(110);
        h.tick();
        let begun: Vec<InstanceId> = read_only_changes(&h)
            .into_iter()
            .filter_map(|c| match c {
                Change::BeginSwitchover { switchover, .. } => Some(switchover.target),
                _ => None,
            })
            .collect();
        assert_eq!(
            begun,
            vec![InstanceId(target)],
            "6002 restarted {restarts:?}"
        );
    }
}

#[test]
fn disabled_by_enable_transaction_read_only_off() {
    let mut p = crate::params::Params::defaults();
    p.enable_transaction_read_only = false;
    let mut h = H::with(cluster(&[("AZ1", 1)], &["AZ1"; 3], p));
    assert_eq!(check(&mut h, dn(2).disk(95)), vec![]);
    assert_eq!(read_only_changes(&h), vec![]);
}

#[test]
fn checks_run_every_interval_only() {
    let mut h = H::new(3);
    h.now = crate::time::Instant::from_secs(105);
    h.reports(vec![dn(1).primary(1), dn(2).disk(90), dn(3)]);
    h.tick();
    assert_eq!(
        read_only_changes(&h),
        vec![],
        "first check 10 s after the election"
    );
    assert_eq!(
        h.leader
            .next_deadline()
            .map(|d| d.as_nanos() / 1_000_000_000),
        Some(108)
    );
}

#[test]
fn a_read_only_switchover_demotes_first_then_repoints_every_standby() {
    // §7.2 → §4.5/§9: the same sequence as `cm_ctl switchover`, then the §4.2 follow-ups.
    use crate::dn::History;
    use crate::ids::{Lsn, Term, Timeline};
    let p = InstanceId(6002);
    let mut h = H::new(3);
    h.now = crate::time::Instant::from_secs(109);
    h.reports(vec![
        dn(1).primary(1).disk(90).ro(true),
        dn(2).disk(50).ro(true).upstream(1, 100),
        dn(3).disk(50).ro(true).upstream(1, 100),
    ]);
    h.now = crate::time::Instant::from_secs(110);
    h.tick();
    let out = cmds(&h.commit());
    assert_eq!(
        out,
        vec![(6001, CmsCommand::Demote)],
        "Demote first, nothing promoted"
    );
    assert_eq!(h.group().term, Term(2));
    // The old primary is down at 200; the target catches up, then gets Switchover{2}.
    h.advance_ms(1000);
    assert_eq!(
        cmds(&h.report(dn(1).pending().pos(1, 200).disk(90).ro(true))),
        vec![]
    );
    assert_eq!(cmds(&h.report(dn(3).disk(50).ro(true))), vec![]);
    assert_eq!(
        cmds(&h.report(dn(2).pos(1, 200).disk(50).ro(true))),
        vec![(6002, CmsCommand::Switchover { term: Term(2) })]
    );
    h.advance_ms(1000);
    let h2 = History::root(Timeline(1)).branch(Lsn(200), Timeline(2));
    h.report(dn(2).primary(2).pos(2, 10).hist(h2).disk(50).ro(true));
    let out = cmds(&h.commit());
    assert_eq!(h.group().static_primary, p);
    assert_eq!(h.group().switchover, None);
    // Every other member follows the new primary: the old one Notified, 6003 (still set to
    // follow 6001) Lock2'd since it is on timeline 1.
    assert_eq!(
        out,
        vec![
            (6001, CmsCommand::NotifyStandby { primary: p }),
            (6003, CmsCommand::Lock2 { primary: p }),
        ]
    );
}

/// Swarm seed 132: `SetReadOnly{off}` was sent, then the DN was killed before it took effect.
/// A report of a DN that is down says nothing about its read-only setting, so it must not
/// confirm ExpectOff → Off (the DN came back read-only and was then taken for a manual setting).
#[test]
fn a_down_report_does_not_confirm_read_only_off() {
    let mut h = H::new(3);
    h.group_mut()
        .read_only
        .insert(InstanceId(6002), ReadOnlyState::ExpectOff);
    h.report(dn(2).down().disk(79));
    assert_eq!(read_only_changes(&h), vec![]);
    h.report(dn(2).db(crate::dn::DbState::Unknown).disk(79));
    assert_eq!(read_only_changes(&h), vec![]);
    // Running again, still read-only: the check resends `off` instead of giving up.
    let out = check(&mut h, dn(2).disk(79).ro(true));
    assert!(
        cmds(&out).contains(&(6002, CmsCommand::SetReadOnly { on: false })),
        "{out:?}"
    );
    h.report(dn(2).disk(79).ro(false));
    assert_eq!(
        read_only_changes(&h),
        vec![ro(2, ReadOnlyState::ExpectOff, ReadOnlyState::Off)]
    );
}

/// The leader logs each read-only decision in one line with its inputs (issue 17).
#[test]
fn a_read_only_decision_reads_as_one_line_with_its_inputs() {
    use crate::ids::GroupId;
    use crate::server::read_only::ReadOnlyDecision;
    let d = ReadOnlyDecision {
        group: GroupId(1),
        instance: InstanceId(6002),
        usage_pct: 86,
        threshold: 85,
        clear_below: 80,
        forced: false,
        reported_read_only: false,
        from: ReadOnlyState::Off,
        to: ReadOnlyState::ExpectOn,
    };
    assert_eq!(
        d.to_string(),
        "set read-only: disk usage at or above the threshold: group=1 instance=6002 usage_pct=86 \
         threshold=85 clear_below=80 static_primary_over=false reported_read_only=false \
         transition=off->expect_on"
    );
    let forced = ReadOnlyDecision {
        usage_pct: 50,
        forced: true,
        ..d
    };
    assert!(forced.to_string().starts_with(
        "set read-only: the group's static primary is over the threshold: group=1 instance=6002 \
         usage_pct=50"
    ));
    let cleared = ReadOnlyDecision {
        usage_pct: 79,
        from: ReadOnlyState::On,
        to: ReadOnlyState::ExpectOff,
        reported_read_only: true,
        ..d
    };
    assert!(
        cleared
            .to_string()
            .starts_with("clear read-only: disk usage below the clear level")
    );
    assert!(cleared.to_string().ends_with("transition=on->expect_off"));
}
