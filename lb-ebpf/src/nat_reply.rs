//! NAT replies the flow cache did not serve (the `xdplb_nat_reply` program, tail-called by
//! `xdplb` for a packet from a NAT real's service address:port): the flow's reverse entry
//! (`nat::tracked_reply`), else the flow adopted from the policy. A program of its own keeps
//! this path's code out of the main program's verifier budget; the established replies of a
//! flow are served by the main program from the flow cache for the rest of each tick.
//!
//! Adoption: in an active/standby pair the standby has never seen the flows it takes over. A
//! client's next packet would find the same real (both nodes build the same Maglev tables),
//! but a real's reply (a retransmission, the rest of a download) often reaches the new active
//! node first: untranslated, the client would answer it with a reset. When the policy leaves
//! no doubt which VIP:port a real's address:port serves (`NAT_ORIGINS`, written by the
//! controller only for address:ports that serve exactly one), the reply is translated, and
//! both of the flow's entries are made: the reverse one for the replies, and the forward one
//! so the client's packets stay on this real even if the tables differ.
//!
//! A packet from a real's service port is not always a reply of a VIP flow: someone may talk
//! to the real directly through this host (routed), the host's own health checks get answers,
//! and a packet may be forged. So a flow is adopted only:
//! - while adoption is open (`NAT_ADOPT_UNTIL`): on a pair's standby, and for a while after
//!   it took the VIPs over; never on a balancer on its own;
//! - if its VIP:port is still served, its real is up, and the client's flow is not live on
//!   another real;
//! - if the packet is no SYN (a real opening a connection of its own), came in where the real
//!   is (the route to the real leaves by the interface it arrived on: a client-side host cannot
//!   forge one), and is routed on, not to this host (a health check's answer).
//!
//! During a flood the reply is translated but no entries are made.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::Addr,
    counters::Reason,
    flow::{FLOW_CLOSING, FlowKey, FlowValue, NatOrigin, ReplySource},
    maps::NAT_ADOPT_ALWAYS,
    service::{REAL_UP, Real, VipKey},
};

use crate::{
    age, flood, ip,
    maps::{FLOWS, NAT_ADOPT_UNTIL, NAT_ADOPTED, NAT_ORIGINS, NAT_REVERSE, REALS, SERVICES},
    nat::{self, ReplyTo, Route},
    parse::{self, Packet},
    snat, zero,
};

/// The program's body. `xdplb` checked that the frame is for us (`classify::for_us`) and that
/// its source may be a NAT real's before the tail call.
#[inline(always)]
pub fn frame<const V6: bool>(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram::<V6>(ctx)?;
    let packet = parse::transport(ctx, &datagram)?;
    let now = age::now();
    let to = match nat::tracked_reply(&packet, now) {
        Ok(to) => to,
        Err(_) => match snat::tracked_reply(&packet, now) {
            Ok(to) => to,
            Err(Reason::SnatUnknown) => return Err(Reason::SnatUnknown),
            // No live flow here: perhaps one a pair peer scheduled.
            Err(_) => adopt(ctx, &packet, now).map_err(|_| Reason::NotForVip)?,
        },
    };
    nat::reply(ctx, &packet, &to, now)
}

/// The translation of a reply of a flow this node never saw, with its entries made; any
/// refusal leaves the packet to the kernel.
#[inline(always)]
fn adopt<const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    now: u32,
) -> Result<ReplyTo, Reason> {
    if !adoption_open(now) || packet.opens {
        return Err(Reason::NotForVip);
    }
    let flow = packet.flow();
    let (origin, real) = origin_of(flow)?;
    // Where the real is: the route back to it leaves by the interface this came in on.
    // SAFETY: reading the context's ingress interface.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let cache = core::ptr::null_mut();
    match nat::next_hop(
        ctx,
        packet.ip,
        V6,
        flow.proto,
        cache,
        now,
        Addr::load(&flow.dst),
        Addr::load(&real.addr),
        flow.dport,
        flow.sport,
    )? {
        Route::Found(hop) if hop.ifindex == ingress => {}
        _ => return Err(Reason::NotForVip),
    }
    // Onward to a client, not to this host (the FIB refuses local destinations).
    ip::hops_allow(packet.ip, V6)?;
    nat::next_hop(
        ctx,
        packet.ip,
        V6,
        flow.proto,
        cache,
        now,
        Addr::load(&origin.vip),
        Addr::load(&flow.dst),
        origin.vip_port,
        flow.dport,
    )?;

    // A client whose flow is live on another real: this is no reply of it (forged, or a real
    // answering what it should not); adopting it would move the client.
    let client_side = client_side(flow, &origin);
    if on_another_real(&client_side, origin.real, now) {
        return Err(Reason::NotForVip);
    }
    if flood::flooded(now) {
        return Ok(ReplyTo::untracked(
            flow,
            Addr::load(&origin.vip),
            origin.vip_port,
            origin.real,
            real,
        ));
    }
    let flags = if packet.closes { FLOW_CLOSING } else { 0 };
    // A stale entry (expired, or of a replaced real) is overwritten: the real answers, so the
    // flow lives.
    let to = (Addr::load(&origin.vip), origin.vip_port);
    nat::enter_reply(flow, to, origin.real, origin.generation, now, flags);
    enter_client_side(&client_side, &origin, now, flags);
    if let Some(adopted) = NAT_ADOPTED.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *adopted += 1 };
    }
    match NAT_REVERSE.get_ptr_mut(flow) {
        Some(entry) => Ok(ReplyTo::tracked(
            flow,
            Addr::load(&origin.vip),
            origin.vip_port,
            origin.real,
            real,
            entry,
        )),
        None => Ok(ReplyTo::untracked(
            flow,
            Addr::load(&origin.vip),
            origin.vip_port,
            origin.real,
            real,
        )),
    }
}

