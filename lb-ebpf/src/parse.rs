//! Parsing: Ethernet (one optional 802.1Q tag), IPv4 with options or IPv6 with extension
//! headers, TCP/UDP. Every read is bounds-checked against data_end in a form the verifier
//! accepts.
//!
//! IPv6: up to `IPV6_EXTENSION_HEADERS` hop-by-hop, routing, destination-options and fragment
//! headers are walked to find TCP/UDP; a longer chain is `Reason::Ipv6ExtensionHeaders` and
//! passed, as is anything behind AH or ESP (`NotForVip`: no ports to read). An IPv6 packet with
//! an IPv4-mapped source or destination is refused as martian: mapped addresses are how the
//! maps keep IPv4 (lb_common::addr), and no such packet is legitimate on a wire (RFC 4038).
//!
//! A packet is parsed only if it is whole and consistent, as the receiving kernel would judge
//! it: the IP datagram inside the frame (Ethernet padding may follow), the TCP header (its
//! data offset) or the UDP datagram (its length) inside the IP datagram. Anything else is
//! `Reason::Malformed` and passed untouched. What costs more than a comparison (the IP header
//! checksum, the destination MAC) is checked only for packets about to be forwarded
//! (`classify::for_us`).
//!
//! IP fragments addressed to a VIP are dropped and counted (`Reason::Fragment`): a non-first
//! fragment has no ports, so it cannot be classified or sent to the real that got the first
//! one, and forwarding only the first fragment delivers a datagram that can never be
//! reassembled. TCP sets DF and never fragments; a UDP service with large datagrams shows up
//! in that counter. Fragments to any other address are passed untouched.

use core::{mem::size_of, ptr::read_unaligned};

use aya_ebpf::programs::XdpContext;
use lb_common::{
    IPPROTO_TCP, IPPROTO_UDP,
    addr::{Addr, V4_MAPPED},
    counters::Reason,
    flow::FlowKey,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

use crate::{
    classify,
    ip::IPV6_SRC,
    maps::{OFFSET_SCRATCH, VIP_ADDRS},
};

/// An IP datagram whose header was checked (version, length, the whole datagram inside the
/// frame; Ethernet padding may follow it). `V6`: the family, a constant of each program.
pub struct Datagram<const V6: bool> {
    pub eth: *mut EthHdr,
    /// The IP header: an `Ipv4Hdr`, or an `Ipv6Hdr` if `V6`.
    pub ip: *mut u8,
    /// IPv4 header length in 32-bit words (0 for IPv6, whose header has no checksum).
    pub ip_words: usize,
    /// The transport protocol (IPv6: the header after the extension headers).
    pub proto: u8,
    /// A fragment (more fragments, or an offset).
    pub fragment: bool,
    /// Offsets from the frame's start: the payload, and the end of the datagram.
    pub payload: usize,
    pub end: usize,
}

/// A TCP or UDP packet, parsed (`V6`: its family).
pub struct Packet<const V6: bool> {
    pub eth: *mut EthHdr,
    /// The IP header: an `Ipv4Hdr`, or an `Ipv6Hdr` if `V6`.
    pub ip: *mut u8,
    /// Start of the TCP or UDP header; at least a whole header of `flow.proto` is in the frame.
    pub l4: *mut u8,
    /// The 5-tuple (`flow()`) as the five words of `FlowKey::words`, computed from the
    /// packet's loads: a key stored field by field would make each word wait for several
    /// stores, and a key kept in both forms would take 40 more of the 512 stack bytes.
    pub key_words: [u64; 5],
    /// TCP with FIN or RST set: the connection is ending.
    pub closes: bool,
    /// TCP with SYN set and ACK clear: a client opening a connection.
    pub opens: bool,
    /// Whole frame length, for byte counters.
    pub frame_len: u64,
    /// IPv4 header length in 32-bit words (5..=15; 0 for IPv6).
    pub ip_words: usize,
}

impl<const V6: bool> Packet<V6> {
    /// The packet's 5-tuple as seen on arrival.
    #[inline(always)]
    pub fn flow(&self) -> &FlowKey {
        // SAFETY: `FlowKey` is 40 bytes of plain integers laid out as `key_words` (its `words`),
        // aligned to 8 as the array is.
        unsafe { &*(self.key_words.as_ptr() as *const FlowKey) }
    }
}

impl<const V6: bool> Datagram<V6> {
    /// The IPv4 header (`!V6`).
    #[inline(always)]
    pub fn ipv4(&self) -> *mut Ipv4Hdr {
        self.ip as *mut Ipv4Hdr
    }
}

/// Offset of the source address in the IPv4 header (the destination follows it).
const IP_SRC: usize = 12;
/// The data-offset byte and the flags byte of the TCP header, and the flags that end a
/// connection.
const TCP_DATA_OFFSET: usize = 12;
const TCP_FLAGS: usize = 13;
const TCP_FIN_OR_RST: u8 = 0x01 | 0x04;
const TCP_SYN: u8 = 0x02;
const TCP_SYN_OR_ACK: u8 = 0x02 | 0x10;

/// Pointer to a `T` at `offset` from the start of the frame, if the whole `T` is inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Reason::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// The frame's start is a 32-bit context field to the compiler, which may then spill the
/// pointer with a 32-bit store, and the verifier refuses a partial spill of a pointer. After
/// an empty asm statement the compiler no longer knows the upper half is zero; unlike
/// black_box, it clobbers no memory and costs nothing.
#[inline(always)]
fn opaque<T>(pointer: *mut T) -> *mut T {
    let mut value = pointer as u64;
    // SAFETY: an empty instruction sequence; it only hides the value from the optimiser.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack)) };
    value as *mut T
}

/// An offset the optimiser must not reason about: a bounds check against the frame's end
/// that it could prove from an earlier check on other values (which the verifier cannot)
/// would be dropped, and the verifier would then refuse the access.
#[inline(always)]
pub fn opaque_offset(offset: usize) -> usize {
    let mut value = offset as u64;
    // SAFETY: an empty instruction sequence; it only hides the value from the optimiser.
    unsafe { core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack)) };
    value as usize
}

