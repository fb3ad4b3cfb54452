//! xtask library: the network-namespace lab the integration tests, the demo and the benchmarks
//! share.

pub mod lab;
