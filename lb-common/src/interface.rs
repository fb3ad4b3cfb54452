//! The interfaces the data plane is attached to, as it needs to know them.

/// Value of `INTERFACE_MACS`: an attached interface's own MAC address. The data plane forwards
/// only frames addressed to it: a promiscuous NIC (tcpdump, a bridge member, some hypervisors)
/// or a switch flooding unknown unicast also delivers frames meant for other stations.
///
/// The map is an array indexed by `ifindex % INTERFACE_SLOTS`, so the data plane finds the
/// entry with an inline array read instead of a hash-map call; `ifindex` tells whether the
/// slot is really this interface's (the loader refuses two attached interfaces in one slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// `INTERFACE_GUARDS_REALS`.
    pub flags: u16,
}

/// `InterfaceMac::flags`: frames routed in through this interface to a NAT real's service
/// address:port that belong to no VIP flow are dropped (`Reason::DirectToReal`): the policy
/// keeps the server side closed to the client side (`nat_routing: closed`). Set on every
/// interface but the inside ones.
pub const INTERFACE_GUARDS_REALS: u16 = 1;

/// Entries of `INTERFACE_MACS`.
pub const INTERFACE_SLOTS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without implicit padding.
    unsafe impl aya::Pod for super::InterfaceMac {}
}