const ETHERTYPE_IPV4: u16 = EtherType::Ipv4 as u16;
const ETHERTYPE_IPV6: u16 = EtherType::Ipv6 as u16;
/// IPv6 extension headers walked before the transport header; a packet with more is passed
/// (`Reason::Ipv6ExtensionHeaders`). Real traffic has none or one (a fragment header).
pub const IPV6_EXTENSION_HEADERS: u32 = 4;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// Fragment offset and more-fragments flag, in the on-wire bytes 2-3 of a fragment header.
const IPV6_OFFSET_OR_MF: u16 = 0xfff9;
const IPV6_OFFSET: u16 = 0xfff8;
const ETHERTYPE_VLAN: u16 = EtherType::Ieee8021q as u16;
/// More-fragments flag and fragment offset, in the on-wire bytes of `Ipv4Hdr::frags`.
const IP_MF_OR_OFFSET: u16 = 0x3fff;

/// Ethernet (one optional 802.1Q tag) and the IP header of the program's family (`V6`); a
/// frame of the other IP family is `NotIp` (the IPv4 program hands IPv6 on, `carries_ipv6`).
/// The family is a constant of each program, so the other family's code is not in it.
#[inline(always)]
pub fn datagram<const V6: bool>(ctx: &XdpContext) -> Result<Datagram<V6>, Reason> {
    datagram_of::<V6, true>(ctx)
}

/// `datagram` for the main programs, which serve cached flows only and are far from the
/// verifier's limit: the IPv6 payload offset is not made to merge (`forget`), saving a map
/// read per packet.
#[inline(always)]
pub fn datagram_fast<const V6: bool>(ctx: &XdpContext) -> Result<Datagram<V6>, Reason> {
    datagram_of::<V6, false>(ctx)
}

/// `datagram`; `MERGE`: whether IPv6's ways through the extension headers merge into one
/// verifier state (`forget`).
#[inline(always)]
fn datagram_of<const V6: bool, const MERGE: bool>(
    ctx: &XdpContext,
) -> Result<Datagram<V6>, Reason> {
    let eth: *mut EthHdr = opaque(ptr_at(ctx, 0)?);
    let mut l3 = EthHdr::LEN;
    // SAFETY: ptr_at checked the header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    if ether_type == ETHERTYPE_VLAN {
        let vlan: *mut VlanHdr = ptr_at(ctx, l3)?;
        // SAFETY: as above.
        ether_type = unsafe { (*vlan).ether_type };
        l3 += VlanHdr::LEN;
    }
    if V6 {
        return if ether_type == ETHERTYPE_IPV6 {
            ipv6::<V6, MERGE>(ctx, eth, l3)
        } else {
            Err(Reason::NotIp)
        };
    }
    if ether_type != ETHERTYPE_IPV4 {
        return Err(Reason::NotIp);
    }

    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: as above.
    let (vihl, proto, frags, tot_len) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as usize,
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || tot_len < ihl {
        return Err(Reason::Malformed);
    }
    // The IP datagram must fit in the frame (Ethernet padding may follow it).
    let end = l3 + tot_len;
    if ctx.data() + end > ctx.data_end() {
        return Err(Reason::Malformed);
    }
    Ok(Datagram {
        eth,
        ip: ip as *mut u8,
        ip_words: ihl / 4,
        proto,
        fragment: frags & IP_MF_OR_OFFSET != 0,
        payload: l3 + ihl,
        end,
    })
}

