//! Parsing: Ethernet (one optional 802.1Q tag), IPv4 with options, TCP/UDP.
//! Every read is bounds-checked against data_end in a form the verifier accepts.
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
use lb_common::{IPPROTO_TCP, IPPROTO_UDP, counters::Reason, flow::FlowKey};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

use crate::{classify, maps::VIP_ADDRS};

/// An IPv4 datagram whose header was checked (version, length, the whole datagram inside the
/// frame; Ethernet padding may follow it).
pub struct Datagram {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// IPv4 header length in 32-bit words.
    pub ip_words: usize,
    pub proto: u8,
    /// A fragment (more fragments, or an offset).
    pub fragment: bool,
    /// Offsets from the frame's start: the payload, and the end of the datagram.
    pub payload: usize,
    pub end: usize,
}

/// A TCP or UDP packet, parsed.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// Start of the TCP or UDP header; at least a whole header of `flow.proto` is in the frame.
    pub l4: *mut u8,
    pub flow: FlowKey,
    /// `flow.words()`, computed from the packet's loads: read back from `flow`, which is
    /// stored field by field, each word would wait for several stores to reach the cache.
    pub key_words: [u64; 2],
    /// TCP with FIN or RST set: the connection is ending.
    pub closes: bool,
    /// TCP with SYN set and ACK clear: a client opening a connection.
    pub opens: bool,
    /// Whole frame length, for byte counters.
    pub frame_len: u64,
    /// IPv4 header length in 32-bit words (5..=15).
    pub ip_words: usize,
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
const ETHERTYPE_VLAN: u16 = EtherType::Ieee8021q as u16;
/// More-fragments flag and fragment offset, in the on-wire bytes of `Ipv4Hdr::frags`.
const IP_MF_OR_OFFSET: u16 = 0x3fff;

/// Ethernet (one optional 802.1Q tag) and the IPv4 header.
#[inline(always)]
pub fn datagram(ctx: &XdpContext) -> Result<Datagram, Reason> {
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
    if ether_type != ETHERTYPE_IPV4 {
        return Err(Reason::NotIpv4);
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
        ip,
        ip_words: ihl / 4,
        proto,
        fragment: frags & IP_MF_OR_OFFSET != 0,
        payload: l3 + ihl,
        end,
    })
}

/// The TCP or UDP packet in `datagram`. Fragments addressed to a VIP are dropped (see above).
#[inline(always)]
pub fn transport(ctx: &XdpContext, datagram: &Datagram) -> Result<Packet, Reason> {
    let (eth, ip, proto) = (datagram.eth, datagram.ip, datagram.proto);
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Reason::NotForVip);
    }
    if datagram.fragment {
        // SAFETY: parse bounds-checked the IPv4 header.
        let dst = unsafe { u32::from_ne_bytes((*ip).dst_addr) };
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
    // Two loads for the key: source and destination address are adjacent in the IPv4 header,
    // and so are the two ports at the start of TCP and UDP.
    // SAFETY: parse bounds-checked the IPv4 header and at least a UDP header at `l4_ptr`; the
    // data plane is built with misaligned access allowed.
    let (addrs, ports) = unsafe {
        (
            read_unaligned((ip as *const u8).add(IP_SRC) as *const u64),
            read_unaligned(l4_ptr as *const u32),
        )
    };
    // Little endian (the bpfel target): each field is its bytes on the wire, and `proto`
    // follows the ports in the key's second word.
    let flow = FlowKey {
        src: addrs as u32,
        dst: (addrs >> 32) as u32,
        sport: ports as u16,
        dport: (ports >> 16) as u16,
        proto,
        _pad1: 0,
        _pad2: 0,
    };
    let key_words = [addrs, ports as u64 | (proto as u64) << 32];

    Ok(Packet {
        eth,
        ip,
        l4: l4_ptr,
        flow,
        key_words,
        closes: tcp_flags & TCP_FIN_OR_RST != 0,
        opens: tcp_flags & TCP_SYN_OR_ACK == TCP_SYN,
        frame_len: (ctx.data_end() - ctx.data()) as u64,
        ip_words: datagram.ip_words,
    })
}
