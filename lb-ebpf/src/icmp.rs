//! ICMP errors about VIP flows: destination unreachable ("fragmentation needed" above all:
//! Path MTU discovery) and time exceeded. A router on the way reports a packet's trouble to
//! that packet's source, quoting its IP header and first 8 bytes of TCP/UDP:
//!
//! - **About a packet sent from a VIP** (a DR real's reply, or a NAT reply the balancer
//!   translated): the error is addressed to the VIP and reaches the balancer, whose kernel has
//!   no such connection. It must go to the real that owns the flow (quoted source VIP:port,
//!   quoted destination client:port):
//!   - DR: unchanged, to that real's MAC, as the flow's own packets go (its connection-table
//!     entry, else the same choice scheduling would make). The real holds the VIP.
//!   - NAT: translated as a NAT router does: the outer destination VIP becomes the real, the
//!     quoted source VIP:port becomes real:port, and the checksums follow.
//! - **About a packet the balancer sent to a NAT real** (client -> real:port, e.g. a real's
//!   "port unreachable", or a router's on the server side): the quoted destination becomes
//!   VIP:port again, the outer source too if it is the real itself, and it goes on to the
//!   client.
//!
//! Nothing here creates flow state or refreshes a flow's age, so forged errors cannot move or
//! keep alive a flow. Errors
//! about no flow of ours, or quoting too little to tell, go to the kernel unchanged
//! (`icmp_unmatched`, `malformed`); echo requests to a VIP are the kernel's to answer.

use core::ptr::{read_unaligned, write_unaligned};

use aya_ebpf::programs::XdpContext;
use lb_common::{
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    counters::Reason,
    flow::FlowKey,
    hash::vip_filter_bit,
    service::{FORWARD_DR, Real, VipKey},
};

use crate::{
    age, classify, csum, dr,
    maps::{NAT_REVERSE, REAL_FILTER, REALS, SERVICES},
    nat::{self, Route},
    parse::{self, Datagram, opaque_offset, ptr_at},
    schedule, stats,
};

const DESTINATION_UNREACHABLE: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
/// Offsets in the ICMP message: its checksum, and the quoted IP header after the 8-byte header.
const ICMP_CHECK: usize = 2;
const QUOTED_IP: usize = 8;
/// Offsets in an IPv4 header.
const IP_PROTO: usize = 9;
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
/// Offsets in the TCP and UDP headers.
const SPORT: usize = 0;
const DPORT: usize = 2;
const UDP_CHECK: usize = 6;
const TCP_CHECK: usize = 16;
/// The fragment offset, in the on-wire bytes of the IPv4 `frags` field.
const IP_OFFSET: u16 = 0x1fff;

/// The packet an ICMP error quotes.
struct Quoted {
    /// Offsets from the frame's start: the ICMP message, the quoted IP header, its TCP/UDP.
    icmp: usize,
    ip: usize,
    l4: usize,
    /// Its 5-tuple as quoted (the packet that went out: from `src` to `dst`).
    tuple: FlowKey,
}

/// An ICMP frame (the `xdplb_icmp` program, tail-called by `xdplb`: a program of its own
/// keeps this rare path from costing the established flows' code anything).
#[inline(always)]
pub fn frame(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram(ctx)?;
    error(ctx, &datagram, age::now())
}

