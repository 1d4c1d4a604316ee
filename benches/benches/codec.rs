//! Frame encode/decode throughput for the two hot messages: an agent report of a 3-DN node
//! and a sequenced command.

use std::hint::black_box;

use cm_core::codec;
use cm_core::dn::{DnReport, DnRole, Downstream, LockState};
use cm_core::history::PromotionReason;
use cm_core::ids::{CmdSeq, InstanceId, NodeId, Position, QuorumTerm, ReportSeq, Term};
use cm_core::msg::{AgentReport, CmsCommand, Endpoint, Envelope, Msg, SequencedCommand};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn report() -> Envelope {
    let dns = (0..3)
        .map(|i| {
            let mut d = DnReport::down(InstanceId(6001 + i));
            d.role = DnRole::Primary;
            d.lock = LockState::None;
            d.position = Position::new(3, 0x5_0000_1234);
            d.term = Term(12);
            d.downstreams = vec![
                Downstream {
                    instance: InstanceId(6101),
                    reply_age: std::time::Duration::from_millis(300),
                },
                Downstream {
                    instance: InstanceId(6201),
                    reply_age: std::time::Duration::from_millis(450),
                },
            ];
            d
        })
        .collect();
    Envelope {
        from: Endpoint::agent(NodeId(1)),
        to: Endpoint::server(NodeId(2)),
        quorum_term: QuorumTerm(5),
        msg: Msg::AgentReport(AgentReport {
            seq: ReportSeq(1000),
            dns,
            cms_process: None,
            normal_start: false,
            resources: Vec::new(),
        }),
    }
}

fn command() -> Envelope {
    Envelope {
        from: Endpoint::server(NodeId(2)),
        to: Endpoint::agent(NodeId(1)),
        quorum_term: QuorumTerm(5),
        msg: Msg::Command(SequencedCommand {
            instance: InstanceId(6001),
            seq: CmdSeq(77),
            cmd: CmsCommand::Failover {
                term: Term(13),
                reason: PromotionReason::Failover,
            },
        }),
    }
}

fn bench(c: &mut Criterion) {
    for (name, env) in [("agent_report_3dn", report()), ("command", command())] {
        let bytes = codec::encode(&env).expect("encodes");
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("encode", |b| {
            b.iter(|| codec::encode(black_box(&env)).expect("encodes"))
        });
        g.bench_function("decode", |b| {
            b.iter(|| codec::decode(black_box(&bytes)).expect("decodes"))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
