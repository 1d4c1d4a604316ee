//! The simulated operator: runs cm-core's own cm_ctl planner (`ctl_plan`) in virtual time,
//! talking to om_monitor control ports and the CMS leader over the simulated network, exactly
//! as cm_ctl does over TCP.

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::ctl::{CtlReply, CtlRequest, MonitorReply, MonitorRequest, Refusal};
use cm_core::ctl_plan::{Operation, Plan, Step, StepResult};
use cm_core::dn::StopMode;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_core::{InstanceId, Instant, NodeId, QuorumTerm};

use crate::world::{CTL_NODE, Event, World};

/// How long cm_ctl waits for one answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Timer events of the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpEvent {
    /// A step's answers are due.
    Timeout { plan: usize, step: u64 },
    /// A poll's delay passed.
    Poll { plan: usize, step: u64 },
    /// After the heal: try the failed starts and resumes again.
    Retry,
}

#[derive(Debug)]
enum Waiting {
    Idle,
    Monitors {
        pending: Vec<NodeId>,
        answers: Vec<(NodeId, Result<MonitorReply, String>)>,
    },
    Leader {
        asked: usize,
        refused: usize,
        poll: bool,
    },
}

/// The newest start/stop (per target) or pause/resume the operator asked for, and whether it
/// failed: at the heal it retries a failed start or resume, as an operator would.
#[derive(Clone, Debug)]
struct Intent {
    command: String,
    node: Option<NodeId>,
    instance: Option<InstanceId>,
    seq: u64,
    failed: bool,
}

/// The key of what an intent is about: pause/resume the cluster, or start/stop one target.
fn intent_key(command: &str, node: Option<NodeId>, instance: Option<InstanceId>) -> Option<String> {
    match command {
        "pause" | "resume" => Some("pause".into()),
        "start" | "stop" => Some(format!("{node:?}/{instance:?}")),
        _ => None,
    }
}

#[derive(Debug)]
struct Active {
    label: String,
    /// (intent key, its sequence number).
    intent: Option<(String, u64)>,
    plan: Plan,
    step: u64,
    started: Instant,
    waiting: Waiting,
    finished: bool,
}

/// The operator's running cm_ctl commands.
#[derive(Debug)]
pub struct Operator {
    config: ClusterConfig,
    active: Vec<Active>,
    /// Request id → (plan, step): a late answer to an earlier step is not this step's answer.
    requests: BTreeMap<u64, (usize, u64)>,
    next_id: u64,
    /// Outcomes of finished commands: (label, Ok(message) | Err(message)).
    pub outcomes: Vec<(String, Result<String, String>)>,
    intents: BTreeMap<String, Intent>,
    next_intent: u64,
    /// Retries left after the heal (`None` before it).
    retries_left: Option<u32>,
}

/// How often, and how far apart, the operator retries after the heal.
const RETRIES: u32 = 12;
const RETRY_EVERY: Duration = Duration::from_secs(5);

impl Operator {
    /// An operator for a cluster.
    pub fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            active: Vec::new(),
            requests: BTreeMap::new(),
            next_id: 0,
            outcomes: Vec::new(),
            intents: BTreeMap::new(),
            next_intent: 0,
            retries_left: None,
        }
    }
}

fn ctl_ep() -> Endpoint {
    Endpoint {
        node: CTL_NODE,
        role: Role::Ctl,
    }
}

/// Starts a cm_ctl command from a scenario's `ctl` action.
pub(crate) fn start(
    w: &mut World,
    command: &str,
    node: Option<NodeId>,
    instance: Option<InstanceId>,
    mode: Option<&str>,
) {
    let mode = mode.and_then(StopMode::parse).unwrap_or(StopMode::Fast);
    let timeout = Duration::from_secs(300);
    let op = match (command, node) {
        ("stop", None) => Operation::StopCluster { mode, timeout },
        ("stop", Some(node)) => Operation::StopInstance {
            node,
            instance,
            mode,
            timeout,
        },
        ("start", None) => Operation::StartCluster { timeout },
        ("start", Some(node)) => Operation::StartInstance {
            node,
            instance,
            timeout,
        },
        ("pause", _) => Operation::Leader(CtlRequest::Pause),
        ("readd", Some(node)) => Operation::Leader(CtlRequest::ReaddCms { node }),
        ("resume", _) => Operation::Leader(CtlRequest::Resume),
        ("switchover", _) => match instance {
            Some(instance) => Operation::Switchover {
                instance,
                fast: false,
                wait: Some(Duration::from_secs(120)),
            },
            None => Operation::Leader(CtlRequest::SwitchoverAll),
        },
        ("build", _) => match instance {
            Some(instance) => Operation::Build {
                instance,
                full: false,
                timeout,
            },
            None => {
                w.operator
                    .outcomes
                    .push(("cm_ctl build".into(), Err("build needs an instance".into())));
                return;
            }
        },
        (other, _) => {
            w.operator
                .outcomes
                .push((other.into(), Err("unknown command".into())));
            return;
        }
    };
    let label = format!("cm_ctl {command}");
    let intent = intent_key(command, node, instance).map(|key| {
        w.operator.next_intent += 1;
        let seq = w.operator.next_intent;
        let it = Intent {
            command: command.to_owned(),
            node,
            instance,
            seq,
            failed: false,
        };
        w.operator.intents.insert(key.clone(), it);
        (key, seq)
    });
    let plan = match Plan::new(&w.operator.config, op) {
        Ok(p) => p,
        Err(e) => {
            w.note(format!("{label}: {e}"));
            mark_failed(w, intent.as_ref());
            w.operator.outcomes.push((label, Err(e)));
            return;
        }
    };
    let now = w.now();
    w.operator.active.push(Active {
        label,
        intent,
        plan,
        step: 0,
        started: now,
        waiting: Waiting::Idle,
        finished: false,
    });
    let idx = w.operator.active.len() - 1;
    advance(w, idx, StepResult::Begin);
}

