//! xdplb's network-namespace lab, and the demo and benchmarks built on it. The integration
//! tests in tests/ use the same lab.

pub mod bench;
pub mod bench_conns;
pub mod bench_e2e;
pub mod demo;
pub mod lab;
