//! The generic driver loop, driving a tiny machine defined here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm_core::io::{Machine, NetEvent};
use cm_core::msg::{Endpoint, Envelope, Msg};
use cm_core::{Instant, NodeId, QuorumTerm};
use cm_io::event_loop::{
    Clock, EventLoop, Executor, Flow, InputMap, Journal, MIN_TICK_GAP, StopReason,
    effective_deadline,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum In {
    Net(NetEvent),
    Tick,
    Ext(u32),
    Work(u32),
    Done(u32),
    Quit,
}

#[derive(Clone, Debug, PartialEq)]
enum Cmd {
    Note(String),
    StartWork(u32),
    Exit,
}

/// Notes every input it is fed; ticks only once its deadline has passed.
#[derive(Default)]
struct Toy {
    deadline: Option<Instant>,
    ticked_at: Option<Instant>,
    last_now: Instant,
    steps: u32,
}

impl Machine for Toy {
    type Input = In;
    type Command = Cmd;
    type Status = u32;

    fn step(&mut self, now: Instant, input: In) -> Vec<Cmd> {
        assert!(now >= self.last_now, "time went backwards");
        self.last_now = now;
        self.steps += 1;
        let note = |s: String| Cmd::Note(s);
        match input {
            In::Ext(n) => vec![note(format!("ext{n}a")), note(format!("ext{n}b"))],
            In::Work(n) => vec![Cmd::StartWork(n)],
            In::Done(n) => vec![note(format!("done{n}")), Cmd::Exit],
            In::Quit => vec![note("bye".into()), Cmd::Exit, note("after".into())],
            In::Tick => match self.deadline {
                Some(d) if now >= d => {
                    self.deadline = None;
                    self.ticked_at = Some(now);
                    vec![note("tick".into()), Cmd::Exit]
                }
                _ => vec![],
            },
            In::Net(NetEvent::FrameReceived { peer, .. }) => vec![note(format!("frame {peer}"))],
            In::Net(NetEvent::Closed { peer }) => vec![note(format!("closed {peer}")), Cmd::Exit],
            In::Net(other) => vec![note(format!("{other:?}"))],
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn status(&self) -> u32 {
        self.steps
    }
}

const MAP: InputMap<In> = InputMap {
    net: In::Net,
    tick: || In::Tick,
};

/// Records commands; runs "work" on another task and reports it back as an input.
struct Recorder {
    done: Vec<Cmd>,
    inputs: mpsc::Sender<In>,
    on_note: Option<(String, oneshot::Sender<()>)>,
}

impl Executor<Cmd> for Recorder {
    fn execute(&mut self, _now: Instant, command: Cmd) -> Flow {
        self.done.push(command.clone());
        match command {
            Cmd::Exit => return Flow::Stop,
            Cmd::StartWork(n) => {
                let tx = self.inputs.clone();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    tx.send(In::Done(n)).await.unwrap();
                });
            }
            Cmd::Note(s) => {
                if self.on_note.as_ref().is_some_and(|(want, _)| *want == s) {
                    let (_, fire) = self.on_note.take().unwrap();
                    let _ = fire.send(());
                }
            }
        }
        Flow::Continue
    }
}

fn notes(v: &[&str]) -> Vec<Cmd> {
    v.iter().map(|s| Cmd::Note((*s).into())).collect()
}

async fn run(
    l: EventLoop<Toy>,
    ex: &mut Recorder,
    stop: impl Future<Output = ()>,
) -> (Toy, StopReason) {
    tokio::time::timeout(PATIENCE, l.run(ex, stop))
        .await
        .expect("loop did not stop")
}

#[tokio::test]
async fn commands_are_executed_in_order_and_a_stop_finishes_its_batch() {
    let (l, tx) = EventLoop::new(Toy::default(), Clock::starting_now(), MAP, 8);
    for i in [In::Ext(1), In::Ext(2), In::Quit] {
        tx.send(i).await.unwrap();
    }
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: None,
    };
    let (toy, why) = run(l, &mut ex, std::future::pending()).await;
    assert_eq!(why, StopReason::Executor);
    let mut want = notes(&["ext1a", "ext1b", "ext2a", "ext2b", "bye"]);
    want.push(Cmd::Exit);
    want.push(Cmd::Note("after".into()));
    assert_eq!(ex.done, want);
    assert_eq!(toy.steps, 3);
}

#[tokio::test]
async fn the_machine_is_ticked_once_its_deadline_has_passed() {
    let clock = Clock::starting_now();
    let deadline = clock.now().saturating_add(Duration::from_millis(20));
    let toy = Toy {
        deadline: Some(deadline),
        ..Toy::default()
    };
    let (l, tx) = EventLoop::new(toy, clock, MAP, 8);
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: None,
    };
    let (toy, why) = run(l, &mut ex, std::future::pending()).await;
    assert_eq!(why, StopReason::Executor);
    assert_eq!(ex.done, vec![Cmd::Note("tick".into()), Cmd::Exit]);
    assert!(toy.ticked_at.unwrap() >= deadline);
}

