//! The compiled XDP programs, embedded at build time by build.rs.

/// The load balancer (lb-ebpf's main program).
pub static XDPLB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Lab and benchmark helpers: `lab_pass`, `bench_tx`.
pub static LAB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-xdp"));
