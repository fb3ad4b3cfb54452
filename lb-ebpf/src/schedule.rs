//! Which real gets a packet. The connection table first: an established flow is forwarded
//! from its entry and the real alone, with no service lookup. On a miss, the service
//! (VIP:port:protocol) and its Maglev table indexed by the flow hash, and the choice is
//! remembered.
//!
//! A remembered real that went down, left the policy or whose id was given to another real is
//! not used: the flow is scheduled afresh (or passed, if its service is gone).

use lb_common::{
    counters::Reason,
    flow::FlowValue,
    hash::flow_hash,
    maps::{MAGLEV_TABLE_SIZE, NO_REAL},
    service::{REAL_UP, Real, VipKey},
};

use crate::{
    maps::{FLOWS, MAGLEV, REALS, SERVICES},
    parse::Packet,
};

pub struct Chosen {
    pub id: u32,
    pub real: Real,
    pub new_flow: bool,
}

#[inline(always)]
pub fn pick_real(packet: &Packet) -> Result<Chosen, Reason> {
    let flow = &packet.flow;
    // SAFETY: the value is copied out at once.
    if let Some(known) = unsafe { FLOWS.get(flow) } {
        let known = *known;
        if let Some(real) = usable_real(known.real)
            && real.generation == known.generation
        {
            return Ok(Chosen {
                id: known.real,
                real,
                new_flow: false,
            });
        }
    }

    let vip = VipKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let service = match unsafe { SERVICES.get(vip) } {
        Some(service) => *service,
        None => return Err(Reason::NotForVip),
    };
    let hash = flow_hash(flow.src, flow.dst, flow.sport, flow.dport, flow.proto);
    let index = service.table_base + hash % MAGLEV_TABLE_SIZE;
    let id = match MAGLEV.get(index) {
        Some(&id) if id != NO_REAL => id,
        _ => return Err(Reason::NoReal),
    };
    let real = usable_real(id).ok_or(Reason::NoReal)?;
    let value = FlowValue {
        real: id,
        generation: real.generation,
    };
    // A full table evicts the least recently used flow; an error here only costs stickiness.
    let _ = FLOWS.insert(flow, value, 0);
    Ok(Chosen {
        id,
        real,
        new_flow: true,
    })
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
