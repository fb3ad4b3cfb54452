//! Shared fixtures for xdplb's root-only tests: a data plane loaded for BPF_PROG_TEST_RUN, and
//! frame builders. The namespace lab itself lives in xtask (the demo and the benchmarks use it).

pub mod fixture;
pub mod frames;
