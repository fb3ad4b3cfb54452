//! What differs between IPv4 and IPv6 headers when the data plane forwards as a router (NAT,
//! SNAT, ICMP errors): the hop count, the addresses and the checksums they are in, and the FIB
//! request. DR changes no IP header and needs none of this.
//!
//! IPv4 has a header checksum over TTL and addresses; IPv6 has none, and its hop limit is in
//! no checksum. The addresses are in the TCP/UDP checksum of both (the pseudo-header).

use core::ptr::{read_unaligned, write_unaligned};

use aya_ebpf::{bindings::bpf_fib_lookup, programs::XdpContext};
use lb_common::{addr::Addr, counters::Reason};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::csum;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Offsets in the IPv6 header: the hop limit, and the source address (the destination
/// follows it).
const IPV6_HOP_LIMIT: usize = 7;
pub const IPV6_SRC: usize = 8;
pub const IPV6_DST: usize = 24;

/// A router forwards only what has a hop left after its own (TTL, hop limit).
#[inline(always)]
pub fn hops_allow(ip: *const u8, v6: bool) -> Result<(), Reason> {
    // SAFETY: the caller bounds-checked the IP header of this family.
    let hops = unsafe {
        if v6 {
            *ip.add(IPV6_HOP_LIMIT)
        } else {
            (*(ip as *const Ipv4Hdr)).ttl
        }
    };
    if hops <= 1 {
        Err(Reason::TtlExpired)
    } else {
        Ok(())
    }
}

/// The IP datagram's length (IPv6: the header and its payload).
#[inline(always)]
pub fn length(ip: *const u8, v6: bool) -> u16 {
    // SAFETY: the caller bounds-checked the IP header of this family.
    unsafe {
        if v6 {
            u16::from_be_bytes((*(ip as *const Ipv6Hdr)).payload_len)
                .saturating_add(Ipv6Hdr::LEN as u16)
        } else {
            u16::from_be_bytes((*(ip as *const Ipv4Hdr)).tot_len)
        }
    }
}

/// Fills the family, addresses, length and traffic class of a FIB request for a packet with
/// header `ip` leaving from `src` to `dst`.
#[inline(always)]
pub fn fib_request(params: &mut bpf_fib_lookup, ip: *const u8, v6: bool, src: &Addr, dst: &Addr) {
    // SAFETY: the caller bounds-checked the IP header of this family; the unions are plain
    // integers.
    unsafe {
        if v6 {
            let header = ip as *const Ipv6Hdr;
            params.family = AF_INET6;
            params.__bindgen_anon_1.tot_len =
                u16::from_be_bytes((*header).payload_len).wrapping_add(Ipv6Hdr::LEN as u16);
            params.__bindgen_anon_2.flowinfo = read_unaligned(ip as *const u32) & 0xffff_ff0f;
            params.__bindgen_anon_3.ipv6_src = src.words;
            params.__bindgen_anon_4.ipv6_dst = dst.words;
        } else {
            let header = ip as *const Ipv4Hdr;
            params.family = AF_INET;
            params.__bindgen_anon_1.tot_len = u16::from_be_bytes((*header).tot_len);
            params.__bindgen_anon_2.tos = (*header).tos;
            params.__bindgen_anon_3.ipv4_src = src.v4_word();
            params.__bindgen_anon_4.ipv4_dst = dst.v4_word();
        }
    }
}

/// Writes a new source and destination into the IP header, with its checksum (IPv4), and takes
/// a hop off if `age`. Returns what the addresses' change adds to the TCP/UDP checksum (the
/// pseudo-header; `csum::apply`). A rewrite to the same address adds nothing.
#[inline(always)]
pub fn rewrite_addresses(
    ctx: &XdpContext,
    ip: *mut u8,
    v6: bool,
    src: &Addr,
    dst: &Addr,
    age: bool,
) -> Result<u32, Reason> {
    if v6 {
        // The caller's parse checked the whole IPv6 header, but the verifier may meet this
        // branch with an IPv4 packet's shorter bound (the family is a value it loses track of
        // across calls): prove it again.
        if ip as usize + Ipv6Hdr::LEN > ctx.data_end() {
            return Err(Reason::Malformed);
        }
        // SAFETY: the IPv6 header is inside the frame; misaligned access is allowed.
        unsafe {
            let delta = write_addr(ip.add(IPV6_SRC), src) + write_addr(ip.add(IPV6_DST), dst);
            if age {
                *ip.add(IPV6_HOP_LIMIT) -= 1;
            }
            Ok(delta)
        }
    } else {
        let ip = ip as *mut Ipv4Hdr;
        // SAFETY: the caller bounds-checked the IPv4 header.
        unsafe {
            let old_src = u32::from_ne_bytes((*ip).src_addr);
            let old_dst = u32::from_ne_bytes((*ip).dst_addr);
            let (new_src, new_dst) = (src.v4_word(), dst.v4_word());
            (*ip).src_addr = new_src.to_ne_bytes();
            (*ip).dst_addr = new_dst.to_ne_bytes();
            let addresses = csum::delta4(old_src, new_src) + csum::delta4(old_dst, new_dst);
            let mut ip_delta = addresses;
            if age {
                let old = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
                (*ip).ttl -= 1;
                ip_delta += csum::delta2(old, u16::from_ne_bytes([(*ip).ttl, (*ip).proto]));
            }
            (*ip).check = csum::apply(u16::from_ne_bytes((*ip).check), ip_delta).to_ne_bytes();
            Ok(addresses)
        }
    }
}

/// Writes the 16-byte address `new` at `field`; returns the checksum delta of the change.
///
/// # Safety
/// `field` must point to 16 writable bytes inside the frame.
#[inline(always)]
pub unsafe fn write_addr(field: *mut u8, new: &Addr) -> u32 {
    let mut delta = 0;
    let mut i = 0;
    while i < 4 {
        let at = unsafe { field.add(i * 4) } as *mut u32;
        let old = unsafe { read_unaligned(at) };
        unsafe { write_unaligned(at, new.words[i]) };
        delta += csum::delta4(old, new.words[i]);
        i += 1;
    }
    delta
}
