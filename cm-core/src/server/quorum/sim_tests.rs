//! A small seeded network simulation of 3 and 5 CMS nodes: random delivery latency (so
//! reordering), loss, duplication, partitions (two-way and one-way), crashes with restart from
//! the last *completed* write, failed writes, lost disks (a minority; some chosen right after
//! the node voted for another), staggered cold starts from empty stores (each node powered on
//! up to 3 s after the first), and per-node clock drift within `max_clock_drift`. After every event it checks SPEC.md §13 S1 and the Raft safety
//! properties: one leader per term, committed entries never change or vanish, leaders hold
//! every committed entry, terms and commit indices never decrease, committed states agree, and
//! no two nodes hold a lease at the same global instant; no node that never lost its store
//! becomes a non-voter (§5.1: a late CMS joins as a voter); and no message storm builds up.
//!
//! `CM_LONG_TESTS=1` runs many more seeds for longer.

use std::collections::{BTreeMap, VecDeque};

use super::test_support::{config, fresh_store};
use super::{EntryPayload, Membership, Quorum, QuorumInput, QuorumMsg, QuorumOutput, Role};
use crate::config::ClusterConfig;
use crate::ids::{LogIndex, NodeId, QuorumTerm, WriteToken};
use crate::io::WriteCompleted;
use crate::rng::{Prng, derive_seed};
use crate::state::{Change, ClusterState, ReplicatedState};
use crate::time::Instant;

const MS: u64 = 1_000_000;

struct Node {
    q: Option<Quorum>,
    disk: Vec<u8>,
    disk_lost: bool,
    /// Whether this node ever lost its store.
    lost_store: bool,
    writes: VecDeque<(WriteToken, Vec<u8>, u64)>,
    ppm: i64,
    incarnation: u64,
    restart_at: u64,
    max_term: QuorumTerm,
    max_commit: LogIndex,
}

impl Node {
    /// The node's local clock at global time `g` (rate 1 + ppm·10⁻⁶).
    fn local(&self, g: u64) -> Instant {
        let l = i128::from(g) + i128::from(g) * i128::from(self.ppm) / 1_000_000;
        Instant::from_nanos(l.max(0) as u64)
    }

    /// The first global time at which the local clock reads at least `d`.
    fn global(&self, d: Instant, now: u64) -> u64 {
        let num = i128::from(d.as_nanos()) * 1_000_000;
        let den = 1_000_000 + i128::from(self.ppm);
        let mut g = ((num + den - 1) / den).max(i128::from(now)) as u64;
        while self.local(g) < d {
            g += 1;
        }
        g
    }
}

struct Msg {
    at: u64,
    seq: u64,
    from: NodeId,
    to: NodeId,
    term: QuorumTerm,
    msg: QuorumMsg,
}

struct Sim {
    cfg: ClusterConfig,
    rng: Prng,
    seed: u64,
    now: u64,
    nodes: Vec<Node>,
    net: Vec<Msg>,
    seq: u64,
    blocked: Vec<(usize, usize)>,
    loss: f64,
    dup: f64,
    disk_ms: u64,
    next_fault: u64,
    next_load: u64,
    disk_losses: usize,
    leaders: BTreeMap<QuorumTerm, NodeId>,
    /// Committed entries, with the highest term any node had when the commit was first seen:
    /// leaders of later terms must hold them (Leader Completeness).
    committed: BTreeMap<LogIndex, ((QuorumTerm, EntryPayload), QuorumTerm)>,
    states: BTreeMap<LogIndex, ClusterState>,
    proposals: u64,
}

