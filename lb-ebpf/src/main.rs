//! xdplb data plane: one XDP program, attached to the client-facing interface.
//!
//! IPv6 frames go to the same code built for IPv6 (`xdplb_v6`, by a tail call), which has IPv6
//! versions of the tail-called programs below: each family's program holds only its own
//! family's code, so IPv4 costs what it did before IPv6 existed, and each stays within the
//! verifier's budget.
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
mod copy;
mod csum;
mod dr;
mod flood;
mod flow_cache;
mod icmp;
mod ip;
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
    IPPROTO_ICMP, IPPROTO_ICMPV6,
    counters::Reason,
    flow::CACHED_NAT_REPLY,
    maps::{
        PROGRAM_ICMP, PROGRAM_ICMP6, PROGRAM_IPV6, PROGRAM_NAT_REPLY, PROGRAM_NAT_REPLY6,
        PROGRAM_NAT_TABLE, PROGRAM_NAT_TABLE6, PROGRAM_TABLE, PROGRAM_TABLE6,
    },
    service::{REAL_NAT, REAL_SNAT},
};
use maps::PROGRAMS;
use parse::Packet;

#[xdp]
pub fn xdplb(ctx: XdpContext) -> u32 {
    action(try_xdplb::<false>(&ctx))
}

/// IPv6, tail-called by `xdplb`.
#[xdp]
pub fn xdplb_v6(ctx: XdpContext) -> u32 {
    action(try_xdplb::<true>(&ctx))
}

/// A packet not served from the flow cache, tail-called by `xdplb` (`through_tables`).
#[xdp]
pub fn xdplb_table(ctx: XdpContext) -> u32 {
    action(through_tables::<false>(&ctx))
}

/// As `xdplb_table`, for IPv6.
#[xdp]
pub fn xdplb_table6(ctx: XdpContext) -> u32 {
    action(through_tables::<true>(&ctx))
}

/// ICMP, tail-called by `xdplb` (icmp.rs).
#[xdp]
pub fn xdplb_icmp(ctx: XdpContext) -> u32 {
    action(icmp::frame::<false>(&ctx))
}

/// ICMPv6, tail-called by `xdplb_v6` (icmp.rs).
#[xdp]
pub fn xdplb_icmp6(ctx: XdpContext) -> u32 {
    action(icmp::frame::<true>(&ctx))
}

/// A reply from a NAT real not served from the flow cache, tail-called by `xdplb`
/// (nat_reply.rs).
#[xdp]
pub fn xdplb_nat_reply(ctx: XdpContext) -> u32 {
    action(nat_reply::frame::<false>(&ctx))
}

/// As `xdplb_nat_reply`, for IPv6.
#[xdp]
pub fn xdplb_nat_reply6(ctx: XdpContext) -> u32 {
    action(nat_reply::frame::<true>(&ctx))
}

/// A new NAT flow's first packet, or a SNAT flow's through the connection table, tail-called
/// by `xdplb` (nat_table.rs).
#[xdp]
pub fn xdplb_nat_table(ctx: XdpContext) -> u32 {
    action(nat_table::frame::<false>(&ctx))
}

/// As `xdplb_nat_table`, for IPv6.
#[xdp]
pub fn xdplb_nat_table6(ctx: XdpContext) -> u32 {
    action(nat_table::frame::<true>(&ctx))
}

/// The `PROGRAMS` slot of a tail-called program, by family.
#[inline(always)]
const fn slot<const V6: bool>(v4: u32, v6: u32) -> u32 {
    if V6 { v6 } else { v4 }
}

