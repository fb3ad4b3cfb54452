//! NAT forwarding: the destination becomes the real (address, and port if the real has one),
//! and replies coming back through the balancer get the VIP:port back as their source. SNAT
//! (snat.rs) is NAT whose source is rewritten too, to the real's SNAT address and a port of
//! xdplb's range; its replies get the client back as their destination.
//! Like a router: TTL (hop limit) is decremented (a packet that would expire is left to the
//! kernel), the next hop and egress interface come from the kernel's FIB, and checksums are
//! updated incrementally (an IPv4 UDP checksum of 0, "none", stays 0). Both families take the
//! same path; what differs in their headers is in ip.rs.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{
    IPPROTO_UDP,
    addr::Addr,
    counters::Reason,
    flow::{CachedFlow, FLOW_CLOSING, FlowKey, NatReverse, NextHop},
    service::{REAL_SNAT, Real},
};

use network_types::eth::EthHdr;

use crate::{
    age, copy, csum, flow_cache, ip,
    maps::{FIB_REQUEST, FLOWS, NAT_REVERSE, REALS, REVERSE_SCRATCH, SNAT_REVERSE},
    parse::Packet,
    schedule::Chosen,
    stats, zero,
};

/// Offsets in the TCP and UDP headers.
const SPORT: usize = 0;
const DPORT: usize = 2;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

pub enum Route {
    Found(NextHop),
    /// The route exists but the neighbour's MAC is unknown: the kernel must resolve it.
    NoNeighbour,
}

/// Client -> VIP:port, scheduled to a NAT or SNAT real; the packet leaves from `chosen.src`
/// (the client's own, or the SNAT address and port). `FIRST`: the flow's packets through the
/// table, handled by the `xdplb_nat_table` program (nat_table.rs), where a new flow makes its
/// reverse entry and counts as new; the main program serves established flows only
/// (`FIRST` false), so none of that is in its verifier budget.
#[inline(always)]
pub fn inbound<const FIRST: bool, const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    chosen: &Chosen,
) -> Result<u32, Reason> {
    let flow = packet.flow();
    let real = chosen.real;
    let port = real_port(flow, real);
    // The reverse entry is made with the forward one, before anything can refuse this packet:
    // the flow's later packets are established and would never make it, and the real's
    // replies would leave untranslated for the whole idle timeout. (SNAT's was made when its
    // port was claimed.)
    let new_flow = FIRST && chosen.new_flow;
    if new_flow && real.flags & REAL_SNAT == 0 {
        let flags = if packet.closes { FLOW_CLOSING } else { 0 };
        let to = (Addr::load(&flow.dst), flow.dport);
        enter_reply(
            &reply_key(flow, real, 0),
            to,
            chosen.id,
            real.generation,
            chosen.now,
            flags,
        );
    }
    ttl_allows_forwarding(packet)?;
    let (src, sport) = chosen.src;
    let route = next_hop(
        ctx,
        packet.ip,
        V6,
        flow.proto,
        chosen.hop,
        chosen.now,
        src,
        Addr::load(&real.addr),
        sport,
        port,
    )?;
    match route {
        Route::NoNeighbour => {
            // Translated but not aged: the kernel forwards it (decrementing TTL) and resolves.
            if new_flow {
                stats::count_new_flow(real.service, chosen.id);
            }
            translate(
                ctx,
                packet,
                (src, sport),
                (Addr::load(&real.addr), port),
                false,
            )?;
            Err(Reason::NoNeighbour)
        }
        Route::Found(hop) => {
            translate(
                ctx,
                packet,
                (src, sport),
                (Addr::load(&real.addr), port),
                true,
            )?;
            stats::count_forwarded(real.service, chosen.id, packet.frame_len, new_flow);
            // Not a SYN: the client's next packet takes the table path, which sees that the
            // handshake went on (`FLOW_OPENING`).
            if chosen.via_table && !packet.opens {
                flow_cache::put_to_real(
                    packet,
                    chosen.id,
                    real.generation,
                    chosen.now,
                    hop,
                    chosen.src,
                );
            }
            Ok(send(ctx, packet.eth, &hop))
        }
    }
}