impl Sim {
    /// `staggered`: a cold start, every node with an empty store, powered on at a random
    /// instant within the first 3 s; else every node starts at once from a bootstrapped store.
    fn new(n: u32, seed: u64, staggered: bool) -> Self {
        let cfg = config(n);
        let mut rng = Prng::new(seed);
        let rho_ppm = (cfg.params.max_clock_drift * 1e6) as i64;
        let nodes = (1..=n)
            .map(|i| {
                let (q, disk, restart_at) = if staggered {
                    (None, Vec::new(), rng.range_inclusive(0, 3_000) * MS)
                } else {
                    let disk = fresh_store(&cfg);
                    let seed = derive_seed(seed, u64::from(i));
                    let q = Quorum::new(&cfg, NodeId(i), seed, Some(disk.clone())).unwrap();
                    (Some(q), disk, 0)
                };
                Node {
                    q,
                    disk,
                    disk_lost: false,
                    lost_store: false,
                    writes: VecDeque::new(),
                    ppm: rng.range_inclusive(0, 2 * rho_ppm as u64) as i64 - rho_ppm,
                    incarnation: 0,
                    restart_at,
                    max_term: QuorumTerm(0),
                    max_commit: LogIndex(0),
                }
            })
            .collect();
        let loss = rng.unit_f64() * 0.2;
        let dup = rng.unit_f64() * 0.1;
        let disk_ms = [10, 100, 300][rng.index(3)];
        Self {
            cfg,
            rng,
            seed,
            now: 0,
            nodes,
            net: Vec::new(),
            seq: 0,
            blocked: Vec::new(),
            loss,
            dup,
            disk_ms,
            next_fault: 2_000 * MS,
            next_load: 0,
            disk_losses: 0,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            states: BTreeMap::new(),
            proposals: 0,
        }
    }

    fn step_node(&mut self, i: usize, input: QuorumInput) {
        let local = self.nodes[i].local(self.now);
        let Some(q) = self.nodes[i].q.as_mut() else {
            return;
        };
        let out = q.step(local, input);
        self.handle(i, out);
    }