/// Whether the controller has adoption open at tick `now`.
#[inline(always)]
fn adoption_open(now: u32) -> bool {
    match NAT_ADOPT_UNTIL.get(0) {
        Some(&until) => until == NAT_ADOPT_ALWAYS || (until.wrapping_sub(now) as i32) >= 0,
        None => false,
    }
}

/// The VIP:port a reply from `flow`'s source belongs to, if the policy says, that VIP:port is
/// still served, and its real is up and the same.
#[inline(always)]
fn origin_of(flow: &FlowKey) -> Result<(NatOrigin, &'static Real), Reason> {
    let source = ReplySource {
        addr: Addr::load(&flow.src),
        port: flow.sport,
        proto: flow.proto,
        _pad: 0,
        _pad2: 0,
    };
    // SAFETY: the value is copied out at once.
    let origin = unsafe { *NAT_ORIGINS.get(source).ok_or(Reason::NotForVip)? };
    let vip = VipKey {
        addr: Addr::load(&origin.vip),
        port: origin.vip_port,
        proto: flow.proto,
        _pad: 0,
        _pad2: 0,
    };
    // SAFETY: only its presence is read.
    if unsafe { SERVICES.get(vip) }.is_none() {
        return Err(Reason::NotForVip);
    }
    match REALS.get(origin.real) {
        Some(real) if real.generation == origin.generation && real.flags & REAL_UP != 0 => {
            Ok((origin, real))
        }
        _ => Err(Reason::NotForVip),
    }
}

/// The client's 5-tuple of the flow a reply belongs to.
#[inline(always)]
fn client_side(reply: &FlowKey, origin: &NatOrigin) -> FlowKey {
    FlowKey {
        src: Addr::load(&reply.dst),
        dst: Addr::load(&origin.vip),
        sport: reply.dport,
        dport: origin.vip_port,
        proto: reply.proto,
        _pad1: 0,
        _pad2: 0,
    }
}

/// Whether the client's flow has a live entry for a real other than `real`.
#[inline(always)]
fn on_another_real(client_side: &FlowKey, real: u32, now: u32) -> bool {
    // SAFETY: the fields are copied out at once.
    let Some((id, generation, seen, flags)) = (unsafe {
        FLOWS
            .get(client_side)
            .map(|e| (e.real, e.generation, e.seen, e.flags))
    }) else {
        return false;
    };
    if id == real {
        return false;
    }
    match REALS.get(id) {
        Some(other) => other.generation == generation && age::alive(seen, flags, other, now),
        None => false,
    }
}

/// The client's side of an adopted flow: its packets go to the real that answered, whatever
/// this node's table says. An entry there is stale or the same real's (`on_another_real`).
#[inline(always)]
fn enter_client_side(client_side: &FlowKey, origin: &NatOrigin, now: u32, flags: u32) {
    let mut forward = core::mem::MaybeUninit::<FlowValue>::uninit();
    zero::fill(&mut forward);
    let f = forward.as_mut_ptr();
    // SAFETY: writing fields of the zeroed value, then reading it whole.
    let forward = unsafe {
        (*f).real = origin.real;
        (*f).generation = origin.generation;
        (*f).seen = now;
        (*f).flags = flags;
        forward.assume_init_ref()
    };
    let _ = FLOWS.insert(client_side, forward, 0);
}
