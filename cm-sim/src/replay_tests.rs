use cm_core::agent::{AgentCommand, AgentInput};
use cm_core::config::ClusterConfig;
use cm_core::journal::{
    SEGMENT_HEADER, encode_commands, encode_gap, encode_opening, encode_snapshot, encode_step,
};
use cm_core::monitor::StartKind;
use cm_core::{Instant, NodeId};

use super::*;

const CONFIG: &str = cm_core::config::ONE_NODE_CONFIG;

fn opening() -> Opening {
    Opening {
        kind: DaemonKind::Agent,
        node: NodeId(1),
        config: ClusterConfig::from_toml_str(CONFIG).expect("config"),
        seed: 9,
        restored: None,
        start_kind: StartKind::Normal,
        start: true,
    }
}

/// What a daemon writes: the opening, a snapshot, then each tick (every 100 ms for 3 s) with
/// its commands. Returns the records, one per element.
fn journal(o: &Opening) -> Vec<Vec<u8>> {
    let mut agent = Agent::rebuild(o).unwrap();
    let mut out = vec![encode_opening(o).unwrap(), encode_snapshot(&agent).unwrap()];
    for i in 0..30 {
        let now = Instant::from_millis(100 * i);
        out.push(encode_step(now, &AgentInput::Tick).unwrap());
        let cmds = agent.step(now, AgentInput::Tick);
        out.push(encode_commands(&cmds).unwrap());
    }
    out
}

fn segment(records: &[Vec<u8>]) -> Vec<Segment> {
    let mut bytes = SEGMENT_HEADER.to_vec();
    for r in records {
        bytes.extend_from_slice(r);
    }
    vec![Segment {
        name: "00000000.cmj".into(),
        bytes,
    }]
}

#[test]
fn a_faithful_journal_replays_identical() {
    let out = replay(&segment(&journal(&opening())), None).unwrap();
    assert_eq!(
        out,
        Outcome::Identical {
            kind: DaemonKind::Agent,
            steps: 30,
            skipped: 0,
            starts: 1
        }
    );
    assert!(out.to_string().starts_with("identical"));
}

/// A record whose commands differ from what the core returns is reported at that step, with
/// both lists.
#[test]
fn a_changed_command_is_the_first_divergence_with_both_lists() {
    let mut recs = journal(&opening());
    // Step 0's commands are record 3 (opening, snapshot, step, commands).
    recs[3] = encode_commands(&[AgentCommand::ReadFlags]).unwrap();
    let Outcome::Diverged(d) = replay(&segment(&recs), None).unwrap() else {
        panic!("not diverged");
    };
    assert_eq!((d.step, d.record), (0, 2));
    assert_eq!(d.recorded, ["ReadFlags"]);
    assert!(d.replayed.len() > 1, "{:?}", d.replayed);
    let text = d.to_string();
    assert!(text.contains("recorded (1 commands)"), "{text}");
    assert!(text.contains("replayed ("), "{text}");
    assert!(text.contains("  0: ReadFlags"), "{text}");
}

/// A rule the recorded machine followed and this one does not (here: the report interval,
/// which the replay takes from the opening record) diverges at the first step it changes.
#[test]
fn a_changed_rule_diverges_at_the_first_step_it_changes() {
    let mut o = opening();
    let mut recs = journal(&o);
    assert!(matches!(
        replay(&segment(&recs), None).unwrap(),
        Outcome::Identical { .. }
    ));
    o.config.params.agent_report_interval = 2.0;
    recs[0] = encode_opening(&o).unwrap();
    let Outcome::Diverged(d) = replay(&segment(&recs), None).unwrap() else {
        panic!("not diverged");
    };
    assert!(d.step > 0, "the first tick is the same: {d}");
    assert_ne!(d.recorded, d.replayed);
}

/// After a gap the comparison waits for the snapshot that follows; `--from` starts at a
/// snapshot too, skipping the steps before it.
#[test]
fn a_gap_and_from_resume_at_a_snapshot() {
    let o = opening();
    let mut agent = Agent::rebuild(&o).unwrap();
    let mut recs = vec![
        encode_opening(&o).unwrap(),
        encode_snapshot(&agent).unwrap(),
    ];
    for i in 0..20u64 {
        let now = Instant::from_millis(100 * i);
        let cmds = agent.step(now, AgentInput::Tick);
        if (5..8).contains(&i) {
            // Dropped by a full queue: a tick the replay never sees.
            continue;
        }
        if i == 8 {
            recs.push(encode_gap(6).unwrap());
            // (The snapshot is taken before the step, as the daemon does.)
        }
        recs.push(encode_step(now, &AgentInput::Tick).unwrap());
        recs.push(encode_commands(&cmds).unwrap());
    }
    // Without the snapshot, the steps after the gap are not compared.
    let out = replay(&segment(&recs), None).unwrap();
    assert_eq!(
        out,
        Outcome::Identical {
            kind: DaemonKind::Agent,
            steps: 5,
            skipped: 12,
            starts: 1
        }
    );

    // With it (as the daemon writes it), they are.
    let mut agent = Agent::rebuild(&o).unwrap();
    let mut recs = vec![
        encode_opening(&o).unwrap(),
        encode_snapshot(&agent).unwrap(),
    ];
    let mut snapshot_record = 0;
    for i in 0..20u64 {
        let now = Instant::from_millis(100 * i);
        if i == 8 {
            recs.push(encode_gap(6).unwrap());
            snapshot_record = recs.len() as u64;
            recs.push(encode_snapshot(&agent).unwrap());
        }
        let cmds = agent.step(now, AgentInput::Tick);
        if (5..8).contains(&i) {
            continue;
        }
        recs.push(encode_step(now, &AgentInput::Tick).unwrap());
        recs.push(encode_commands(&cmds).unwrap());
    }
    let segs = segment(&recs);
    assert_eq!(
        replay(&segs, None).unwrap(),
        Outcome::Identical {
            kind: DaemonKind::Agent,
            steps: 17,
            skipped: 0,
            starts: 1
        }
    );
    assert_eq!(
        replay(&segs, Some(3)).unwrap(),
        Outcome::Identical {
            kind: DaemonKind::Agent,
            steps: 12,
            skipped: 5,
            starts: 0
        },
        "--from 3 starts at the snapshot of record {snapshot_record}"
    );
}

#[test]
fn a_corrupt_or_foreign_journal_is_an_error_and_a_torn_tail_is_not() {
    let recs = journal(&opening());
    let mut segs = segment(&recs);
    let full = segs[0].bytes.len();
    segs[0].bytes.truncate(full - 3);
    assert!(matches!(
        replay(&segs, None).unwrap(),
        Outcome::Identical { steps: 29, .. }
    ));
    segs[0].bytes[SEGMENT_HEADER.len() + 9] ^= 1;
    let e = replay(&segs, None).unwrap_err();
    assert!(e.contains("00000000.cmj"), "{e}");
    let e = replay(
        &[Segment {
            name: "x".into(),
            bytes: b"{}".to_vec(),
        }],
        None,
    )
    .unwrap_err();
    assert!(e.contains("not a journal"), "{e}");
}