    fn handle(&mut self, i: usize, out: Vec<QuorumOutput>) {
        let from = NodeId(i as u32 + 1);
        for o in out {
            match o {
                QuorumOutput::Send { to, term, msg } => {
                    if self.rng.chance(self.loss) {
                        continue;
                    }
                    let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = self.now + self.rng.range_inclusive(MS / 2, 30 * MS);
                        self.seq += 1;
                        self.net.push(Msg {
                            at,
                            seq: self.seq,
                            from,
                            to,
                            term,
                            msg: msg.clone(),
                        });
                    }
                }
                QuorumOutput::Persist(p) => {
                    let node = &mut self.nodes[i];
                    let last = node.writes.back().map_or(self.now, |w| w.2);
                    let at =
                        last.max(self.now) + self.rng.range_inclusive(MS / 5, self.disk_ms * MS);
                    node.writes.push_back((p.token, p.bytes, at));
                }
                QuorumOutput::BecameLeader { term } => {
                    if let Some(prev) = self.leaders.insert(term, from) {
                        self.fail(&format!("two leaders in {term}: {prev} and {from}"));
                    }
                }
                QuorumOutput::SteppedDown { .. } | QuorumOutput::ProbeGateways => {}
            }
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "seed {} at {} ms: {what}\nnodes: {:#?}",
            self.seed,
            self.now / MS,
            self.nodes
                .iter()
                .map(|n| n.q.as_ref().map(|q| q.status(n.local(self.now))))
                .collect::<Vec<_>>()
        );
    }

    /// Runs until global time `end`.
    fn run(&mut self, end: u64) {
        let (mut last, mut same) = (0, 0);
        while self.now < end {
            self.next_event(end);
            same = if self.now == last { same + 1 } else { 0 };
            last = self.now;
            if same > 100_000 {
                self.fail("no progress: a deadline stays in the past");
            }
            self.check();
        }
    }

    fn next_event(&mut self, end: u64) {
        #[derive(Clone, Copy)]
        enum Ev {
            Net(usize),
            Write(usize),
            Tick(usize),
            Restart(usize),
            Fault,
            Load,
            End,
        }
        let mut best = (end, Ev::End);
        let mut consider = |at: u64, ev: Ev| {
            if at < best.0 {
                best = (at, ev);
            }
        };
        if let Some((k, m)) = self
            .net
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| (m.at, m.seq))
        {
            consider(m.at, Ev::Net(k));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            match &node.q {
                Some(q) => {
                    if let Some(w) = node.writes.front() {
                        consider(w.2, Ev::Write(i));
                    }
                    if let Some(d) = q.next_deadline() {
                        consider(node.global(d, self.now), Ev::Tick(i));
                    }
                }
                None => consider(node.restart_at, Ev::Restart(i)),
            }
        }
        consider(self.next_fault, Ev::Fault);
        consider(self.next_load, Ev::Load);
        let (at, ev) = best;
        self.now = at.max(self.now);
        match ev {
            Ev::Net(k) => {
                let m = self.net.swap_remove(k);
                let (f, t) = (m.from.0 as usize - 1, m.to.0 as usize - 1);
                if !self.blocked.contains(&(f, t)) {
                    let input = QuorumInput::Message {
                        from: m.from,
                        term: m.term,
                        msg: m.msg,
                    };
                    self.step_node(t, input);
                }
            }
            Ev::Write(i) => self.complete_write(i),
            Ev::Tick(i) => self.step_node(i, QuorumInput::Tick),
            Ev::Restart(i) => self.restart(i),
            Ev::Fault => self.fault(),
            Ev::Load => self.load(),
            Ev::End => {}
        }
    }

    fn complete_write(&mut self, i: usize) {
        let Some((token, bytes, _)) = self.nodes[i].writes.pop_front() else {
            return;
        };
        let result = if self.rng.chance(0.01) {
            Err("injected I/O error".to_owned())
        } else {
            self.nodes[i].disk = bytes;
            Ok(())
        };
        self.step_node(
            i,
            QuorumInput::WriteCompleted(WriteCompleted { token, result }),
        );
    }

    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.max_commit = LogIndex(0);
        node.max_term = QuorumTerm(0);
        if node.disk_lost {
            node.disk.clear();
        }
        // A node whose first write never completed has an empty store too.
        let restored = (!node.disk.is_empty()).then(|| node.disk.clone());
        let seed = derive_seed(self.seed, u64::from(i as u32 + 1) + 1000 * node.incarnation);
        node.q = Some(Quorum::new(&self.cfg, NodeId(i as u32 + 1), seed, restored).unwrap());
        node.disk_lost = false;
    }

    fn fault(&mut self) {
        let n = self.nodes.len();
        let i = self.rng.index(n);
        let may_lose = self.disk_losses < (n - 1) / 2;
        match self.rng.index(10) {
            0..=2 if self.nodes[i].q.is_some() => {
                let lose = may_lose && self.rng.chance(0.15);
                self.crash(i, lose);
            }
            // The store of a node that voted for another in its current term (its vote may
            // have been counted) is lost: it must not vote again in that term.
            7 if may_lose => {
                let voted = (0..n).find(|j| {
                    let me = NodeId(*j as u32 + 1);
                    self.nodes[*j]
                        .q
                        .as_ref()
                        .is_some_and(|q| q.voted_for.is_some_and(|v| v != me))
                });
                if let Some(j) = voted {
                    self.crash(j, true);
                }
            }
            3 => self.blocked.clear(),
            4 => {
                self.blocked = (0..n)
                    .filter(|j| *j != i)
                    .flat_map(|j| [(i, j), (j, i)])
                    .collect();
            }
            5 => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                self.blocked = (0..n)
                    .flat_map(|a| (0..n).map(move |b| (a, b)))
                    .filter(|(a, b)| side[*a] != side[*b])
                    .collect();
            }
            6 => {
                let j = (i + 1 + self.rng.index(n - 1)) % n;
                self.blocked.push((i, j));
            }
            _ => {}
        }
        self.next_fault = self.now + self.rng.range_inclusive(200, 2_500) * MS;
    }

    fn crash(&mut self, i: usize, lose_store: bool) {
        let down = self.rng.range_inclusive(100, 3_000) * MS;
        let node = &mut self.nodes[i];
        node.q = None;
        node.writes.clear();
        node.restart_at = self.now + down;
        if lose_store {
            node.disk_lost = true;
            node.lost_store = true;
            self.disk_losses += 1;
        }
    }

    /// Proposes on every live node: only a node holding a lease may accept.
    fn load(&mut self) {
        for i in 0..self.nodes.len() {
            self.step_node(i, QuorumInput::Tick);
            let local = self.nodes[i].local(self.now);
            let Some(q) = self.nodes[i].q.as_mut() else {
                continue;
            };
            self.proposals += 1;
            let change = Change::SetParam {
                name: format!("k{}", self.proposals % 7),
                value: format!("{}", self.proposals),
            };
            let leased = q.holds_lease(local);
            let accepted = q.propose(change).is_some();
            if accepted != leased {
                self.fail(&format!(
                    "node{} accepted={accepted} with lease={leased}",
                    i + 1
                ));
            }
            let _ = q.take_outcomes();
            if accepted {
                self.step_node(i, QuorumInput::Flush);
            }
        }
        self.next_load = self.now + self.rng.range_inclusive(20, 300) * MS;
    }

    fn check(&mut self) {
        let mut leased = Vec::new();
        for i in 0..self.nodes.len() {
            let local = self.nodes[i].local(self.now);
            let Some(q) = self.nodes[i].q.as_ref() else {
                continue;
            };
            if q.holds_lease(local) {
                leased.push(NodeId(i as u32 + 1));
            }
            let (term, commit) = (q.term, q.commit);
            let node = &self.nodes[i];
            if term < node.max_term {
                self.fail(&format!("term went back on node{}", i + 1));
            }
            if commit < node.max_commit {
                self.fail(&format!("commit index went back on node{}", i + 1));
            }
            if !node.lost_store && matches!(q.membership, Membership::Rejoining { .. }) {
                self.fail(&format!("node{} never lost its store but rejoined", i + 1));
            }
            self.check_log(i);
            let node = &mut self.nodes[i];
            node.max_term = node.max_term.max(term);
            node.max_commit = commit;
        }
        if self.net.len() > 5_000 {
            self.fail("message storm: more than 5000 messages in flight");
        }
        if leased.len() > 1 {
            self.fail(&format!("two leases at once: {leased:?}"));
        }
    }

    fn check_log(&mut self, i: usize) {
        let top = self
            .nodes
            .iter()
            .filter_map(|n| n.q.as_ref().map(|q| q.term))
            .max();
        let top = top.unwrap_or_default();
        let q = self.nodes[i].q.as_ref().unwrap();
        let mut problem = None;
        let first = q.log.snapshot_index().0 + 1;
        for k in first..=q.commit.0 {
            let e = q.log.entry(LogIndex(k)).unwrap();
            let got = (e.term, e.payload.clone());
            match self.committed.get(&LogIndex(k)) {
                Some((c, _)) if *c != got => {
                    problem = Some(format!("committed entry {k} changed on node{}", i + 1));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(LogIndex(k), (got, top));
                }
            }
        }
        match self.states.get(&q.applied) {
            Some(s) if *s != q.state => {
                problem = Some(format!("state at {} differs on node{}", q.applied, i + 1))
            }
            Some(_) => {}
            None => {
                self.states.insert(q.applied, q.state.clone());
            }
        }
        if q.role == Role::Leader {
            for (k, (c, seen)) in self.committed.range(LogIndex(first)..) {
                let e = q.log.entry(*k).map(|e| (e.term, e.payload.clone()));
                if q.term > *seen && e.as_ref() != Some(c) {
                    problem = Some(format!("leader node{} differs at committed {k}", i + 1));
                }
            }
        }
        if let Some(p) = problem {
            self.fail(&p);
        }
    }
}

