//! Property: for random report sequences of one group, the arbiter never sends two Failovers
//! for one term, the group's term never decreases, and every Failover goes to a locked standby
//! holding the maximum position among the locked ones.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::dn::{DnReport, DnRole, LockState};
use crate::ids::{CmdStamp, InstanceId, Term};
use crate::msg::CmsCommand;
use crate::server::harness::{H, dn, stamp};
use crate::server::leader::LeaderOutput;
use crate::time::Instant;

#[derive(Clone, Debug)]
enum Op {
    Report {
        member: u32,
        kind: u8,
        lsn: u64,
        applied_latest: bool,
    },
    Advance(u64),
    Tick,
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..=4u32, 0..6u8, 95..=100u64, any::<bool>()).prop_map(
            |(member, kind, lsn, applied_latest)| Op::Report { member, kind, lsn, applied_latest }
        ),
        3 => (100..2500u64).prop_map(Op::Advance),
        1 => Just(Op::Tick),
        2 => Just(Op::Commit),
    ]
}

/// What the test knows from the outputs alone.
#[derive(Default)]
struct Oracle {
    last_seq: BTreeMap<u32, u64>,
    lock1: BTreeMap<u32, CmdStamp>,
    released: BTreeSet<u32>,
    reports: BTreeMap<u32, (DnReport, Instant)>,
    failover_terms: BTreeSet<Term>,
}

impl Oracle {
    fn locked(&self, i: u32, now: Instant) -> bool {
        let Some((r, at)) = self.reports.get(&i) else {
            return false;
        };
        let Some(l1) = self.lock1.get(&i) else {
            return false;
        };
        now.saturating_since(*at) < core::time::Duration::from_secs(3)
            && matches!(r.role, DnRole::Standby | DnRole::Pending)
            && r.lock == LockState::Prohibit
            && r.last_applied >= *l1
            && !self.released.contains(&i)
    }

    fn observe(&mut self, out: &[LeaderOutput], now: Instant) -> Result<(), TestCaseError> {
        for o in out {
            let LeaderOutput::Command { cmd, .. } = o else {
                continue;
            };
            let i = cmd.instance.0 - 6000;
            self.last_seq.insert(i, cmd.seq.0);
            match &cmd.cmd {
                CmsCommand::Lock1 => {
                    self.lock1.insert(i, stamp(cmd.seq.0));
                    self.released.remove(&i);
                }
                CmsCommand::Unlock { .. } | CmsCommand::Lock2 { .. } => {
                    self.released.insert(i);
                }
                CmsCommand::Failover { term, .. } => {
                    prop_assert!(
                        self.failover_terms.insert(*term),
                        "two Failovers for {term}"
                    );
                    prop_assert!(
                        self.failover_terms.iter().next_back() == Some(term),
                        "Failover terms must increase"
                    );
                    prop_assert!(self.locked(i, now), "Failover to 600{i}, not locked");
                    let max = (1..=4)
                        .filter(|&j| self.locked(j, now))
                        .map(|j| self.reports[&j].0.position)
                        .max();
                    prop_assert_eq!(Some(self.reports[&i].0.position), max);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]
    #[test]
    fn failovers_are_unique_per_term_and_go_to_a_locked_maximum(
        ops in proptest::collection::vec(op(), 1..160)
    ) {
        let mut h = H::new(4);
        let mut oracle = Oracle::default();
        let mut term = h.group().term;
        for op in ops {
            let out = match op {
                Op::Report { member, kind, lsn, applied_latest } => {
                    let latest = oracle.last_seq.get(&member).copied().unwrap_or(0);
                    let applied = if applied_latest { latest } else { latest.saturating_sub(1) };
                    let base = dn(member).pos(1, lsn).applied(applied);
                    let r = match kind {
                        0 => base.primary(h.group().term.0),
                        1 => base.primary(0),
                        2 => base,
                        3 => base.lock(LockState::Prohibit),
                        4 => base.pending().lock(LockState::Prohibit),
                        _ => base.down(),
                    };
                    oracle.reports.insert(member, (r.0.clone(), h.now));
                    h.report(r)
                }
                Op::Advance(ms) => {
                    h.advance_ms(ms);
                    Vec::new()
                }
                Op::Tick => h.tick(),
                Op::Commit => h.commit(),
            };
            oracle.observe(&out, h.now)?;
            prop_assert!(h.group().term >= term, "the group's term decreased");
            term = h.group().term;
        }
        let _ = InstanceId(0);
    }
}
