//! The connection table: which real an established flow goes to.

use crate::addr::Addr;

/// Key of the `FLOWS` LRU map: the packet's 5-tuple as seen on arrival.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Addresses and ports in network byte order.
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    // Scalar padding: a byte array here costs the data plane a memset call per packet.
    pub _pad1: u8,
    pub _pad2: u16,
}

impl FlowKey {
    /// The key's memory as five words (`src` and `dst` in two each; the ports, `proto` and the
    /// padding): the data plane compares keys in five steps instead of thirteen.
    #[inline(always)]
    pub const fn words(&self) -> [u64; 5] {
        // SAFETY: FlowKey is 40 bytes of plain integers with no implicit padding.
        unsafe { core::mem::transmute(*self) }
    }
}

/// A NAT flow's next hop as the kernel's FIB last gave it, so established packets skip the
/// FIB lookup. It is asked again when the clock's tick changes, so a changed route or
/// neighbour is followed within about a second. All zero: not looked up yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// Clock tick (`clock`) of the lookup.
    pub checked: u32,
    /// Each MAC starts on a 4-byte boundary: the data plane moves it as a 4- and a 2-byte word,
    /// also on its stack, where the verifier refuses misaligned access.
    pub smac: [u8; 6],
    /// The egress MTU the FIB gave: a larger packet served from this cache is refused as the
    /// FIB would have refused it (the kernel then answers with "fragmentation needed" or
    /// "packet too big").
    pub mtu: u16,
    pub dmac: [u8; 6],
    pub _pad2: u16,
}

/// Value of the `FLOWS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    pub real: u32,
    /// `Real::generation` when the flow was scheduled; a mismatch means the id was reused.
    pub generation: u32,
    /// Clock tick of the flow's last packet in this direction (`clock`).
    pub seen: u32,
    /// `FLOW_CLOSING` once a FIN or RST was seen.
    pub flags: u32,
    /// NAT only: where packets of this flow go next.
    pub hop: NextHop,
    /// SNAT only: the source port the real sees (network byte order).
    pub snat_port: u16,
    pub _pad: u16,
}

/// A slot of the data plane's per-CPU flow cache (`FLOW_CACHE`, not pinned, never read by
/// the controller): a flow whose packet went through the connection table (`FLOWS`, or
/// `NAT_REVERSE` for a NAT reply) at clock tick `seen`. For the rest of that tick its packets
/// skip that lookup, a call into the kernel's hash map that was two thirds of the established
/// DR path's cost.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedFlow {
    /// The packet's 5-tuple (a client's flow, or a NAT reply's).
    pub key: FlowKey,
    /// NAT replies: the VIP and service port their source becomes.
    pub vip: Addr,
    /// NAT and SNAT: the side of the packet its table entry does not give, as it leaves
    /// (network byte order). To a real: its source (the client's own in NAT, the SNAT address
    /// and port in SNAT). A reply: its destination (the client, in both). Kept as data, so
    /// the main program serves both modes on one path.
    pub out_addr: Addr,
    pub real: u32,
    pub generation: u32,
    pub seen: u32,
    /// `CACHE_EPOCH` when cached: the controller's changes since then void the slot.
    pub epoch: u32,
    /// NAT: the next hop, as the connection-table entry had it at tick `seen`.
    pub hop: NextHop,
    /// The destination MAC of the frame cached, which was checked to be the receiving
    /// interface's own: a hit requires the same, so a frame sent to another station is never
    /// served from the cache.
    pub to_mac: [u8; 6],
    pub out_port: u16,
    pub vip_port: u16,
    /// `CACHED_TO_REAL` or `CACHED_NAT_REPLY`: a reply's 5-tuple is never taken for a
    /// client's, even if a real sends to a VIP from its service port.
    pub direction: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// `CachedFlow::direction`.
pub const CACHED_TO_REAL: u8 = 1;
pub const CACHED_NAT_REPLY: u8 = 2;

/// `FlowValue::flags` / `NatReverse::flags`: a TCP FIN or RST was seen in either direction,
/// so the real's `closing_timeout` applies.
pub const FLOW_CLOSING: u32 = 1;
/// `FlowValue::flags` of a SNAT flow: opened by a SYN and no other packet from the client yet
/// (a half-open connection, or a spoofed SYN). Its closing timeout applies, and once it has
/// passed its port is freed even if the real is still answering, so a SYN flood cannot hold
/// SNAT's ports for the idle timeout (as IPVS's short SYN_RECV timeout).
pub const FLOW_OPENING: u32 = 2;

/// The expiry rule, one definition for the data plane and the controller: an entry last seen
/// at tick `seen` with `flags` is alive at tick `now` while it has been idle no longer than
/// its real's timeout (the closing one after a FIN or RST).
#[inline(always)]
pub fn entry_alive(seen: u32, flags: u32, real: &crate::service::Real, now: u32) -> bool {
    let timeout = if flags & (FLOW_CLOSING | FLOW_OPENING) != 0 {
        real.closing_timeout
    } else {
        real.idle_timeout
    };
    crate::clock::fresh(seen, now, timeout)
}

/// Value of the `NAT_REVERSE` map, keyed by a NAT flow's reply 5-tuple (real -> client): what
/// the reply's source must be rewritten back to. Also of `SNAT_REVERSE`, keyed by a SNAT
/// flow's reply 5-tuple (real -> SNAT address:port), with the client its destination becomes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatReverse {
    /// VIP and service port the client addressed, network byte order.
    pub vip: Addr,
    /// SNAT: the client address and port the reply's destination becomes (network byte
    /// order); `Addr::NONE` in NAT entries, whose replies are addressed to the client already.
    pub client: Addr,
    pub vip_port: u16,
    pub _pad: u16,
    pub client_port: u16,
    pub _pad2: u16,
    /// Real id, for counters and to ignore replies of a real that was replaced.
    pub real: u32,
    pub generation: u32,
    /// Clock tick of the last reply; the flow lives while either direction is fresh.
    pub seen: u32,
    pub flags: u32,
    /// Where the replies go next (to the client).
    pub hop: NextHop,
}

/// Key of the `NAT_ORIGINS` map: an address:port:protocol a NAT real replies from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplySource {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u32,
}

/// Value of the `NAT_ORIGINS` map: the one VIP:port a NAT real's address:port serves, so a
/// reply of a flow this balancer never saw (its pair peer scheduled it, then failed) is
/// translated too, and the flow's entries made then ("adopted"). The controller writes an
/// entry only where the policy leaves no doubt: an address:port serving two VIP:ports has none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatOrigin {
    /// VIP and service port, network byte order.
    pub vip: Addr,
    pub vip_port: u16,
    pub _pad: u16,
    /// The real's id and `Real::generation`: an origin of a real whose id was given to another
    /// is ignored.
    pub real: u32,
    pub generation: u32,
    pub _pad2: u32,
}

/// Key of the `PERSIST` LRU map: a client (source address masked by the service's netmask)
/// of a service with persistence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersistKey {
    /// Masked client address.
    pub client: Addr,
    pub service: u32,
    pub _pad: u32,
}

/// Value of the `PERSIST` map: the client's real, and when the client was last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistValue {
    pub real: u32,
    pub generation: u32,
    /// Clock tick of the client's last packet (refreshed once per tick by established flows).
    pub seen: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::NatReverse {}
    unsafe impl aya::Pod for super::ReplySource {}
    unsafe impl aya::Pod for super::NatOrigin {}
    unsafe impl aya::Pod for super::PersistKey {}
    unsafe impl aya::Pod for super::PersistValue {}
}
