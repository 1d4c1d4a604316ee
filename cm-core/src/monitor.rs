//! om_monitor (CMM): keeps the node's cm_agent alive and serves the node's control port
//! (SPEC.md §1, §2).
//!
//! Once per second ([`CHECK_INTERVAL`]) the monitor asks its driver to sample the node
//! ([`MonitorCommand::SampleAgent`]); the driver answers with [`MonitorInput::AgentSampled`]
//! (the cm_agent processes of this node, the flag files, whether the agent binary is executable
//! and its config readable). On that fact the monitor decides:
//!
//! * a cm_agent of this node that this monitor did not start → [`MonitorCommand::KillAgent`];
//! * its own agent in state T for 3 consecutive checks → kill it; the next check finds it absent
//!   and restarts it;
//! * no agent → [`start_check`] decides, and a start is [`MonitorCommand::StartAgent`] with a
//!   [`StartKind`]: `Normal` right after `cluster_manual_start` disappeared (the agent suppresses
//!   its alarms for 300 s), `Abnormal` otherwise;
//! * 3 start attempts without an agent (while `cluster_manual_start` is absent) →
//!   [`Alarm::AbnormalCmaProcess`], once per episode.
//!
//! The control port (cm_ctl reaches every node through it) arrives as
//! [`MonitorInput::CtlRequest`], with the role the transport authenticated for the sender;
//! flag changes go out as commands carrying an [`OpId`] and the reply is sent when the matching
//! [`MonitorInput::FlagOpCompleted`] arrives. Only cm_ctl (the operator certificate, §16) may
//! ask: a request from a component (a node certificate) is answered with
//! [`MonitorReply::Failed`], changes nothing and is counted
//! ([`MonitorStatus::refused_control_requests`]).
//!
//! **Persistence:** the monitor persists nothing. Its counters (start attempts, interrupted-stop
//! retries, the last exit status) live in memory as CM's do, so `restored` in [`Monitor::new`]
//! is ignored; a restarted monitor starts counting afresh.
//!
//! **Driving contract:** inputs in any order, `now` never decreasing (asserted); commands are
//! executed in the order returned; a [`MonitorInput::Tick`] before [`Machine::next_deadline`] is
//! a no-op.

use core::time::Duration;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::ctl::{MonitorReply, MonitorRequest};
use crate::dn::{ProcState, StopMode};
use crate::flags::{Flag, FlagSet};
use crate::ids::{ClientId, NodeId, OpId};
use crate::io::{Alarm, Machine};
use crate::msg::{Endpoint, Role};
use crate::time::{Instant, MonotonicGuard};

/// How often the monitor checks its agent (CM's `MONITOR_CHECK_INTERVAL`).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive checks in state T after which the agent is killed (`HANG_T_DETECT_MAX_TIMES`).
pub const HUNG_CHECKS: u32 = 3;
/// Restarts allowed to finish an interrupted stop (`retryTimes` of `check_start_request`).
pub const INTERRUPTED_STOP_RETRIES: u32 = 3;
/// Start attempts without an agent after which `AbnormalCmaProcess` is raised.
pub const ALARM_AFTER_ATTEMPTS: u32 = 3;
/// How long a "normal" start keeps the agent's alarms suppressed.
pub const NORMAL_START_ALARM_SUPPRESSION: Duration = Duration::from_secs(300);

/// An OS process id, as the driver reports it (only ever echoed back to the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid(pub u32);

/// How a cm_agent is started (its command-line argument in CM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartKind {
    /// Right after `cm_ctl start` removed `cluster_manual_start`: alarms are suppressed for the
    /// agent's first [`NORMAL_START_ALARM_SUPPRESSION`].
    Normal,
    /// A restart after a crash, or any other start.
    Abnormal,
}

/// One cm_agent process of this node (same state directory), as sampled by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProcess {
    /// Its pid.
    pub pid: Pid,
    /// Its /proc state.
    pub state: ProcState,
    /// Whether this monitor started it (it is this monitor's child).
    pub started_by_me: bool,
}

/// The facts the start check decides on (SPEC.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFacts {
    /// The cm_agent binary is executable.
    pub binary_executable: bool,
    /// The agent's config is readable.
    pub config_readable: bool,
    /// `cluster_dilatation_status` exists.
    pub dilatation: bool,
    /// `cluster_manual_start` exists.
    pub cluster_manual_start: bool,
    /// The last cm_agent exited abnormally (non-zero status or a signal).
    pub last_exit_abnormal: bool,
    /// Starts already made to finish an interrupted stop.
    pub interrupted_stop_restarts: u32,
}

