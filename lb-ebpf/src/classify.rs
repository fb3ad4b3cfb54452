//! The cheap first questions, one array read each: could this packet be for a VIP, or a reply
//! from a NAT real? The controller fills two bitmaps with hashed address:port:protocol; a clear
//! bit means certainly not, so other traffic costs no hash lookup. A set bit may be a
//! collision: the lookups that follow settle it.

use lb_common::{counters::Reason, hash::vip_filter_bit};

use crate::{
    maps::{REAL_FILTER, VIP_FILTER},
    parse::Packet,
};

#[inline(always)]
fn bit_set(filter: &aya_ebpf::maps::Array<u64>, addr: u32, port: u16, proto: u8) -> bool {
    let bit = vip_filter_bit(addr, port, proto);
    let word = filter.get(bit / 64).copied().unwrap_or(0);
    word & (1u64 << (bit % 64)) != 0
}

/// Whether the destination may be a VIP:port.
#[inline(always)]
pub fn maybe_to_vip(packet: &Packet) -> bool {
    let flow = &packet.flow;
    bit_set(&VIP_FILTER, flow.dst, flow.dport, flow.proto)
}

/// Whether the source may be a NAT real's service address:port.
#[inline(always)]
pub fn maybe_from_nat_real(packet: &Packet) -> bool {
    let flow = &packet.flow;
    bit_set(&REAL_FILTER, flow.src, flow.sport, flow.proto)
}

/// Frames not unicast to this host (promiscuous capture, floods) are never forwarded.
#[inline(always)]
pub fn unicast(packet: &Packet) -> Result<(), Reason> {
    // SAFETY: parse bounds-checked the Ethernet header.
    if unsafe { (*packet.eth).dst_addr[0] } & 1 != 0 {
        Err(Reason::NotUnicast)
    } else {
        Ok(())
    }
}
