//! The generic driver loop of DESIGN.md "Drivers and daemons": one tokio task per cm-core
//! machine.
//!
//! Each turn waits for exactly one of: a transport event, the machine's next deadline, or an
//! input from the channel that command completions and external sources (signals, flag
//! scans, probes) feed. That one fact becomes one `Input`, the machine steps at the current
//! [`Clock`] time, and its commands are handed **in order** to the daemon's [`Executor`].
//! Slow work never runs in the loop: the executor starts it elsewhere and its completion comes
//! back through the input channel. No decision is made here.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use cm_core::Instant;
use cm_core::io::{Machine, NetEvent};
use tokio::sync::mpsc;

/// Maps tokio's monotonic time to [`cm_core::Instant`]: nanoseconds since the clock's origin.
/// Readings never go backwards, even across clones.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: tokio::time::Instant,
}

static PROCESS_ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();

impl Clock {
    /// The daemons' clock: instants are nanoseconds since boot (`CLOCK_MONOTONIC`, which
    /// tokio's and std's instants read on Linux), so an instant one process persisted (the
    /// agent's leader-answered send time, §8) compares with the readings of its successor.
    /// Falls back to the first reading if the boot clock cannot be read.
    pub fn process() -> Self {
        Self {
            origin: *PROCESS_ORIGIN.get_or_init(boot_origin),
        }
    }

    /// A clock whose origin is now (tests, or several independent machines).
    pub fn starting_now() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The current instant. Monotonic because tokio's clock is.
    pub fn now(&self) -> Instant {
        let since = tokio::time::Instant::now().saturating_duration_since(self.origin);
        Instant::from_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The tokio instant of a cm-core instant (saturating at about a century ahead, which
    /// stands for "never").
    pub fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let d = at.since_origin().min(NEVER);
        self.origin + d
    }
}

/// The tokio instant at which `CLOCK_MONOTONIC` read zero (boot), or now if unreadable.
fn boot_origin() -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .ok()
        .and_then(|ts| {
            let secs = u64::try_from(ts.tv_sec()).ok()?;
            let nanos = u32::try_from(ts.tv_nsec()).ok()?;
            Some(Duration::new(secs, nanos))
        });
    since_boot.and_then(|d| now.checked_sub(d)).unwrap_or(now)
}

/// The command-dispatch interface lives in cm-core, so the simulator drives the machines the
/// same way; re-exported here for the daemons.
pub use cm_core::io::{Executor, Flow};

/// How the loop builds the machine's inputs from the facts it observes itself.
#[derive(Clone, Copy, Debug)]
pub struct InputMap<I> {
    /// A transport event.
    pub net: fn(NetEvent) -> I,
    /// "The deadline you asked for has passed" (a spurious one is a no-op for the machine).
    pub tick: fn() -> I,
}

/// Records every `(now, input)` fed to the machine and the commands it returned, so an
/// incident can be replayed (SPEC.md §17; [`crate::journal::FileJournal`] is the daemons').
/// Both hooks run on the loop: they must not block.
pub trait Journal<M: Machine> {
    /// Called before the machine steps on `input` at `now` (the machine as it is before).
    fn before_step(&mut self, machine: &M, now: Instant, input: &M::Input);
    /// Called with the commands the step returned, before they are executed.
    fn after_step(&mut self, machine: &M, commands: &[M::Command]);
}

/// Why [`EventLoop::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The `stop` future resolved (shutdown signal).
    Requested,
    /// The executor returned [`Flow::Stop`].
    Executor,
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Requested => "shutdown requested",
            Self::Executor => "the executor stopped",
        })
    }
}

/// What [`EventLoop::with_observer`] calls after every step.
type Observer<M> = Box<dyn FnMut(&M) + Send>;

/// One machine with its inputs; run it with [`EventLoop::run`].
pub struct EventLoop<M: Machine> {
    machine: M,
    clock: Clock,
    map: InputMap<M::Input>,
    net: Option<mpsc::Receiver<NetEvent>>,
    inputs: Option<mpsc::Receiver<M::Input>>,
    journal: Option<Box<dyn Journal<M> + Send>>,
    observer: Option<Observer<M>>,
    last_tick: Option<Instant>,
}

/// The least wait between two ticks when a machine keeps asking for a deadline that has
/// already passed: a buggy machine then costs a little CPU instead of a spinning core.
pub const MIN_TICK_GAP: Duration = Duration::from_millis(1);

