//! Writes the seed corpora when `CM_WRITE_CORPUS=1` (run once after a message change):
//! `CM_WRITE_CORPUS=1 cargo test --test seed_corpus`.

use std::fs;
use std::path::Path;

use cm_core::codec;
use cm_core::ctl::CtlRequest;
use cm_core::dn::DnReport;
use cm_core::ids::{CmdSeq, InstanceId, NodeId, QuorumTerm, ReportSeq, Term};
use cm_core::msg::{AgentReport, CmsCommand, Endpoint, Envelope, Msg, Role, SequencedCommand};

fn envelopes() -> Vec<Envelope> {
    let ctl = Endpoint {
        node: NodeId(0),
        role: Role::Ctl,
    };
    vec![
        Envelope {
            from: Endpoint::agent(NodeId(2)),
            to: Endpoint::server(NodeId(1)),
            quorum_term: QuorumTerm(3),
            msg: Msg::AgentReport(AgentReport {
                seq: ReportSeq(9),
                dns: vec![DnReport::down(InstanceId(6002))],
                cms_process: None,
                normal_start: true,
            }),
        },
        Envelope {
            from: Endpoint::server(NodeId(1)),
            to: Endpoint::agent(NodeId(2)),
            quorum_term: QuorumTerm(3),
            msg: Msg::Command(SequencedCommand {
                instance: InstanceId(6002),
                seq: CmdSeq(4),
                cmd: CmsCommand::Failover { term: Term(8) },
            }),
        },
        Envelope {
            from: ctl,
            to: Endpoint::server(NodeId(1)),
            quorum_term: QuorumTerm(0),
            msg: Msg::CtlRequest {
                id: 1,
                req: CtlRequest::Switchover {
                    instance: InstanceId(6002),
                    fast: false,
                },
            },
        },
    ]
}

#[test]
fn write_seed_corpus() {
    if std::env::var_os("CM_WRITE_CORPUS").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    let mut stream = Vec::new();
    for (i, env) in envelopes().iter().enumerate() {
        let bytes = codec::encode(env).unwrap();
        write("frame_decoder", &format!("frame-{i}"), &bytes);
        write("ctl_request", &format!("frame-{i}"), &bytes);
        stream.extend_from_slice(&bytes);
    }
    write("frame_decoder", "stream", &stream);
    write(
        "frame_decoder",
        "persisted-state",
        &codec::encode_persisted(&cm_core::state::ClusterState::default()).unwrap(),
    );
    write(
        "config_parser",
        "three-nodes.toml",
        cm_fuzz::SAMPLE_CONFIG.as_bytes(),
    );
    write(
        "config_parser",
        "fast-profile.toml",
        format!("{}\n[params]\nprofile = \"fast\"\n", cm_fuzz::SAMPLE_CONFIG).as_bytes(),
    );
    write(
        "config_parser",
        "broken.toml",
        b"name = \"x\"\n[[node]]\nid = 0\n",
    );
    for (i, args) in [
        "start",
        "stop -n 2 -D /data/dn2 -m immediate -t 10",
        "query -Cv --json",
        "switchover -n 2 -D /data/dn2 -f",
        "switchover -a",
        "set --param --server -k phony_dead_effective_time=7",
        "list --param",
        "build -n 3 -D /data/dn3",
        "stop -m gentle",
    ]
    .iter()
    .enumerate()
    {
        write("ctl_request", &format!("args-{i}"), args.as_bytes());
    }
}