/// Why the start check refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartRefusal {
    /// The binary is not executable.
    BinaryNotExecutable,
    /// The config is not readable.
    ConfigUnreadable,
    /// `cluster_dilatation_status` exists.
    Dilatation,
    /// `cluster_manual_start` exists and the last agent exited cleanly: the stop is done.
    ManuallyStopped,
    /// `cluster_manual_start` exists, the last exit was abnormal, but 3 retries were used.
    RetriesExhausted,
}

/// The start check's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartDecision {
    /// Start cm_agent.
    Start,
    /// Do not start it.
    Refuse(StartRefusal),
}

/// The start check of SPEC.md §2 (CM's `check_start_request`), exact: start iff the binary is
/// executable AND the config readable AND `cluster_dilatation_status` absent AND
/// (`cluster_manual_start` absent OR (the last agent exited abnormally AND fewer than 3 such
/// restarts happened)) — the second branch lets an interrupted stop finish.
pub fn start_check(f: &StartFacts) -> StartDecision {
    use StartRefusal::*;
    let refusal = if !f.binary_executable {
        Some(BinaryNotExecutable)
    } else if !f.config_readable {
        Some(ConfigUnreadable)
    } else if f.dilatation {
        Some(Dilatation)
    } else if !f.cluster_manual_start {
        None
    } else if !f.last_exit_abnormal {
        Some(ManuallyStopped)
    } else if f.interrupted_stop_restarts >= INTERRUPTED_STOP_RETRIES {
        Some(RetriesExhausted)
    } else {
        None
    };
    refusal.map_or(StartDecision::Start, StartDecision::Refuse)
}

/// Facts fed to the monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MonitorInput {
    /// Time passed (the driver slept until `next_deadline`).
    Tick,
    /// The answer to [`MonitorCommand::SampleAgent`].
    AgentSampled {
        /// Every cm_agent process of this node.
        processes: Vec<AgentProcess>,
        /// The flag files present.
        flags: FlagSet,
        /// The cm_agent binary is executable.
        binary_executable: bool,
        /// The agent's config is readable.
        config_readable: bool,
    },
    /// The driver reaped the agent it started.
    AgentExited {
        /// It exited with a non-zero status or was killed by a signal.
        abnormal: bool,
    },
    /// A control-port request (from cm_ctl, if `from` says so).
    CtlRequest {
        /// The control connection to answer on.
        client: ClientId,
        /// The sender as the transport authenticated it: role [`Role::Ctl`] only for the
        /// operator's certificate.
        from: Endpoint,
        /// The request.
        req: MonitorRequest,
    },
    /// A flag write/remove ordered by the monitor finished.
    FlagOpCompleted {
        /// The operation.
        op: OpId,
        /// `Err(reason)` if it failed.
        result: Result<(), String>,
    },
}

/// Orders from the monitor, executed in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MonitorCommand {
    /// Sample the agent processes, the flags, the binary and the config; answer with
    /// [`MonitorInput::AgentSampled`].
    SampleAgent,
    /// Start cm_agent (as a child of this monitor).
    StartAgent {
        /// Normal or abnormal start, passed to the agent.
        kind: StartKind,
    },
    /// SIGKILL one cm_agent process.
    KillAgent {
        /// The process.
        pid: Pid,
    },
    /// Raise an alarm.
    RaiseAlarm(Alarm),
    /// Write a flag file; answer with [`MonitorInput::FlagOpCompleted`].
    WriteFlag {
        /// Matches the completion.
        op: OpId,
        /// The flag.
        flag: Flag,
        /// The stop mode written into manual-start flags.
        mode: StopMode,
    },
    /// Remove a flag file (absent is success); answer with [`MonitorInput::FlagOpCompleted`].
    RemoveFlag {
        /// Matches the completion.
        op: OpId,
        /// The flag.
        flag: Flag,
    },
    /// Remove `cluster_manual_start` and every `instance_manual_start_*`; answer with
    /// [`MonitorInput::FlagOpCompleted`].
    RemoveAllManualStart {
        /// Matches the completion.
        op: OpId,
    },
    /// Answer a control-port client.
    Reply {
        /// The client.
        client: ClientId,
        /// The reply.
        reply: MonitorReply,
    },
}

/// The answer to a control request from a component (`from` is not a [`Role::Ctl`]).
pub fn refusal_text(from: Endpoint) -> String {
    format!(
        "control requests are accepted only from cm_ctl (the operator certificate), not from {from}"
    )
}

