//! Per-CPU counters: no atomics needed, the controller sums the CPUs.

use lb_common::counters::{Reason, TrafficCounters};

// `Reason::Forwarded` is not counted per packet: it is the sum of the service counters, and
// the controller derives it (one per-CPU update less on every forwarded packet).

use crate::maps::{REAL_COUNTERS, REASON_COUNTERS, SERVICE_COUNTERS};

#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(counter) = REASON_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_forwarded(service: u32, real: u32, bytes: u64, new_flow: bool) {
    add_traffic(SERVICE_COUNTERS.get_ptr_mut(service), bytes, new_flow);
    add_traffic(REAL_COUNTERS.get_ptr_mut(real), bytes, new_flow);
}

#[inline(always)]
fn add_traffic(counters: Option<*mut TrafficCounters>, bytes: u64, new_flow: bool) {
    if let Some(counters) = counters {
        // SAFETY: per-CPU slot, as above.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += bytes;
            (*counters).new_flows += new_flow as u64;
        }
    }
}
