//! `monitor_steps`: fuzz bytes → a sequence of om_monitor inputs, with the start rules of
//! SPEC.md §1–2 checked after every step against a small independent model.

use cm_core::Instant;
use cm_core::ctl::{MonitorReply, MonitorRequest};
use cm_core::dn::{ProcState, StopMode};
use cm_core::flags::{Flag, FlagSet};
use cm_core::ids::{ClientId, InstanceId, NodeId, OpId};
use cm_core::io::Machine;
use cm_core::monitor::{
    AgentProcess, HUNG_CHECKS, INTERRUPTED_STOP_RETRIES, Monitor, MonitorCommand, MonitorInput,
    Pid, StartKind, refusal_text,
};
use cm_core::msg::{Endpoint, Role};

use crate::bytes::Bytes;

/// What the harness knows that the rules depend on.
#[derive(Default)]
struct Model {
    last_exit_abnormal: bool,
    /// Starts made while `cluster_manual_start` was present (an interrupted stop finishing).
    retries: u32,
    /// `cluster_manual_start` at the previous sample.
    prev_manual: bool,
    /// Consecutive samples with our agent in state T.
    hung: u32,
    /// Flag operations ordered and not yet completed.
    ops: Vec<OpId>,
}

fn proc_state(b: u8) -> ProcState {
    match b % 4 {
        0 => ProcState::Running,
        1 => ProcState::Stopped,
        2 => ProcState::DiskSleep,
        _ => ProcState::Zombie,
    }
}

fn flags(b: &mut Bytes) -> FlagSet {
    let bits = b.u8();
    let mut f = FlagSet {
        cluster_manual_start: (bits & 1 != 0).then_some(StopMode::Fast),
        cluster_manual_starting: bits & 2 != 0,
        dilatation: bits & 4 != 0,
        ..FlagSet::default()
    };
    if bits & 8 != 0 {
        f.instance_manual_start
            .insert(InstanceId(6001), StopMode::Immediate);
    }
    f
}

fn request(b: &mut Bytes) -> MonitorRequest {
    let flag = match b.small(3) {
        0 => Flag::ClusterManualStart,
        1 => Flag::ClusterManualStarting,
        2 => Flag::DilatationStatus,
        _ => Flag::InstanceManualStart(InstanceId(6001)),
    };
    match b.small(3) {
        0 => MonitorRequest::Status,
        1 => MonitorRequest::WriteFlag {
            flag,
            mode: StopMode::Smart,
        },
        2 => MonitorRequest::RemoveFlag { flag },
        _ => MonitorRequest::RemoveAllManualStart,
    }
}

/// Decodes one step; `None` once the input is exhausted.
fn next_input(b: &mut Bytes, m: &Model, now: &mut Instant) -> Option<MonitorInput> {
    let kind = b.byte()?;
    Some(match kind % 5 {
        0 => {
            *now += b.delta();
            MonitorInput::Tick
        }
        1 => {
            let n = b.small(2);
            let processes = (0..n)
                .map(|i| AgentProcess {
                    pid: Pid(100 + u32::from(i)),
                    state: proc_state(b.u8()),
                    started_by_me: b.bool(),
                })
                .collect();
            let flags = flags(b);
            let usable = b.u8();
            MonitorInput::AgentSampled {
                processes,
                flags,
                binary_executable: usable & 1 == 0,
                config_readable: usable & 2 == 0,
            }
        }
        2 => MonitorInput::AgentExited { abnormal: b.bool() },
        3 => MonitorInput::CtlRequest {
            client: ClientId(u64::from(b.small(3))),
            // Mostly cm_ctl; sometimes a component, which must be refused.
            from: match b.small(5) {
                0 => Endpoint::agent(NodeId(1)),
                1 => Endpoint::server(NodeId(2)),
                _ => Endpoint {
                    node: NodeId(9),
                    role: Role::Ctl,
                },
            },
            req: request(b),
        },
        _ => {
            let op = b.pick(&m.ops).unwrap_or_else(|| OpId(u64::from(b.u8())));
            let result = if b.bool() { Ok(()) } else { Err("EIO".into()) };
            MonitorInput::FlagOpCompleted { op, result }
        }
    })
}

