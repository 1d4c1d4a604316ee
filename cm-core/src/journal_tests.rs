use proptest::prelude::*;

use super::*;
use crate::agent::{AgentCommand, AgentInput};
use crate::server::ServerInput;

const CONFIG: &str = crate::config::ONE_NODE_CONFIG;

fn opening(kind: DaemonKind) -> Opening {
    Opening {
        kind,
        node: NodeId(1),
        config: ClusterConfig::from_toml_str(CONFIG).expect("valid config"),
        seed: 42,
        restored: None,
        start_kind: StartKind::Normal,
        start: true,
    }
}

fn segment(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = SEGMENT_HEADER.to_vec();
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

fn all(buf: &[u8]) -> Vec<Result<RawRecord<'_>, JournalError>> {
    Reader::new(buf).expect("header").collect()
}

#[test]
fn every_record_kind_round_trips_in_order() {
    let o = opening(DaemonKind::Agent);
    let agent = Agent::rebuild(&o).expect("agent");
    let cmds = vec![AgentCommand::ReadFlags];
    let buf = segment(&[
        encode_opening(&o).unwrap(),
        encode_snapshot(&agent).unwrap(),
        encode_step(Instant::from_millis(5), &AgentInput::Tick).unwrap(),
        encode_commands(&cmds).unwrap(),
        encode_gap(3).unwrap(),
    ]);
    let recs: Vec<RawRecord<'_>> = all(&buf).into_iter().map(|r| r.unwrap()).collect();
    let kinds: Vec<RecordKind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RecordKind::Opening,
            RecordKind::Snapshot,
            RecordKind::Step,
            RecordKind::Commands,
            RecordKind::Gap
        ]
    );
    assert_eq!(recs[0].offset, SEGMENT_HEADER.len());
    assert_eq!(recs[0].decode::<Opening>("opening").unwrap(), o);
    let step: Step<AgentInput> = recs[2].decode("step").unwrap();
    assert_eq!(step.now, Instant::from_millis(5));
    assert_eq!(step.input, AgentInput::Tick);
    assert_eq!(
        recs[3].decode::<Vec<AgentCommand>>("commands").unwrap(),
        cmds
    );
    assert_eq!(recs[4].decode::<u64>("gap").unwrap(), 3);
}

/// A snapshot restores a machine that then behaves exactly as the original: the same inputs
/// give the same commands, for each of the three machines.
#[test]
fn a_snapshot_restores_a_machine_that_steps_identically() {
    fn check<M: Replayable>(kind: DaemonKind, inputs: &[M::Input]) {
        let mut original = M::rebuild(&opening(kind)).expect("machine");
        let mut now = Instant::ZERO;
        original.step(now, inputs[0].clone());
        let rec = encode_snapshot(&original).unwrap();
        let buf = segment(&[rec]);
        let raw = all(&buf).remove(0).unwrap();
        let mut restored: M = raw.decode("snapshot").unwrap();
        for (i, input) in inputs.iter().enumerate().skip(1) {
            now = Instant::from_millis(250 * i as u64);
            let a = original.step(now, input.clone());
            let b = restored.step(now, input.clone());
            assert_eq!(a, b, "{kind:?} step {i}");
        }
        assert_eq!(original.next_deadline(), restored.next_deadline());
    }
    check::<Agent>(
        DaemonKind::Agent,
        &[AgentInput::Tick, AgentInput::Tick, AgentInput::Tick],
    );
    check::<Server>(
        DaemonKind::Server,
        &[
            ServerInput::Tick,
            ServerInput::Tick,
            ServerInput::Tick,
            ServerInput::Tick,
        ],
    );
    check::<Monitor>(
        DaemonKind::Monitor,
        &[
            crate::monitor::MonitorInput::Tick,
            crate::monitor::MonitorInput::Tick,
        ],
    );
}

#[test]
fn a_truncated_tail_is_a_clean_end() {
    let full = segment(&[
        encode_step(Instant::ZERO, &AgentInput::Tick).unwrap(),
        encode_step(Instant::from_millis(1), &AgentInput::Tick).unwrap(),
    ]);
    let first_end =
        SEGMENT_HEADER.len() + encode_step(Instant::ZERO, &AgentInput::Tick).unwrap().len();
    for cut in first_end..full.len() {
        let mut r = Reader::new(&full[..cut]).unwrap();
        assert!(r.next().unwrap().is_ok(), "cut {cut}");
        assert!(r.next().is_none(), "cut {cut}");
        assert_eq!(r.truncated(), cut > first_end, "cut {cut}");
    }
    // An empty or torn header is an empty segment, not an error.
    for cut in 0..SEGMENT_HEADER.len() {
        assert_eq!(Reader::new(&full[..cut]).unwrap().count(), 0);
    }
}

#[test]
fn a_flipped_bit_is_a_checksum_error_naming_the_offset() {
    let a = encode_step(Instant::ZERO, &AgentInput::Tick).unwrap();
    let b = encode_gap(1).unwrap();
    let mut buf = segment(&[a.clone(), b]);
    let second = SEGMENT_HEADER.len() + a.len();
    let last = buf.len() - 1;
    buf[last] ^= 0x40;
    let recs = all(&buf);
    assert_eq!(recs.len(), 2);
    assert!(recs[0].is_ok());
    let err = recs[1].clone().unwrap_err();
    assert_eq!(err, JournalError::Checksum { offset: second });
    assert!(err.to_string().contains(&format!("byte {second}")), "{err}");
}

#[test]
fn a_foreign_file_is_refused_by_its_header() {
    assert!(matches!(
        Reader::new(b"{\"now_ns\":1}"),
        Err(JournalError::BadHeader(_))
    ));
}

#[test]
fn the_crc_is_ieee_crc32() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b"123456789"), crate::codec::crc32(b"123456789"));
}

proptest! {
    /// The reader never panics, never loops, and never yields past the buffer.
    #[test]
    fn the_reader_never_panics_on_any_bytes(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = SEGMENT_HEADER.to_vec();
        buf.extend_from_slice(&tail);
        let n = Reader::new(&buf).unwrap().take(1000).count();
        prop_assert!(n <= tail.len() / RECORD_HEADER_LEN + 1);
        for rec in Reader::new(&buf).unwrap().flatten() {
            let _ = rec.decode::<Step<AgentInput>>("step");
            let _ = rec.decode::<Opening>("opening");
            let _ = rec.decode::<Agent>("snapshot");
        }
    }

    /// A valid record followed by any bytes still yields the valid record first.
    #[test]
    fn valid_records_survive_garbage_after_them(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = segment(&[encode_gap(9).unwrap()]);
        buf.extend_from_slice(&tail);
        let first = Reader::new(&buf).unwrap().next().unwrap().unwrap();
        prop_assert_eq!(first.decode::<u64>("gap").unwrap(), 9);
    }
}
