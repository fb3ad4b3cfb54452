//! Small byte helpers shared by the generator, the oracle and the checks: big-endian fields,
//! addresses, and the one's-complement (Internet) checksum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

pub(crate) fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn addr_at(f: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]))
}

pub(crate) fn addr6_at(f: &[u8], at: usize) -> IpAddr {
    let octets: [u8; 16] = f[at..at + 16].try_into().unwrap();
    IpAddr::V6(Ipv6Addr::from(octets))
}

/// The address's bytes as they are on the wire (4 or 16).
pub(crate) fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One's-complement sum of `data` (16-bit big-endian words, an odd byte padded) added to `sum`.
pub(crate) fn ones_sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether an IPv4 header (all of its IHL bytes) has a right checksum.
pub(crate) fn ip_checksum_ok(header: &[u8]) -> bool {
    fold(ones_sum(0, header)) == 0xffff
}

/// Recomputes the IPv4 header checksum of a frame in place (generator side), over the IHL the
/// header claims (at least 20 bytes), if that much of it is in the frame.
pub(crate) fn fix_ip_checksum(f: &mut [u8], l3: usize) {
    if f.len() < l3 + 20 {
        return;
    }
    let len = ((f[l3] & 0x0f) as usize * 4).max(20);
    if f.len() < l3 + len {
        return;
    }
    put16(f, l3 + 10, 0);
    let sum = !fold(ones_sum(0, &f[l3..l3 + len]));
    put16(f, l3 + 10, sum);
}