/// Longest back-off between restarts of an agent that keeps exiting at once, in checks.
pub const MAX_RESTART_BACKOFF_CHECKS: u32 = 60;

/// Whether the `attempts`-th consecutive check without a running agent (after an abnormal exit)
/// restarts it: the first [`ALARM_AFTER_ATTEMPTS`] checks do, then the gaps double (2, 4, 8, …
/// checks) up to [`MAX_RESTART_BACKOFF_CHECKS`], so a crash loop restarts the agent about once a
/// minute instead of every second.
pub fn restart_due(attempts: u32) -> bool {
    if attempts <= ALARM_AFTER_ATTEMPTS {
        return true;
    }
    let mut at = ALARM_AFTER_ATTEMPTS;
    let mut gap = 2;
    while at < attempts {
        at += gap;
        gap = (gap * 2).min(MAX_RESTART_BACKOFF_CHECKS);
    }
    at == attempts
}

/// What the monitor shows (plain data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// This node.
    pub node: NodeId,
    /// The last sample showed this monitor's agent running.
    pub agent_running: bool,
    /// The flags of the last sample.
    pub flags: FlagSet,
    /// Start attempts since an agent was last seen running.
    pub start_attempts: u32,
    /// Starts made to finish an interrupted stop.
    pub interrupted_stop_restarts: u32,
    /// Consecutive checks that saw the agent in state T.
    pub hung_checks: u32,
    /// The last agent exit was abnormal.
    pub last_exit_abnormal: bool,
    /// Control requests refused because they did not come from cm_ctl.
    pub refused_control_requests: u64,
}

/// The om_monitor machine. See the module documentation for its rules and contract.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Monitor {
    node: NodeId,
    guard: MonotonicGuard,
    next_check: Instant,
    agent_running: bool,
    flags: FlagSet,
    manual_start_seen: bool,
    start_attempts: u32,
    alarm_raised: bool,
    interrupted_stop_restarts: u32,
    hung_checks: u32,
    last_exit_abnormal: bool,
    next_op: u64,
    pending_ops: BTreeMap<OpId, ClientId>,
    refused_control_requests: u64,
}

impl Monitor {
    /// A monitor for `node`. `seed` and `restored` are unused: the monitor draws no randomness
    /// and persists nothing (see the module documentation). The first check is due at once.
    pub fn new(
        _config: &ClusterConfig,
        node: NodeId,
        _seed: u64,
        _restored: Option<Vec<u8>>,
    ) -> Self {
        Self {
            node,
            guard: MonotonicGuard::default(),
            next_check: Instant::ZERO,
            agent_running: false,
            flags: FlagSet::default(),
            manual_start_seen: false,
            start_attempts: 0,
            alarm_raised: false,
            interrupted_stop_restarts: 0,
            hung_checks: 0,
            last_exit_abnormal: false,
            next_op: 1,
            pending_ops: BTreeMap::new(),
            refused_control_requests: 0,
        }
    }

    fn on_sample(
        &mut self,
        processes: &[AgentProcess],
        flags: FlagSet,
        binary_executable: bool,
        config_readable: bool,
        out: &mut Vec<MonitorCommand>,
    ) {
        let manual_now = flags.cluster_manual_start.is_some();
        for p in processes.iter().filter(|p| !p.started_by_me) {
            out.push(MonitorCommand::KillAgent { pid: p.pid });
        }
        let mine = processes.iter().find(|p| p.started_by_me);
        self.agent_running = mine.is_some();
        if !manual_now {
            self.interrupted_stop_restarts = 0;
        }
        match mine {
            Some(p) => {
                self.start_attempts = 0;
                self.alarm_raised = false;
                self.check_hung(p, out);
            }
            None => {
                self.hung_checks = 0;
                let facts = StartFacts {
                    binary_executable,
                    config_readable,
                    dilatation: flags.dilatation,
                    cluster_manual_start: manual_now,
                    last_exit_abnormal: self.last_exit_abnormal,
                    interrupted_stop_restarts: self.interrupted_stop_restarts,
                };
                self.absent(&facts, out);
            }
        }
        self.manual_start_seen = manual_now;
        self.flags = flags;
    }

    fn check_hung(&mut self, p: &AgentProcess, out: &mut Vec<MonitorCommand>) {
        if p.state != ProcState::Stopped {
            self.hung_checks = 0;
            return;
        }
        self.hung_checks += 1;
        if self.hung_checks >= HUNG_CHECKS {
            self.hung_checks = 0;
            out.push(MonitorCommand::KillAgent { pid: p.pid });
        }
    }

