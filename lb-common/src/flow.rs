//! The connection table: which real an established flow goes to.

/// Key of the `FLOWS` LRU map: the packet's 5-tuple as seen on arrival.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Addresses and ports in network byte order.
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    // Scalar padding: a byte array here costs the data plane a memset call per packet.
    pub _pad1: u8,
    pub _pad2: u16,
}

/// A NAT flow's next hop as the kernel's FIB last gave it, so established packets skip the
/// FIB lookup. It is asked again when the coarse clock's second changes, so a changed route
/// or neighbour is followed within about a second. All zero: not looked up yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// `bpf_ktime_get_coarse_ns() >> 30` (about seconds) at the lookup.
    pub checked: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Value of the `FLOWS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    pub real: u32,
    /// `Real::generation` when the flow was scheduled; a mismatch means the id was reused.
    pub generation: u32,
    /// NAT only: where packets of this flow go next.
    pub hop: NextHop,
}

/// Value of the `NAT_REVERSE` map, keyed by a NAT flow's reply 5-tuple (real -> client): what
/// the reply's source must be rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatReverse {
    /// VIP and service port the client addressed, network byte order.
    pub vip: u32,
    pub vip_port: u16,
    pub _pad: u16,
    /// Real id, for counters and to ignore replies of a real that was replaced.
    pub real: u32,
    pub generation: u32,
    /// Where the replies go next (to the client).
    pub hop: NextHop,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::NatReverse {}
}
