//! When triggers fire, with exact inputs; and that they change no decision: the same inputs
//! with and without triggers give the same commands, less the `RunTrigger`s.

use crate::agent::testkit::*;

const HOOKS: &str = "event_triggers = { on_start = \"/h/start\", on_stop = \"/h/stop\", \
     on_failover = \"/h/failover\", on_switchover = \"/h/switchover\", \
     on_role_change = \"/h/role\" }\n";

fn hooked() -> Agent {
    Agent::new(&config(&format!("{HOOKS}{ONE_DN}")), ME, 1, None).expect("agent")
}

fn trig(program: &str, event: TriggerEvent, role: DnRole, term: u64) -> AgentCommand {
    AgentCommand::RunTrigger(TriggerRun {
        program: program.into(),
        event,
        instance: DN,
        role,
        term: Term(term),
    })
}

fn triggers(cmds: &[AgentCommand]) -> Vec<AgentCommand> {
    cmds.iter()
        .filter(|c| matches!(c, AgentCommand::RunTrigger(_)))
        .cloned()
        .collect()
}

fn without_triggers(cmds: Vec<AgentCommand>) -> Vec<AgentCommand> {
    cmds.into_iter()
        .filter(|c| !matches!(c, AgentCommand::RunTrigger(_)))
        .collect()
}

/// A Failover{4} for `why`, through its term check, to the status query that finds the DN
/// Primary; every step's commands in order.
fn promotion_run(mut a: Agent, why: PromotionReason) -> Vec<Vec<AgentCommand>> {
    let mut steps = Vec::new();
    let cmds = a.step(
        ms(10),
        command(
            CMS[0],
            1,
            1,
            CmsCommand::Failover {
                term: Term(4),
                reason: why,
            },
        ),
    );
    steps.push(cmds.clone());
    steps.push(a.step(ms(20), write_ok(persist_token(&cmds))));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    for (at, n) in [(30, CMS[1]), (40, CMS[2])] {
        let reply = Msg::TermCheckReply {
            nonce,
            highest: QuorumTerm(1),
            weight: 1,
        };
        steps.push(a.step(ms(at), from_cms(n, 1, reply)));
    }
    let promote = action_op(steps.last().expect("promote"));
    steps.push(a.step(ms(900), done(promote)));
    let cmds = tick(&mut a, ms(1000));
    let (s, q) = (sample_op(&cmds, DN), query_op(&cmds, DN));
    steps.push(cmds);
    steps.push(a.step(ms(1001), sampled(s, vec![ProcState::Running])));
    steps.push(a.step(ms(1002), queried(q, Ok(status(DnRole::Primary)))));
    steps
}

/// A Failover{4} for a failover of a standby.
fn failover_run(a: Agent) -> Vec<Vec<AgentCommand>> {
    promotion_run(a, PromotionReason::Failover)
}

/// The triggers each step fired.
fn fired_per_step(steps: &[Vec<AgentCommand>]) -> Vec<Vec<AgentCommand>> {
    steps.iter().map(|s| triggers(s)).collect()
}

#[test]
fn a_cluster_start_fires_no_on_failover_but_one_role_change() {
    // The first primary of a starting cluster, from a DN started pending (no Primary/Standby
    // role seen before): on_role_change, never on_failover.
    for (from, why) in [
        (DnRole::Pending, PromotionReason::Start),
        (DnRole::Standby, PromotionReason::Start),
    ] {
        let fired = fired_per_step(&promotion_run(boot_with(hooked(), from), why));
        let last = fired.len() - 1;
        assert!(
            fired[..last].iter().all(Vec::is_empty),
            "{from:?}: {fired:?}"
        );
        assert_eq!(
            fired[last],
            vec![trig(
                "/h/role",
                TriggerEvent::RoleChange,
                DnRole::Primary,
                4
            )],
            "{from:?}"
        );
    }
    // Phony-dead and disk promotions are failovers; a Failover restoring the old primary
    // after a switchover's abort is the switchover's.
    for (why, hook, event) in [
        (
            PromotionReason::PhonyDead,
            "/h/failover",
            TriggerEvent::Failover,
        ),
        (PromotionReason::Disk, "/h/failover", TriggerEvent::Failover),
        (
            PromotionReason::Switchover,
            "/h/switchover",
            TriggerEvent::Switchover,
        ),
    ] {
        let fired = fired_per_step(&promotion_run(boot_with(hooked(), DnRole::Standby), why));
        assert_eq!(
            fired.last().expect("steps"),
            &vec![
                trig("/h/role", TriggerEvent::RoleChange, DnRole::Primary, 4),
                trig(hook, event, DnRole::Primary, 4),
            ],
            "{why:?}"
        );
    }
}

#[test]
fn a_failover_fires_role_change_and_on_failover_once_the_dn_is_seen_primary() {
    let steps = failover_run(boot_with(hooked(), DnRole::Standby));
    let fired: Vec<Vec<AgentCommand>> = steps.iter().map(|s| triggers(s)).collect();
    let last = fired.len() - 1;
    assert!(fired[..last].iter().all(Vec::is_empty), "{fired:?}");
    assert_eq!(
        fired[last],
        vec![
            trig("/h/role", TriggerEvent::RoleChange, DnRole::Primary, 4),
            trig("/h/failover", TriggerEvent::Failover, DnRole::Primary, 4),
        ]
    );
    // The triggers come last in their step: after every decision of it.
    assert!(matches!(
        steps[last].last(),
        Some(AgentCommand::RunTrigger(_))
    ));
}