impl Model {
    /// Checks the commands of one step against the rules, then advances the model.
    fn check(&mut self, input: &MonitorInput, cmds: &[MonitorCommand]) {
        let starts: Vec<StartKind> = cmds
            .iter()
            .filter_map(|c| match c {
                MonitorCommand::StartAgent { kind } => Some(*kind),
                _ => None,
            })
            .collect();
        assert!(starts.len() <= 1, "two starts in one step: {cmds:?}");
        for c in cmds {
            match c {
                MonitorCommand::WriteFlag { op, .. }
                | MonitorCommand::RemoveFlag { op, .. }
                | MonitorCommand::RemoveAllManualStart { op } => {
                    assert!(!self.ops.contains(op), "flag op {op:?} reused");
                    // Every pending op, unbounded: the monitor keeps them all, and the model must
                    // know each one to expect its reply (a bounded memory here was a harness bug).
                    self.ops.push(*op);
                }
                _ => {}
            }
        }
        match input {
            MonitorInput::AgentSampled {
                processes,
                flags,
                binary_executable,
                config_readable,
            } => self.check_sample(
                processes,
                flags,
                *binary_executable && *config_readable,
                &starts,
                cmds,
            ),
            MonitorInput::AgentExited { abnormal } => {
                assert!(starts.is_empty(), "start on an exit: {cmds:?}");
                self.last_exit_abnormal = *abnormal;
                if !abnormal {
                    self.retries = 0;
                }
            }
            MonitorInput::FlagOpCompleted { op, .. } => {
                let replies = cmds.len();
                let expected = usize::from(self.ops.contains(op));
                assert_eq!(replies, expected, "one reply per pending op: {cmds:?}");
                self.ops.retain(|o| o != op);
            }
            MonitorInput::CtlRequest { client, from, .. } if from.role != Role::Ctl => {
                // Refused: one failed reply, nothing done.
                assert_eq!(
                    cmds,
                    [MonitorCommand::Reply {
                        client: *client,
                        reply: MonitorReply::Failed(refusal_text(*from)),
                    }],
                    "a component's control request was served"
                );
            }
            MonitorInput::Tick | MonitorInput::CtlRequest { .. } => {
                assert!(starts.is_empty(), "start outside a sample: {cmds:?}");
            }
        }
    }

    fn check_sample(
        &mut self,
        processes: &[AgentProcess],
        flags: &FlagSet,
        usable: bool,
        starts: &[StartKind],
        cmds: &[MonitorCommand],
    ) {
        let manual = flags.cluster_manual_start.is_some();
        if !manual {
            self.retries = 0;
        }
        let mine = processes.iter().find(|p| p.started_by_me);
        let kills: Vec<Pid> = cmds
            .iter()
            .filter_map(|c| match c {
                MonitorCommand::KillAgent { pid } => Some(*pid),
                _ => None,
            })
            .collect();
        for p in processes.iter().filter(|p| !p.started_by_me) {
            assert!(kills.contains(&p.pid), "foreign agent {p:?} not killed");
        }
        match mine {
            Some(p) => {
                self.hung = if p.state == ProcState::Stopped {
                    self.hung + 1
                } else {
                    0
                };
                let killed = kills.contains(&p.pid);
                assert_eq!(
                    killed,
                    self.hung >= HUNG_CHECKS,
                    "own agent kill: {p:?}, {cmds:?}"
                );
                if killed {
                    self.hung = 0;
                }
                assert!(starts.is_empty(), "start while our agent runs: {cmds:?}");
            }
            None => {
                self.hung = 0;
                if let Some(kind) = starts.first() {
                    assert!(
                        usable && !flags.dilatation,
                        "start refused by the check: {flags:?}"
                    );
                    if manual {
                        assert!(
                            self.last_exit_abnormal && self.retries < INTERRUPTED_STOP_RETRIES,
                            "start under cluster_manual_start beyond the retry rule"
                        );
                        self.retries += 1;
                    }
                    let normal = self.prev_manual && !manual;
                    assert_eq!(*kind == StartKind::Normal, normal, "start kind");
                }
            }
        }
        self.prev_manual = manual;
    }
}

/// Drives a [`Monitor`] built from [`crate::SAMPLE_CONFIG`] with decoded inputs; panics if a
/// rule is broken.
pub fn monitor_steps(data: &[u8]) {
    let cfg = crate::sample_config();
    let mut monitor = Monitor::new(cfg, NodeId(1), 0, None);
    let mut model = Model::default();
    let mut b = Bytes::new(data);
    let mut now = Instant::ZERO;
    let trace = std::env::var_os("CM_FUZZ_TRACE").is_some();
    while let Some(input) = next_input(&mut b, &model, &mut now) {
        let cmds = monitor.step(now, input.clone());
        if trace {
            eprintln!("{now} {input:?}\n    -> {cmds:?}");
        }
        model.check(&input, &cmds);
        if let Some(d) = monitor.next_deadline() {
            let ticked = matches!(input, MonitorInput::Tick);
            assert!(!ticked || d > now, "deadline {d} not after a tick at {now}");
        }
    }
}