/// Makes (or overwrites) the reverse entry of a NAT flow: replies `reply` get `to` (VIP,
/// port) back as their source; the flow is on real `id` of `generation`.
#[inline(always)]
pub fn enter_reply(
    reply: &FlowKey,
    to: (Addr, u16),
    id: u32,
    generation: u32,
    now: u32,
    flags: u32,
) {
    // Made in a per-CPU map slot, not on the stack (80 bytes the NAT reply programs lack).
    let Some(b) = REVERSE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    zero::fill_in_place(b);
    // SAFETY: a per-CPU slot, used only by this CPU while the program runs: fields of the
    // zeroed value written, then the value read whole.
    let back = unsafe {
        (*b).vip = Addr::load(&to.0);
        (*b).vip_port = to.1;
        (*b).real = id;
        (*b).generation = generation;
        (*b).seen = now;
        (*b).flags = flags;
        &*b
    };
    let _ = NAT_REVERSE.insert(reply, back, 0);
}

/// The real's destination port for a flow: its translation, or the client's port.
#[inline(always)]
pub fn real_port(flow: &FlowKey, real: &Real) -> u16 {
    if real.port != 0 {
        real.port
    } else {
        flow.dport
    }
}

/// The 5-tuple of replies to a client's flow scheduled to a NAT real: to the client, or (SNAT)
/// to the real's SNAT address and the flow's port `snat_port`.
#[inline(always)]
fn reply_key(flow: &FlowKey, real: &Real, snat_port: u16) -> FlowKey {
    let (dst, dport) = if real.flags & REAL_SNAT != 0 {
        (Addr::load(&real.snat_addr), snat_port)
    } else {
        (Addr::load(&flow.src), flow.sport)
    };
    FlowKey {
        src: Addr::load(&real.addr),
        dst,
        sport: real_port(flow, real),
        dport,
        proto: flow.proto,
        _pad1: 0,
        _pad2: 0,
    }
}

/// The reverse entry of a reply 5-tuple, in SNAT's table or NAT's.
#[inline(always)]
fn reverse_entry(reply: &FlowKey, snat: bool) -> Option<*mut NatReverse> {
    if snat {
        SNAT_REVERSE.get_ptr_mut(reply)
    } else {
        NAT_REVERSE.get_ptr_mut(reply)
    }
}

/// The client's 5-tuple of the flow a reply belongs to: the reply's source becomes VIP:port,
/// and its destination is the client (NAT) or becomes it (SNAT, `client` set).
#[inline(always)]
fn forward_key(
    reply: &FlowKey,
    vip: Addr,
    vip_port: u16,
    client: Addr,
    client_port: u16,
) -> FlowKey {
    let (src, sport) = if !client.is_none() {
        (client, client_port)
    } else {
        (Addr::load(&reply.dst), reply.dport)
    };
    FlowKey {
        src,
        dst: vip,
        sport,
        dport: vip_port,
        proto: reply.proto,
        _pad1: 0,
        _pad2: 0,
    }
}

/// Whether the replies of a client's flow are still fresh (its forward entry looks stale).
#[inline(always)]
pub fn reply_alive(flow: &FlowKey, real: &Real, now: u32, snat_port: u16) -> bool {
    let reply = reply_key(flow, real, snat_port);
    match reverse_entry(&reply, real.flags & REAL_SNAT != 0) {
        // SAFETY: a map value pointer from a successful lookup; the fields are copied out.
        Some(back) => unsafe { age::alive((*back).seen, (*back).flags, real, now) },
        None => false,
    }
}

/// The client sent a FIN or RST: the reply entry closes too.
#[inline(always)]
pub fn mark_reply_closing(flow: &FlowKey, real: &Real, snat_port: u16) {
    let reply = reply_key(flow, real, snat_port);
    if let Some(back) = reverse_entry(&reply, real.flags & REAL_SNAT != 0) {
        // SAFETY: a map value pointer from a successful lookup.
        unsafe { age::mark_closing(&mut (*back).flags) };
    }
}

/// A NAT reply's translation: the VIP:port its source becomes, the client its destination is
/// (NAT) or becomes (SNAT), and where its next hop is kept.
pub struct ReplyTo {
    vip: Addr,
    vip_port: u16,
    client: Addr,
    client_port: u16,
    id: u32,
    real: &'static Real,
    hop: *mut NextHop,
    /// Found in `NAT_REVERSE` (not the flow cache): cache it once the next hop is known.
    entry: *mut NatReverse,
}