/// Tail-calls the program in `slot`, which replaces this one; returns only if the call could not
/// be made (an empty slot), with the reason the packet is then passed.
#[inline(always)]
fn hand_over(ctx: &XdpContext, slot: u32, reason: Reason) -> Result<u32, Reason> {
    // SAFETY: a tail call replaces this program; it returns only if it could not be made.
    unsafe { PROGRAMS.tail_call(ctx, slot) };
    Err(reason)
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
fn try_xdplb<const V6: bool>(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = match parse::datagram_fast::<V6>(ctx) {
        Ok(datagram) => datagram,
        Err(Reason::NotIp) if !V6 && parse::carries_ipv6(ctx) => {
            return hand_over(ctx, PROGRAM_IPV6, Reason::NotForVip);
        }
        Err(reason) => return Err(reason),
    };
    if datagram.proto == slot::<V6>(IPPROTO_ICMP as u32, IPPROTO_ICMPV6 as u32) as u8 {
        return hand_over(
            ctx,
            slot::<V6>(PROGRAM_ICMP, PROGRAM_ICMP6),
            Reason::NotForVip,
        );
    }
    let packet = parse::transport(ctx, &datagram)?;
    let now = age::now();
    if let Some(path) = cached(ctx, &packet, now)? {
        return forward(ctx, &packet, path, now);
    }
    // Not served from the flow cache: if it may be for a VIP, from a NAT real or to one, the
    // tables decide, in a program of their own (`xdplb_table`); other traffic costs no more
    // than the filters' array reads.
    let destination = classify::destination_bit(&packet);
    if classify::maybe_to_vip(destination)
        || classify::maybe_from_nat_real(&packet)
        || classify::maybe_to_nat_real(destination)
    {
        return hand_over(
            ctx,
            slot::<V6>(PROGRAM_TABLE, PROGRAM_TABLE6),
            Reason::NotForVip,
        );
    }
    Err(Reason::NotForVip)
}

/// A packet the main program found in no flow-cache slot, through the connection tables
/// (the `xdplb_table` program): an established flow's first packet of a clock tick, a new
/// flow, a NAT reply not cached. Kept out of the main program, which then holds only the
/// cached paths, so each stays well within the verifier's budget.
#[inline(always)]
fn through_tables<const V6: bool>(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram::<V6>(ctx)?;
    let packet = parse::transport(ctx, &datagram)?;
    let now = age::now();
    let path = route(ctx, &packet, now)?;
    forward(ctx, &packet, path, now)
}

/// Sends a packet where its path leads.
#[inline(always)]
fn forward<const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    path: Path,
    now: u32,
) -> Result<u32, Reason> {
    match path {
        // A new NAT flow's first packet, and a SNAT flow's through the tables (its first of a
        // clock tick, or its very first, whose port is to be claimed), go to a program of their
        // own (nat_table.rs); established NAT and cached SNAT packets are served here alike,
        // the cache slot having the source a SNAT packet leaves with.
        Path::ToReal(chosen)
            if chosen.real.flags & REAL_NAT != 0
                && (chosen.new_flow
                    || (chosen.real.flags & REAL_SNAT != 0 && chosen.via_table)) =>
        {
            hand_over(
                ctx,
                slot::<V6>(PROGRAM_NAT_TABLE, PROGRAM_NAT_TABLE6),
                Reason::NotForVip,
            )
        }
        Path::ToReal(chosen) if chosen.real.flags & REAL_NAT != 0 => {
            nat::inbound::<false, V6>(ctx, packet, &chosen)
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
        Path::NatReply(to) => nat::reply(ctx, packet, &to, now),
        Path::UncachedReply => hand_over(
            ctx,
            slot::<V6>(PROGRAM_NAT_REPLY, PROGRAM_NAT_REPLY6),
            Reason::NotForVip,
        ),
    }
}

/// The path of a packet whose flow went through its table this tick, from the flow cache:
/// before the filters, with no hash lookup at all on the established path. A SYN or FIN/RST
/// takes the table path (a SYN is hardly ever cached, and probing for it costs a cold read).
#[inline(always)]
fn cached<const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    now: u32,
) -> Result<Option<Path>, Reason> {
    if !packet.closes
        && !packet.opens
        && let Some(slot) = flow_cache::get(packet, now)
    {
        classify::header_valid(ctx, packet.ip as *const u8, V6, packet.ip_words)?;
        if slot.direction == CACHED_NAT_REPLY {
            if let Some(to) = nat::cached_reply(slot) {
                return Ok(Some(Path::NatReply(to)));
            }
        } else if let Some(chosen) = schedule::cached(slot, now) {
            return Ok(Some(Path::ToReal(chosen)));
        }
    }
    Ok(None)
}

/// The path of a packet through the connection tables (the `xdplb_table` program).
#[inline(always)]
fn route<const V6: bool>(ctx: &XdpContext, packet: &Packet<V6>, now: u32) -> Result<Path, Reason> {
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
