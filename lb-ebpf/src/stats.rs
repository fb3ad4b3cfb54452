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
            if new_flow {
                (*counters).new_flows += 1;
            }
        }
    }
}

/// A flow was scheduled but its first packet left to the kernel (NAT, neighbour unresolved):
/// the flow counts, the packet is counted by its reason instead.
#[inline(always)]
pub fn count_new_flow(service: u32, real: u32) {
    // Two plain calls: a loop over both pointers compiles to a pointer OR the verifier refuses.
    add_new_flow(SERVICE_COUNTERS.get_ptr_mut(service));
    add_new_flow(REAL_COUNTERS.get_ptr_mut(real));
}

#[inline(always)]
fn add_new_flow(counters: Option<*mut TrafficCounters>) {
    if let Some(counters) = counters {
        // SAFETY: per-CPU slot, as above.
        unsafe { (*counters).new_flows += 1 };
    }
}
