//! The CMS quorum's cost per committed change: three in-memory members, messages delivered
//! at once, writes completed at once; one iteration = propose, replicate, commit, apply.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::ids::NodeId;
use cm_core::io::WriteCompleted;
use cm_core::server::quorum::{Quorum, QuorumInput, QuorumOutput};
use cm_core::state::{Change, ReplicatedState};
use cm_core::time::Instant;
use criterion::{Criterion, criterion_group, criterion_main};

struct Net {
    nodes: Vec<Quorum>,
    now: Instant,
    queue: VecDeque<(usize, QuorumInput)>,
}

impl Net {
    fn new() -> Self {
        let cfg = ClusterConfig::from_toml_str(cm_core::config::EXAMPLE_CONFIG).expect("config");
        let nodes = (1..=3)
            .map(|n| Quorum::new(&cfg, NodeId(n), n.into(), None).expect("member"))
            .collect();
        Self {
            nodes,
            now: Instant::ZERO,
            queue: VecDeque::new(),
        }
    }

    fn deliver(&mut self, from: usize, outs: Vec<QuorumOutput>) {
        for o in outs {
            match o {
                QuorumOutput::Send { to, term, msg } => {
                    let from_id = self.nodes[from].status(self.now).node;
                    let input = QuorumInput::Message {
                        from: from_id,
                        term,
                        msg,
                    };
                    self.queue.push_back((to.0 as usize - 1, input));
                }
                QuorumOutput::Persist(p) => {
                    let done = WriteCompleted {
                        token: p.token,
                        result: Ok(()),
                    };
                    self.queue
                        .push_back((from, QuorumInput::WriteCompleted(done)));
                }
                _ => {}
            }
        }
    }

    fn step(&mut self, i: usize, input: QuorumInput) {
        let outs = self.nodes[i].step(self.now, input);
        self.deliver(i, outs);
    }

    fn drain(&mut self) {
        while let Some((i, input)) = self.queue.pop_front() {
            self.step(i, input);
        }
    }

    /// Ticks until some member leads with a lease.
    fn elect(&mut self) -> usize {
        for _ in 0..10_000 {
            if let Some(l) = (0..3).find(|i| self.nodes[*i].holds_lease(self.now)) {
                return l;
            }
            let next = self
                .nodes
                .iter()
                .filter_map(Quorum::next_deadline)
                .min()
                .unwrap_or(self.now);
            self.now = next.max(self.now + Duration::from_millis(1));
            for i in 0..3 {
                self.step(i, QuorumInput::Tick);
            }
            self.drain();
        }
        panic!("no leader");
    }
}

fn bench(c: &mut Criterion) {
    let mut net = Net::new();
    let leader = net.elect();
    let mut paused = false;
    c.bench_function("quorum/commit_one_change_3_members", |b| {
        b.iter(|| {
            paused = !paused;
            // Virtual time stands still: the lease stays valid, and the cost measured is the
            // protocol's, not heartbeats'.
            net.nodes[leader]
                .propose(Change::SetPaused(paused))
                .expect("leader with lease");
            net.step(leader, QuorumInput::Flush);
            net.drain();
            let outcomes = net.nodes[leader].take_outcomes();
            assert_eq!(outcomes.len(), 1, "committed within one round");
            black_box(outcomes)
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
