//! A per-CPU, direct-mapped cache in front of the connection tables, looked up before
//! anything else.
//!
//! The connection-table lookup is a call into the kernel's LRU hash map: 25 of the 39 ns the
//! established DR path cost above a bare XDP_TX, and as much on both NAT directions. A slot
//! here is found with an inline hash and an array read. The tables stay the authority:
//! - a flow is cached only after a packet went through its table entry at this clock tick,
//!   and the slot is trusted only for the rest of that tick. So the first packet of every
//!   tick still refreshes the entry's age and LRU position, a persistent client's memory and
//!   (NAT) the next hop, which the slot copies; a flow rescheduled on another CPU is seen
//!   within a tick;
//! - a slot is void once the controller changes anything (`CACHE_EPOCH`), so a service or
//!   port removed by a reload stops forwarding at once, as when the filters came first;
//! - the real is checked on every hit (up, for a client's packets, and the same generation),
//!   so a real going down or its id being reused takes effect at once;
//! - FIN/RST packets always take the table path, which marks the flow closing;
//! - a hit needs the frame addressed to the same MAC as the cached one, which was checked to
//!   be the receiving interface's own (`classify::for_us`).

use core::ptr::read_unaligned;

use lb_common::{
    addr::Addr,
    flow::{CACHED_NAT_REPLY, CACHED_TO_REAL, CachedFlow, NatReverse, NextHop},
    maps::FLOW_CACHE_SLOTS,
};

use crate::{
    copy,
    maps::{CACHE_EPOCH, FLOW_CACHE},
    parse::Packet,
    zero,
};

/// The slot of a 5-tuple, from its five words (`FlowKey::words`): Fibonacci hashing of the
/// words folded into one, whose top bits depend on every input bit. One multiply, where the
/// Maglev hash chains four: a weaker spread only costs hit rate (two flows sharing a slot take
/// turns), never correctness. The destination's halves are rotated so that an IPv4 flow's two
/// addresses fill one word, as they did in 8-byte keys (the mapping words add a constant).
#[inline(always)]
fn slot(words: [u64; 5]) -> u32 {
    let folded = words[0] ^ words[1] ^ (words[2] ^ words[3]).rotate_left(32) ^ (words[4] << 16);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FLOW_CACHE_SLOTS.trailing_zeros())) as u32
}

/// The slot caching the flow of `packet` at tick `now`, if any; its `direction` says which
/// table it is from. The frame must be addressed to the MAC the cached one was, which
/// `classify::for_us` checked to be the receiving interface's own.
#[inline(always)]
pub fn get<const V6: bool>(packet: &Packet<V6>, now: u32) -> Option<&'static mut CachedFlow> {
    let words = packet.key_words;
    let cached = FLOW_CACHE.get_ptr_mut(slot(words))?;
    // SAFETY: a per-CPU slot, used only by this CPU while the program runs.
    let cached = unsafe { &mut *cached };
    if cached.seen == now
        && same_words(&cached.key.words(), &words)
        && cached.epoch == epoch()
        && same_mac(&cached.to_mac, packet.eth as *const u8)
    {
        Some(cached)
    } else {
        None
    }
}

/// Caches a client's flow to `real` (NAT: with the next hop found at tick `now` and the source
/// the packet left with, `src`).
#[inline(always)]
pub fn put_to_real<const V6: bool>(
    packet: &Packet<V6>,
    real: u32,
    generation: u32,
    now: u32,
    hop: NextHop,
    src: (Addr, u16),
) {
    if let Some(slot) = slot_of(packet) {
        // SAFETY: a per-CPU slot, used only by this CPU while the program runs.
        let slot = unsafe { &mut *slot };
        fill(slot, packet, real, generation, now, hop);
        // Zeroed word by word: assigning `Addr::NONE` compiles to a memcpy call.
        zero::fill_in_place(&mut slot.vip);
        slot.vip_port = 0;
        slot.direction = CACHED_TO_REAL;
        slot.out_port = src.1;
        slot.out_addr = Addr::load(&src.0);
    }
}

/// Caches a NAT reply's translation back to `vip`:`vip_port` and to `client` (the reply's own
/// destination in NAT), with its next hop.
#[inline(always)]
pub fn put_nat_reply<const V6: bool>(
    packet: &Packet<V6>,
    back: &NatReverse,
    now: u32,
    hop: NextHop,
    client: (Addr, u16),
) {
    if let Some(slot) = slot_of(packet) {
        // SAFETY: a per-CPU slot, used only by this CPU while the program runs.
        let slot = unsafe { &mut *slot };
        fill(slot, packet, back.real, back.generation, now, hop);
        slot.vip = Addr::load(&back.vip);
        slot.vip_port = back.vip_port;
        slot.direction = CACHED_NAT_REPLY;
        slot.out_port = client.1;
        slot.out_addr = Addr::load(&client.0);
    }
}

/// The slot of the packet's flow.
#[inline(always)]
fn slot_of<const V6: bool>(packet: &Packet<V6>) -> Option<*mut CachedFlow> {
    FLOW_CACHE.get_ptr_mut(slot(packet.key_words))
}

/// Writes the fields both kinds of slot have, in place: an entry built on the stack and copied
/// would take 120 of the program's 512 stack bytes.
#[inline(always)]
fn fill<const V6: bool>(
    slot: &mut CachedFlow,
    packet: &Packet<V6>,
    real: u32,
    generation: u32,
    now: u32,
    hop: NextHop,
) {
    // SAFETY: a key of the packet's and the slot's own field.
    unsafe { copy::words(&mut slot.key, packet.flow()) };
    slot.real = real;
    slot.generation = generation;
    slot.seen = now;
    slot.epoch = epoch();
    slot._pad = 0;
    slot.hop.ifindex = hop.ifindex;
    slot.hop.checked = now;
    slot.hop.mtu = hop.mtu;
    copy::mac(&mut slot.hop.smac, &hop.smac);
    copy::mac(&mut slot.hop.dmac, &hop.dmac);
    // SAFETY: parse bounds-checked the Ethernet header.
    copy::mac(&mut slot.to_mac, unsafe { &(*packet.eth).dst_addr });
}

/// Whether two keys' words are equal, as one test of their differences.
#[inline(always)]
fn same_words(a: &[u64; 5], b: &[u64; 5]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}

/// Whether the frame at `eth` is addressed to `mac`, compared as a 4- and a 2-byte word.
#[inline(always)]
fn same_mac(mac: &[u8; 6], eth: *const u8) -> bool {
    let mac = mac.as_ptr();
    // SAFETY: parse bounds-checked the Ethernet header; misaligned access is allowed.
    unsafe {
        read_unaligned(mac as *const u32) == read_unaligned(eth as *const u32)
            && read_unaligned(mac.add(4) as *const u16) == read_unaligned(eth.add(4) as *const u16)
    }
}

/// The controller's change counter.
#[inline(always)]
fn epoch() -> u32 {
    CACHE_EPOCH.get(0).copied().unwrap_or(0)
}