fn runs() -> (u64, u64) {
    if std::env::var("CM_LONG_TESTS").is_ok_and(|v| v == "1") {
        (100, 120)
    } else {
        (6, 40)
    }
}

fn sweep(n: u32, staggered: bool) {
    let (seeds, secs) = runs();
    let mut elected = 0;
    let mut committed = 0;
    for seed in 0..seeds {
        let base = if staggered { 0x5EED_0000 } else { 0xC0FFEE };
        let mut sim = Sim::new(n, base + seed * 7919 + u64::from(n), staggered);
        sim.run(secs * 1_000 * MS);
        eprintln!(
            "n={n} staggered={staggered} seed={seed} leaders={} committed={} disk_losses={} loss={:.2}",
            sim.leaders.len(),
            sim.committed.len(),
            sim.disk_losses,
            sim.loss
        );
        elected += sim.leaders.len();
        committed += sim.committed.len();
    }
    // Not vacuous: elections happened and entries committed.
    assert!(
        elected as u64 >= seeds,
        "only {elected} elections in {seeds} runs"
    );
    assert!(
        committed as u64 >= seeds * 10,
        "only {committed} commits in {seeds} runs"
    );
}

#[test]
fn three_nodes_stay_safe_under_random_faults() {
    sweep(3, false);
}

#[test]
fn five_nodes_stay_safe_under_random_faults() {
    sweep(5, false);
}

#[test]
fn three_nodes_stay_safe_from_a_staggered_cold_start() {
    sweep(3, true);
}

#[test]
fn five_nodes_stay_safe_from_a_staggered_cold_start() {
    sweep(5, true);
}
