//! SNAT: NAT whose source is rewritten too, so the reals' replies come back to the balancer
//! whatever their routes, and nothing is configured on them. A flow's source becomes the
//! real's SNAT address (`Real::snat_addr`) and a port of xdplb's range (`SNAT_PORT_FIRST`,
//! `SNAT_PORT_COUNT`, reserved in the kernel by the controller); its replies, addressed to that
//! address:port, get the VIP:port back as their source and the client as their destination
//! (nat.rs does both rewrites).
//!
//! A port is claimed for a new flow by inserting the reply's 5-tuple into `SNAT_REVERSE` only
//! if it is absent, which is atomic across CPUs; a port whose entry exists is someone else's,
//! unless the entry is this very flow's (a forward entry lost to the LRU, or a pair peer that
//! chose the same port). The ports tried are the flow's hash stepped through the range, the
//! same on every balancer. Nothing here frees a port: the controller removes an entry once
//! both of its flow's directions expired (dataplane/snat_sweep.rs), so a live flow's port is
//! never given to another flow, and an expired flow's entry is never refreshed (`reply_of`
//! checks liveness first).

use aya_ebpf::bindings::BPF_NOEXIST;
use lb_common::{
    addr::Addr,
    counters::Reason,
    flow::{FLOW_CLOSING, FlowKey, NatReverse},
    hash::flow_hash,
    maps::{SNAT_PORT_COUNT, SNAT_PORT_FIRST, SNAT_PROBES},
    service::Real,
};

use crate::{
    copy,
    maps::{SNAT_ADDRS, SNAT_REVERSE},
    nat::{self, ReplyTo},
    parse::Packet,
    zero,
};

/// The source port (network byte order) of a new SNAT flow `flow` to `real` (id `id`), with
/// its reverse entry made; `SnatPortsExhausted` if every port tried is another live flow's or
/// the table is full.
#[inline(always)]
pub fn claim(flow: &FlowKey, real: &Real, id: u32, now: u32, closes: bool) -> Result<u16, Reason> {
    let mut back = core::mem::MaybeUninit::<NatReverse>::uninit();
    zero::fill(&mut back);
    let b = back.as_mut_ptr();
    // SAFETY: writing fields of the zeroed value, then reading it whole.
    let back = unsafe {
        (*b).vip = Addr::load(&flow.dst);
        (*b).vip_port = flow.dport;
        (*b).real = id;
        (*b).generation = real.generation;
        (*b).seen = now;
        (*b).flags = if closes { FLOW_CLOSING } else { 0 };
        (*b).client = Addr::load(&flow.src);
        (*b).client_port = flow.sport;
        back.assume_init_ref()
    };
    let mut reply = FlowKey {
        src: Addr::load(&real.addr),
        dst: Addr::load(&real.snat_addr),
        sport: nat::real_port(flow, real),
        dport: 0,
        proto: flow.proto,
        _pad1: 0,
        _pad2: 0,
    };
    let hash = flow_hash(&flow.src, &flow.dst, flow.sport, flow.dport, flow.proto);
    // An odd step visits every port of a power-of-two range before repeating one.
    let step = (hash >> 16) | 1;
    let mut probe = 0;
    while probe < SNAT_PROBES {
        let offset = hash.wrapping_add(probe.wrapping_mul(step)) & (SNAT_PORT_COUNT as u32 - 1);
        reply.dport = (SNAT_PORT_FIRST + offset as u16).to_be();
        if SNAT_REVERSE.insert(reply, back, BPF_NOEXIST as u64).is_ok() {
            return Ok(reply.dport);
        }
        // Taken: by this flow (its entry is made anew), or by another.
        if let Some(entry) = SNAT_REVERSE.get_ptr_mut(reply)
            // SAFETY: a map value pointer from a successful lookup.
            && unsafe { same_client(&*entry, flow) }
        {
            // SAFETY: as above: the entry and the value made above.
            unsafe { copy::words(entry, back) };
            return Ok(reply.dport);
        }
        probe += 1;
    }
    Err(Reason::SnatPortsExhausted)
}

/// Whether a reverse entry is the flow `flow`'s (the client's 5-tuple it was made for).
#[inline(always)]
fn same_client(entry: &NatReverse, flow: &FlowKey) -> bool {
    entry.client.same(&flow.src)
        && entry.client_port == flow.sport
        && entry.vip.same(&flow.dst)
        && entry.vip_port == flow.dport
}

/// A reply to a SNAT address:port: its flow's translation, if the flow is live. A packet to a
/// SNAT address in xdplb's port range that belongs to no live flow is `SnatUnknown` (dropped:
/// the kernel would answer it with a reset, ending the real's side of a connection a pair peer
/// may still be carrying); anything else is not SNAT's.
#[inline(always)]
pub fn tracked_reply<const V6: bool>(packet: &Packet<V6>, now: u32) -> Result<ReplyTo, Reason> {
    let flow = packet.flow();
    if let Some(entry) = SNAT_REVERSE.get_ptr_mut(flow)
        && let Ok(to) = nat::reply_of(packet, entry, now)
    {
        return Ok(to);
    }
    let port = u16::from_be(flow.dport);
    // SAFETY: only its presence is read.
    if (SNAT_PORT_FIRST..SNAT_PORT_FIRST + SNAT_PORT_COUNT).contains(&port)
        && unsafe { SNAT_ADDRS.get(Addr::load(&flow.dst)) }.is_some()
    {
        return Err(Reason::SnatUnknown);
    }
    Err(Reason::NotForVip)
}
