//! Map keys, values and constants shared by the xdplb XDP data plane (`lb-ebpf`) and the
//! controller (`xdplb`). Every type here is `#[repr(C)]` with explicit padding, because the
//! kernel copies these bytes between the two sides verbatim.
//!
//! Byte order: addresses and ports are stored exactly as they appear on the wire (network
//! order), so the data plane can compare them without swapping. Addresses of both families
//! share one 16-byte form (`addr::Addr`).
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod clock;
pub mod counters;
pub mod flood;
pub mod flow;
pub mod hash;
pub mod interface;
pub mod maps;
pub mod service;

/// Bumped whenever any layout in this crate changes; a controller refuses to adopt pinned maps
/// written by a build with another version.
pub const LAYOUT_VERSION: u32 = 10;

/// IP protocol numbers used in keys.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
