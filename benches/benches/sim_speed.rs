//! The simulator's speed in simulated seconds per wall second, for 1P4S with 3 CMS over two AZs
//! (the `primary-frozen-1p4s-two-az` scenario: 240 s of safety phase plus liveness), with its
//! fault (the primary SIGSTOPped) and without any fault. Criterion's throughput line reads
//! "elem/s" = simulated seconds per wall second.

use std::hint::black_box;

use cm_sim::daemon::Machines;
use cm_sim::run::{RunOptions, run};
use cm_sim::scenario::Scenario;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SCENARIO: &str = include_str!("../../cm-sim/scenarios/primary-frozen-1p4s-two-az.toml");

fn bench(c: &mut Criterion) {
    let faulty = Scenario::from_toml_str(SCENARIO).expect("shipped scenario parses");
    let mut quiet = faulty.clone();
    quiet.faults.clear();
    quiet.expect.clear();
    let mut g = c.benchmark_group("sim/1p4s_3cms");
    g.sample_size(10);
    for (name, s) in [("with_faults", faulty), ("no_faults", quiet)] {
        let probe = run(&s, name, 1, Box::new(Machines), RunOptions::default());
        g.throughput(Throughput::Elements(probe.sim_seconds as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(run(&s, name, 1, Box::new(Machines), RunOptions::default())));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
