//! Per-CPU counters the data plane keeps and the controller sums.

/// Value of `SERVICE_COUNTERS` (by service id) and `REAL_COUNTERS` (by real id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Flows scheduled (connection-table misses).
    pub new_flows: u64,
}

/// Why a packet was passed to the kernel or dropped instead of forwarded; index of
/// `REASON_COUNTERS`. The order is part of the map layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Forwarded to a real. Not kept by the data plane: readers sum the service counters.
    Forwarded = 0,
    /// Not IPv4 (ARP, IPv6, LLDP ...): passed.
    NotIpv4 = 1,
    /// IPv4 but not TCP/UDP to a configured VIP:port: passed.
    NotForVip = 2,
    /// Truncated or inconsistent headers: passed, so the kernel drops and counts it as usual.
    Malformed = 3,
    /// IP fragment to a VIP: dropped (see lb-ebpf/src/parse.rs for why).
    Fragment = 4,
    /// Service has no real to send to: dropped.
    NoReal = 5,
    /// Frame not unicast to this host (broadcast/multicast destination MAC): passed.
    NotUnicast = 6,
    /// NAT: TTL would expire here; passed so the kernel can answer as a router does.
    TtlExpired = 7,
    /// NAT: no route to the real or the client; passed untouched.
    NoRoute = 8,
    /// NAT: the next hop's MAC is not known yet; translated and passed so the kernel forwards
    /// it and resolves the neighbour (later packets take the fast path).
    NoNeighbour = 9,
}

impl Reason {
    pub const COUNT: u32 = 10;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Forwarded,
        Reason::NotIpv4,
        Reason::NotForVip,
        Reason::Malformed,
        Reason::Fragment,
        Reason::NoReal,
        Reason::NotUnicast,
        Reason::TtlExpired,
        Reason::NoRoute,
        Reason::NoNeighbour,
    ];

    /// Label used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::NotIpv4 => "not_ipv4",
            Reason::NotForVip => "not_for_vip",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::NoReal => "no_real",
            Reason::NotUnicast => "not_unicast",
            Reason::TtlExpired => "ttl_expired",
            Reason::NoRoute => "no_route",
            Reason::NoNeighbour => "no_neighbour",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data.
    unsafe impl aya::Pod for super::TrafficCounters {}
}