#[tokio::test]
async fn completions_of_slow_work_come_back_as_inputs() {
    let (l, tx) = EventLoop::new(Toy::default(), Clock::starting_now(), MAP, 8);
    tx.send(In::Work(7)).await.unwrap();
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: None,
    };
    let (toy, _) = run(l, &mut ex, std::future::pending()).await;
    assert_eq!(
        ex.done,
        vec![Cmd::StartWork(7), Cmd::Note("done7".into()), Cmd::Exit]
    );
    assert_eq!(toy.steps, 2);
}

#[tokio::test]
async fn transport_events_become_inputs_through_the_map() {
    let (net_tx, net_rx) = mpsc::channel(8);
    let (l, tx) = EventLoop::new(Toy::default(), Clock::starting_now(), MAP, 8);
    let l = l.with_net(net_rx);
    let peer = Endpoint::server(NodeId(2));
    let envelope = Envelope {
        from: peer,
        to: Endpoint::agent(NodeId(1)),
        quorum_term: QuorumTerm(1),
        msg: Msg::TermCheck { nonce: 1 },
    };
    net_tx
        .send(NetEvent::FrameReceived { peer, envelope })
        .await
        .unwrap();
    net_tx.send(NetEvent::Closed { peer }).await.unwrap();
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: None,
    };
    run(l, &mut ex, std::future::pending()).await;
    let mut want = notes(&["frame cms@node2", "closed cms@node2"]);
    want.push(Cmd::Exit);
    assert_eq!(ex.done, want);
}

#[tokio::test]
async fn the_stop_future_ends_the_loop_and_returns_the_machine() {
    let (l, tx) = EventLoop::new(Toy::default(), Clock::starting_now(), MAP, 8);
    tx.send(In::Ext(1)).await.unwrap();
    let (fire, fired) = oneshot::channel();
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: Some(("ext1b".into(), fire)),
    };
    let (toy, why) = run(l, &mut ex, async {
        let _ = fired.await;
    })
    .await;
    assert_eq!(why, StopReason::Requested);
    assert_eq!(toy.steps, 1);
    assert_eq!(ex.done, notes(&["ext1a", "ext1b"]));
}

/// Records what the loop's journal hooks see.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<String>>>);

impl Journal<Toy> for Hooks {
    fn before_step(&mut self, machine: &Toy, now: Instant, input: &In) {
        let _ = now;
        self.0
            .lock()
            .unwrap()
            .push(format!("before {} {input:?}", machine.steps));
    }
    fn after_step(&mut self, machine: &Toy, commands: &[Cmd]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("after {} {commands:?}", machine.steps));
    }
}

#[tokio::test]
async fn the_journal_sees_every_input_before_the_step_and_its_commands_after() {
    let hooks = Hooks::default();
    let (l, tx) = EventLoop::new(Toy::default(), Clock::starting_now(), MAP, 8);
    let l = l.with_journal(Some(Box::new(hooks.clone())));
    for i in [In::Ext(1), In::Work(3)] {
        tx.send(i).await.unwrap();
    }
    let mut ex = Recorder {
        done: vec![],
        inputs: tx,
        on_note: None,
    };
    run(l, &mut ex, std::future::pending()).await;
    let seen = hooks.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "before 0 Ext(1)",
            r#"after 1 [Note("ext1a"), Note("ext1b")]"#,
            "before 1 Work(3)",
            "after 2 [StartWork(3)]",
            "before 2 Done(3)",
            r#"after 3 [Note("done3"), Exit]"#,
        ]
    );
}

#[test]
fn a_deadline_not_moved_past_the_last_tick_waits_the_minimum_gap() {
    let t = Instant::from_millis(100);
    assert_eq!(effective_deadline(None, Some(t)), None);
    assert_eq!(
        effective_deadline(Some(Instant::from_millis(150)), Some(t)),
        Some(Instant::from_millis(150))
    );
    assert_eq!(effective_deadline(Some(t), Some(t)), Some(t + MIN_TICK_GAP));
    assert_eq!(
        effective_deadline(Some(Instant::from_millis(5)), Some(t)),
        Some(t + MIN_TICK_GAP)
    );
    assert_eq!(effective_deadline(Some(t), None), Some(t));
}

#[tokio::test]
async fn the_clock_is_monotonic_and_maps_back_to_tokio_time() {
    let clock = Clock::process();
    let mut last = clock.now();
    for _ in 0..1000 {
        let now = Clock::process().now();
        assert!(now >= last);
        last = now;
    }
    assert!(clock.to_tokio(last) <= tokio::time::Instant::now());
    assert!(clock.to_tokio(Instant::MAX) > tokio::time::Instant::now());
    assert_eq!(
        clock.to_tokio(Instant::from_millis(7)) - clock.to_tokio(Instant::ZERO),
        Duration::from_millis(7)
    );
}
