//! ICMP errors about VIP flows: destination unreachable ("fragmentation needed" above all:
//! Path MTU discovery) and time exceeded, and their ICMPv6 counterparts (packet too big,
//! destination unreachable, time exceeded). A router on the way reports a packet's trouble to
//! that packet's source, quoting its IP header and first 8 bytes of TCP/UDP (IPv6: as much of
//! the packet as fits):
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
//! (`icmp_unmatched`, `malformed`); echo requests to a VIP are the kernel's to answer, and so is
//! all of IPv6 neighbour discovery (solicitations, advertisements, router messages), which is
//! never touched here. An ICMPv6 error whose quote has extension headers before TCP/UDP is
//! passed as unmatched.

use core::ptr::{read_unaligned, write_unaligned};

use aya_ebpf::programs::XdpContext;
use lb_common::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    addr::Addr,
    counters::Reason,
    flow::FlowKey,
    hash::vip_filter_bit,
    service::{FORWARD_DR, REAL_SNAT, Real, VipKey},
};

use crate::{
    age, classify, csum, dr,
    ip::{self, IPV6_DST, IPV6_SRC},
    maps::{FLOWS, NAT_REVERSE, REAL_FILTER, REALS, SERVICES, SNAT_REVERSE},
    nat::{self, Route},
    parse::{self, Datagram, opaque_offset, ptr_at},
    schedule, stats,
};

/// ICMP (IPv4) error types.
const DESTINATION_UNREACHABLE: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
/// ICMPv6 error types (RFC 4443).
const V6_DESTINATION_UNREACHABLE: u8 = 1;
const V6_PACKET_TOO_BIG: u8 = 2;
const V6_TIME_EXCEEDED: u8 = 3;
/// Offsets in the ICMP message: its checksum, and the quoted IP header after the 8-byte header.
const ICMP_CHECK: usize = 2;
const QUOTED_IP: usize = 8;
/// Offsets in an IPv4 header.
const IP_PROTO: usize = 9;
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
/// Offsets in an IPv6 header.
const IPV6_NEXT: usize = 6;
const IPV6_LEN: usize = 40;
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

/// An ICMP or ICMPv6 frame (the `xdplb_icmp` program, tail-called by `xdplb`: a program of its
/// own keeps this rare path from costing the established flows' code anything).
#[inline(always)]
pub fn frame<const V6: bool>(ctx: &XdpContext) -> Result<u32, Reason> {
    let datagram = parse::datagram::<V6>(ctx)?;
    error(ctx, &datagram, age::now())
}

