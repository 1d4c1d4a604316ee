use super::*;

use cm_core::config::ClusterConfig;

pub(crate) const CONFIG_1P2S: &str = r#"
name = "t"
[[az]]
name = "AZ1"
[[node]]
id = 1
name = "n1"
address = "10.0.0.1"
az = "AZ1"
state_dir = "/s"
monitor_port = 1
cms_port = 2
[[node]]
id = 2
name = "n2"
address = "10.0.0.2"
az = "AZ1"
state_dir = "/s"
monitor_port = 1
cms_port = 2
[[node]]
id = 3
name = "n3"
address = "10.0.0.3"
az = "AZ1"
state_dir = "/s"
monitor_port = 1
cms_port = 2
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d"
port = 5432
[[group.member]]
instance = 6002
node = 2
data_dir = "/d"
port = 5432
[[group.member]]
instance = 6003
node = 3
data_dir = "/d"
port = 5432
"#;

const P: InstanceId = InstanceId(6001);
const S1: InstanceId = InstanceId(6002);
const S2: InstanceId = InstanceId(6003);

fn all_talk(_: NodeId, _: NodeId) -> bool {
    true
}

fn run(dbs: &mut Databases, now: &mut Instant, id: InstanceId, a: DnAction, rng: &mut Prng) {
    let b = dbs.begin(id, &a, rng).expect("begins");
    *now += b.after;
    dbs.finish(*now, id, &a, b.incarnation).expect("finishes");
}

/// A running 1P2S group: 6001 primary (term 1), both standbys streaming from it.
fn running_group() -> (Databases, Instant, Prng) {
    let cfg = ClusterConfig::from_toml_str(CONFIG_1P2S).expect("config");
    let mut dbs = Databases::new(&cfg, DbTimings::default());
    let mut rng = Prng::new(1);
    let mut now = Instant::ZERO;
    for id in [P, S1, S2] {
        run(&mut dbs, &mut now, id, DnAction::StartPending, &mut rng);
    }
    run(
        &mut dbs,
        &mut now,
        P,
        DnAction::Promote { term: Term(1) },
        &mut rng,
    );
    for id in [S1, S2] {
        run(
            &mut dbs,
            &mut now,
            id,
            DnAction::NotifyStandby { primary: P },
            &mut rng,
        );
    }
    dbs.replicate(now, &all_talk);
    (dbs, now, rng)
}

#[test]
fn promotion_starts_a_new_timeline_whose_history_holds_the_old_position() {
    let (mut dbs, _, _) = running_group();
    let promos = dbs.take_promotions();
    assert_eq!(promos.len(), 1);
    assert_eq!(promos[0].before, Position::new(1, INITIAL_LSN));
    assert_eq!(dbs.get(P).map(|i| i.history.timeline), Some(Timeline(2)));
    assert_eq!(dbs.get(S1).map(|i| i.history.timeline), Some(Timeline(2)));
    assert!(dbs.get(S1).is_some_and(|i| i.receiver.is_some()));
}

#[test]
fn sync_write_is_acknowledged_only_once_k_standbys_hold_it() {
    let (mut dbs, mut now, _) = running_group();
    assert_eq!(dbs.get(P).map(|p| p.sync_k), Some(1), "1P2S: k = n - q = 1");
    assert!(dbs.write(now, P).is_empty(), "no standby has it yet");
    let talk_none = |a: NodeId, b: NodeId| a == b;
    now += Duration::from_millis(50);
    assert!(
        dbs.replicate(now, &talk_none).is_empty(),
        "nobody received it"
    );
    now += Duration::from_millis(50);
    let acks = dbs.replicate(now, &all_talk);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].instance, P);
}

#[test]
fn async_write_is_acknowledged_at_once() {
    let (mut dbs, now, _) = running_group();
    if let Some(p) = dbs.instances.get_mut(&P) {
        p.sync_k = 0;
    }
    assert_eq!(dbs.write(now, P).len(), 1);
}

#[test]
fn lock1_stops_streaming_and_reports_prohibit_after_its_delay() {
    let (mut dbs, now, mut rng) = running_group();
    let b = dbs.begin(S1, &DnAction::Lock1, &mut rng).expect("begins");
    assert!(b.after >= Duration::from_millis(250) && b.after <= Duration::from_millis(450));
    let st = dbs.status_of(now, dbs.get(S1).expect("s1"));
    assert_eq!(st.lock, LockState::None, "not yet effective");
    assert_eq!(st.upstream, None);
    let done = now + b.after;
    dbs.finish(done, S1, &DnAction::Lock1, b.incarnation)
        .expect("ok");
    dbs.replicate(done, &all_talk);
    let st = dbs.status_of(done, dbs.get(S1).expect("s1"));
    assert_eq!(st.lock, LockState::Prohibit);
    assert_eq!(st.upstream, None, "never reconnects");
}

#[test]
fn killed_primary_with_unacked_wal_diverges_after_a_failover() {
    let (mut dbs, mut now, mut rng) = running_group();
    dbs.write(now, P);
    dbs.kill(P);
    run(
        &mut dbs,
        &mut now,
        S1,
        DnAction::Promote { term: Term(2) },
        &mut rng,
    );
    run(&mut dbs, &mut now, P, DnAction::StartPending, &mut rng);
    run(
        &mut dbs,
        &mut now,
        P,
        DnAction::NotifyStandby { primary: S1 },
        &mut rng,
    );
    dbs.replicate(now, &all_talk);
    let p = dbs.get(P).expect("p");
    assert_eq!(
        p.db_state,
        DbState::NeedRepair,
        "its WAL is past the fork point"
    );
    assert!(p.receiver.is_none());
    run(
        &mut dbs,
        &mut now,
        P,
        DnAction::Build {
            source: S1,
            full: false,
        },
        &mut rng,
    );
    dbs.replicate(now, &all_talk);
    let p = dbs.get(P).expect("p");
    assert_eq!(p.db_state, DbState::Normal);
    assert_eq!(p.receiver.map(|r| r.upstream), Some(S1));
}

