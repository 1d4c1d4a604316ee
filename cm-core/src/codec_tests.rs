use proptest::prelude::*;

use super::*;
use crate::ctl::CtlRequest;
use crate::dn::{DnReport, LockState};
use crate::history::PromotionReason;
use crate::ids::{CmdSeq, InstanceId, NodeId, QuorumTerm, ReportSeq, Term};
use crate::msg::{AgentReport, CmsCommand, Endpoint, Msg, SequencedCommand};

fn sample() -> Envelope {
    let mut dn = DnReport::down(InstanceId(6001));
    dn.lock = LockState::Specified(InstanceId(6002));
    Envelope {
        from: Endpoint::agent(NodeId(2)),
        to: Endpoint::server(NodeId(1)),
        quorum_term: QuorumTerm(7),
        msg: Msg::AgentReport(AgentReport {
            seq: ReportSeq(42),
            dns: vec![dn],
            cms_process: None,
            normal_start: false,
            resources: Vec::new(),
        }),
    }
}

#[test]
fn round_trip_and_streaming() {
    let env = sample();
    let bytes = encode(&env).unwrap();
    assert_eq!(&bytes[..4], &[b'C', b'M', VERSION, 1]);
    assert_eq!(decode(&bytes).unwrap(), env);
    // Two frames back to back, fed in pieces.
    let mut stream = bytes.clone();
    stream.extend_from_slice(&bytes);
    for cut in 0..bytes.len() {
        assert_eq!(decode_frame(&stream[..cut]).unwrap(), None, "cut at {cut}");
    }
    let (first, used) = decode_frame(&stream).unwrap().unwrap();
    assert_eq!(first, env);
    assert_eq!(used, bytes.len());
}

#[test]
fn header_errors_are_typed() {
    assert_eq!(
        decode_frame(b"XY").unwrap_err(),
        DecodeError::BadMagic(*b"XY")
    );
    assert_eq!(
        decode_frame(&[b'C', b'M', 9, 1, 0, 0, 0, 0]).unwrap_err(),
        DecodeError::UnsupportedVersion(9)
    );
    assert_eq!(
        decode_frame(&[b'C', b'M', VERSION, 1, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
        DecodeError::TooLarge { len: 0xffff_ffff }
    );
    assert_eq!(
        decode_frame(&[b'C', b'M', VERSION, 7, 0, 0, 0, 0]).unwrap_err(),
        DecodeError::UnexpectedKind(7)
    );
    let mut bytes = encode(&sample()).unwrap();
    bytes.push(0);
    assert_eq!(decode(&bytes).unwrap_err(), DecodeError::TrailingBytes(1));
}

#[test]
fn a_garbled_body_is_an_error_not_a_panic() {
    let mut bytes = encode(&sample()).unwrap();
    for b in bytes[HEADER_LEN..].iter_mut() {
        *b = 0xff;
    }
    assert!(matches!(decode(&bytes), Err(DecodeError::Body(_))));
}

#[test]
fn persisted_state_detects_corruption() {
    let value = (Term(5), QuorumTerm(9), vec![1u8, 2, 3]);
    let mut bytes = encode_persisted(&value).unwrap();
    assert_eq!(
        decode_persisted::<(Term, QuorumTerm, Vec<u8>)>(&bytes).unwrap(),
        value
    );
    let n = bytes.len();
    bytes[n - 6] ^= 1;
    assert_eq!(
        decode_persisted::<(Term, QuorumTerm, Vec<u8>)>(&bytes).unwrap_err(),
        DecodeError::Checksum
    );
    assert!(matches!(
        decode_persisted::<(Term, QuorumTerm, Vec<u8>)>(&bytes[..n - 1]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn check_persisted_validates_framing_and_checksum_without_decoding() {
    let mut bytes = encode_persisted(&(Term(5), vec![7u8; 10])).unwrap();
    assert_eq!(check_persisted(&bytes), Ok(()));
    assert!(matches!(
        check_persisted(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
    let n = bytes.len();
    bytes[n - 6] ^= 1;
    assert_eq!(check_persisted(&bytes), Err(DecodeError::Checksum));
    let frame = encode(&sample()).unwrap();
    assert_eq!(check_persisted(&frame), Err(DecodeError::UnexpectedKind(1)));
}

#[test]
fn crc32_known_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

fn arb_cmd() -> impl Strategy<Value = CmsCommand> {
    prop_oneof![
        Just(CmsCommand::Lock1),
        any::<u32>().prop_map(|i| CmsCommand::Lock2 {
            primary: InstanceId(i)
        }),
        any::<u64>().prop_map(|t| CmsCommand::Failover {
            term: Term(t),
            reason: PromotionReason::Failover
        }),
        any::<bool>().prop_map(|on| CmsCommand::SetReadOnly { on }),
        (any::<u32>(), proptest::collection::vec(any::<u32>(), 0..5)).prop_map(|(k, m)| {
            CmsCommand::SetSyncStandbys {
                k,
                members: m.into_iter().map(InstanceId).collect(),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn command_envelopes_round_trip(
        from in any::<u32>(), to in any::<u32>(), qt in any::<u64>(),
        inst in any::<u32>(), seq in any::<u64>(), cmd in arb_cmd(),
    ) {
        let env = Envelope {
            from: Endpoint::server(NodeId(from)),
            to: Endpoint::agent(NodeId(to)),
            quorum_term: QuorumTerm(qt),
            msg: Msg::Command(SequencedCommand { instance: InstanceId(inst), seq: CmdSeq(seq), cmd }),
        };
        let bytes = encode(&env).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), env);
    }

    #[test]
    fn ctl_requests_round_trip(id in any::<u64>(), t in any::<u32>()) {
        let env = Envelope {
            from: Endpoint { node: NodeId(0), role: crate::msg::Role::Ctl },
            to: Endpoint::server(NodeId(1)),
            quorum_term: QuorumTerm(0),
            msg: Msg::CtlRequest { id, req: CtlRequest::ClusterStarting { timeout_s: t } },
        };
        prop_assert_eq!(decode(&encode(&env).unwrap()).unwrap(), env);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
        let _ = decode(&bytes);
        let _ = decode_persisted::<crate::state::ClusterState>(&bytes);
    }

    #[test]
    fn decoding_valid_headers_with_arbitrary_bodies_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![b'C', b'M', VERSION, 1];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        let _ = decode(&bytes);
    }
}

/// Logs print commands and alarms as plain text, not Rust Debug.
#[test]
fn commands_and_alarms_display_as_plain_text() {
    use crate::ids::GroupId;
    use crate::io::Alarm;
    assert_eq!(
        CmsCommand::Failover {
            term: Term(3),
            reason: PromotionReason::PhonyDead
        }
        .to_string(),
        "Failover term=3 reason=phony-dead"
    );
    assert_eq!(
        CmsCommand::SetSyncStandbys {
            k: 1,
            members: vec![InstanceId(6002), InstanceId(6003)]
        }
        .to_string(),
        "SetSyncStandbys k=1 members=6002,6003"
    );
    assert_eq!(
        Alarm::Failover {
            group: GroupId(1),
            instance: InstanceId(6002)
        }
        .to_string(),
        "Failover group=1 instance=6002"
    );
}
