//! Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Values are taken as they lie in memory (network byte order read as native words): the
//! one's-complement sum is independent of byte order, so no swapping is needed.

use core::ptr::read_unaligned;

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// What changing a 32-bit field from `old` to `new` adds to a checksum's complement: deltas of
/// several fields are summed, then applied to each checksum covering them with `apply` (one
/// fold for all, where `replace4` folds per field).
#[inline(always)]
pub fn delta4(old: u32, new: u32) -> u32 {
    !(old as u16) as u32 + !((old >> 16) as u16) as u32 + (new as u16) as u32 + (new >> 16)
}

/// `delta4` for a 16-bit field.
#[inline(always)]
pub fn delta2(old: u16, new: u16) -> u32 {
    !old as u32 + new as u32
}

/// The checksum after changes whose summed deltas are `delta` (at most a few dozen fields).
#[inline(always)]
pub fn apply(check: u16, delta: u32) -> u16 {
    !fold(!check as u32 + delta)
}

/// Whether the IPv4 header of `words` 32-bit words at `ip` has a right checksum: the
/// one's-complement sum of the whole header, checksum field included, is all ones. The first
/// five words must already be bounds-checked; options are checked against `data_end` here.
#[inline(always)]
pub fn ipv4_header_valid(ip: *const u8, words: usize, data_end: usize) -> bool {
    let mut sum: u64 = 0;
    // SAFETY: the fixed header is inside the frame (the caller's bounds check); the data plane
    // is built with misaligned access allowed.
    unsafe {
        for i in 0..5 {
            sum += read_unaligned(ip.add(i * 4) as *const u32) as u64;
        }
    }
    for i in 5..15 {
        if i >= words {
            break;
        }
        // SAFETY: inside the IP header's declared length, bounds-checked just before.
        let word = unsafe { ip.add(i * 4) };
        if word as usize + 4 > data_end {
            return false;
        }
        sum += unsafe { read_unaligned(word as *const u32) } as u64;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32) == 0xffff
}
