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
        // An explicit non-overlapping copy: a plain assignment compiled to a call of a
        // byte-at-a-time memmove (the compiler could not rule out overlap with the map value).
        core::ptr::copy_nonoverlapping(real_mac.as_ptr(), (*packet.eth).dst_addr.as_mut_ptr(), 6);
    }
}