/// When to tick next: the machine's deadline, but never sooner than [`MIN_TICK_GAP`] after
/// the previous tick when that deadline was not moved past it.
pub fn effective_deadline(
    deadline: Option<Instant>,
    last_tick: Option<Instant>,
) -> Option<Instant> {
    let d = deadline?;
    match last_tick {
        Some(t) if d <= t => Some(t.saturating_add(MIN_TICK_GAP)),
        _ => Some(d),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One fact observed by a turn of the loop.
enum Turn<I> {
    Input(I),
    NetClosed,
    InputsClosed,
    Stop,
}

impl<M: Machine> EventLoop<M> {
    /// A loop for `machine`; returns it with the sender that completions and external inputs
    /// use (bounded by `input_capacity`; senders wait when it is full).
    pub fn new(
        machine: M,
        clock: Clock,
        map: InputMap<M::Input>,
        input_capacity: usize,
    ) -> (Self, mpsc::Sender<M::Input>) {
        let (tx, rx) = mpsc::channel(input_capacity.max(1));
        let l = Self {
            machine,
            clock,
            map,
            net: None,
            inputs: Some(rx),
            journal: None,
            observer: None,
            last_tick: None,
        };
        (l, tx)
    }

    /// Feeds the transport's events (`Transport::start`'s receiver).
    pub fn with_net(mut self, events: mpsc::Receiver<NetEvent>) -> Self {
        self.net = Some(events);
        self
    }

    /// Journals every step (`None`: no journal).
    pub fn with_journal(mut self, journal: Option<Box<dyn Journal<M> + Send>>) -> Self {
        self.journal = journal;
        self
    }

    /// Calls `observer` with the machine after every step, once its commands were handed to
    /// the executor (e.g. to publish a snapshot that HTTP requests answer from, SPEC §15). It
    /// runs on the loop: keep it cheap.
    pub fn with_observer(mut self, observer: impl FnMut(&M) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The machine (for status between runs).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// Runs until `stop` resolves or the executor says stop; returns the machine and why.
    /// Closed input sources are simply no longer waited on; deadlines keep the machine going.
    pub async fn run<E: Executor<M::Command>>(
        mut self,
        executor: &mut E,
        stop: impl Future<Output = ()>,
    ) -> (M, StopReason) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let wake = effective_deadline(self.machine.next_deadline(), self.last_tick)
                .map(|d| self.clock.to_tokio(d));
            let turn = tokio::select! {
                () = &mut stop => Turn::Stop,
                ev = recv_opt(&mut self.net) => ev.map_or(Turn::NetClosed, |e| Turn::Input((self.map.net)(e))),
                i = recv_opt(&mut self.inputs) => i.map_or(Turn::InputsClosed, Turn::Input),
                () = sleep_until(wake) => {
                    self.last_tick = Some(self.clock.now());
                    Turn::Input((self.map.tick)())
                }
            };
            let input = match turn {
                Turn::Input(i) => i,
                Turn::NetClosed => {
                    self.net = None;
                    continue;
                }
                Turn::InputsClosed => {
                    self.inputs = None;
                    continue;
                }
                Turn::Stop => return (self.machine, StopReason::Requested),
            };
            if self.feed(input, executor) == Flow::Stop {
                return (self.machine, StopReason::Executor);
            }
        }
    }

    /// Steps the machine on one input and executes its commands in order.
    fn feed<E: Executor<M::Command>>(&mut self, input: M::Input, executor: &mut E) -> Flow {
        let now = self.clock.now();
        if let Some(j) = self.journal.as_mut() {
            j.before_step(&self.machine, now, &input);
        }
        let commands = self.machine.step(now, input);
        if let Some(j) = self.journal.as_mut() {
            j.after_step(&self.machine, &commands);
        }
        let mut flow = Flow::Continue;
        for command in commands {
            if executor.execute(now, command) == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        if let Some(observe) = self.observer.as_mut() {
            observe(&self.machine);
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes started at different times must read the same instant for the same
    /// moment: the origin is boot, not the first reading.
    #[test]
    fn the_daemon_clock_counts_from_boot_so_instants_survive_a_restart() {
        let first = boot_origin();
        std::thread::sleep(Duration::from_millis(30));
        let second = boot_origin();
        let skew = if first > second {
            first - second
        } else {
            second - first
        };
        assert!(
            skew < Duration::from_millis(20),
            "origins differ by {skew:?}"
        );
        // The origin is boot, not the first reading (30 ms ago): on a host up for more than
        // 2 s (per /proc/uptime), the clock reads more than 1 s, and never more than uptime.
        let up = tokio::time::Instant::now() - first;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("/proc/uptime")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("uptime seconds");
        if uptime > 2.0 {
            assert!(
                up > Duration::from_secs(1),
                "clock {up:?}, uptime {uptime} s"
            );
        }
        assert!(
            up.as_secs_f64() <= uptime + 1.0,
            "clock {up:?}, uptime {uptime} s"
        );
    }
}