/// `offset` as a value the verifier knows nothing of but its bounds. Each way through the
/// extension headers leaves another constant offset, and the verifier would walk everything
/// after the parse once per way (up to 31 times; a program near the kernel's limit). A value
/// read back from a map is one unknown, so all ways merge into one.
#[inline(always)]
fn forget(offset: usize) -> Result<usize, Reason> {
    let slot = OFFSET_SCRATCH.get_ptr_mut(0).ok_or(Reason::Malformed)?;
    // SAFETY: a per-CPU slot, used only by this CPU while the program runs.
    let read = unsafe {
        *slot = offset as u32;
        core::ptr::read_volatile(slot)
    };
    // Every offset `ipv6` returns is below this (the header chain is bounded); the mask makes
    // the bound one the verifier sees.
    if read as usize >= MAX_IPV6_PAYLOAD_OFFSET {
        return Err(Reason::Malformed);
    }
    Ok(read as usize & (MAX_IPV6_PAYLOAD_OFFSET - 1))
}

/// Above any offset of an IPv6 payload `ipv6` finds: VLAN and IPv6 headers, and
/// `IPV6_EXTENSION_HEADERS` of at most 2048 bytes.
const MAX_IPV6_PAYLOAD_OFFSET: usize = 16384;

/// Whether the frame is IPv6 (after one optional 802.1Q tag): read only for frames that are
/// not IPv4.
#[inline(always)]
pub fn carries_ipv6(ctx: &XdpContext) -> bool {
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: ptr_at checked the header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    if ether_type == ETHERTYPE_VLAN {
        let Ok(vlan) = ptr_at::<VlanHdr>(ctx, EthHdr::LEN) else {
            return false;
        };
        // SAFETY: as above.
        ether_type = unsafe { (*vlan).ether_type };
    }
    ether_type == ETHERTYPE_IPV6
}

/// The IPv6 header at `l3` and its extension headers.
#[inline(always)]
fn ipv6<const V6: bool, const MERGE: bool>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    l3: usize,
) -> Result<Datagram<V6>, Reason> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked the header lies inside the frame; misaligned access is allowed.
    let (version, payload_len, mut next, src_high, src_low, dst_high, dst_low) = unsafe {
        let at = (ip as *const u8).add(IPV6_SRC);
        (
            (*ip).vcf[0] >> 4,
            u16::from_be_bytes((*ip).payload_len) as usize,
            (*ip).next_hdr,
            read_unaligned(at as *const u64),
            read_unaligned(at.add(8) as *const u64),
            read_unaligned(at.add(16) as *const u64),
            read_unaligned(at.add(24) as *const u64),
        )
    };
    if version != 6 {
        return Err(Reason::Malformed);
    }
    let end = l3 + Ipv6Hdr::LEN + payload_len;
    if ctx.data() + end > ctx.data_end() {
        return Err(Reason::Malformed);
    }
    // The first half zero and the mapping word next: an IPv4-mapped address.
    let mapped = |high: u64, low: u64| high == 0 && low as u32 == V4_MAPPED;
    if mapped(src_high, src_low) || mapped(dst_high, dst_low) {
        return Err(Reason::Martian);
    }
    let mut offset = l3 + Ipv6Hdr::LEN;
    let mut fragment = false;
    let mut later_fragment = false;
    let mut walked = 0;
    while walked < IPV6_EXTENSION_HEADERS {
        if next == IPV6_FRAGMENT {
            let header: *const [u8; 8] = ptr_at(ctx, offset)?;
            // SAFETY: bounds-checked by ptr_at.
            let (following, offset_and_mf) = unsafe {
                (
                    (*header)[0],
                    u16::from_be_bytes([(*header)[2], (*header)[3]]),
                )
            };
            // An atomic fragment (offset 0, no more fragments) is a whole packet (RFC 6946).
            fragment |= offset_and_mf & IPV6_OFFSET_OR_MF != 0;
            next = following;
            offset += 8;
            // A later fragment's payload is data, not headers: `next` names what starts the
            // first fragment's.
            if offset_and_mf & IPV6_OFFSET != 0 {
                later_fragment = true;
                break;
            }
        } else if next == IPV6_HOP_BY_HOP
            || next == IPV6_ROUTING
            || next == IPV6_DESTINATION_OPTIONS
        {
            let header: *const [u8; 8] = ptr_at(ctx, offset)?;
            // SAFETY: bounds-checked by ptr_at.
            let (following, units, segments_left) =
                unsafe { ((*header)[0], (*header)[1], (*header)[3]) };
            // With segments left, the destination is a waypoint, not the packet's end (and
            // the TCP/UDP checksum covers the final one): not for a VIP here.
            if next == IPV6_ROUTING && segments_left != 0 {
                return Err(Reason::NotForVip);
            }
            next = following;
            offset += (units as usize + 1) * 8;
        } else {
            break;
        }
        walked += 1;
    }
    if !later_fragment
        && (next == IPV6_FRAGMENT
            || next == IPV6_HOP_BY_HOP
            || next == IPV6_ROUTING
            || next == IPV6_DESTINATION_OPTIONS)
    {
        return Err(Reason::Ipv6ExtensionHeaders);
    }
    if offset > end {
        return Err(Reason::Malformed);
    }
    Ok(Datagram {
        eth,
        ip: ip as *mut u8,
        ip_words: 0,
        proto: next,
        fragment,
        payload: if MERGE { forget(offset)? } else { offset },
        end,
    })
}

