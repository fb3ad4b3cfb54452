//! Flow ages: a remembered flow lives while packets keep coming. Each connection-table entry
//! keeps the clock tick of its last packet; an entry idle longer than its real's timeout (the
//! shorter closing timeout once a TCP FIN or RST was seen) is treated as absent, so the flow is
//! scheduled afresh and the LRU reuses the slot. A NAT flow has two entries (forward and
//! reverse) and lives while either direction is fresh: the other entry is only consulted when
//! one looks stale, so established packets pay for one lookup.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_jiffies64, macros::xdp, programs::XdpContext,
};
use lb_common::{
    clock::TICK_SHIFT,
    flow::{FLOW_CLOSING, entry_alive},
    service::Real,
};

use crate::maps::CLOCK;

/// The current clock tick (lb_common::clock).
#[inline(always)]
pub fn now() -> u32 {
    // SAFETY: the helper has no arguments or side effects.
    (unsafe { bpf_jiffies64() } >> TICK_SHIFT) as u32
}

/// The controller's view of the same clock: run with BPF_PROG_TEST_RUN (never attached), it
/// stores the current jiffies in `CLOCK`.
#[xdp]
pub fn xdplb_clock(_ctx: XdpContext) -> u32 {
    if let Some(jiffies) = CLOCK.get_ptr_mut(0) {
        // SAFETY: an array slot; concurrent runs all store a current value.
        unsafe { *jiffies = bpf_jiffies64() };
    }
    xdp_action::XDP_PASS
}

/// Whether an entry last seen at `seen`, with `flags`, is still alive at `now`.
#[inline(always)]
pub fn alive(seen: u32, flags: u32, real: &Real, now: u32) -> bool {
    entry_alive(seen, flags, real, now)
}

/// Records a packet on an entry: its tick (written only when it changed, so established
/// packets do not dirty the entry's cache line every time) and, for a FIN or RST, the closing
/// mark. Returns true when this packet began the closing, so the caller marks the other
/// direction's entry too.
///
/// # Safety
/// `seen` and `flags` point into one live map value.
#[inline(always)]
pub unsafe fn touch(seen: *mut u32, flags: *mut u32, now: u32, closes: bool) -> bool {
    // SAFETY: per the contract; a racing CPU can only store another tick or the same mark.
    unsafe {
        if *seen != now {
            *seen = now;
        }
        if closes && *flags & FLOW_CLOSING == 0 {
            *flags |= FLOW_CLOSING;
            return true;
        }
    }
    false
}

/// Marks an entry closing (its partner saw the FIN or RST).
///
/// # Safety
/// `flags` is null or points into a live map value.
#[inline(always)]
pub unsafe fn mark_closing(flags: *mut u32) {
    if !flags.is_null() {
        // SAFETY: per the contract.
        unsafe { *flags |= FLOW_CLOSING };
    }
}
