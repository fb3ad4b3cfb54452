//! Direct routing: hand the unchanged IP packet to the real server on the same L2 segment.

use core::ptr::{read_unaligned, write_unaligned};

/// New destination: the real's MAC. New source: the MAC the frame was addressed to, which is
/// this interface's own (`classify::for_us` lets no other frame be forwarded).
#[inline(always)]
pub fn rewrite(eth: *mut u8, real_mac: &[u8; 6]) {
    // SAFETY: the caller bounds-checked the Ethernet header; the data plane is built with
    // misaligned access allowed. Each MAC moves as a 4- and a 2-byte word: a plain assignment
    // compiled to a call of a byte-at-a-time memmove (the compiler could not rule out overlap
    // with the map value), and a byte-wise copy to twelve loads and stores.
    unsafe {
        let own_hi = read_unaligned(eth as *const u32);
        let own_lo = read_unaligned(eth.add(4) as *const u16);
        write_unaligned(eth.add(6) as *mut u32, own_hi);
        write_unaligned(eth.add(10) as *mut u16, own_lo);
        let mac = real_mac.as_ptr();
        write_unaligned(eth as *mut u32, read_unaligned(mac as *const u32));
        write_unaligned(
            eth.add(4) as *mut u16,
            read_unaligned(mac.add(4) as *const u16),
        );
    }
}
