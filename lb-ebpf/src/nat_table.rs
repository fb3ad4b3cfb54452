//! NAT and SNAT packets through the connection table that the main program hands over (the
//! `xdplb_nat_table` program): a new NAT flow's first packet, which makes its reverse entry,
//! and a SNAT flow's first packet of a clock tick, which on the flow's very first claims its
//! source port (snat.rs). Their work is done once per flow or per tick; keeping it in a program
//! of its own keeps the main program, which serves every other packet of these flows from the
//! flow cache, within its verifier budget.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::Addr,
    counters::Reason,
    service::{REAL_NAT, REAL_SNAT, REAL_UP},
};

use crate::{
    age,
    maps::{FLOWS, REALS},
    nat,
    parse::{self, Packet},
    schedule::Chosen,
    snat,
};

/// The program's body. `xdplb` scheduled the packet's flow to a NAT or SNAT real and found or
/// made its `FLOWS` entry.
#[inline(always)]
pub fn frame<const V6: bool>(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram::<V6>(ctx)?;
    let packet = parse::transport(ctx, &datagram)?;
    to_real(ctx, &packet, age::now())
}

/// Forwards a client's packet from its connection-table entry. A NAT flow is new here (the
/// main program serves established ones); a SNAT flow is new while its entry has no port: it
/// claims one, and a flow that gets none loses its entry, so its next packet is scheduled
/// afresh.
#[inline(always)]
fn to_real<const V6: bool>(ctx: &XdpContext, packet: &Packet<V6>, now: u32) -> Result<u32, Reason> {
    let flow = packet.flow();
    let entry = FLOWS.get_ptr_mut(flow).ok_or(Reason::NotForVip)?;
    // SAFETY: a map value pointer from a successful lookup.
    let (id, generation, known) =
        unsafe { ((*entry).real, (*entry).generation, (*entry).snat_port) };
    let real = match REALS.get(id) {
        Some(real)
            if real.generation == generation
                && real.flags & (REAL_UP | REAL_NAT) == REAL_UP | REAL_NAT =>
        {
            real
        }
        _ => return Err(Reason::NotForVip),
    };
    let (new_flow, src) = if real.flags & REAL_SNAT == 0 {
        (true, (Addr::load(&flow.src), flow.sport))
    } else if known != 0 {
        (false, (Addr::load(&real.snat_addr), known))
    } else {
        match snat::claim(flow, real, id, now, packet.closes) {
            Ok(port) => {
                // SAFETY: as above.
                unsafe { (*entry).snat_port = port };
                (true, (Addr::load(&real.snat_addr), port))
            }
            Err(reason) => {
                let _ = FLOWS.remove(flow);
                return Err(reason);
            }
        }
    };
    let chosen = Chosen {
        id,
        real,
        new_flow,
        // SAFETY: a field of the entry found above.
        hop: unsafe { &mut (*entry).hop },
        via_table: true,
        now,
        src,
    };
    nat::inbound::<true, V6>(ctx, packet, &chosen)
}