/// The TCP or UDP packet in `datagram`. Fragments addressed to a VIP are dropped (see above).
#[inline(always)]
pub fn transport<const V6: bool>(
    ctx: &XdpContext,
    datagram: &Datagram<V6>,
) -> Result<Packet<V6>, Reason> {
    let (eth, ip, proto) = (datagram.eth, datagram.ip, datagram.proto);
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Reason::NotForVip);
    }
    if datagram.fragment {
        let dst = if V6 {
            // SAFETY: parse bounds-checked the IPv6 header.
            Addr::from_octets(unsafe { (*(ip as *const Ipv6Hdr)).dst_addr })
        } else {
            // SAFETY: parse bounds-checked the IPv4 header.
            Addr::v4(unsafe { u32::from_ne_bytes((*datagram.ipv4()).dst_addr) })
        };
        // SAFETY: map lookups with a stack key; the value is not read.
        let to_vip = unsafe { VIP_ADDRS.get(dst).is_some() };
        // A fragment that was not sent to this host is not ours to drop.
        classify::addressed_here(ctx, eth as *const u8)?;
        return Err(if to_vip {
            Reason::Fragment
        } else {
            Reason::NotForVip
        });
    }
    let (l4, ip_end) = (datagram.payload, datagram.end);
    // TCP and UDP both start with the two ports; the pointer kept is the bounds-checked one.
    // Each header must end inside the IP datagram, not in the padding after it.
    let (l4_ptr, tcp_flags) = if proto == IPPROTO_TCP {
        let tcp: *mut TcpHdr = ptr_at(ctx, l4)?;
        // SAFETY: as above; both bytes are inside the checked header.
        let (offset, flags) = unsafe {
            let tcp = tcp as *const u8;
            (*tcp.add(TCP_DATA_OFFSET), *tcp.add(TCP_FLAGS))
        };
        let header_len = ((offset >> 4) as usize) * 4;
        if header_len < TcpHdr::LEN || l4 + header_len > ip_end {
            return Err(Reason::Malformed);
        }
        (tcp as *mut u8, flags)
    } else {
        let udp: *mut UdpHdr = ptr_at(ctx, l4)?;
        // SAFETY: as above.
        let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
        if udp_len < UdpHdr::LEN || l4 + udp_len > ip_end {
            return Err(Reason::Malformed);
        }
        (udp as *mut u8, 0)
    };
    // SAFETY: parse bounds-checked at least a UDP header at `l4_ptr`; the data plane is
    // built with misaligned access allowed. The two ports are adjacent at the start of TCP
    // and UDP.
    let ports = unsafe { read_unaligned(l4_ptr as *const u32) };
    // Little endian (the bpfel target): each field is its bytes on the wire, and `proto`
    // follows the ports in the key's last word.
    let ports_word = ports as u64 | (proto as u64) << 32;
    let key_words = if V6 {
        // SAFETY: parse bounds-checked the IPv6 header, whose addresses are adjacent.
        unsafe {
            let at = ip.add(IPV6_SRC);
            [
                read_unaligned(at as *const u64),
                read_unaligned(at.add(8) as *const u64),
                read_unaligned(at.add(16) as *const u64),
                read_unaligned(at.add(24) as *const u64),
                ports_word,
            ]
        }
    } else {
        // SAFETY: parse bounds-checked the IPv4 header, whose addresses are adjacent.
        let addrs = unsafe { read_unaligned(ip.add(IP_SRC) as *const u64) };
        // The mapped addresses' words: 0, then the mapping word with the address above it.
        [
            0,
            V4_MAPPED as u64 | addrs << 32,
            0,
            V4_MAPPED as u64 | addrs & 0xffff_ffff_0000_0000,
            ports_word,
        ]
    };

    Ok(Packet {
        eth,
        ip,
        l4: l4_ptr,
        key_words,
        closes: tcp_flags & TCP_FIN_OR_RST != 0,
        opens: tcp_flags & TCP_SYN_OR_ACK == TCP_SYN,
        frame_len: (ctx.data_end() - ctx.data()) as u64,
        ip_words: datagram.ip_words,
    })
}