/// Real -> client: a reply of a live NAT or SNAT flow (`cached_reply` or `tracked_reply`)
/// gets the VIP:port back as its source, and the client as its destination (in NAT, that is
/// its destination already).
#[inline(always)]
pub fn reply<const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    to: &ReplyTo,
    now: u32,
) -> Result<u32, Reason> {
    let flow = packet.flow();
    ttl_allows_forwarding(packet)?;
    let (client, client_port) = (Addr::load(&to.client), to.client_port);
    match next_hop(
        ctx,
        packet.ip,
        V6,
        flow.proto,
        to.hop,
        now,
        Addr::load(&to.vip),
        client,
        to.vip_port,
        client_port,
    )? {
        Route::NoNeighbour => {
            translate(
                ctx,
                packet,
                (Addr::load(&to.vip), to.vip_port),
                (client, client_port),
                false,
            )?;
            Err(Reason::NoNeighbour)
        }
        Route::Found(hop) => {
            translate(
                ctx,
                packet,
                (Addr::load(&to.vip), to.vip_port),
                (client, client_port),
                true,
            )?;
            stats::count_forwarded(to.real.service, to.id, packet.frame_len, false);
            if !to.entry.is_null() {
                // SAFETY: a map value pointer from a successful lookup.
                let back = unsafe { &*to.entry };
                flow_cache::put_nat_reply(packet, back, now, hop, (client, client_port));
            }
            Ok(send(ctx, packet.eth, &hop))
        }
    }
}

impl ReplyTo {
    /// A reply `reply` whose entry `entry` (in `NAT_REVERSE` or `SNAT_REVERSE`) keeps its next
    /// hop; cached once known.
    #[inline(always)]
    pub fn tracked(
        reply: &FlowKey,
        vip: Addr,
        vip_port: u16,
        id: u32,
        real: &'static Real,
        entry: *mut NatReverse,
    ) -> ReplyTo {
        // SAFETY: a map value pointer from a successful lookup.
        let (client, client_port) = unsafe { (Addr::load(&(*entry).client), (*entry).client_port) };
        let (client, client_port) = if client.is_none() {
            (Addr::load(&reply.dst), reply.dport)
        } else {
            (client, client_port)
        };
        ReplyTo {
            vip,
            vip_port,
            client,
            client_port,
            id,
            real,
            // SAFETY: a field of a map value pointer from a successful lookup.
            hop: unsafe { &mut (*entry).hop },
            entry,
        }
    }

    /// A NAT reply `reply` with no entry to keep anything in: the FIB is asked each time.
    #[inline(always)]
    pub fn untracked(
        reply: &FlowKey,
        vip: Addr,
        vip_port: u16,
        id: u32,
        real: &'static Real,
    ) -> ReplyTo {
        ReplyTo {
            vip,
            vip_port,
            client: Addr::load(&reply.dst),
            client_port: reply.dport,
            id,
            real,
            hop: core::ptr::null_mut(),
            entry: core::ptr::null_mut(),
        }
    }
}

/// A reply served by its flow-cache slot (`flow_cache::get`), if the real's id still
/// belongs to the same real.
#[inline(always)]
pub fn cached_reply(slot: &'static mut CachedFlow) -> Option<ReplyTo> {
    let real = REALS.get(slot.real)?;
    if real.generation != slot.generation {
        return None;
    }
    Some(ReplyTo {
        vip: Addr::load(&slot.vip),
        vip_port: slot.vip_port,
        client: Addr::load(&slot.out_addr),
        client_port: slot.out_port,
        id: slot.real,
        real,
        hop: &mut slot.hop,
        entry: core::ptr::null_mut(),
    })
}

/// A reply's translation from `NAT_REVERSE`, if its flow is live (replies of a flow that
/// expired, or of a real whose id now belongs to another, are left to the kernel); refreshes
/// the entry.
#[inline(always)]
pub fn tracked_reply<const V6: bool>(packet: &Packet<V6>, now: u32) -> Result<ReplyTo, Reason> {
    match NAT_REVERSE.get_ptr_mut(packet.flow()) {
        Some(entry) => reply_of(packet, entry, now),
        None => Err(Reason::NotForVip),
    }
}

