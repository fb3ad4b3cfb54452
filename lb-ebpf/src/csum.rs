//! Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')).
//!
//! Values are taken as they lie in memory (network byte order read as native words): the
//! one's-complement sum is independent of byte order, so no swapping is needed.

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Checksum after one 16-bit word changed from `old` to `new`.
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// Checksum after one 32-bit field (an address) changed from `old` to `new`.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = !check as u32
        + !(old as u16) as u32
        + !((old >> 16) as u16) as u32
        + (new as u16) as u32
        + (new >> 16);
    !fold(sum)
}
