//! The cheap first questions, one array read each: could this packet be for a VIP, or a reply
//! from a NAT real? The controller fills two bitmaps with hashed address:port:protocol; a clear
//! bit means certainly not, so other traffic costs no hash lookup. A set bit may be a
//! collision: the lookups that follow settle it.
//!
//! Then, for a packet about to be forwarded only: is the frame ours to forward at all
//! (`for_us`)?

use core::ptr::read_unaligned;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::Addr,
    counters::Reason,
    hash::vip_filter_bit,
    interface::{INTERFACE_GUARDS_REALS, INTERFACE_SLOTS},
};

use crate::{
    csum,
    maps::{INTERFACE_MACS, REAL_FILTER, VIP_FILTER},
    parse::Packet,
};

#[inline(always)]
fn bit_set(filter: &aya_ebpf::maps::Array<u64>, addr: &Addr, port: u16, proto: u8) -> bool {
    is_set(filter, vip_filter_bit(addr, port, proto))
}

#[inline(always)]
fn is_set(filter: &aya_ebpf::maps::Array<u64>, bit: u32) -> bool {
    let word = filter.get(bit / 64).copied().unwrap_or(0);
    word & (1u64 << (bit % 64)) != 0
}

/// The filter bit of the packet's destination address:port:protocol, for `maybe_to_vip` and
/// `maybe_to_nat_real` (one hash for both).
#[inline(always)]
pub fn destination_bit<const V6: bool>(packet: &Packet<V6>) -> u32 {
    let flow = packet.flow();
    vip_filter_bit(&flow.dst, flow.dport, flow.proto)
}

/// Whether the destination (its `destination_bit`) may be a VIP:port.
#[inline(always)]
pub fn maybe_to_vip(destination_bit: u32) -> bool {
    is_set(&VIP_FILTER, destination_bit)
}

/// Whether the source may be a NAT real's service address:port.
#[inline(always)]
pub fn maybe_from_nat_real<const V6: bool>(packet: &Packet<V6>) -> bool {
    let flow = packet.flow();
    bit_set(&REAL_FILTER, &flow.src, flow.sport, flow.proto)
}

/// Whether the destination (its `destination_bit`) may be a NAT real's service address:port.
#[inline(always)]
pub fn maybe_to_nat_real(destination_bit: u32) -> bool {
    is_set(&REAL_FILTER, destination_bit)
}

/// Whether the interface the frame arrived on keeps the NAT reals' service ports closed to
/// routed traffic (`INTERFACE_GUARDS_REALS`).
#[inline(always)]
pub fn guards_reals(ctx: &XdpContext) -> bool {
    // SAFETY: reading the context's ingress interface.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match INTERFACE_MACS.get(ifindex % INTERFACE_SLOTS) {
        Some(own) => own.ifindex == ifindex && own.flags & INTERFACE_GUARDS_REALS != 0,
        None => false,
    }
}

/// A packet may be forwarded only if its frame was addressed to the interface it arrived on,
/// and its IP header checksum is right (a router would drop it; a flipped bit in an address
/// must not become a flow). Checked on the forwarding paths only, so other traffic does not
/// pay for it.
#[inline(always)]
pub fn for_us<const V6: bool>(ctx: &XdpContext, packet: &Packet<V6>) -> Result<(), Reason> {
    frame_for_us(
        ctx,
        packet.eth as *const u8,
        packet.ip as *const u8,
        V6,
        packet.ip_words,
    )
}

/// `for_us` for any IP frame: `eth` and `ip` bounds-checked, an IPv4 header `ip_words` long.
#[inline(always)]
pub fn frame_for_us(
    ctx: &XdpContext,
    eth: *const u8,
    ip: *const u8,
    v6: bool,
    ip_words: usize,
) -> Result<(), Reason> {
    addressed_here(ctx, eth)?;
    header_valid(ctx, ip, v6, ip_words)
}

/// The IPv4 header checksum is right (`for_us` without the MAC check, for flow-cache hits,
/// whose slot checked the MAC). IPv6 has no header checksum: a flipped bit in an address is
/// caught by the TCP/UDP checksum at the real, as it would be behind any router.
#[inline(always)]
pub fn header_valid(
    ctx: &XdpContext,
    ip: *const u8,
    v6: bool,
    ip_words: usize,
) -> Result<(), Reason> {
    if v6 || csum::ipv4_header_valid(ip, ip_words, ctx.data_end()) {
        Ok(())
    } else {
        Err(Reason::Malformed)
    }
}

/// Whether the frame at `eth` (its Ethernet header bounds-checked) is unicast to the MAC of the
/// interface it arrived on. A NIC in promiscuous mode, a bridge member or a switch flooding
/// unknown unicast delivers other stations' frames too: forwarding those would duplicate them,
/// and in DR send them out with that station's MAC as source.
#[inline(always)]
pub fn addressed_here(ctx: &XdpContext, eth: *const u8) -> Result<(), Reason> {
    // SAFETY: reading the context's ingress interface.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: the caller bounds-checked the Ethernet header; misaligned access is allowed.
    let (high, low) = unsafe {
        (
            read_unaligned(eth as *const u32),
            read_unaligned(eth.add(4) as *const u16),
        )
    };
    let ours = match INTERFACE_MACS.get(ifindex % INTERFACE_SLOTS) {
        Some(own) => {
            let mac = own.mac.as_ptr();
            // SAFETY: six bytes of a map value.
            own.ifindex == ifindex
                && unsafe {
                    read_unaligned(mac as *const u32) == high
                        && read_unaligned(mac.add(4) as *const u16) == low
                }
        }
        None => false,
    };
    if ours {
        Ok(())
    } else if high & 1 != 0 {
        Err(Reason::NotUnicast)
    } else {
        Err(Reason::OtherHost)
    }
}
