//! The flow hash both sides compute: the data plane to pick a Maglev entry, tests to predict it.

use crate::addr::Addr;

/// MurmurHash3's 64-bit finaliser: cheap (two multiplies) and mixes every input bit.
#[inline(always)]
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hash of a 5-tuple, fields in network byte order as stored in `FlowKey`.
#[inline(always)]
pub const fn flow_hash(src: &Addr, dst: &Addr, sport: u16, dport: u16, proto: u8) -> u32 {
    folded_hash(src.fold(), dst.fold(), sport, dport, proto)
}

/// `flow_hash` of addresses folded to 32 bits (`Addr::fold`; an IPv4 address folds to itself,
/// so IPv4 flows hash as they did with 4-byte keys and balancers of either layout agree).
#[inline(always)]
pub const fn folded_hash(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let addrs = ((src as u64) << 32) | dst as u64;
    let rest = ((sport as u64) << 48) | ((dport as u64) << 32) | proto as u64;
    let h = fmix64(addrs ^ fmix64(rest ^ 0x9e37_79b9_7f4a_7c15));
    (h ^ (h >> 32)) as u32
}

/// Bit of the VIP filter for a destination (network byte order fields).
#[inline(always)]
pub const fn vip_filter_bit(addr: &Addr, port: u16, proto: u8) -> u32 {
    let h = fmix64(((addr.fold() as u64) << 32) | ((port as u64) << 8) | proto as u64);
    (h as u32) & (crate::maps::VIP_FILTER_BITS - 1)
}
