//! Dual primaries (§4.4).

use crate::ids::{GroupId, InstanceId, Term};
use crate::io::Alarm;
use crate::msg::CmsCommand;
use crate::server::harness::{G, H, cmds, command, dn};
use crate::server::leader::LeaderOutput;
use crate::state::{Change, PendingSwitchover};
use crate::time::WallMillis;

#[test]
fn a_primary_below_the_groups_term_is_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(2);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![dn(2).primary(2), dn(3)]);
    let out = h.report(dn(1).primary(1));
    assert_eq!(out, vec![command(1, 1, CmsCommand::Restart)]);
}

/// Two-node healing (§5.4): this leader committed group term 10 (its side promoted 6002 at 10)
/// and 6001, promoted at 11 by the other side while both led alone, reports as primary. The
/// group's term is the higher one: 6002 is restarted at once, before any merge commits
/// (before the fix neither was, and both kept accepting writes: swarm seed 285).
#[test]
fn a_primary_below_another_live_primarys_term_is_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(10);
    h.group_mut().static_primary = InstanceId(6002);
    h.reports(vec![dn(2).primary(10), dn(3)]);
    let out = h.report(dn(1).primary(11));
    // No valid primary until the merge makes 6001 static at term 11: the standby is locked.
    let lock = command(3, 2, CmsCommand::Lock1);
    assert_eq!(out, vec![command(2, 1, CmsCommand::Restart), lock]);
}

#[test]
fn primaries_tied_at_the_highest_term_are_all_restarted() {
    let mut h = H::new(3);
    h.report(dn(1).primary(1));
    let out = h.report(dn(2).primary(1));
    assert_eq!(
        out,
        vec![
            LeaderOutput::Alarm(Alarm::DoublePrimary { group: G }),
            command(1, 1, CmsCommand::Restart),
            command(2, 1, CmsCommand::Restart),
        ]
    );
}

#[test]
fn the_demoting_primary_of_a_switchover_is_not_restarted() {
    let mut h = H::new(3);
    h.group_mut().term = Term(2);
    h.group_mut().switchover = Some(PendingSwitchover {
        target: InstanceId(6002),
        from: InstanceId(6001),
        term: Term(2),
        fast: false,
        deadline: WallMillis(u64::MAX),
    });
    let out = h.report(dn(1).primary(1));
    assert!(!cmds(&out).contains(&(6001, CmsCommand::Restart)));
}

fn begin_target(h: &H) -> Option<InstanceId> {
    h.queued().into_iter().find_map(|c| match c {
        Change::BeginSwitchover {
            group: GroupId(1),
            switchover,
            ..
        } => Some(switchover.target),
        _ => None,
    })
}

#[test]
fn a_primary_restarted_more_than_3_times_in_10_minutes_or_8_in_an_hour_is_switched_over() {
    for (r10, r1h, wanted) in [(3, 8, false), (4, 4, true), (3, 9, true)] {
        let mut h = H::new(3);
        h.reports(vec![
            dn(2).upstream(1, 100),
            dn(3).upstream(1, 100).pos(1, 90),
        ]);
        h.report(dn(1).primary(1).restarts(r10, r1h));
        let want = wanted.then_some(InstanceId(6002));
        assert_eq!(begin_target(&h), want, "restarts {r10}/10min {r1h}/1h");
    }
}