/// The translation of a reply whose reverse entry (NAT's or SNAT's) is `entry`, if its flow is
/// live; refreshes the entry, and marks both directions closing on a FIN or RST.
#[inline(always)]
pub fn reply_of<const V6: bool>(
    packet: &Packet<V6>,
    entry: *mut NatReverse,
    now: u32,
) -> Result<ReplyTo, Reason> {
    let flow = packet.flow();
    // SAFETY: a map value pointer from a successful lookup. Only the fields needed are read
    // (copying the entry and the real whole costs every packet).
    let (vip, vip_port, id, generation, seen, flags, client, client_port) = unsafe {
        let back = &*entry;
        (
            Addr::load(&back.vip),
            back.vip_port,
            back.real,
            back.generation,
            back.seen,
            back.flags,
            Addr::load(&back.client),
            back.client_port,
        )
    };
    let real = match REALS.get(id) {
        Some(real) if real.generation == generation => real,
        _ => return Err(Reason::NotForVip),
    };
    let client_side = forward_key(flow, vip, vip_port, client, client_port);
    if !age::alive(seen, flags, real, now) && !forward_alive(&client_side, id, real, now) {
        return Err(Reason::NotForVip);
    }
    // SAFETY: fields of the entry found above.
    if unsafe { age::touch(&mut (*entry).seen, &mut (*entry).flags, now, packet.closes) }
        && let Some(forward) = FLOWS.get_ptr_mut(client_side)
    {
        // SAFETY: a map value pointer from a successful lookup.
        unsafe { age::mark_closing(&mut (*forward).flags) };
    }
    Ok(ReplyTo::tracked(flow, vip, vip_port, id, real, entry))
}

#[inline(always)]
fn ttl_allows_forwarding<const V6: bool>(packet: &Packet<V6>) -> Result<(), Reason> {
    ip::hops_allow(packet.ip, V6)
}

/// Whether a reply's forward entry (client -> VIP) is still fresh and on the same real (id
/// `id`): its own entry looks stale. The client's flow on another real does not keep an old
/// reverse entry alive.
#[inline(always)]
fn forward_alive(client_side: &FlowKey, id: u32, real: &Real, now: u32) -> bool {
    // SAFETY: the fields are copied out at once.
    match unsafe { FLOWS.get(client_side) } {
        Some(forward) => {
            forward.real == id
                && forward.generation == real.generation
                && age::alive(forward.seen, forward.flags, real, now)
        }
        None => false,
    }
}

/// The next hop from the flow's cache while it is from this clock tick, else from the FIB
/// (and remembered). `cache` may be null (the flow could not be stored): always ask the FIB.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    ip: *const u8,
    v6: bool,
    proto: u8,
    cache: *mut NextHop,
    now: u32,
    src: Addr,
    dst: Addr,
    sport: u16,
    dport: u16,
) -> Result<Route, Reason> {
    if !cache.is_null() {
        // SAFETY: a map value pointer; a racing writer can only leave another valid hop.
        let cached = unsafe { &*cache };
        if cached.ifindex != 0 && cached.checked == now {
            if cached.mtu != 0 && ip::length(ip, v6) > cached.mtu {
                return Err(Reason::NoRoute); // as the FIB's "fragmentation needed"
            }
            let mut hop = core::mem::MaybeUninit::<NextHop>::uninit();
            // SAFETY: the whole value is copied before it is read.
            return Ok(Route::Found(unsafe {
                copy::words(hop.as_mut_ptr(), cache);
                hop.assume_init()
            }));
        }
    }
    let route = fib(ctx, ip, v6, proto, &src, &dst, sport, dport)?;
    if let Route::Found(hop) = &route
        && !cache.is_null()
    {
        // SAFETY: as above.
        let cached = unsafe { &mut *cache };
        cached.ifindex = hop.ifindex;
        cached.checked = now;
        cached.mtu = hop.mtu;
        copy::mac(&mut cached.smac, &hop.smac);
        copy::mac(&mut cached.dmac, &hop.dmac);
    }
    Ok(route)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fib(
    ctx: &XdpContext,
    ip: *const u8,
    v6: bool,
    proto: u8,
    src: &Addr,
    dst: &Addr,
    sport: u16,
    dport: u16,
) -> Result<Route, Reason> {
    // The request lives in a per-CPU map slot, not on the stack: 64 of the 512 stack bytes
    // are too many for the NAT programs with 16-byte addresses. An all-zero bpf_fib_lookup is
    // a valid request to fill in.
    let request = FIB_REQUEST.get_ptr_mut(0).ok_or(Reason::NoRoute)?;
    zero::fill_in_place(request);
    // SAFETY: a per-CPU slot, used only by this CPU while the program runs; all zero bytes is
    // a valid bpf_fib_lookup (plain integers and unions of them).
    let params = unsafe { &mut *request };
    params.l4_protocol = proto;
    params.sport = sport;
    params.dport = dport;
    ip::fib_request(params, ip, v6, src, dst);
    // SAFETY: reading the context's ingress interface.
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: the helper reads and writes only `params`.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            params as *mut bpf_fib_lookup,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(Route::Found(NextHop {
            ifindex: params.ifindex,
            checked: 0,
            smac: params.smac,
            // SAFETY: on success the helper writes the egress MTU over the request's length.
            mtu: unsafe { params.__bindgen_anon_1.mtu_result },
            dmac: params.dmac,
            _pad2: 0,
        })),
        BPF_FIB_LKUP_RET_NO_NEIGH => Ok(Route::NoNeighbour),
        _ => Err(Reason::NoRoute),
    }
}

