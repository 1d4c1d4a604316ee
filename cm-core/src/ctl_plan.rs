//! The pure planner behind `cm_ctl start | stop | switchover | pause | resume` (SPEC.md §2, §4.5,
//! §10). It decides the order of the steps; cm_ctl (over TCP) and the simulator's operator
//! (in virtual time) execute them and feed results back, so both follow the same sequence.
//!
//! A plan is a small state machine: [`Plan::next`] takes the result of the previous step and
//! returns the next [`Step`], until [`Step::Done`] or [`Step::Failed`].

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::ctl::{
    ClusterHealth, ClusterStatus, CtlReply, CtlRequest, MonitorReply, MonitorRequest,
};
use crate::dn::{BuildOutcome, DbState, DnRole, StopMode};
use crate::flags::Flag;
use crate::ids::{InstanceId, NodeId, Term};
use crate::resource::ResourceState;
use crate::state::SwitchoverResult;

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `cm_ctl start` (whole cluster), waiting up to `timeout` for Normal.
    StartCluster {
        /// `-t`.
        timeout: Duration,
    },
    /// `cm_ctl start -n NODE [-D DIR]`: remove the flag(s) of one node or instance.
    StartInstance {
        /// The node.
        node: NodeId,
        /// The instance, or every instance of the node.
        instance: Option<InstanceId>,
        /// `-t`.
        timeout: Duration,
    },
    /// `cm_ctl stop` (whole cluster).
    StopCluster {
        /// `-m`.
        mode: StopMode,
        /// `-t`.
        timeout: Duration,
    },
    /// `cm_ctl stop -n NODE [-D DIR]`.
    StopInstance {
        /// The node.
        node: NodeId,
        /// The instance, or every instance of the node.
        instance: Option<InstanceId>,
        /// `-m`.
        mode: StopMode,
        /// `-t`.
        timeout: Duration,
    },
    /// `cm_ctl switchover -n NODE -D DIR [-f] [-t SECS | --no-wait]` (§4.5): asks the leader,
    /// then (unless `wait` is `None`) polls until the switchover ended, failing on an abort,
    /// a server-side timeout, or after `wait`.
    Switchover {
        /// The standby to promote.
        instance: InstanceId,
        /// `-f`.
        fast: bool,
        /// `-t`; `None` for `--no-wait`.
        wait: Option<Duration>,
    },
    /// Any request answered by the CMS leader alone (switchover -a, pause, resume, set, ...).
    Leader(CtlRequest),
    /// `cm_ctl build -n NODE -D DIR [--full]`: ask the leader, then wait for the outcome.
    Build {
        /// The standby to rebuild.
        instance: InstanceId,
        /// `--full`: a full base backup, no pg_rewind first.
        full: bool,
        /// `-t`.
        timeout: Duration,
    },
    /// `cm_ctl switchover -a [-t SECS | --no-wait]`: every group back to its install-time
    /// primary (§10). Reads the status first (which groups are off their install-time primary,
    /// at which term), asks the leader, then (unless `wait` is `None`) waits for each of those
    /// switchovers as [`Operation::Switchover`] does, failing on the first that fails.
    SwitchoverAll {
        /// `-t`; `None` for `--no-wait`.
        wait: Option<Duration>,
    },
}

/// One step for the executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Send `req` to the om_monitor of every node in `nodes`; report each answer.
    Monitors {
        /// The nodes.
        nodes: Vec<NodeId>,
        /// The request.
        req: MonitorRequest,
    },
    /// Send `req` to the CMS leader (try every CMS until one leads).
    Leader(CtlRequest),
    /// Query the leader again after `after` (polling), then report the status.
    PollStatus {
        /// Delay before the query.
        after: Duration,
    },
    /// The operation finished.
    Done(String),
    /// The operation failed; the message says what and what to do.
    Failed(String),
}

/// The result of executing a step.
#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    /// Nothing has run yet.
    Begin,
    /// Answers of the monitors (a missing node means unreachable).
    Monitors(Vec<(NodeId, Result<MonitorReply, String>)>),
    /// The leader's answer, or why none could be had.
    Leader(Result<CtlReply, String>),
    /// A status from polling, with the time spent so far in the operation.
    Status {
        /// The status (or why it could not be had).
        status: Result<Box<ClusterStatus>, String>,
        /// Elapsed since the operation began.
        elapsed: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    CheckedMonitors,
    FlagsWritten,
    LeaderTold,
    Polling,
    Finished,
}

