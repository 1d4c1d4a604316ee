//! `cm-sim replay` as an operator runs it: exit 0 and `identical`, exit 1 with both command
//! lists at a divergence, exit 2 for a file that is not a journal.

use std::path::PathBuf;
use std::process::Command;

use cm_core::agent::{Agent, AgentInput};
use cm_core::config::ClusterConfig;
use cm_core::io::Machine as _;
use cm_core::journal::{
    DaemonKind, Opening, Replayable as _, SEGMENT_HEADER, encode_commands, encode_opening,
    encode_snapshot, encode_step,
};
use cm_core::monitor::StartKind;
use cm_core::{Instant, NodeId};

const CONFIG: &str = cm_core::config::ONE_NODE_CONFIG;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segment(tamper: bool) -> Vec<u8> {
    let o = Opening {
        kind: DaemonKind::Agent,
        node: NodeId(1),
        config: ClusterConfig::from_toml_str(CONFIG).unwrap(),
        seed: 3,
        restored: None,
        start_kind: StartKind::Normal,
        start: true,
    };
    let mut agent = Agent::rebuild(&o).unwrap();
    let mut out = SEGMENT_HEADER.to_vec();
    out.extend(encode_opening(&o).unwrap());
    out.extend(encode_snapshot(&agent).unwrap());
    for i in 0..10 {
        let now = Instant::from_millis(100 * i);
        out.extend(encode_step(now, &AgentInput::Tick).unwrap());
        let mut cmds = agent.step(now, AgentInput::Tick);
        if tamper && i == 4 {
            cmds.push(cm_core::agent::AgentCommand::ReadFlags);
        }
        out.extend(encode_commands(&cmds).unwrap());
    }
    out
}

fn replay(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cm-sim"))
        .arg("replay")
        .arg(path)
        .output()
        .expect("run cm-sim");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn replay_exits_0_identical_1_divergent_2_unreadable() {
    let dir = Scratch(std::env::temp_dir().join(format!("cm-replay-cli-{}", std::process::id())));
    for (name, bytes) in [
        ("good", segment(false)),
        ("bad", segment(true)),
        ("foreign", b"not a journal".to_vec()),
    ] {
        std::fs::create_dir_all(dir.0.join(name)).unwrap();
        std::fs::write(dir.0.join(name).join("00000000.cmj"), bytes).unwrap();
    }
    let (code, text) = replay(&dir.0.join("good"));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("identical: cm_agent 10 steps compared"),
        "{text}"
    );

    let (code, text) = replay(&dir.0.join("bad"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("diverged at step 4"), "{text}");
    assert!(
        text.contains("recorded (") && text.contains("replayed ("),
        "{text}"
    );

    let (code, text) = replay(&dir.0.join("foreign/00000000.cmj"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a journal segment"), "{text}");
}
