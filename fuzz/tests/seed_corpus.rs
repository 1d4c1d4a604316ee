//! Writes the seed corpora when `CM_WRITE_CORPUS=1` (run once after a message change):
//! `CM_WRITE_CORPUS=1 cargo test --test seed_corpus`.

use std::fs;
use std::path::Path;

use cm_core::codec;
use cm_core::ctl::CtlRequest;
use cm_core::dn::DnReport;
use cm_core::history::PromotionReason;
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
                resources: Vec::new(),
            }),
        },
        Envelope {
            from: Endpoint::server(NodeId(1)),
            to: Endpoint::agent(NodeId(2)),
            quorum_term: QuorumTerm(3),
            msg: Msg::Command(SequencedCommand {
                instance: InstanceId(6002),
                seq: CmdSeq(4),
                cmd: CmsCommand::Failover {
                    term: Term(8),
                    reason: PromotionReason::Failover,
                },
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

/// Seeds for `agent_steps`, in its byte format (`src/agent_steps.rs`: a kind byte, then the
/// kind's fields; `pick` bytes count from the newest request).
fn agent_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // tick at 0; connect CMS 1–3; no flags; local CMS running; DN running; status Primary.
    let boot: Vec<u8> = vec![
        0, 0, //
        1, 0, 0, 1, 1, 0, 1, 2, 0, //
        12, 0, //
        16, 0, 1, 0, //
        6, 0, 1, 1, 0, //
        7, 0, 0, 0, 1,
    ];
    let second = [0u8, 100]; // advance 1 s and tick
    let leader = |paused: u8| vec![2u8, 0, 1, 0, paused, 0];
    let with = |parts: &[&[u8]]| -> Vec<u8> { parts.concat() };
    vec![
        ("boot-primary", with(&[&boot, &leader(0), &second, &second])),
        (
            // Self-fence: no leader answer for more than 6 s.
            "isolated-primary",
            with(&[&boot, &leader(0), &[0, 203], &second, &[11, 0, 0], &second]),
        ),
        (
            // cluster_manual_start: stop the DN, then the local CMS, then exit.
            "cluster-stop",
            with(&[
                &boot,
                &[12, 1],
                &[14, 0, 1],
                &second,
                &[6, 0, 1, 0],
                &[17, 0, 1],
                &second,
                &[16, 0, 0],
            ]),
        ),
        (
            // Paused: an absent DN waits until cluster_manual_starting.
            "paused-start",
            with(&[
                &boot,
                &leader(1),
                &second,
                &[6, 0, 1, 0],
                &[12, 2],
                &second,
                &[6, 0, 1, 0],
                &[14, 0, 1],
            ]),
        ),
        (
            // A Failover persisted, checked with every CMS, then promoted.
            "failover",
            with(&[
                &boot,
                &leader(0),
                &[4, 0, 1, 1, 1, 3, 3],
                &[15, 0, 1],
                &[15, 0, 1],
                &[5, 0, 0, 1, 1],
                &[5, 1, 0, 1, 1],
            ]),
        ),
        (
            // The local CMS in state T three times: killed, then restarted.
            "cms-hung",
            with(&[
                &boot,
                &second,
                &[16, 0, 1, 1],
                &second,
                &[16, 0, 1, 1],
                &second,
                &[16, 0, 1, 1],
                &[17, 0, 1],
                &second,
                &[16, 0, 0],
            ]),
        ),
    ]
}

/// Seeds for `monitor_steps` (`src/monitor_steps.rs`).
fn monitor_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tick = [0u8, 100];
    let absent = |flags: u8| [1u8, 0, flags, 0];
    let mine = |state: u8| [1u8, 1, state, 1, 0, 0];
    vec![
        (
            "start-run",
            [&tick[..], &absent(0), &tick, &mine(0)].concat(),
        ),
        (
            "hung-agent",
            [
                &tick[..],
                &mine(1),
                &tick,
                &mine(1),
                &tick,
                &mine(1),
                &tick,
                &absent(0),
            ]
            .concat(),
        ),
        (
            "interrupted-stop",
            [
                &tick[..],
                &absent(1),
                &[2, 1],
                &absent(1),
                &absent(1),
                &absent(1),
                &absent(1),
                &absent(0),
            ]
            .concat(),
        ),
        (
            // CtlRequest: [3, client, from (2: cm_ctl), flag, request].
            "ctl-flags",
            [
                &[3u8, 0, 2, 0, 1][..],
                &[4, 0, 1],
                &[3, 1, 2, 0, 3],
                &[4, 0, 0],
                &[3, 2, 2, 0, 0],
            ]
            .concat(),
        ),
        (
            // An agent's WriteFlag and a cm_server's Status: refused.
            "ctl-from-components",
            [&[3u8, 0, 0, 3, 1][..], &[3, 1, 1, 0, 0], &[3, 2, 2, 0, 0]].concat(),
        ),
        (
            "dilatation",
            [&tick[..], &absent(4), &tick, &absent(0)].concat(),
        ),
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
    for (name, data) in agent_seeds() {
        write("agent_steps", name, &data);
    }
    for (name, data) in monitor_seeds() {
        write("monitor_steps", name, &data);
    }
}

/// Seeds for `journal_decoder`: a small agent journal as a daemon writes it (opening, snapshot,
/// steps with their commands), the same torn mid-record, and one with a corrupt checksum.
/// `CM_WRITE_CORPUS=1 cargo test --test seed_corpus write_journal_seed_corpus`.
#[test]
fn write_journal_seed_corpus() {
    use cm_core::agent::{Agent, AgentInput};
    use cm_core::io::Machine as _;
    use cm_core::journal::{self, DaemonKind, Opening, Replayable as _};
    if std::env::var_os("CM_WRITE_CORPUS").is_none() {
        return;
    }
    let opening = Opening {
        kind: DaemonKind::Agent,
        node: NodeId(1),
        config: cm_core::config::ClusterConfig::from_toml_str(cm_fuzz::SAMPLE_CONFIG).unwrap(),
        seed: 1,
        restored: None,
        start_kind: cm_core::monitor::StartKind::Normal,
        start: true,
    };
    let mut agent = Agent::rebuild(&opening).unwrap();
    let mut seg = journal::SEGMENT_HEADER.to_vec();
    seg.extend(journal::encode_opening(&opening).unwrap());
    seg.extend(journal::encode_snapshot(&agent).unwrap());
    for i in 0..4 {
        let now = cm_core::Instant::from_millis(200 * i);
        seg.extend(journal::encode_step(now, &AgentInput::Tick).unwrap());
        seg.extend(journal::encode_commands(&agent.step(now, AgentInput::Tick)).unwrap());
    }
    seg.extend(journal::encode_gap(2).unwrap());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/journal_decoder");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("agent-journal"), &seg).unwrap();
    fs::write(dir.join("agent-journal-torn"), &seg[..seg.len() - 5]).unwrap();
    let mut corrupt = seg.clone();
    let at = corrupt.len() / 2;
    corrupt[at] ^= 0x10;
    fs::write(dir.join("agent-journal-corrupt"), &corrupt).unwrap();
}