/// A running operation.
#[derive(Clone, Debug)]
pub struct Plan {
    op: Operation,
    nodes: Vec<NodeId>,
    instances: Vec<InstanceId>,
    phase: Phase,
    /// `cm_ctl start`: the leader accepted `ClusterStarting` (which also ends "stopping").
    leader_told: bool,
    /// `cm_ctl switchover`: the group's term before the request (a switchover ending at a
    /// higher term is this one), and what the last poll showed it waiting for.
    switchover_base: Option<Term>,
    waiting: Option<String>,
    /// `cm_ctl stop`: the nodes whose cm_agent still ran at the last check.
    agents_running: Vec<NodeId>,
    /// `cm_ctl build`: the instance's build outcome before the request (the build this request
    /// starts is the first one counted above it, by the same agent).
    build_base: BuildOutcome,
    /// `cm_ctl switchover -a`: each group's install-time primary that is not its primary, with
    /// the group's term before the request.
    rebalance: Vec<(InstanceId, Term)>,
}

/// How often cm_ctl polls while waiting (CM sleeps 3 s; 1 s shows progress sooner).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

impl Plan {
    /// Plans `op` for a cluster. Fails at once for unknown nodes or instances.
    pub fn new(config: &ClusterConfig, op: Operation) -> Result<Self, String> {
        let (nodes, instances) = match &op {
            Operation::StartInstance { node, instance, .. }
            | Operation::StopInstance { node, instance, .. } => {
                if config.node(*node).is_none() {
                    return Err(format!("node {} is not in the cluster config", node.0));
                }
                let on_node = config.instances_on(*node);
                let resource_here = |i: &InstanceId| {
                    config
                        .resource_instance(*i)
                        .is_some_and(|(_, ri)| ri.node == *node)
                };
                let chosen = match instance {
                    Some(i) if !on_node.contains(i) && !resource_here(i) => {
                        return Err(format!("instance {} does not run on node {}", i.0, node.0));
                    }
                    Some(i) => vec![*i],
                    None => on_node,
                };
                (vec![*node], chosen)
            }
            _ => (config.nodes.iter().map(|n| n.id).collect(), Vec::new()),
        };
        Ok(Self {
            op,
            nodes,
            instances,
            phase: Phase::Start,
            leader_told: false,
            switchover_base: None,
            waiting: None,
            agents_running: Vec::new(),
            build_base: BuildOutcome::default(),
            rebalance: Vec::new(),
        })
    }

    /// While a whole-cluster stop waits: what it waits for (the leader's status is not needed
    /// then, and its absence is expected, so it is neither queried nor shown).
    pub fn waiting_on(&self) -> Option<String> {
        if !matches!(self.op, Operation::StopCluster { .. })
            || self.phase != Phase::Polling
            || self.agents_running.is_empty()
        {
            return None;
        }
        let nodes: Vec<String> = self
            .agents_running
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        Some(format!(
            "waiting for cm_agent to stop the instances and exit on node {}",
            nodes.join(", ")
        ))
    }

    /// The next step, given the result of the previous one.
    pub fn next(&mut self, result: StepResult) -> Step {
        let step = match self.op.clone() {
            Operation::Leader(req) => self.leader_only(req, result),
            Operation::Switchover {
                instance,
                fast,
                wait,
            } => self.switchover(instance, fast, wait, result),
            Operation::SwitchoverAll { wait } => self.switchover_all(wait, result),
            Operation::Build {
                instance,
                full,
                timeout,
            } => self.build(instance, full, timeout, result),
            Operation::StartCluster { timeout } => self.start_cluster(timeout, result),
            Operation::StopCluster { mode, timeout } => self.stop_cluster(mode, timeout, result),
            Operation::StartInstance { timeout, .. } => self.start_instances(timeout, result),
            Operation::StopInstance { mode, timeout, .. } => {
                self.stop_instances(mode, timeout, result)
            }
        };
        if matches!(step, Step::Done(_) | Step::Failed(_)) {
            self.phase = Phase::Finished;
        }
        step
    }