fn advance(w: &mut World, idx: usize, result: StepResult) {
    let Some(a) = w.operator.active.get_mut(idx) else {
        return;
    };
    if a.finished {
        return;
    }
    a.step += 1;
    a.waiting = Waiting::Idle;
    let step = a.plan.next(result);
    let step_id = a.step;
    match step {
        Step::Done(msg) => finish(w, idx, Ok(msg)),
        Step::Failed(msg) => finish(w, idx, Err(msg)),
        Step::Monitors { nodes, req } => send_monitors(w, idx, step_id, nodes, req),
        Step::Leader(req) => send_leader(w, idx, step_id, req, false),
        Step::PollStatus { after } => {
            w.queue.push_after(
                after,
                Event::Operator(OpEvent::Poll {
                    plan: idx,
                    step: step_id,
                }),
            );
        }
    }
}

fn mark_failed(w: &mut World, intent: Option<&(String, u64)>) {
    if let Some((key, seq)) = intent
        && let Some(it) = w.operator.intents.get_mut(key)
        && it.seq == *seq
    {
        it.failed = true;
    }
}

/// At the heal: re-issues every start or resume that is the newest intent for its target and
/// failed (no leader answered, a monitor was unreachable), as an operator would once the
/// cluster answers again, and again every [`RETRY_EVERY`] while one fails (at most
/// [`RETRIES`] times: a node's om_monitor may still be booting). A command that succeeded and
/// whose effect was lost later is not retried: that is the core's to show.
pub(crate) fn retry_failed(w: &mut World) {
    let left = w.operator.retries_left.get_or_insert(RETRIES);
    if *left == 0 {
        return;
    }
    *left -= 1;
    let retry: Vec<Intent> = w
        .operator
        .intents
        .values()
        .filter(|it| it.failed && (it.command == "start" || it.command == "resume"))
        .cloned()
        .collect();
    for it in retry {
        w.note(format!("operator retries its failed {}", it.command));
        start(w, &it.command, it.node, it.instance, None);
    }
}

fn finish(w: &mut World, idx: usize, outcome: Result<String, String>) {
    let (label, intent) = match w.operator.active.get_mut(idx) {
        Some(a) => {
            a.finished = true;
            (a.label.clone(), a.intent.clone())
        }
        None => return,
    };
    if outcome.is_err() {
        mark_failed(w, intent.as_ref());
        if w.operator.retries_left.is_some() {
            w.queue
                .push_after(RETRY_EVERY, Event::Operator(OpEvent::Retry));
        }
    }
    w.note(format!("{label}: {outcome:?}"));
    w.operator.outcomes.push((label, outcome));
}

fn send(w: &mut World, to: Endpoint, msg: Msg) -> bool {
    let from = ctl_ep();
    if w.inc_of(to).is_none() || !w.net.endpoints_up(from, to) {
        return false;
    }
    let conn = match w.net.conn(from, to) {
        Some(c) => c,
        None => w.net.open(from, to),
    };
    let now = w.now();
    let envelope = Envelope {
        from,
        to,
        quorum_term: QuorumTerm(0),
        msg,
    };
    for &at in w.net.plan_frame(now, from, to, &mut w.rng).iter() {
        w.queue.push(
            at,
            Event::Frame {
                from,
                to,
                conn,
                envelope: envelope.clone(),
            },
        );
    }
    true
}

fn next_id(w: &mut World, idx: usize, step: u64) -> u64 {
    w.operator.next_id += 1;
    let id = w.operator.next_id;
    w.operator.requests.insert(id, (idx, step));
    id
}

