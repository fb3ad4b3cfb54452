//! Which real gets a packet. The connection table first: an established flow is forwarded
//! from its entry and the real alone, with no service lookup. On a miss, the service
//! (VIP:port:protocol) and its Maglev table indexed by the flow hash, and the choice is
//! remembered.
//!
//! A remembered real that went down, left the policy or whose id was given to another real is
//! not used: the flow is scheduled afresh (or passed, if its service is gone).

use lb_common::{
    counters::Reason,
    flow::{FlowValue, NextHop},
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
    /// The flow's connection-table entry (null if it could not be stored), for NAT's
    /// next-hop cache.
    pub entry: *mut FlowValue,
}

#[inline(always)]
pub fn pick_real(packet: &Packet) -> Result<Chosen, Reason> {
    let flow = &packet.flow;
    if let Some(entry) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a map value pointer from a successful lookup.
        let (id, generation) = unsafe { ((*entry).real, (*entry).generation) };
        if let Some(real) = usable_real(id)
            && real.generation == generation
        {
            return Ok(Chosen {
                id,
                real,
                new_flow: false,
                entry,
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
        hop: NextHop::default(),
    };
    // A full table evicts the least recently used flow; an error here only costs stickiness.
    let _ = FLOWS.insert(flow, value, 0);
    let entry = FLOWS.get_ptr_mut(flow).unwrap_or(core::ptr::null_mut());
    Ok(Chosen {
        id,
        real,
        new_flow: true,
        entry,
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