    fn leader_only(&mut self, req: CtlRequest, result: StepResult) -> Step {
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::LeaderTold;
                Step::Leader(req)
            }
            (Phase::LeaderTold, StepResult::Leader(r)) => leader_outcome(r),
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    /// Build: the instance's count of finished builds is read first; the leader accepts, then
    /// the instance is polled until its agent reports a build counted above that one: done when
    /// it succeeded, failed with the agent's error when it failed; or the timeout passes.
    fn build(
        &mut self,
        instance: InstanceId,
        full: bool,
        timeout: Duration,
        result: StepResult,
    ) -> Step {
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::CheckedMonitors;
                Step::Leader(CtlRequest::Query)
            }
            (Phase::CheckedMonitors, StepResult::Leader(r)) => match r {
                Ok(CtlReply::Status(s)) => {
                    self.build_base = instance_row(&s, instance)
                        .map(|r| r.last_build.clone())
                        .unwrap_or_default();
                    self.phase = Phase::LeaderTold;
                    Step::Leader(CtlRequest::Build { instance, full })
                }
                Ok(other) => Step::Failed(format!(
                    "cannot read the status before the build: unexpected reply {other:?}"
                )),
                Err(e) => Step::Failed(format!("cannot read the status before the build: {e}")),
            },
            (Phase::LeaderTold, StepResult::Leader(r)) => match leader_outcome(r) {
                Step::Done(_) => {
                    self.phase = Phase::Polling;
                    Step::PollStatus {
                        after: POLL_INTERVAL,
                    }
                }
                other => other,
            },
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                if let Some(b) = status
                    .as_ref()
                    .ok()
                    .and_then(|s| instance_row(s, instance))
                    .map(|r| &r.last_build)
                    && let Some(step) = build_seen(&self.build_base, b, instance)
                {
                    return step;
                }
                if elapsed >= timeout {
                    let missing = waiting_for(&status);
                    return Step::Failed(format!(
                        "build of {} did not finish within {} s ({missing}); check `cm_ctl query -Cv`",
                        instance.0,
                        timeout.as_secs()
                    ));
                }
                Step::PollStatus {
                    after: POLL_INTERVAL,
                }
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    /// What the operation waits for, as of the last status polled (for the progress line).
    pub fn waiting_for(&self) -> Option<&str> {
        self.waiting.as_deref()
    }