/// Rewrites the source and destination address:port, with checksums. One side is often given
/// unchanged (NAT rewrites one, SNAT both): a rewrite to the same value leaves the checksums as
/// they were, and a single unconditional path keeps the verifier's work flat.
#[inline(always)]
fn translate<const V6: bool>(
    ctx: &XdpContext,
    packet: &Packet<V6>,
    src: (Addr, u16),
    dst: (Addr, u16),
    age: bool,
) -> Result<(), Reason> {
    let l4 = packet.l4;
    let check_at = if packet.flow().proto == IPPROTO_UDP {
        UDP_CHECK
    } else {
        TCP_CHECK
    };
    // parse checked a whole header, but after its TCP/UDP branches merge the verifier only
    // remembers the shorter (UDP) bound: prove the checksum field is inside the frame again.
    if l4 as usize + check_at + 2 > ctx.data_end() {
        return Err(Reason::Malformed);
    }
    // The addresses are in the TCP/UDP checksum too, through its pseudo-header.
    let addresses = ip::rewrite_addresses(ctx, packet.ip, V6, &src.0, &dst.0, age)?;
    // SAFETY: parse bounds-checked a whole TCP/UDP header at `l4`, which covers both ports and
    // the checksum.
    unsafe {
        let sport_field = l4.add(SPORT) as *mut [u8; 2];
        let dport_field = l4.add(DPORT) as *mut [u8; 2];
        let old_sport = u16::from_ne_bytes(*sport_field);
        let old_dport = u16::from_ne_bytes(*dport_field);
        *sport_field = src.1.to_ne_bytes();
        *dport_field = dst.1.to_ne_bytes();
        let check_field = l4.add(check_at) as *mut [u8; 2];
        let old_check = u16::from_ne_bytes(*check_field);
        if packet.flow().proto == IPPROTO_UDP && old_check == 0 {
            return Ok(()); // UDP sent without a checksum stays without one
        }
        let mut check = csum::apply(
            old_check,
            addresses + csum::delta2(old_sport, src.1) + csum::delta2(old_dport, dst.1),
        );
        if packet.flow().proto == IPPROTO_UDP && check == 0 {
            check = 0xffff; // 0 would mean "no checksum" (RFC 768)
        }
        *check_field = check.to_ne_bytes();
    }
    Ok(())
}

/// Addresses the frame to the next hop and sends it: back out (XDP_TX) or redirected.
#[inline(always)]
pub fn send(ctx: &XdpContext, eth: *mut EthHdr, hop: &NextHop) -> u32 {
    // SAFETY: the caller bounds-checked the Ethernet header.
    unsafe {
        (*eth).dst_addr = hop.dmac;
        (*eth).src_addr = hop.smac;
    }
    // SAFETY: reading the context's ingress interface.
    if hop.ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
        xdp_action::XDP_TX
    } else {
        // SAFETY: bpf_redirect takes any ifindex; an invalid one makes the redirect fail.
        unsafe { bpf_redirect(hop.ifindex, 0) as u32 }
    }
}