#[test]
fn receiver_survives_a_short_outage_and_dies_after_the_wal_timeout() {
    let (mut dbs, now, _) = running_group();
    let cut = |a: NodeId, b: NodeId| a == b;
    dbs.replicate(now + Duration::from_secs(2), &cut);
    assert!(dbs.get(S1).is_some_and(|s| s.receiver.is_some()));
    dbs.replicate(now + Duration::from_millis(3100), &cut);
    assert!(dbs.get(S1).is_some_and(|s| s.receiver.is_none()));
}

#[test]
fn only_a_primary_with_k_streaming_standbys_can_acknowledge() {
    let (mut dbs, _, mut rng) = running_group();
    let nobody_frozen = |_: NodeId| false;
    assert_eq!(dbs.can_acknowledge(GroupId(1), &nobody_frozen), vec![P]);
    for s in [S1, S2] {
        dbs.begin(s, &DnAction::Lock1, &mut rng).expect("begins");
    }
    assert!(dbs.can_acknowledge(GroupId(1), &nobody_frozen).is_empty());
    let p_frozen = |n: NodeId| n == NodeId(1);
    assert!(dbs.can_acknowledge(GroupId(1), &p_frozen).is_empty());
}

#[test]
fn hung_instance_times_out_status_queries_and_actions() {
    let (mut dbs, now, mut rng) = running_group();
    if let Some(p) = dbs.instances.get_mut(&P) {
        p.proc_state = ProcState::DiskSleep;
    }
    let (after, res) = dbs.query(now, P, false, &mut rng);
    assert_eq!(after, Duration::from_secs(2));
    assert!(res.is_err());
    let b = dbs
        .begin(P, &DnAction::SetReadOnly { on: true }, &mut rng)
        .expect("b");
    assert!(
        dbs.finish(
            now + b.after,
            P,
            &DnAction::SetReadOnly { on: true },
            b.incarnation
        )
        .is_err()
    );
    dbs.begin(P, &DnAction::Kill, &mut rng)
        .expect("kill works on a hung process");
    assert!(!dbs.get(P).is_some_and(|p| p.running));
}

#[test]
fn a_start_waits_for_a_rebuild_which_ends_started() {
    let (mut dbs, now, mut rng) = running_group();
    let b = dbs
        .begin(
            S2,
            &DnAction::Build {
                source: P,
                full: false,
            },
            &mut rng,
        )
        .expect("begins");
    assert!(dbs.begin(S2, &DnAction::StartPending, &mut rng).is_err());
    dbs.finish(
        now + b.after,
        S2,
        &DnAction::Build {
            source: P,
            full: false,
        },
        b.incarnation,
    )
    .expect("ok");
    let s = dbs.get(S2).expect("s2");
    assert!(s.running && s.role == DnRole::Standby && s.upstream_setting == Some(P));
}

#[test]
fn a_promotion_that_fails_on_a_hung_standby_stops_reporting_promoting() {
    // Swarm seed 5623: the Failover target hung (state D) between the begin and the end of
    // its promotion; it then reported Promoting for good and the CMS, rightly waiting for a
    // promotion in progress, never chose another candidate. cm-io reports Promoting only
    // while its promote action runs, and that action fails on a hung instance.
    let (mut dbs, now, mut rng) = running_group();
    let a = DnAction::Promote { term: Term(2) };
    let b = dbs.begin(S1, &a, &mut rng).expect("begins");
    assert_eq!(dbs.get(S1).map(|s| s.db_state), Some(DbState::Promoting));
    if let Some(s) = dbs.instances.get_mut(&S1) {
        s.proc_state = ProcState::DiskSleep;
    }
    assert!(dbs.finish(now + b.after, S1, &a, b.incarnation).is_err());
    let s = dbs.get(S1).expect("s1");
    assert_eq!((s.role, s.db_state), (DnRole::Standby, DbState::Normal));
}

#[test]
fn a_build_whose_source_is_unreachable_fails_and_leaves_the_data_as_it_was() {
    // Issue 11 (seed 290): the model let a Build succeed whatever became of its source.
    let (mut dbs, _, mut rng) = running_group();
    let before = dbs.get(S2).map(|s| (s.history.clone(), s.lsn)).expect("s2");
    let b = dbs
        .begin(
            S2,
            &DnAction::Build {
                source: P,
                full: false,
            },
            &mut rng,
        )
        .expect("begins");
    assert!(dbs.fail_build(S2, P, b.incarnation).is_err());
    let s = dbs.get(S2).expect("s2");
    assert!(!s.running);
    assert_eq!(s.db_state, DbState::NeedRepair, "still needs its rebuild");
    assert_eq!((s.history.clone(), s.lsn), before, "data as it was");
    // The agent may start it again (no longer Building), and a later Build may succeed.
    assert!(dbs.begin(S2, &DnAction::StartPending, &mut rng).is_ok());
}
