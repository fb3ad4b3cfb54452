//! Which real gets a packet. The connection table first: an established flow is forwarded
//! from its entry and the real alone, with no service lookup. On a miss, the service
//! (VIP:port:protocol) and its Maglev table indexed by the flow hash, and the choice is
//! remembered.
//!
//! A remembered real that went down, left the policy or whose id was given to another real is
//! not used, nor is an entry that has expired (`age`): the flow is scheduled afresh (or
//! passed, if its service is gone).

use lb_common::{
    counters::Reason,
    flow::{FLOW_CLOSING, FlowValue},
    hash::flow_hash,
    maps::{MAGLEV_TABLE_SIZE, NO_REAL},
    service::{REAL_NAT, REAL_UP, Real, VipKey},
};

use crate::{
    age,
    maps::{FLOWS, MAGLEV, REALS, SERVICES},
    nat,
    parse::Packet,
    zero,
};

pub struct Chosen {
    pub id: u32,
    pub real: Real,
    pub new_flow: bool,
    /// The flow's connection-table entry (null if it could not be stored), for NAT's
    /// next-hop cache.
    pub entry: *mut FlowValue,
    /// The clock tick this packet was handled at.
    pub now: u32,
}

#[inline(always)]
pub fn pick_real(packet: &Packet) -> Result<Chosen, Reason> {
    let flow = &packet.flow;
    let now = age::now();
    if let Some(entry) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: a map value pointer from a successful lookup.
        let (id, generation, seen, flags) = unsafe {
            (
                (*entry).real,
                (*entry).generation,
                (*entry).seen,
                (*entry).flags,
            )
        };
        if let Some(real) = usable_real(id)
            && real.generation == generation
            && (age::alive(seen, flags, &real, now)
                || (real.flags & REAL_NAT != 0 && nat::reply_alive(flow, &real, now)))
        {
            // SAFETY: fields of the entry found above.
            let began_closing =
                unsafe { age::touch(&mut (*entry).seen, &mut (*entry).flags, now, packet.closes) };
            if began_closing && real.flags & REAL_NAT != 0 {
                nat::mark_reply_closing(flow, &real);
            }
            return Ok(Chosen {
                id,
                real,
                new_flow: false,
                entry,
                now,
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
    let mut value = core::mem::MaybeUninit::<FlowValue>::uninit();
    zero::fill(&mut value);
    let v = value.as_mut_ptr();
    // SAFETY: writing fields of the zeroed value, then reading it whole.
    let value = unsafe {
        (*v).real = id;
        (*v).generation = real.generation;
        (*v).seen = now;
        (*v).flags = if packet.closes { FLOW_CLOSING } else { 0 };
        value.assume_init_ref()
    };
    // A full table evicts the least recently used flow; an error here only costs stickiness.
    let _ = FLOWS.insert(flow, value, 0);
    let entry = FLOWS.get_ptr_mut(flow).unwrap_or(core::ptr::null_mut());
    Ok(Chosen {
        id,
        real,
        new_flow: true,
        entry,
        now,
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
