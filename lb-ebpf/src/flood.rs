//! The SYN-flood detector (the rule and its reasons: lb_common::flood): per CPU, new flows
//! counted per clock tick, no atomics.

use lb_common::flood::{FLOOD_NEW_FLOWS_PER_TICK, FloodState};

use crate::maps::FLOOD;

/// Whether this CPU is flooded at tick `now`: it scheduled more new flows than the limit in
/// this tick or the one before.
#[inline(always)]
pub fn flooded(now: u32) -> bool {
    let Some(state) = FLOOD.get(0) else {
        return false;
    };
    if state.tick == now {
        state.flooded()
    } else {
        state.tick.wrapping_add(1) == now && state.this_tick > FLOOD_NEW_FLOWS_PER_TICK
    }
}

/// Counts a new flow scheduled on this CPU at tick `now` (a SYN, or another packet that
/// makes a connection-table entry).
#[inline(always)]
pub fn count_new_flow(now: u32) {
    let Some(state) = FLOOD.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
    let state: &mut FloodState = unsafe { &mut *state };
    if state.tick != now {
        state.last_tick = if state.tick.wrapping_add(1) == now {
            state.this_tick
        } else {
            0
        };
        state.this_tick = 0;
        state.tick = now;
    }
    state.this_tick = state.this_tick.saturating_add(1);
    if state.flooded() {
        state.flooded_at = now;
    }
}

/// A packet of a new DR flow forwarded without a connection-table entry.
#[inline(always)]
pub fn count_untracked() {
    if let Some(state) = FLOOD.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { (*state).untracked += 1 };
    }
}
