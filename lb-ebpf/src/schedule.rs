//! Which real gets a packet: the connection table first, so established flows stay where they
//! are; on a miss, the service's Maglev table indexed by the flow hash, and the choice is
//! remembered.

use lb_common::{
    counters::Reason,
    flow::FlowValue,
    hash::flow_hash,
    maps::{MAGLEV_TABLE_SIZE, NO_REAL},
    service::{REAL_UP, Real},
};

use crate::{
    maps::{FLOWS, MAGLEV, REALS},
    parse::Packet,
};

/// Returns the real id, the real, and whether the flow is new.
#[inline(always)]
pub fn pick_real(packet: &Packet) -> Result<(u32, Real, bool), Reason> {
    let flow = &packet.flow;
    // SAFETY: the value is copied out at once.
    if let Some(known) = unsafe { FLOWS.get(flow) } {
        let known = *known;
        if let Some(real) = usable_real(known.real)
            && real.generation == known.generation
        {
            return Ok((known.real, real, false));
        }
        // The real went down or its id was reused: schedule the flow afresh below.
    }

    let hash = flow_hash(flow.src, flow.dst, flow.sport, flow.dport, flow.proto);
    let index = packet.service.table_base + hash % MAGLEV_TABLE_SIZE;
    let real_id = match MAGLEV.get(index) {
        Some(&id) if id != NO_REAL => id,
        _ => return Err(Reason::NoReal),
    };
    let real = usable_real(real_id).ok_or(Reason::NoReal)?;
    let value = FlowValue {
        real: real_id,
        generation: real.generation,
    };
    // A full table evicts the least recently used flow; an error here only costs stickiness.
    let _ = FLOWS.insert(flow, value, 0);
    Ok((real_id, real, true))
}

#[inline(always)]
fn usable_real(id: u32) -> Option<Real> {
    let real = *REALS.get(id)?;
    if real.flags & REAL_UP != 0 {
        Some(real)
    } else {
        None
    }
}