/// An ICMP datagram: an error about a VIP flow is sent on to the real that owns the flow, or
/// to the client; anything else passes to the kernel.
#[inline(always)]
fn error<const V6: bool>(
    ctx: &XdpContext,
    datagram: &Datagram<V6>,
    now: u32,
) -> Result<u32, Reason> {
    if datagram.fragment {
        return Err(Reason::NotForVip); // a later fragment quotes nothing we can read
    }
    let quoted = quoted(ctx, datagram)?;
    let (outer_src, outer_dst) = addresses(ctx, datagram)?;
    let tuple = &quoted.tuple;
    // An error goes to the source of the packet it quotes.
    if !tuple.src.same(&outer_dst) {
        return Err(Reason::IcmpUnmatched);
    }
    let key = VipKey {
        addr: Addr::load(&tuple.src),
        port: tuple.sport,
        proto: tuple.proto,
        _pad: 0,
        _pad2: 0,
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
        // SNAT: the real sent it to the SNAT address:port, which the quote must show too.
        let to = if real.flags & REAL_SNAT != 0 {
            // SAFETY: the field is copied out at once.
            let snat_port = unsafe { FLOWS.get(flow) }.map_or(0, |f| f.snat_port);
            (Addr::load(&real.snat_addr), snat_port)
        } else {
            (Addr::load(&tuple.dst), tuple.dport)
        };
        return translate(
            ctx,
            datagram,
            &quoted,
            Rewrite {
                quote_src: (Addr::load(&real.addr), port),
                quote_dst: to,
                outer_src,
                outer_dst: Addr::load(&real.addr),
            },
            id,
            real,
        );
    }
    // Sent to a NAT real: its replies' entry says which VIP:port the client knows.
    let bit = vip_filter_bit(&tuple.dst, tuple.dport, tuple.proto);
    let word = REAL_FILTER.get(bit / 64).copied().unwrap_or(0);
    if word & (1u64 << (bit % 64)) == 0 {
        return Err(Reason::IcmpUnmatched);
    }
    let reply = reversed(tuple);
    // SAFETY: the fields are copied out at once.
    let (vip, vip_port, id, generation, client, client_port) = unsafe {
        let back = match NAT_REVERSE.get(reply) {
            Some(back) => back,
            None => SNAT_REVERSE.get(reply).ok_or(Reason::IcmpUnmatched)?,
        };
        (
            Addr::load(&back.vip),
            back.vip_port,
            back.real,
            back.generation,
            Addr::load(&back.client),
            back.client_port,
        )
    };
    let real = match REALS.get(id) {
        Some(real) if real.generation == generation => real,
        _ => return Err(Reason::IcmpUnmatched),
    };
    accept(ctx, datagram)?;
    // SNAT: the quote's source (the SNAT address:port) and the error's destination become
    // the client again. NAT: they are the client already.
    let (to, to_port) = if !client.is_none() {
        (client, client_port)
    } else {
        (Addr::load(&tuple.src), tuple.sport)
    };
    // The real's own error (port unreachable...) must seem to come from the VIP.
    let new_outer_src = if outer_src.same(&tuple.dst) {
        vip
    } else {
        outer_src
    };
    translate(
        ctx,
        datagram,
        &quoted,
        Rewrite {
            quote_src: (to, to_port),
            quote_dst: (vip, vip_port),
            outer_src: new_outer_src,
            outer_dst: if client.is_none() { outer_dst } else { client },
        },
        id,
        real,
    )
}

/// The outer datagram's source and destination.
#[inline(always)]
fn addresses<const V6: bool>(
    ctx: &XdpContext,
    datagram: &Datagram<V6>,
) -> Result<(Addr, Addr), Reason> {
    if V6 {
        // parse checked the header; the verifier may have lost which family it checked.
        let header: *const [u8; IPV6_LEN] = ptr_at(ctx, datagram.ip as usize - ctx.data())?;
        let ip = header as *const u8;
        // SAFETY: bounds-checked by ptr_at.
        Ok(unsafe { (read_addr(ip.add(IPV6_SRC)), read_addr(ip.add(IPV6_DST))) })
    } else {
        let ip = datagram.ipv4();
        // SAFETY: parse bounds-checked the IPv4 header.
        Ok(unsafe {
            (
                Addr::v4(u32::from_ne_bytes((*ip).src_addr)),
                Addr::v4(u32::from_ne_bytes((*ip).dst_addr)),
            )
        })
    }
}

/// The 16-byte address at `at`.
///
/// # Safety
/// `at` must point to 16 readable bytes.
#[inline(always)]
unsafe fn read_addr(at: *const u8) -> Addr {
    let (high, low) = unsafe {
        (
            read_unaligned(at as *const u64),
            read_unaligned(at.add(8) as *const u64),
        )
    };
    Addr {
        words: [
            high as u32,
            (high >> 32) as u32,
            low as u32,
            (low >> 32) as u32,
        ],
    }
}

