//! A per-CPU, direct-mapped cache in front of the connection table, for DR flows only.
//!
//! The connection-table lookup is a call into the kernel's LRU hash map: 25 of the 39 ns the
//! established DR path costs above a bare XDP_TX. A slot here is found with an inline hash and
//! an array read. The connection table stays the authority: a flow is cached only after a
//! packet went through it at this clock tick, and the cache is trusted only for the rest of
//! that tick. So the first packet of every tick still refreshes the flow's age, its LRU
//! position and a persistent client's memory, and a flow rescheduled on another CPU is seen
//! within a tick. The real is checked on every hit (up, same generation), so a real going
//! down or its id being reused takes effect at once, as on the slow path. FIN/RST packets
//! always take the slow path, which marks the flow closing.

use lb_common::{
    flow::{CachedFlow, FlowKey},
    hash::flow_hash,
    maps::FLOW_CACHE_SLOTS,
};

use crate::maps::FLOW_CACHE;

#[inline(always)]
fn slot(flow: &FlowKey) -> u32 {
    flow_hash(flow.src, flow.dst, flow.sport, flow.dport, flow.proto) & (FLOW_CACHE_SLOTS - 1)
}

/// The real id and generation cached for `flow` at tick `now`, if any.
#[inline(always)]
pub fn get(flow: &FlowKey, now: u32) -> Option<(u32, u32)> {
    let cached = FLOW_CACHE.get_ptr(slot(flow))?;
    // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
    let cached = unsafe { &*cached };
    if cached.seen == now && cached.key == *flow {
        Some((cached.real, cached.generation))
    } else {
        None
    }
}

/// Caches `flow`'s real for the rest of tick `now`.
#[inline(always)]
pub fn put(flow: &FlowKey, real: u32, generation: u32, now: u32) {
    if let Some(cached) = FLOW_CACHE.get_ptr_mut(slot(flow)) {
        // SAFETY: as above.
        unsafe {
            *cached = CachedFlow {
                key: *flow,
                real,
                generation,
                seen: now,
                _pad: 0,
            }
        };
    }
}