    fn switchover(
        &mut self,
        instance: InstanceId,
        fast: bool,
        wait: Option<Duration>,
        result: StepResult,
    ) -> Step {
        match (self.phase, result) {
            // The group's term first: the switchover this request starts ends at a higher one.
            (Phase::Start, _) => {
                self.phase = Phase::CheckedMonitors;
                Step::Leader(CtlRequest::Query)
            }
            (Phase::CheckedMonitors, StepResult::Leader(r)) => {
                if let Ok(CtlReply::Status(s)) = &r {
                    self.switchover_base = group_of(s, instance).map(|g| g.term);
                }
                self.phase = Phase::LeaderTold;
                Step::Leader(CtlRequest::Switchover { instance, fast })
            }
            (Phase::LeaderTold, StepResult::Leader(r)) => match (r, wait) {
                (Ok(CtlReply::Accepted), None) => Step::Done(
                    "switchover accepted (--no-wait: follow it with `cm_ctl query`)".into(),
                ),
                (Ok(CtlReply::Accepted), Some(_)) => {
                    self.phase = Phase::Polling;
                    self.waiting = Some(format!("switchover to {} accepted", instance.0));
                    Step::PollStatus {
                        after: POLL_INTERVAL,
                    }
                }
                (r, _) => leader_outcome(r),
            },
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                let wait = wait.unwrap_or_default();
                let seen = match &status {
                    Ok(s) => switchover_seen(s, instance, self.switchover_base),
                    Err(e) => SwitchoverSeen::Waiting(format!("no status from the leader: {e}")),
                };
                match seen {
                    SwitchoverSeen::Ended(step) => step,
                    SwitchoverSeen::Waiting(what) => {
                        self.keep_waiting_for_switchover(what, elapsed, wait)
                    }
                }
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    /// `switchover -a`: the status first (which groups need a switchover, at which term), then
    /// the request, then every such switchover is followed to its end.
    fn switchover_all(&mut self, wait: Option<Duration>, result: StepResult) -> Step {
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::CheckedMonitors;
                Step::Leader(CtlRequest::Query)
            }
            (Phase::CheckedMonitors, StepResult::Leader(r)) => match r {
                Ok(CtlReply::Status(s)) => {
                    self.rebalance = s
                        .groups
                        .iter()
                        .filter_map(|g| {
                            let home = g.members.iter().find(|m| m.install_primary)?;
                            (!home.static_primary).then_some((home.instance, g.term))
                        })
                        .collect();
                    self.phase = Phase::LeaderTold;
                    Step::Leader(CtlRequest::SwitchoverAll)
                }
                Ok(CtlReply::Refused(why)) => Step::Failed(format!("refused: {why}")),
                Ok(_) => Step::Failed(
                    "cannot read the status before the switchover: unexpected reply".into(),
                ),
                Err(e) => leader_outcome(Err(e)),
            },
            (Phase::LeaderTold, StepResult::Leader(r)) => match (r, wait) {
                (Ok(CtlReply::SwitchoverAll { started, refused }), wait) => {
                    self.rebalance = started.iter().map(|s| (s.target, s.term)).collect();
                    let targets = started
                        .iter()
                        .map(|s| format!("{} (group {})", s.target.0, s.group.0))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if !refused.is_empty() {
                        let why = refused
                            .iter()
                            .map(|r| {
                                format!("group {} to {}: {}", r.group.0, r.target.0, r.refusal)
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                        let going = if started.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; started, the cm_server goes on with them (follow with \
                                 `cm_ctl query`): switchover to {targets}"
                            )
                        };
                        return Step::Failed(format!("switchover -a refused for {why}{going}"));
                    }
                    if started.is_empty() {
                        return Step::Done(
                            "nothing to switch: every group's primary is its install-time primary"
                                .into(),
                        );
                    }
                    if wait.is_none() {
                        return Step::Done(format!(
                            "switchover to {targets} started (--no-wait: follow it with \
                             `cm_ctl query`)"
                        ));
                    }
                    self.phase = Phase::Polling;
                    self.waiting = Some(format!("switchover to {targets} started"));
                    Step::PollStatus {
                        after: POLL_INTERVAL,
                    }
                }
                // A cm_server older than the reply above: wait for what the status showed.
                (Ok(CtlReply::Accepted), None) => Step::Done(
                    "switchover -a accepted (--no-wait: follow it with `cm_ctl query`)".into(),
                ),
                (Ok(CtlReply::Accepted), Some(_)) if self.rebalance.is_empty() => Step::Done(
                    "nothing to switch: every group's primary is its install-time primary".into(),
                ),
                (Ok(CtlReply::Accepted), Some(_)) => {
                    self.phase = Phase::Polling;
                    let targets: Vec<String> = self
                        .rebalance
                        .iter()
                        .map(|(i, _)| i.0.to_string())
                        .collect();
                    self.waiting = Some(format!("switchover to {} accepted", targets.join(", ")));
                    Step::PollStatus {
                        after: POLL_INTERVAL,
                    }
                }
                (r, _) => leader_outcome(r),
            },
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                let wait = wait.unwrap_or_default();
                let s = match &status {
                    Ok(s) => s,
                    Err(e) => {
                        let what = format!("no status from the leader: {e}");
                        return self.keep_waiting_for_switchover(what, elapsed, wait);
                    }
                };
                let mut done = Vec::new();
                let mut waiting = Vec::new();
                for &(instance, base) in &self.rebalance {
                    match switchover_seen(s, instance, Some(base)) {
                        SwitchoverSeen::Ended(Step::Done(msg)) => done.push(msg),
                        SwitchoverSeen::Ended(failed) => return failed,
                        SwitchoverSeen::Waiting(what) => {
                            waiting.push(format!("{}: {what}", instance.0));
                        }
                    }
                }
                if waiting.is_empty() {
                    return Step::Done(done.join("\n"));
                }
                self.keep_waiting_for_switchover(waiting.join("; "), elapsed, wait)
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    /// A switchover still going on: poll again, or fail once `wait` has passed.
    fn keep_waiting_for_switchover(
        &mut self,
        what: String,
        elapsed: Duration,
        wait: Duration,
    ) -> Step {
        if elapsed >= wait {
            return Step::Failed(format!(
                "switchover not finished within {} s ({what}); the cm_server goes on \
                 with it until its own timeout: check `cm_ctl query -Cv`",
                wait.as_secs()
            ));
        }
        self.waiting = Some(what);
        Step::PollStatus {
            after: POLL_INTERVAL,
        }
    }

    fn start_cluster(&mut self, timeout: Duration, result: StepResult) -> Step {
        let timeout_s = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::CheckedMonitors;
                Step::Monitors {
                    nodes: self.nodes.clone(),
                    req: MonitorRequest::Status,
                }
            }
            (Phase::CheckedMonitors, StepResult::Monitors(answers)) => {
                if let Some(msg) = unreachable(&self.nodes, &answers) {
                    return Step::Failed(format!(
                        "cannot start: {msg}; start om_monitor there (systemd unit or cron line)"
                    ));
                }
                self.phase = Phase::FlagsWritten;
                Step::Monitors {
                    nodes: self.nodes.clone(),
                    req: MonitorRequest::RemoveAllManualStart,
                }
            }
            (Phase::FlagsWritten, StepResult::Monitors(answers)) => {
                if let Some(msg) = failed(&self.nodes, &answers) {
                    return Step::Failed(format!("could not remove the stop flags: {msg}"));
                }
                self.phase = Phase::LeaderTold;
                Step::Leader(CtlRequest::ClusterStarting { timeout_s })
            }
            // The cm_servers come back only now that the flags are gone: not reaching a leader
            // yet is not a failure. The request is repeated once a leader answers a poll, since
            // it is also what ends the "stopping" state that halts arbitration (§2).
            (Phase::LeaderTold, StepResult::Leader(r)) => {
                self.leader_told = matches!(r, Ok(CtlReply::Accepted));
                self.phase = Phase::Polling;
                Step::PollStatus {
                    after: POLL_INTERVAL,
                }
            }
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                if !self.leader_told && status.is_ok() && elapsed < timeout {
                    self.phase = Phase::LeaderTold;
                    return Step::Leader(CtlRequest::ClusterStarting { timeout_s });
                }
                poll_until(status, elapsed, timeout, "start", |s| {
                    s.state == ClusterHealth::Normal
                })
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    fn stop_cluster(&mut self, mode: StopMode, timeout: Duration, result: StepResult) -> Step {
        match (self.phase, result) {
            // Ask the om_monitors first: with none answering nothing can be stopped, and telling
            // the leader "stopping" would only halt arbitration for nothing.
            (Phase::Start, _) => {
                self.phase = Phase::CheckedMonitors;
                Step::Monitors {
                    nodes: self.nodes.clone(),
                    req: MonitorRequest::Status,
                }
            }
            // Then tell the leader, so arbitration halts before instances go down (§2).
            (Phase::CheckedMonitors, StepResult::Monitors(answers)) => {
                if let Some(msg) = failed(&self.nodes, &answers)
                    && answers.iter().all(|(_, a)| a.is_err())
                {
                    return Step::Failed(format!(
                        "no node's om_monitor answered, nothing was stopped: {msg}; \
                         check that om_monitor runs on the nodes (systemd unit or cron line)"
                    ));
                }
                self.phase = Phase::LeaderTold;
                Step::Leader(CtlRequest::ClusterStopping)
            }
            (Phase::LeaderTold, StepResult::Leader(_)) => {
                self.phase = Phase::FlagsWritten;
                Step::Monitors {
                    nodes: self.nodes.clone(),
                    req: MonitorRequest::WriteFlag {
                        flag: Flag::ClusterManualStart,
                        mode,
                    },
                }
            }
            (Phase::FlagsWritten, StepResult::Monitors(answers)) => {
                match failed(&self.nodes, &answers) {
                    Some(msg) if answers.iter().all(|(_, a)| a.is_err()) => Step::Failed(format!(
                        "no node's om_monitor took the stop flag, nothing was stopped: {msg}; \
                         the leader was told the cluster is stopping (arbitration halted): \
                         run cm_ctl start to resume it"
                    )),
                    Some(msg) => Step::Failed(format!(
                        "the stop flag could not be written everywhere: {msg}; nodes that got it are stopping"
                    )),
                    None => {
                        self.phase = Phase::Polling;
                        Step::Monitors {
                            nodes: self.nodes.clone(),
                            req: MonitorRequest::Status,
                        }
                    }
                }
            }
            (Phase::Polling, StepResult::Monitors(answers)) => {
                let running: Vec<NodeId> = answers
                    .iter()
                    .filter(|(_, a)| {
                        matches!(
                            a,
                            Ok(MonitorReply::Status {
                                agent_running: true,
                                ..
                            })
                        )
                    })
                    .map(|(n, _)| *n)
                    .collect();
                self.agents_running.clone_from(&running);
                if running.is_empty() {
                    Step::Done("cluster stopped".into())
                } else {
                    Step::PollStatus {
                        after: POLL_INTERVAL,
                    }
                }
            }
            (Phase::Polling, StepResult::Status { elapsed, .. }) => {
                if elapsed >= timeout {
                    Step::Failed(format!(
                        "stop did not finish within {} s; agents still running",
                        timeout.as_secs()
                    ))
                } else {
                    Step::Monitors {
                        nodes: self.nodes.clone(),
                        req: MonitorRequest::Status,
                    }
                }
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    fn start_instances(&mut self, timeout: Duration, result: StepResult) -> Step {
        let instances = self.instances.clone();
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::FlagsWritten;
                self.flag_step(true, StopMode::Fast)
            }
            (Phase::FlagsWritten, StepResult::Monitors(answers)) => {
                if let Some(msg) = failed(&self.nodes, &answers) {
                    return Step::Failed(format!("could not remove the stop flag: {msg}"));
                }
                self.phase = Phase::Polling;
                Step::PollStatus {
                    after: POLL_INTERVAL,
                }
            }
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                poll_until(status, elapsed, timeout, "start", |s| {
                    instances.iter().all(|i| instance_up(s, *i))
                })
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    fn stop_instances(&mut self, mode: StopMode, timeout: Duration, result: StepResult) -> Step {
        let instances = self.instances.clone();
        match (self.phase, result) {
            (Phase::Start, _) => {
                self.phase = Phase::FlagsWritten;
                self.flag_step(false, mode)
            }
            (Phase::FlagsWritten, StepResult::Monitors(answers)) => {
                if let Some(msg) = failed(&self.nodes, &answers) {
                    return Step::Failed(format!("could not write the stop flag: {msg}"));
                }
                self.phase = Phase::Polling;
                Step::PollStatus {
                    after: POLL_INTERVAL,
                }
            }
            (Phase::Polling, StepResult::Status { status, elapsed }) => {
                poll_until(status, elapsed, timeout, "stop", |s| {
                    instances.iter().all(|i| instance_stopped(s, *i))
                })
            }
            _ => Step::Failed("internal: unexpected step result".into()),
        }
    }

    /// One monitor request per instance is folded into one step per node: the node's flags for
    /// every chosen instance (the executor sends them in order).
    fn flag_step(&self, remove: bool, mode: StopMode) -> Step {
        let flag = match self.instances.as_slice() {
            [one] => Flag::InstanceManualStart(*one),
            _ => Flag::ClusterManualStart,
        };
        let req = match (remove, self.instances.len()) {
            (true, 1) => MonitorRequest::RemoveFlag { flag },
            (true, _) => MonitorRequest::RemoveAllManualStart,
            (false, 1) => MonitorRequest::WriteFlag { flag, mode },
            // A whole node: the node's cluster flag stops every local instance and its agent.
            (false, _) => MonitorRequest::WriteFlag {
                flag: Flag::ClusterManualStart,
                mode,
            },
        };
        Step::Monitors {
            nodes: self.nodes.clone(),
            req,
        }
    }
}

fn leader_outcome(r: Result<CtlReply, String>) -> Step {
    match r {
        Ok(CtlReply::Refused(why)) => Step::Failed(format!("refused: {why}")),
        Ok(CtlReply::SwitchoverAll { refused, .. }) if !refused.is_empty() => {
            let why: Vec<String> = refused
                .iter()
                .map(|r| format!("group {}: {}", r.group.0, r.refusal))
                .collect();
            Step::Failed(format!("refused: {}", why.join("; ")))
        }
        Ok(_) => Step::Done("done".into()),
        Err(e) => Step::Failed(format!(
            "can't reach the cm_server leader: {e}. Maybe cm_server is not running, or the \
             cluster has no leader; try again"
        )),
    }
}

fn poll_until(
    status: Result<Box<ClusterStatus>, String>,
    elapsed: Duration,
    timeout: Duration,
    what: &str,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Step {
    if status.as_ref().is_ok_and(|s| done(s)) {
        return Step::Done(format!("{what} succeeded"));
    }
    if elapsed >= timeout {
        let missing = waiting_for(&status);
        let detail = match &status {
            Ok(s) if missing.is_empty() => format!("cluster state {}", s.state),
            Ok(s) => format!("cluster state {}: {missing}", s.state),
            Err(_) => missing,
        };
        return Step::Failed(format!(
            "{what} did not finish within {} s ({detail}); check `cm_ctl query -Cv`",
            timeout.as_secs()
        ));
    }
    Step::PollStatus {
        after: POLL_INTERVAL,
    }
}

/// The end of the build of `instance`, if the agent's reported outcome `b` shows it, given
/// the outcome `base` reported before the request: a build counted above `base` by the same
/// agent (or any build a restarted agent finished) is its outcome; a restarted agent with no
/// build to run lost it (the request is not sent again), so waiting longer is pointless.
fn build_seen(base: &BuildOutcome, b: &BuildOutcome, instance: InstanceId) -> Option<Step> {
    let restarted = matches!(
        (base.agent_incarnation, b.agent_incarnation),
        (Some(before), Some(now)) if before != now
    );
    if b.count > base.count && !restarted || b.count > 0 && restarted {
        return Some(match &b.error {
            None => Step::Done(format!("build of {} done", instance.0)),
            Some(e) => Step::Failed(format!("the build of {} failed: {e}", instance.0)),
        });
    }
    (restarted && !b.pending).then(|| {
        Step::Failed(format!(
            "the build of {} was lost: its cm_agent restarted before reporting an outcome and \
             has no build to run; the data directory may be incomplete. Check `cm_ctl query -Cv` \
             and run `cm_ctl build` again",
            instance.0
        ))
    })
}

/// What a poll shows of the switchover to `instance`.
enum SwitchoverSeen {
    /// Still going on: what it waits for.
    Waiting(String),
    /// Ended: the final step.
    Ended(Step),
}

fn group_of(s: &ClusterStatus, instance: InstanceId) -> Option<&crate::ctl::GroupStatus> {
    s.groups
        .iter()
        .find(|g| g.members.iter().any(|m| m.instance == instance))
}

/// The switchover to `instance` as a status shows it: still pending (and waiting for what),
/// or ended — a `last_switchover` to it at a term above `base`, the group's term before the
/// request.
fn switchover_seen(s: &ClusterStatus, instance: InstanceId, base: Option<Term>) -> SwitchoverSeen {
    let Some(g) = group_of(s, instance) else {
        return SwitchoverSeen::Ended(Step::Failed(format!(
            "instance {} is in no group of the cluster status",
            instance.0
        )));
    };
    if let Some(p) = g.switchover.as_ref().filter(|p| p.target == instance) {
        let row = |i: InstanceId| g.members.iter().find(|m| m.instance == i);
        let what = match (row(p.from), row(p.target)) {
            (Some(f), _) if f.role == DnRole::Primary => {
                format!("waiting for the old primary {} to shut down", p.from.0)
            }
            (_, Some(t)) if t.role == DnRole::Primary => {
                format!("waiting for {} to report the promotion", p.target.0)
            }
            (_, Some(t)) => format!(
                "waiting for {} to reach the old primary's final position (at LSN {}, timeline {})",
                p.target.0, t.lsn, t.position.timeline.0
            ),
            _ => format!("waiting for {}", p.target.0),
        };
        return SwitchoverSeen::Waiting(format!("{what}; term {}", p.term.0));
    }
    match g.last_switchover.as_ref() {
        Some(e) if e.target == instance && base.is_none_or(|b| e.term > b) => {
            let step = match e.result {
                SwitchoverResult::Promoted => Step::Done(format!(
                    "switchover done: {} is the primary of group {} (term {})",
                    e.target.0, g.group.0, e.term.0
                )),
                SwitchoverResult::Aborted => Step::Failed(format!(
                    "switchover aborted: {} could not take over (its process stopped, its agent \
                     fell silent, or it did not catch up in time); {} stays primary at a new \
                     term. The cm_server leader's log says which",
                    e.target.0, e.from.0
                )),
                SwitchoverResult::TimedOut => Step::Failed(format!(
                    "switchover to {} timed out on the cm_server; arbitration chose the primary: \
                     check `cm_ctl query -Cv`",
                    e.target.0
                )),
            };
            SwitchoverSeen::Ended(step)
        }
        _ => SwitchoverSeen::Waiting("waiting for the cm_server to start the switchover".into()),
    }
}

/// What a waiting cm_ctl is still waiting for, from the last poll: one short phrase an
/// operator can act on ("no cm_server leader yet", "group 1: no primary yet, waiting for 6002,
/// 6003 to report", "6003 Building", "6002 Standby Catchup"). Empty when nothing is missing.
pub fn waiting_for(status: &Result<Box<ClusterStatus>, String>) -> String {
    let s = match status {
        Ok(s) => s,
        Err(e) => return format!("no cm_server leader yet ({e})"),
    };
    let mut missing = Vec::new();
    if s.paused {
        missing.push("the cluster is paused (`cm_ctl resume`)".to_string());
    }
    for g in &s.groups {
        let unheard: Vec<String> = g
            .members
            .iter()
            .filter(|m| matches!(m.role, DnRole::Unknown))
            .map(|m| m.instance.0.to_string())
            .collect();
        let primaries = g
            .members
            .iter()
            .filter(|m| m.role == DnRole::Primary)
            .count();
        if primaries == 0 {
            missing.push(if unheard.is_empty() {
                format!(
                    "group {}: no primary yet (arbitration: Lock1 quorum not reached)",
                    g.group.0
                )
            } else {
                format!(
                    "group {}: no primary yet, waiting for DN {} to report",
                    g.group.0,
                    unheard.join(", ")
                )
            });
        } else if !unheard.is_empty() {
            missing.push(format!("waiting for DN {} to report", unheard.join(", ")));
        }
        for m in &g.members {
            match (m.role, m.state) {
                (DnRole::Unknown, _) => {}
                (_, DbState::Building) => missing.push(format!("building {}", m.instance.0)),
                (_, DbState::BuildFailed) => {
                    missing.push(format!("build of {} failed", m.instance.0));
                }
                (DnRole::Primary | DnRole::Standby, DbState::Normal) if !m.read_only => {
                    if let Some(ms) = m.not_streaming_ms {
                        missing.push(format!(
                            "{} not streaming for {} s",
                            m.instance.0,
                            ms / 1000
                        ));
                    }
                }
                (DnRole::Primary | DnRole::Standby, DbState::Normal) => {
                    missing.push(format!("{} is read-only", m.instance.0));
                }
                (role, state) => missing.push(format!("{} {role} {state}", m.instance.0)),
            }
        }
        // Only meaningful once the group has a primary to acknowledge them.
        if primaries > 0 && !g.commits_acknowledged {
            missing.push(format!("group {}: commits not acknowledged", g.group.0));
        }
    }
    missing.join("; ")
}

/// Why no cm_server leader answers, from the om_monitors' status answers (they still answer
/// when the cluster is stopped): `None` when no om_monitor answered either (then the
/// connection error is the news).
pub fn explain_no_leader(answers: &[(NodeId, Result<MonitorReply, String>)]) -> Option<String> {
    let mut stopped = Vec::new();
    let mut no_agent = Vec::new();
    let mut running = Vec::new();
    let mut silent = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(MonitorReply::Status { flags, .. }) if flags.cluster_manual_start.is_some() => {
                stopped.push(node.0.to_string());
            }
            Ok(MonitorReply::Status {
                agent_running: false,
                agent_error,
                ..
            }) => no_agent.push(match agent_error {
                Some(e) => format!("{} (it exits with: {e})", node.0),
                None => node.0.to_string(),
            }),
            Ok(_) => running.push(node.0.to_string()),
            Err(_) => silent.push(node.0.to_string()),
        }
    }
    if stopped.is_empty() && no_agent.is_empty() && running.is_empty() {
        return None;
    }
    let silent_note = if silent.is_empty() {
        String::new()
    } else {
        format!(" (om_monitor did not answer on node {})", silent.join(", "))
    };
    if !stopped.is_empty() && no_agent.is_empty() && running.is_empty() {
        return Some(format!(
            "the cluster is stopped (`cm_ctl stop` left its stop flag on node {}){silent_note}; \
             start it with `cm_ctl start`",
            stopped.join(", ")
        ));
    }
    let mut parts = Vec::new();
    if !stopped.is_empty() {
        parts.push(format!(
            "stopped by `cm_ctl stop` on node {}",
            stopped.join(", ")
        ));
    }
    if !no_agent.is_empty() {
        parts.push(format!(
            "no cm_agent runs on node {} (om_monitor is starting it; its log says why it exits)",
            no_agent.join(", ")
        ));
    }
    if !running.is_empty() {
        parts.push(format!("cm_agent runs on node {}", running.join(", ")));
    }
    Some(format!(
        "no cm_server leader answers: {}{silent_note}",
        parts.join("; ")
    ))
}

/// Nodes an operator must look at, from the om_monitors' status answers: a node whose
/// cm_agent is not running (and was not stopped by `cm_ctl stop`), with the agent's last error,
/// or whose om_monitor did not answer. Empty when every node is fine.
pub fn node_problems(answers: &[(NodeId, Result<MonitorReply, String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(MonitorReply::Status {
                agent_running: false,
                flags,
                agent_error,
                ..
            }) if flags.cluster_manual_start.is_none() => out.push(match agent_error {
                Some(e) => format!(
                    "node {}: cm_agent is not running; it exits with: {e}",
                    node.0
                ),
                None => format!("node {}: cm_agent is not running", node.0),
            }),
            Ok(_) => {}
            Err(e) => out.push(format!("node {}: {e}", node.0)),
        }
    }
    out
}

fn unreachable(
    nodes: &[NodeId],
    answers: &[(NodeId, Result<MonitorReply, String>)],
) -> Option<String> {
    let bad: Vec<String> = nodes
        .iter()
        .filter(|n| !answers.iter().any(|(a, r)| a == *n && r.is_ok()))
        .map(|n| format!("node {}", n.0))
        .collect();
    (!bad.is_empty()).then(|| format!("om_monitor unreachable on {}", bad.join(", ")))
}

fn failed(nodes: &[NodeId], answers: &[(NodeId, Result<MonitorReply, String>)]) -> Option<String> {
    let mut bad = Vec::new();
    for n in nodes {
        match answers.iter().find(|(a, _)| a == n) {
            Some((_, Ok(MonitorReply::Done | MonitorReply::Status { .. }))) => {}
            Some((_, Ok(MonitorReply::Failed(why)))) => bad.push(format!("node {}: {why}", n.0)),
            Some((_, Err(e))) => bad.push(format!("node {}: {e}", n.0)),
            None => bad.push(format!("node {}: no answer", n.0)),
        }
    }
    (!bad.is_empty()).then(|| bad.join("; "))
}

fn instance_row(s: &ClusterStatus, i: InstanceId) -> Option<&crate::ctl::DnRow> {
    s.groups
        .iter()
        .flat_map(|g| g.members.iter())
        .find(|m| m.instance == i)
}

fn instance_up(s: &ClusterStatus, i: InstanceId) -> bool {
    instance_row(s, i).is_some_and(|r| {
        matches!(r.role, DnRole::Primary | DnRole::Standby) && r.state == DbState::Normal
    }) || resource_state(s, i) == Some(ResourceState::Online)
}

fn instance_stopped(s: &ClusterStatus, i: InstanceId) -> bool {
    instance_row(s, i)
        .is_some_and(|r| r.role == DnRole::Down || r.state == DbState::ManuallyStopped)
        || resource_state(s, i) == Some(ResourceState::Stopped)
}

/// A custom resource instance's state in the status (§14: `start|stop -I`).
fn resource_state(s: &ClusterStatus, i: InstanceId) -> Option<ResourceState> {
    s.resources
        .iter()
        .find(|r| r.instance == i)
        .map(|r| r.state)
}

#[cfg(test)]
#[path = "ctl_plan_tests.rs"]
mod tests;