/// An ICMP datagram: an error about a VIP flow is sent on to the real that owns the flow, or
/// to the client; anything else passes to the kernel.
#[inline(always)]
fn error(ctx: &XdpContext, datagram: &Datagram, now: u32) -> Result<u32, Reason> {
    if datagram.fragment {
        return Err(Reason::NotForVip); // a later fragment quotes nothing we can read
    }
    let quoted = quoted(ctx, datagram)?;
    // SAFETY: parse bounds-checked the outer IPv4 header.
    let (outer_src, outer_dst) = unsafe {
        (
            u32::from_ne_bytes((*datagram.ip).src_addr),
            u32::from_ne_bytes((*datagram.ip).dst_addr),
        )
    };
    let tuple = &quoted.tuple;
    // An error goes to the source of the packet it quotes.
    if tuple.src != outer_dst {
        return Err(Reason::IcmpUnmatched);
    }
    let key = VipKey {
        addr: tuple.src,
        port: tuple.sport,
        proto: tuple.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(service) = unsafe { SERVICES.get(key).copied() } {
        // Sent from a VIP: a reply of a client's flow, whose key is the quoted one reversed.
        accept(ctx, datagram)?;
        let flow = reversed(tuple);
        if service.forwarding == FORWARD_DR {
            let (id, real) = schedule::owner(&flow, &service, now).ok_or(Reason::IcmpUnmatched)?;
            dr::rewrite(datagram.eth as *mut u8, &real.mac);
            stats::count_forwarded(real.service, id, frame_len(ctx), false);
            return Ok(aya_ebpf::bindings::xdp_action::XDP_TX);
        }
        let (id, real) = schedule::tracked_real(&flow, now).ok_or(Reason::IcmpUnmatched)?;
        let port = if real.port != 0 {
            real.port
        } else {
            tuple.sport
        };
        return translate(
            ctx,
            datagram,
            &quoted,
            Side::Source,
            real.addr,
            port,
            None,
            id,
            real,
        );
    }
    // Sent to a NAT real: its replies' entry says which VIP:port the client knows.
    let bit = vip_filter_bit(tuple.dst, tuple.dport, tuple.proto);
    let word = REAL_FILTER.get(bit / 64).copied().unwrap_or(0);
    if word & (1u64 << (bit % 64)) == 0 {
        return Err(Reason::IcmpUnmatched);
    }
    let reply = reversed(tuple);
    // SAFETY: the fields are copied out at once.
    let (vip, vip_port, id, generation) = unsafe {
        let back = NAT_REVERSE.get(reply).ok_or(Reason::IcmpUnmatched)?;
        (back.vip, back.vip_port, back.real, back.generation)
    };
    let real = match REALS.get(id) {
        Some(real) if real.generation == generation => real,
        _ => return Err(Reason::IcmpUnmatched),
    };
    accept(ctx, datagram)?;
    // The real's own error (port unreachable...) must seem to come from the VIP.
    let outer_src = (outer_src == tuple.dst).then_some(vip);
    translate(
        ctx,
        datagram,
        &quoted,
        Side::Destination,
        vip,
        vip_port,
        outer_src,
        id,
        real,
    )
}

/// The error's quoted packet, if the datagram is a destination-unreachable or time-exceeded
/// message quoting a TCP or UDP packet's ports (not a later fragment's).
#[inline(always)]
fn quoted(ctx: &XdpContext, datagram: &Datagram) -> Result<Quoted, Reason> {
    let icmp = datagram.payload;
    // The whole 8-byte ICMP header (a 1-byte bound compiles to a comparison the verifier
    // learns nothing from).
    let header: *const [u8; 8] = ptr_at(ctx, icmp)?;
    // SAFETY: bounds-checked by ptr_at.
    let kind = unsafe { (*header)[0] };
    if kind != DESTINATION_UNREACHABLE && kind != TIME_EXCEEDED {
        return Err(Reason::NotForVip); // echo and the rest: the kernel's
    }
    let ip = icmp + QUOTED_IP;
    let header: *const [u8; 20] = ptr_at(ctx, ip).map_err(|_| Reason::Malformed)?;
    // SAFETY: bounds-checked by ptr_at.
    let header = unsafe { &*header };
    let words = (header[0] & 0x0f) as usize;
    let frags = u16::from_be_bytes([header[6], header[7]]);
    let proto = header[IP_PROTO];
    if header[0] >> 4 != 4 || words < 5 {
        return Err(Reason::Malformed);
    }
    // A first fragment quotes its ports; a later one has none.
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || frags & IP_OFFSET != 0 {
        return Err(Reason::IcmpUnmatched);
    }
    let l4 = opaque_offset(ip + words * 4);
    // The quote must hold the ports (and, with them, the 8 bytes RFC 792 asks for), inside
    // the outer datagram.
    let ports: *const [u8; 8] = ptr_at(ctx, l4).map_err(|_| Reason::Malformed)?;
    if l4 + 8 > datagram.end {
        return Err(Reason::Malformed);
    }
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { &*ports };
    let address = |at: usize| {
        u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    Ok(Quoted {
        icmp,
        ip,
        l4,
        tuple: FlowKey {
            src: address(IP_SRC),
            dst: address(IP_DST),
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            proto,
            _pad1: 0,
            _pad2: 0,
        },
    })
}

/// The frame is ours to forward (as `classify::for_us`).
#[inline(always)]
fn accept(ctx: &XdpContext, datagram: &Datagram) -> Result<(), Reason> {
    classify::frame_for_us(
        ctx,
        datagram.eth as *const u8,
        datagram.ip as *const u8,
        datagram.ip_words,
    )
}

/// The other direction's 5-tuple.
#[inline(always)]
fn reversed(tuple: &FlowKey) -> FlowKey {
    FlowKey {
        src: tuple.dst,
        dst: tuple.src,
        sport: tuple.dport,
        dport: tuple.sport,
        proto: tuple.proto,
        _pad1: 0,
        _pad2: 0,
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Which end of the quoted packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Its source (VIP:port, for a reply the balancer sent): the error goes in to the real, so
    /// the outer destination (the VIP) becomes the real too.
    Source,
    /// Its destination (real:port, for a packet the balancer sent to a real): the error goes
    /// out to the client.
    Destination,
}

/// NAT: rewrites the quoted packet's `side` to `addr`:`port` (and, going in, the outer
/// destination; going out, the outer source if `outer_src`), with every checksum, then
/// forwards like a router.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    datagram: &Datagram,
    quoted: &Quoted,
    side: Side,
    addr: u32,
    port: u16,
    outer_src: Option<u32>,
    id: u32,
    real: &Real,
) -> Result<u32, Reason> {
    let ip = datagram.ip;
    nat::ttl_allows(ip)?;
    // SAFETY: parse bounds-checked the outer IPv4 header.
    let (src, dst) = unsafe {
        (
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    let (new_src, new_dst) = match side {
        Side::Source => (src, addr),
        Side::Destination => (outer_src.unwrap_or(src), dst),
    };
    let hop = match nat::next_hop(
        ctx,
        ip,
        IPPROTO_ICMP,
        core::ptr::null_mut(),
        0,
        new_src,
        new_dst,
        0,
        0,
    )? {
        Route::Found(hop) => Some(hop),
        Route::NoNeighbour => None,
    };
    rewrite_quote(ctx, datagram, quoted, side, addr, port)?;
    // The outer header: addresses, and TTL for this hop (unless the kernel forwards it).
    // SAFETY: parse bounds-checked the outer IPv4 header.
    unsafe {
        let mut check = u16::from_ne_bytes((*ip).check);
        check = csum::replace4(check, src, new_src);
        check = csum::replace4(check, dst, new_dst);
        (*ip).src_addr = new_src.to_ne_bytes();
        (*ip).dst_addr = new_dst.to_ne_bytes();
        if hop.is_some() {
            let old = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).ttl -= 1;
            check = csum::replace2(check, old, u16::from_ne_bytes([(*ip).ttl, (*ip).proto]));
        }
        (*ip).check = check.to_ne_bytes();
    }
    match hop {
        Some(hop) => {
            stats::count_forwarded(real.service, id, frame_len(ctx), false);
            Ok(nat::send(ctx, datagram.eth, &hop))
        }
        None => Err(Reason::NoNeighbour),
    }
}

/// Rewrites the quoted packet's `side` address and port, fixing the quoted IP checksum, the
/// quoted TCP/UDP checksum when the quote holds it, and the ICMP checksum over all of them.
#[inline(always)]
fn rewrite_quote(
    ctx: &XdpContext,
    datagram: &Datagram,
    quoted: &Quoted,
    side: Side,
    addr: u32,
    port: u16,
) -> Result<(), Reason> {
    let (addr_at, port_at) = match side {
        Side::Source => (quoted.ip + IP_SRC, quoted.l4 + SPORT),
        Side::Destination => (quoted.ip + IP_DST, quoted.l4 + DPORT),
    };
    let icmp_check: *mut u16 = ptr_at(ctx, quoted.icmp + ICMP_CHECK)?;
    let ip_check: *mut u16 = ptr_at(ctx, quoted.ip + IP_CHECK)?;
    let addr_field: *mut u32 = ptr_at(ctx, addr_at)?;
    let port_field: *mut u16 = ptr_at(ctx, port_at)?;
    let l4_check_at = quoted.l4
        + if quoted.tuple.proto == IPPROTO_UDP {
            UDP_CHECK
        } else {
            TCP_CHECK
        };
    // A quote may stop before the TCP checksum (RFC 792 asks for only 8 bytes).
    let l4_check: Option<*mut u16> = if l4_check_at + 2 <= datagram.end {
        ptr_at(ctx, l4_check_at).ok()
    } else {
        None
    };
    // SAFETY: every pointer was bounds-checked by ptr_at; misaligned access is allowed.
    unsafe {
        let old_addr = read_unaligned(addr_field);
        let old_port = read_unaligned(port_field);
        let mut icmp = read_unaligned(icmp_check);
        write_unaligned(addr_field, addr);
        write_unaligned(port_field, port);
        icmp = csum::replace4(icmp, old_addr, addr);
        icmp = csum::replace2(icmp, old_port, port);

        let old = read_unaligned(ip_check);
        let new = csum::replace4(old, old_addr, addr);
        write_unaligned(ip_check, new);
        icmp = csum::replace2(icmp, old, new);

        if let Some(field) = l4_check {
            let old = read_unaligned(field);
            // A UDP datagram sent without a checksum (0) stays without one.
            if !(quoted.tuple.proto == IPPROTO_UDP && old == 0) {
                let mut new = csum::replace4(old, old_addr, addr);
                new = csum::replace2(new, old_port, port);
                if quoted.tuple.proto == IPPROTO_UDP && new == 0 {
                    new = 0xffff;
                }
                write_unaligned(field, new);
                icmp = csum::replace2(icmp, old, new);
            }
        }
        write_unaligned(icmp_check, icmp);
    }
    Ok(())
}