/// A trigger cannot delay or change a decision: it has no answer, and the commands of every
/// step, RunTrigger aside, are those of an agent without triggers — whatever the script does
/// (here it never finishes: nothing ever reports on it).
#[test]
fn triggers_leave_every_command_and_instant_of_a_failover_unchanged() {
    let plain = failover_run(boot(DnRole::Standby));
    let hooked_run = failover_run(boot_with(hooked(), DnRole::Standby));
    let stripped: Vec<Vec<AgentCommand>> = hooked_run.into_iter().map(without_triggers).collect();
    assert_eq!(stripped, plain);
    assert!(plain.iter().flatten().any(|c| matches!(
        c,
        AgentCommand::RunDnAction {
            action: DnAction::Promote { .. },
            ..
        }
    )));
}

#[test]
fn a_switchover_fires_on_switchover_with_its_term() {
    let mut a = boot_with(hooked(), DnRole::Standby);
    let cmds = a.step(
        ms(10),
        command(CMS[0], 1, 1, CmsCommand::Switchover { term: Term(2) }),
    );
    a.step(ms(20), write_ok(persist_token(&cmds)));
    let nonce = a.insts[&DN].term_check.as_ref().expect("check").nonce;
    let reply = Msg::TermCheckReply {
        nonce,
        highest: QuorumTerm(1),
        weight: 1,
    };
    a.step(ms(30), from_cms(CMS[1], 1, reply.clone()));
    a.step(ms(40), from_cms(CMS[2], 1, reply));
    let cmds = tick(&mut a, ms(1000));
    let q = query_op(&cmds, DN);
    let fired = triggers(&a.step(ms(1002), queried(q, Ok(status(DnRole::Primary)))));
    assert_eq!(
        fired,
        vec![
            trig("/h/role", TriggerEvent::RoleChange, DnRole::Primary, 2),
            trig(
                "/h/switchover",
                TriggerEvent::Switchover,
                DnRole::Primary,
                2
            ),
        ]
    );
}

#[test]
fn stop_and_start_fire_on_the_samples_that_see_them_with_the_last_known_role() {
    let mut a = boot_with(hooked(), DnRole::Primary);
    let cmds = tick(&mut a, ms(1000));
    let out = a.step(ms(1001), sampled(sample_op(&cmds, DN), vec![]));
    assert_eq!(
        triggers(&out),
        vec![trig("/h/stop", TriggerEvent::Stop, DnRole::Primary, 0)]
    );
    // The agent starts it again (a decision no trigger changes).
    assert!(out.iter().any(|c| matches!(
        c,
        AgentCommand::RunDnAction {
            action: DnAction::StartPending,
            ..
        }
    )));
    let start = action_op(&out);
    a.step(ms(1500), done(start));
    let cmds = tick(&mut a, ms(2000));
    let out = a.step(
        ms(2001),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    assert_eq!(
        triggers(&out),
        vec![trig("/h/start", TriggerEvent::Start, DnRole::Primary, 0)]
    );
    // Back as a standby: the role changed.
    let out = a.step(
        ms(2002),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Standby))),
    );
    assert_eq!(
        triggers(&out),
        vec![trig(
            "/h/role",
            TriggerEvent::RoleChange,
            DnRole::Standby,
            0
        )]
    );
    // Same state next round: nothing fires.
    let cmds = tick(&mut a, ms(3000));
    let mut out = a.step(
        ms(3001),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    out.extend(a.step(
        ms(3002),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Standby))),
    ));
    assert_eq!(triggers(&out), vec![]);
}

#[test]
fn the_first_sample_after_the_agent_starts_fires_nothing_and_unconfigured_events_are_silent() {
    let mut a = Agent::new(
        &config(&format!(
            "event_triggers = {{ on_stop = \"/h/stop\" }}\n{ONE_DN}"
        )),
        ME,
        1,
        None,
    )
    .expect("agent");
    let cmds = a.step(ms(0), AgentInput::Tick);
    let out = a.step(
        ms(1),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    assert_eq!(triggers(&out), vec![]);
    let out = a.step(
        ms(2),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Primary))),
    );
    assert_eq!(triggers(&out), vec![]);
    let cmds = tick(&mut a, ms(1000));
    a.step(
        ms(1001),
        sampled(sample_op(&cmds, DN), vec![ProcState::Running]),
    );
    let out = a.step(
        ms(1002),
        queried(query_op(&cmds, DN), Ok(status(DnRole::Standby))),
    );
    assert_eq!(triggers(&out), vec![], "on_role_change is not configured");
}

#[test]
fn a_trigger_runs_with_event_instance_role_and_term_as_arguments() {
    let run = TriggerRun {
        program: "/h/failover".into(),
        event: TriggerEvent::Failover,
        instance: InstanceId(6002),
        role: DnRole::Primary,
        term: Term(7),
    };
    assert_eq!(run.args(), vec!["on_failover", "6002", "primary", "7"]);
}