/// The error's quoted packet, if the datagram is an error message of its family quoting a TCP
/// or UDP packet's ports (not a later fragment's).
#[inline(always)]
fn quoted<const V6: bool>(ctx: &XdpContext, datagram: &Datagram<V6>) -> Result<Quoted, Reason> {
    let icmp = datagram.payload;
    // The whole 8-byte ICMP header (a 1-byte bound compiles to a comparison the verifier
    // learns nothing from).
    let header: *const [u8; 8] = ptr_at(ctx, icmp)?;
    // SAFETY: bounds-checked by ptr_at.
    let kind = unsafe { (*header)[0] };
    let ip = icmp + QUOTED_IP;
    let (l4, tuple_addrs, proto) = if V6 {
        if kind != V6_DESTINATION_UNREACHABLE
            && kind != V6_PACKET_TOO_BIG
            && kind != V6_TIME_EXCEEDED
        {
            return Err(Reason::NotForVip); // echo, neighbour discovery...: the kernel's
        }
        let header: *const [u8; IPV6_LEN] = ptr_at(ctx, ip).map_err(|_| Reason::Malformed)?;
        // SAFETY: bounds-checked by ptr_at.
        let (version, proto, src, dst) = unsafe {
            let at = header as *const u8;
            (
                *at >> 4,
                *at.add(IPV6_NEXT),
                read_addr(at.add(IPV6_SRC)),
                read_addr(at.add(IPV6_DST)),
            )
        };
        if version != 6 {
            return Err(Reason::Malformed);
        }
        // An IPv4-mapped address in a quote is no packet of ours (parse refuses them).
        if src.is_v4() || dst.is_v4() {
            return Err(Reason::IcmpUnmatched);
        }
        (ip + IPV6_LEN, (src, dst), proto)
    } else {
        if kind != DESTINATION_UNREACHABLE && kind != TIME_EXCEEDED {
            return Err(Reason::NotForVip); // echo and the rest: the kernel's
        }
        let header: *const [u8; 20] = ptr_at(ctx, ip).map_err(|_| Reason::Malformed)?;
        // SAFETY: bounds-checked by ptr_at.
        let header = unsafe { &*header };
        let words = (header[0] & 0x0f) as usize;
        let frags = u16::from_be_bytes([header[6], header[7]]);
        if header[0] >> 4 != 4 || words < 5 {
            return Err(Reason::Malformed);
        }
        // A first fragment quotes its ports; a later one has none.
        if frags & IP_OFFSET != 0 {
            return Err(Reason::IcmpUnmatched);
        }
        let address = |at: usize| {
            Addr::v4(u32::from_ne_bytes([
                header[at],
                header[at + 1],
                header[at + 2],
                header[at + 3],
            ]))
        };
        (
            ip + words * 4,
            (address(IP_SRC), address(IP_DST)),
            header[IP_PROTO],
        )
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Reason::IcmpUnmatched);
    }
    let l4 = opaque_offset(l4);
    // The quote must hold the ports (and, with them, the 8 bytes RFC 792 asks for), inside
    // the outer datagram.
    let ports: *const [u8; 8] = ptr_at(ctx, l4).map_err(|_| Reason::Malformed)?;
    if l4 + 8 > datagram.end {
        return Err(Reason::Malformed);
    }
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { &*ports };
    Ok(Quoted {
        icmp,
        ip,
        l4,
        tuple: FlowKey {
            src: Addr::load(&tuple_addrs.0),
            dst: Addr::load(&tuple_addrs.1),
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
fn accept<const V6: bool>(ctx: &XdpContext, datagram: &Datagram<V6>) -> Result<(), Reason> {
    classify::frame_for_us(
        ctx,
        datagram.eth as *const u8,
        datagram.ip as *const u8,
        V6,
        datagram.ip_words,
    )
}

/// The other direction's 5-tuple.
#[inline(always)]
fn reversed(tuple: &FlowKey) -> FlowKey {
    FlowKey {
        src: Addr::load(&tuple.dst),
        dst: Addr::load(&tuple.src),
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

/// What an error becomes: the quoted packet's source and destination address:port, and the
/// error's own source and destination. Going in to a real, the quote becomes the packet the
/// real sent (real -> client, or SNAT address); going out to a client, the packet the client
/// sent (client -> VIP). Fields a mode leaves alone are given unchanged.
struct Rewrite {
    quote_src: (Addr, u16),
    quote_dst: (Addr, u16),
    outer_src: Addr,
    outer_dst: Addr,
}

/// NAT and SNAT: rewrites the error as `to` says, with every checksum, then forwards it like a
/// router.
#[inline(always)]
fn translate<const V6: bool>(
    ctx: &XdpContext,
    datagram: &Datagram<V6>,
    quoted: &Quoted,
    to: Rewrite,
    id: u32,
    real: &Real,
) -> Result<u32, Reason> {
    let (ip, v6) = (datagram.ip, V6);
    ip::hops_allow(ip, v6)?;
    let proto = if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    let hop = match nat::next_hop(
        ctx,
        ip,
        v6,
        proto,
        core::ptr::null_mut(),
        0,
        to.outer_src,
        to.outer_dst,
        0,
        0,
    )? {
        Route::Found(hop) => Some(hop),
        Route::NoNeighbour => None,
    };
    let icmp_check: *mut u16 = ptr_at(ctx, quoted.icmp + ICMP_CHECK)?;
    let mut delta = rewrite_quote(ctx, datagram, quoted, to.quote_src, to.quote_dst)?;
    // The outer header: addresses, and a hop off (unless the kernel forwards it). ICMPv6's
    // checksum covers the outer addresses too (its pseudo-header); ICMP's does not.
    let outer = ip::rewrite_addresses(ctx, ip, v6, &to.outer_src, &to.outer_dst, hop.is_some())?;
    if v6 {
        delta += outer;
    }
    // SAFETY: bounds-checked by ptr_at; misaligned access is allowed.
    unsafe { write_unaligned(icmp_check, csum::apply(read_unaligned(icmp_check), delta)) };
    match hop {
        Some(hop) => {
            stats::count_forwarded(real.service, id, frame_len(ctx), false);
            Ok(nat::send(ctx, datagram.eth, &hop))
        }
        None => Err(Reason::NoNeighbour),
    }
}

/// Rewrites the quoted packet's source and destination address and port, fixing the quoted
/// IPv4 checksum and the quoted TCP/UDP checksum when the quote holds it. Returns what all of
/// that adds to the ICMP checksum, which covers the whole quote.
#[inline(always)]
fn rewrite_quote<const V6: bool>(
    ctx: &XdpContext,
    datagram: &Datagram<V6>,
    quoted: &Quoted,
    src: (Addr, u16),
    dst: (Addr, u16),
) -> Result<u32, Reason> {
    let sport_field: *mut u16 = ptr_at(ctx, quoted.l4 + SPORT)?;
    let dport_field: *mut u16 = ptr_at(ctx, quoted.l4 + DPORT)?;
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
    let mut icmp;
    // The addresses' change, which the quoted TCP/UDP checksum's pseudo-header sees too.
    let addresses;
    if V6 {
        let header: *mut [u8; IPV6_LEN] = ptr_at(ctx, quoted.ip)?;
        let at = header as *mut u8;
        // SAFETY: bounds-checked by ptr_at: both addresses are inside the quoted header.
        addresses = unsafe {
            ip::write_addr(at.add(IPV6_SRC), &src.0) + ip::write_addr(at.add(IPV6_DST), &dst.0)
        };
        icmp = addresses;
    } else {
        let ip_check: *mut u16 = ptr_at(ctx, quoted.ip + IP_CHECK)?;
        let src_field: *mut u32 = ptr_at(ctx, quoted.ip + IP_SRC)?;
        let dst_field: *mut u32 = ptr_at(ctx, quoted.ip + IP_DST)?;
        let (new_src, new_dst) = (src.0.v4_word(), dst.0.v4_word());
        // SAFETY: every pointer was bounds-checked by ptr_at; misaligned access is allowed.
        unsafe {
            let (old_src, old_dst) = (read_unaligned(src_field), read_unaligned(dst_field));
            write_unaligned(src_field, new_src);
            write_unaligned(dst_field, new_dst);
            addresses = csum::delta4(old_src, new_src) + csum::delta4(old_dst, new_dst);
            let old = read_unaligned(ip_check);
            let new = csum::apply(old, addresses);
            write_unaligned(ip_check, new);
            icmp = addresses + csum::delta2(old, new);
        }
    }
    // SAFETY: every pointer was bounds-checked by ptr_at; misaligned access is allowed.
    unsafe {
        let (old_sport, old_dport) = (read_unaligned(sport_field), read_unaligned(dport_field));
        write_unaligned(sport_field, src.1);
        write_unaligned(dport_field, dst.1);
        let ports = csum::delta2(old_sport, src.1) + csum::delta2(old_dport, dst.1);
        icmp += ports;
        if let Some(field) = l4_check {
            let old = read_unaligned(field);
            // A UDP datagram sent without a checksum (0) stays without one.
            if !(quoted.tuple.proto == IPPROTO_UDP && old == 0) {
                let mut new = csum::apply(old, addresses + ports);
                if quoted.tuple.proto == IPPROTO_UDP && new == 0 {
                    new = 0xffff;
                }
                write_unaligned(field, new);
                icmp += csum::delta2(old, new);
            }
        }
    }
    Ok(icmp)
}
