//! Criterion benchmarks of the cluster manager (see `benches/`).
