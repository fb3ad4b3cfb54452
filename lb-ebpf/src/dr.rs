//! Direct routing: hand the unchanged IP packet to the real server on the same L2 segment.

use crate::parse::Packet;

/// New destination: the real's MAC. New source: the MAC the frame was addressed to, which is
/// this interface's own (parse only lets unicast frames through, and a NIC delivers unicast
/// frames only for its own address unless promiscuous).
#[inline(always)]
pub fn rewrite(packet: &Packet, real_mac: &[u8; 6]) {
    // SAFETY: parse bounds-checked the Ethernet header.
    unsafe {
        (*packet.eth).src_addr = (*packet.eth).dst_addr;
        (*packet.eth).dst_addr = *real_mac;
    }
}