    fn absent(&mut self, facts: &StartFacts, out: &mut Vec<MonitorCommand>) {
        if !facts.cluster_manual_start {
            self.start_attempts += 1;
            if self.start_attempts >= ALARM_AFTER_ATTEMPTS && !self.alarm_raised {
                self.alarm_raised = true;
                out.push(MonitorCommand::RaiseAlarm(Alarm::AbnormalCmaProcess {
                    node: self.node,
                }));
            }
        }
        if start_check(facts) != StartDecision::Start {
            return;
        }
        if !facts.cluster_manual_start
            && facts.last_exit_abnormal
            && !restart_due(self.start_attempts)
        {
            // A crash loop (the agent exits at once, e.g. a broken config): back off.
            return;
        }
        if facts.cluster_manual_start {
            self.interrupted_stop_restarts += 1;
        }
        // CM: "normal" when `cluster_manual_start` was present at the previous check and is gone
        // now, i.e. `cm_ctl start` just removed it.
        let kind = if self.manual_start_seen && !facts.cluster_manual_start {
            StartKind::Normal
        } else {
            StartKind::Abnormal
        };
        out.push(MonitorCommand::StartAgent { kind });
    }

    fn on_ctl(
        &mut self,
        client: ClientId,
        from: Endpoint,
        req: MonitorRequest,
        out: &mut Vec<MonitorCommand>,
    ) {
        if from.role != Role::Ctl {
            // The transport authenticated a component's node certificate, not the operator's:
            // a node must not be able to stop, start or flag another node (§16).
            self.refused_control_requests += 1;
            tracing::warn!(
                node = %self.node,
                %from,
                refused = self.refused_control_requests,
                "refusing a control request that does not come from cm_ctl"
            );
            out.push(MonitorCommand::Reply {
                client,
                reply: MonitorReply::Failed(refusal_text(from)),
            });
            return;
        }
        let op = OpId(self.next_op);
        let cmd = match req {
            MonitorRequest::Status => {
                out.push(MonitorCommand::Reply {
                    client,
                    reply: MonitorReply::Status {
                        node: self.node,
                        agent_running: self.agent_running,
                        flags: self.flags.clone(),
                        agent_error: None,
                    },
                });
                return;
            }
            MonitorRequest::WriteFlag { flag, mode } => {
                MonitorCommand::WriteFlag { op, flag, mode }
            }
            MonitorRequest::RemoveFlag { flag } => MonitorCommand::RemoveFlag { op, flag },
            MonitorRequest::RemoveAllManualStart => MonitorCommand::RemoveAllManualStart { op },
        };
        self.next_op += 1;
        self.pending_ops.insert(op, client);
        out.push(cmd);
    }
}

impl Machine for Monitor {
    type Input = MonitorInput;
    type Command = MonitorCommand;
    type Status = MonitorStatus;

    fn step(&mut self, now: Instant, input: MonitorInput) -> Vec<MonitorCommand> {
        self.guard.observe(now);
        let mut out = Vec::new();
        match input {
            MonitorInput::Tick => {
                if now >= self.next_check {
                    self.next_check = now + CHECK_INTERVAL;
                    out.push(MonitorCommand::SampleAgent);
                }
            }
            MonitorInput::AgentSampled {
                processes,
                flags,
                binary_executable,
                config_readable,
            } => self.on_sample(
                &processes,
                flags,
                binary_executable,
                config_readable,
                &mut out,
            ),
            MonitorInput::AgentExited { abnormal } => {
                self.agent_running = false;
                self.last_exit_abnormal = abnormal;
                if !abnormal {
                    self.interrupted_stop_restarts = 0;
                }
            }
            MonitorInput::CtlRequest { client, from, req } => {
                self.on_ctl(client, from, req, &mut out);
            }
            MonitorInput::FlagOpCompleted { op, result } => {
                if let Some(client) = self.pending_ops.remove(&op) {
                    let reply = match result {
                        Ok(()) => MonitorReply::Done,
                        Err(e) => MonitorReply::Failed(e),
                    };
                    out.push(MonitorCommand::Reply { client, reply });
                }
            }
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        Some(self.next_check)
    }

    fn status(&self) -> MonitorStatus {
        MonitorStatus {
            node: self.node,
            agent_running: self.agent_running,
            flags: self.flags.clone(),
            start_attempts: self.start_attempts,
            interrupted_stop_restarts: self.interrupted_stop_restarts,
            hung_checks: self.hung_checks,
            last_exit_abnormal: self.last_exit_abnormal,
            refused_control_requests: self.refused_control_requests,
        }
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
