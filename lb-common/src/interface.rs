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
    pub _pad: u16,
}

/// Entries of `INTERFACE_MACS`.
pub const INTERFACE_SLOTS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without implicit padding.
    unsafe impl aya::Pod for super::InterfaceMac {}
}
