//! The cheap first question: could this packet be for a VIP? One array read in a bitmap the
//! controller fills with every VIP:port:protocol; a clear bit means certainly not, so traffic
//! to anything else costs no hash lookup. A set bit may be a collision: `schedule` settles it.

use lb_common::{counters::Reason, hash::vip_filter_bit};

use crate::{maps::VIP_FILTER, parse::Packet};

#[inline(always)]
pub fn maybe_for_vip(packet: &Packet) -> Result<(), Reason> {
    let flow = &packet.flow;
    let bit = vip_filter_bit(flow.dst, flow.dport, flow.proto);
    let word = VIP_FILTER.get(bit / 64).copied().unwrap_or(0);
    if word & (1u64 << (bit % 64)) == 0 {
        return Err(Reason::NotForVip);
    }
    // SAFETY: parse bounds-checked the Ethernet header.
    if unsafe { (*packet.eth).dst_addr[0] } & 1 != 0 {
        return Err(Reason::NotUnicast);
    }
    Ok(())
}
