//! The disk model of a node: data-path usage that can grow, write/read errors, hung I/O, and the
//! durable store behind `PersistState` (a write is durable only once completed; a crash loses
//! pending writes, TigerBeetle/turmoil-fs style).

use std::collections::BTreeMap;

use core::time::Duration;

use cm_core::msg::Role;
use cm_core::{Instant, WriteToken};

/// What a disk probe (write + read of a probe file) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Both succeeded.
    Ok,
    /// The write or read failed.
    Failed,
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    base_pct: f64,
    growth_pct_per_s: f64,
    since: Instant,
    /// Writes fail.
    pub write_error: bool,
    /// Reads fail.
    pub read_error: bool,
    /// I/O hangs until this instant.
    pub hung_until: Option<Instant>,
    durable: BTreeMap<Role, Vec<u8>>,
    pending: BTreeMap<(Role, WriteToken), Vec<u8>>,
    last_done: BTreeMap<Role, Instant>,
}

impl Disk {
    /// A disk at `pct` percent usage.
    pub fn new(pct: f64) -> Self {
        Self {
            base_pct: pct,
            ..Self::default()
        }
    }

    /// Usage in percent at `now` (0..=100).
    pub fn usage_pct(&self, now: Instant) -> f64 {
        let grown = self.growth_pct_per_s * (now - self.since).as_secs_f64();
        (self.base_pct + grown).clamp(0.0, 100.0)
    }

    /// Sets the usage now, and how fast it grows from here (negative shrinks).
    pub fn set_usage(&mut self, now: Instant, pct: f64, growth_pct_per_s: f64) {
        self.base_pct = pct;
        self.growth_pct_per_s = growth_pct_per_s;
        self.since = now;
    }

    /// Whether I/O hangs at `now`.
    pub fn hung(&self, now: Instant) -> bool {
        self.hung_until.is_some_and(|t| now < t)
    }

    /// When I/O issued at `now` completes, given its nominal duration.
    pub fn completes_at(&self, now: Instant, nominal: Duration) -> Instant {
        self.completes_at_inner(now, nominal)
    }

    /// Queues a write of `role`'s state issued at `now`; durable once [`Disk::complete`] is
    /// called at the returned instant. One process's writes complete in the order issued (a
    /// later write is never overtaken by an earlier one, as with one fsync'd file).
    pub fn begin_write(
        &mut self,
        role: Role,
        token: WriteToken,
        bytes: Vec<u8>,
        now: Instant,
        nominal: Duration,
    ) -> Instant {
        self.pending.insert((role, token), bytes);
        let nominal_at = self.completes_at_inner(now, nominal);
        let last = self.last_done.entry(role).or_insert(Instant::ZERO);
        let at = nominal_at.max(*last);
        *last = at;
        at
    }

    fn completes_at_inner(&self, now: Instant, nominal: Duration) -> Instant {
        match self.hung_until {
            Some(t) if now < t => t + nominal,
            _ => now + nominal,
        }
    }

    /// Completes a pending write: `None` if a crash lost it, else its result.
    pub fn complete(&mut self, role: Role, token: WriteToken) -> Option<Result<(), String>> {
        let bytes = self.pending.remove(&(role, token))?;
        if self.write_error {
            return Some(Err("I/O error writing the state file".into()));
        }
        self.durable.insert(role, bytes);
        Some(Ok(()))
    }

    /// A crash: pending writes are lost, completed ones survive.
    pub fn crash(&mut self) {
        self.pending.clear();
        self.last_done.clear();
    }

    /// What a restarting process of `role` reads back.
    pub fn durable(&self, role: Role) -> Option<&Vec<u8>> {
        if self.read_error {
            return None;
        }
        self.durable.get(&role)
    }

    /// Loses a role's durable state (a replaced disk).
    pub fn wipe(&mut self, role: Role) {
        self.durable.remove(&role);
        self.pending.retain(|(r, _), _| *r != role);
    }

    /// A probe at `now`.
    pub fn probe(&self) -> ProbeOutcome {
        if self.write_error || self.read_error {
            ProbeOutcome::Failed
        } else {
            ProbeOutcome::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn writes_of_one_process_complete_in_issue_order() {
        let mut d = Disk::new(0.0);
        let a = d.begin_write(Role::Server, WriteToken(1), vec![1], Instant::ZERO, 4 * MS);
        let b = d.begin_write(Role::Server, WriteToken(2), vec![2], Instant::ZERO, MS);
        assert!(b >= a, "the second write is not durable before the first");
        let c = d.begin_write(Role::Agent, WriteToken(1), vec![3], Instant::ZERO, MS);
        assert!(c < a, "another process's file is independent");
    }

    #[test]
    fn crash_loses_pending_writes_but_keeps_completed_ones() {
        let mut d = Disk::new(10.0);
        d.begin_write(Role::Server, WriteToken(1), vec![1], Instant::ZERO, MS);
        assert_eq!(d.complete(Role::Server, WriteToken(1)), Some(Ok(())));
        d.begin_write(Role::Server, WriteToken(2), vec![2], Instant::ZERO, MS);
        d.crash();
        assert_eq!(d.complete(Role::Server, WriteToken(2)), None);
        assert_eq!(d.durable(Role::Server), Some(&vec![1]));
        assert_eq!(d.durable(Role::Agent), None);
    }

    #[test]
    fn write_errors_fail_writes_and_probes() {
        let mut d = Disk::new(10.0);
        d.write_error = true;
        d.begin_write(Role::Agent, WriteToken(1), vec![1], Instant::ZERO, MS);
        assert!(matches!(
            d.complete(Role::Agent, WriteToken(1)),
            Some(Err(_))
        ));
        assert_eq!(d.durable(Role::Agent), None);
        assert_eq!(d.probe(), ProbeOutcome::Failed);
    }

    #[test]
    fn usage_grows_linearly_and_clamps() {
        let mut d = Disk::new(50.0);
        d.set_usage(Instant::from_secs(10), 80.0, 1.0);
        assert_eq!(d.usage_pct(Instant::from_secs(15)), 85.0);
        assert_eq!(d.usage_pct(Instant::from_secs(1000)), 100.0);
    }

    #[test]
    fn hung_io_completes_after_the_hang() {
        let mut d = Disk::new(0.0);
        d.hung_until = Some(Instant::from_secs(5));
        assert!(d.hung(Instant::from_secs(1)));
        assert_eq!(
            d.completes_at(Instant::from_secs(1), Duration::from_millis(2)),
            Instant::from_millis(5002)
        );
        assert!(!d.hung(Instant::from_secs(5)));
    }
}
