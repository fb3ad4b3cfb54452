//! NAT replies the flow cache did not serve (the `xdplb_nat_reply` program, tail-called by
//! `xdplb` for a packet from a NAT real's service address:port): the flow's reverse entry
//! (`nat::tracked_reply`), else the flow adopted from the policy. A program of its own keeps
//! this path's code out of the main program's verifier budget; the established replies of a
//! flow are served by the main program from the flow cache for the rest of each tick.
//!
//! Adoption: in an active/standby pair the standby has never seen the flows it takes over. A client's
//! next packet would find the same real (both nodes build the same Maglev tables), but a real's
//! reply (a retransmission, the rest of a download) often reaches the new active node first:
//! untranslated, the client would answer it with a reset. When the policy leaves no doubt which
//! VIP:port a real's address:port serves (`NAT_ORIGINS`, written by the controller only for
//! address:ports that serve exactly one), the reply is translated, and both of the flow's
//! entries are made: the reverse one for the replies, and the forward one so the client's
//! packets stay on this real even if the tables differ.
//!
//! A forged "reply" from the server side can at most make entries that route a client to the
//! real it forged (which the client never asked for: its packets match no entry of its own
//! unless it already talks to that real); during a flood no entries are made, the reply is
//! only translated.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    counters::Reason,
    flow::{FLOW_CLOSING, FlowKey, FlowValue, ReplySource},
    service::REAL_UP,
};

use crate::{
    age, flood,
    maps::{FLOWS, NAT_ADOPTED, NAT_ORIGINS, NAT_REVERSE, REALS},
    nat::{self, ReplyTo},
    parse::{self, Packet},
    zero,
};

/// The program's body. `xdplb` checked that the frame is for us (`classify::for_us`) and that
/// its source may be a NAT real's before the tail call.
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram(ctx)?;
    let packet = parse::transport(ctx, &datagram)?;
    let now = age::now();
    let to = match nat::tracked_reply(&packet, now) {
        Ok(to) => to,
        // No live flow here: perhaps one a pair peer scheduled.
        Err(_) => adopt(&packet, now)?,
    };
    nat::reply(ctx, &packet, &to, now)
}

/// The translation of a reply of a flow this node never saw, with its entries made.
#[inline(always)]
fn adopt(packet: &Packet, now: u32) -> Result<ReplyTo, Reason> {
    let flow = &packet.flow;
    let source = ReplySource {
        addr: flow.src,
        port: flow.sport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let origin = unsafe { *NAT_ORIGINS.get(source).ok_or(Reason::NotForVip)? };
    let real = match REALS.get(origin.real) {
        Some(real) if real.generation == origin.generation && real.flags & REAL_UP != 0 => real,
        _ => return Err(Reason::NotForVip),
    };
    if flood::flooded(now) {
        return Ok(ReplyTo::untracked(
            origin.vip,
            origin.vip_port,
            origin.real,
            real,
        ));
    }
    flood::count_new_flow(now);
    let flags = if packet.closes { FLOW_CLOSING } else { 0 };

    // A stale entry (expired, or of a replaced real) is overwritten: the real answers, so the
    // flow lives.
    let to = (origin.vip, origin.vip_port);
    nat::enter_reply(flow, to, origin.real, origin.generation, now, flags);

    let mut forward = core::mem::MaybeUninit::<FlowValue>::uninit();
    zero::fill(&mut forward);
    let f = forward.as_mut_ptr();
    // SAFETY: as above.
    let forward = unsafe {
        (*f).real = origin.real;
        (*f).generation = origin.generation;
        (*f).seen = now;
        (*f).flags = flags;
        forward.assume_init_ref()
    };
    let client_side = FlowKey {
        src: flow.dst,
        dst: origin.vip,
        sport: flow.dport,
        dport: origin.vip_port,
        proto: flow.proto,
        _pad1: 0,
        _pad2: 0,
    };
    // A client entry that exists (only its reverse twin was evicted) is kept.
    let _ = FLOWS.insert(client_side, forward, aya_ebpf::bindings::BPF_NOEXIST as u64);

    if let Some(adopted) = NAT_ADOPTED.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *adopted += 1 };
    }
    match NAT_REVERSE.get_ptr_mut(flow) {
        Some(entry) => Ok(ReplyTo::tracked(
            origin.vip,
            origin.vip_port,
            origin.real,
            real,
            entry,
        )),
        None => Ok(ReplyTo::untracked(
            origin.vip,
            origin.vip_port,
            origin.real,
            real,
        )),
    }
}