fn send_monitors(w: &mut World, idx: usize, step: u64, nodes: Vec<NodeId>, req: MonitorRequest) {
    let mut pending = Vec::new();
    let mut answers = Vec::new();
    for n in nodes {
        let id = next_id(w, idx, step);
        let msg = Msg::MonitorRequest {
            id,
            req: req.clone(),
        };
        if send(w, Endpoint::monitor(n), msg) {
            pending.push(n);
        } else {
            answers.push((n, Err(format!("node {}: om_monitor unreachable", n.0))));
        }
    }
    let done = pending.is_empty();
    if let Some(a) = w.operator.active.get_mut(idx) {
        a.waiting = Waiting::Monitors { pending, answers };
    }
    if done {
        complete_monitors(w, idx);
    } else {
        w.queue.push_after(
            REPLY_TIMEOUT,
            Event::Operator(OpEvent::Timeout { plan: idx, step }),
        );
    }
}

fn complete_monitors(w: &mut World, idx: usize) {
    let Some(a) = w.operator.active.get_mut(idx) else {
        return;
    };
    let Waiting::Monitors { pending, answers } = std::mem::replace(&mut a.waiting, Waiting::Idle)
    else {
        return;
    };
    let mut answers = answers;
    for n in pending {
        answers.push((n, Err(format!("node {}: no answer within 3 s", n.0))));
    }
    answers.sort_by_key(|(n, _)| *n);
    advance(w, idx, StepResult::Monitors(answers));
}

fn send_leader(w: &mut World, idx: usize, step: u64, req: CtlRequest, poll: bool) {
    let mut asked = 0;
    for n in w.operator.config.cms_nodes() {
        let id = next_id(w, idx, step);
        if send(
            w,
            Endpoint::server(n),
            Msg::CtlRequest {
                id,
                req: req.clone(),
            },
        ) {
            asked += 1;
        }
    }
    if let Some(a) = w.operator.active.get_mut(idx) {
        a.waiting = Waiting::Leader {
            asked,
            refused: 0,
            poll,
        };
    }
    if asked == 0 {
        leader_result(w, idx, Err("no cm_server reachable".into()));
    } else {
        w.queue.push_after(
            REPLY_TIMEOUT,
            Event::Operator(OpEvent::Timeout { plan: idx, step }),
        );
    }
}

fn leader_result(w: &mut World, idx: usize, r: Result<CtlReply, String>) {
    let now = w.now();
    let Some(a) = w.operator.active.get_mut(idx) else {
        return;
    };
    let Waiting::Leader { poll, .. } = std::mem::replace(&mut a.waiting, Waiting::Idle) else {
        return;
    };
    let result = if poll {
        let status = match r {
            Ok(CtlReply::Status(s)) => Ok(s),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e),
        };
        StepResult::Status {
            status,
            elapsed: now - a.started,
        }
    } else {
        StepResult::Leader(r)
    };
    advance(w, idx, result);
}

/// A timer of the operator fired.
pub(crate) fn on_event(w: &mut World, e: OpEvent) {
    match e {
        OpEvent::Timeout { plan, step } => {
            let Some(a) = w.operator.active.get(plan) else {
                return;
            };
            if a.step != step || a.finished {
                return;
            }
            match a.waiting {
                Waiting::Monitors { .. } => complete_monitors(w, plan),
                Waiting::Leader { .. } => leader_result(
                    w,
                    plan,
                    Err("no cm_server leader answered within 3 s".into()),
                ),
                Waiting::Idle => {}
            }
        }
        OpEvent::Poll { plan, step } => {
            if w.operator
                .active
                .get(plan)
                .is_some_and(|a| a.step == step && !a.finished)
            {
                send_leader(w, plan, step, CtlRequest::Query, true);
            }
        }
        OpEvent::Retry => retry_failed(w),
    }
}

/// A frame reached cm_ctl.
pub(crate) fn on_frame(w: &mut World, envelope: Envelope) {
    let (id, from) = match &envelope.msg {
        Msg::MonitorReply { id, .. } | Msg::CtlReply { id, .. } => (*id, envelope.from),
        _ => return,
    };
    let Some(&(idx, step)) = w.operator.requests.get(&id) else {
        return;
    };
    let Some(a) = w.operator.active.get_mut(idx).filter(|a| a.step == step) else {
        return;
    };
    match (envelope.msg, &mut a.waiting) {
        (Msg::MonitorReply { reply, .. }, Waiting::Monitors { pending, answers }) => {
            if let Some(pos) = pending.iter().position(|n| *n == from.node) {
                pending.remove(pos);
                answers.push((from.node, Ok(reply)));
            }
            if pending.is_empty() {
                complete_monitors(w, idx);
            }
        }
        (Msg::CtlReply { reply, .. }, Waiting::Leader { asked, refused, .. }) => {
            let not_leader = matches!(
                reply,
                CtlReply::Refused(Refusal::NotLeader { .. } | Refusal::NoLease)
            );
            if not_leader {
                *refused += 1;
                if *refused >= *asked {
                    leader_result(w, idx, Err("no cm_server leads right now".into()));
                }
            } else {
                leader_result(w, idx, Ok(reply));
            }
        }
        _ => {}
    }
}
