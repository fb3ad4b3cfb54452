//! xdplb data plane: one XDP program, attached to the client-facing interface.
//!
//! ICMP goes to a program of its own (`xdplb_icmp`, icmp.rs) by a tail call, and so does a NAT
//! or SNAT reply that the flow cache does not serve (`xdplb_nat_reply`, nat_reply.rs). SNAT
//! (snat.rs) is NAT with the source rewritten too: it shares NAT's paths.
//! Every other packet goes parse -> flow cache (its flow went through its table this tick?), else
//! classify (could it be for a VIP, or a NAT reply?) -> schedule (which real?) or the NAT
//! reverse table -> rewrite -> action. Anything that is not for a configured
//! VIP:port:protocol leaves untouched with XDP_PASS, so the host's own traffic is never
//! disturbed.
#![no_std]
#![no_main]
// parse::opaque: an empty asm statement, to hide a value's known bits from the optimiser.
#![feature(asm_experimental_arch)]

mod age;
mod classify;
mod csum;
mod dr;
mod flood;
mod flow_cache;
mod icmp;
mod maps;
mod nat;
mod nat_reply;
mod nat_table;
mod parse;
mod schedule;
mod snat;
mod stats;
mod zero;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    IPPROTO_ICMP,
    counters::Reason,
    flow::CACHED_NAT_REPLY,
    maps::{PROGRAM_ICMP, PROGRAM_NAT_REPLY, PROGRAM_NAT_TABLE},
    service::{REAL_NAT, REAL_SNAT},
};
use maps::PROGRAMS;
use parse::Packet;

#[xdp]
pub fn xdplb(ctx: XdpContext) -> u32 {
    action(try_xdplb(&ctx))
}

/// ICMP, tail-called by `xdplb` (icmp.rs).
#[xdp]
pub fn xdplb_icmp(ctx: XdpContext) -> u32 {
    action(icmp::frame(&ctx))
}

/// A reply from a NAT real not served from the flow cache, tail-called by `xdplb`
/// (nat_reply.rs).
#[xdp]
pub fn xdplb_nat_reply(ctx: XdpContext) -> u32 {
    action(nat_reply::frame(&ctx))
}

/// A new NAT flow's first packet, or a SNAT flow's through the connection table, tail-called
/// by `xdplb` (nat_table.rs).
#[xdp]
pub fn xdplb_nat_table(ctx: XdpContext) -> u32 {
    action(nat_table::frame(&ctx))
}

/// The XDP action for a verdict: a packet not forwarded is counted under its reason, and
/// passed to the kernel or dropped.
#[inline(always)]
fn action(verdict: Result<u32, Reason>) -> u32 {
    match verdict {
        Ok(action) => action,
        Err(reason) => {
            stats::count_reason(reason);
            match reason {
                Reason::Fragment
                | Reason::NoReal
                | Reason::DirectToReal
                | Reason::SnatPortsExhausted
                | Reason::SnatUnknown => xdp_action::XDP_DROP,
                _ => xdp_action::XDP_PASS,
            }
        }
    }
}

/// Where a packet goes: to a real (DR or NAT), or back to a client as a NAT reply.
enum Path {
    ToReal(schedule::Chosen),
    NatReply(nat::ReplyTo),
    /// A reply from a NAT real's service address:port not in the flow cache: its flow is
    /// looked up, or adopted, by a program of its own (nat_reply.rs).
    UncachedReply,
}

#[inline(always)]
fn try_xdplb(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram(ctx)?;
    if datagram.proto == IPPROTO_ICMP {
        // SAFETY: a tail call replaces this program; it returns only if it could not be made.
        unsafe { PROGRAMS.tail_call(ctx, PROGRAM_ICMP) };
        return Err(Reason::NotForVip);
    }
    let packet = parse::transport(ctx, &datagram)?;
    let now = age::now();
    match route(ctx, &packet, now)? {
        // A new NAT flow's first packet, and a SNAT flow's through the tables (its first of a
        // clock tick, or its very first, whose port is to be claimed), go to a program of their
        // own (nat_table.rs); established NAT and cached SNAT packets are served here alike,
        // the cache slot having the source a SNAT packet leaves with.
        Path::ToReal(chosen)
            if chosen.real.flags & REAL_NAT != 0
                && (chosen.new_flow
                    || (chosen.real.flags & REAL_SNAT != 0 && chosen.via_table)) =>
        {
            // SAFETY: a tail call replaces this program; it returns only if it could not be made.
            unsafe { PROGRAMS.tail_call(ctx, PROGRAM_NAT_TABLE) };
            Err(Reason::NotForVip)
        }
        Path::ToReal(chosen) if chosen.real.flags & REAL_NAT != 0 => {
            nat::inbound::<false>(ctx, &packet, &chosen)
        }
        Path::ToReal(chosen) => {
            dr::rewrite(packet.eth as *mut u8, &chosen.real.mac);
            stats::count_forwarded(
                chosen.real.service,
                chosen.id,
                packet.frame_len,
                chosen.new_flow,
            );
            Ok(xdp_action::XDP_TX)
        }
        Path::NatReply(to) => nat::reply(ctx, &packet, &to, now),
        Path::UncachedReply => {
            // SAFETY: a tail call replaces this program; it returns only if it could not be made.
            unsafe { PROGRAMS.tail_call(ctx, PROGRAM_NAT_REPLY) };
            Err(Reason::NotForVip)
        }
    }
}

#[inline(always)]
fn route(ctx: &XdpContext, packet: &Packet, now: u32) -> Result<Path, Reason> {
    // A flow that went through its table this tick is served from the flow cache, before the
    // filters: no hash lookup at all on the established path. A SYN or FIN/RST takes the
    // table path (a SYN is hardly ever cached, and probing for it costs a cold read).
    if !packet.closes
        && !packet.opens
        && let Some(slot) = flow_cache::get(packet, now)
    {
        classify::header_valid(ctx, packet.ip as *const u8, packet.ip_words)?;
        if slot.direction == CACHED_NAT_REPLY {
            if let Some(to) = nat::cached_reply(slot) {
                return Ok(Path::NatReply(to));
            }
        } else if let Some(chosen) = schedule::cached(slot, now) {
            return Ok(Path::ToReal(chosen));
        }
    }
    let destination = classify::destination_bit(packet);
    if classify::maybe_to_vip(destination) {
        classify::for_us(ctx, packet)?;
        match schedule::pick_real(packet, now) {
            Ok(chosen) => return Ok(Path::ToReal(chosen)),
            // A filter collision: not a VIP after all, but it may still be a NAT reply.
            Err(Reason::NotForVip) => {}
            Err(reason) => return Err(reason),
        }
    }
    if classify::maybe_from_nat_real(packet) {
        classify::for_us(ctx, packet)?;
        return Ok(Path::UncachedReply);
    }
    // Routed through this host straight to a NAT real's service port, not through a VIP:
    // refused where the policy keeps the server side closed (controller/firewall.rs has the
    // rest of the rules; these tuples it lets through, for the translated packets this
    // program hands to the kernel while a next hop is unresolved).
    if classify::maybe_to_nat_real(destination) {
        classify::addressed_here(ctx, packet.eth as *const u8)?;
        if classify::guards_reals(ctx) {
            return Err(Reason::DirectToReal);
        }
    }
    Err(Reason::NotForVip)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
