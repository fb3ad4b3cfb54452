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
    /// Neither IPv4 nor IPv6 (ARP, LLDP ...): passed.
    NotIp = 1,
    /// IP but not TCP/UDP to a configured VIP:port: passed.
    NotForVip = 2,
    /// Truncated or inconsistent headers: passed, so the kernel drops and counts it as usual.
    Malformed = 3,
    /// IP fragment to a VIP: dropped (see lb-ebpf/src/parse.rs for why).
    Fragment = 4,
    /// Service has no real to send to: dropped.
    NoReal = 5,
    /// Frame not unicast (broadcast/multicast destination MAC): passed.
    NotUnicast = 6,
    /// NAT: TTL would expire here; passed so the kernel can answer as a router does.
    TtlExpired = 7,
    /// NAT: no route to the real or the client; passed untouched.
    NoRoute = 8,
    /// NAT: the next hop's MAC is not known yet; translated and passed so the kernel forwards
    /// it and resolves the neighbour (later packets take the fast path).
    NoNeighbour = 9,
    /// Frame unicast to another station's MAC (a promiscuous NIC, a bridge member, a switch
    /// flooding unknown unicast): passed untouched, never forwarded.
    OtherHost = 10,
    /// A new flow from a source no host can have (IPv4: 0/8, 127/8, multicast, broadcast;
    /// IPv6: unspecified, loopback, multicast, link-local, IPv4-mapped; or the destination
    /// itself): passed,
    /// for the kernel to drop as a martian.
    Martian = 11,
    /// An ICMP error (destination unreachable, time exceeded) about no flow of a VIP, or
    /// quoting a packet too short to tell: passed.
    IcmpUnmatched = 12,
    /// Routed through the balancer from the client side straight to a NAT real's service
    /// address:port, not through its VIP (`nat_routing: closed`): dropped.
    DirectToReal = 13,
    /// SNAT: every source port tried toward the real's address:port is held by a live flow (or
    /// the SNAT table is full): the new flow is dropped, never given a port in use.
    SnatPortsExhausted = 14,
    /// SNAT: a packet to a SNAT address and a port of xdplb's range that belongs to no flow
    /// (a real's late reply after the flow expired, or one to a flow a pair peer scheduled
    /// before the client's next packet reaches this node): dropped, since the kernel would
    /// answer it with a reset that kills the real's side of a live connection.
    SnatUnknown = 15,
    /// IPv6 with more extension headers before TCP/UDP than the data plane walks
    /// (`parse::IPV6_EXTENSION_HEADERS`): passed. (Behind AH or ESP there are no ports to read:
    /// `NotForVip`.)
    Ipv6ExtensionHeaders = 16,
}

impl Reason {
    pub const COUNT: u32 = 17;
    /// Entries of `REASON_COUNTERS`: room for reasons to come without a new layout.
    pub const SLOTS: u32 = 32;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Forwarded,
        Reason::NotIp,
        Reason::NotForVip,
        Reason::Malformed,
        Reason::Fragment,
        Reason::NoReal,
        Reason::NotUnicast,
        Reason::TtlExpired,
        Reason::NoRoute,
        Reason::NoNeighbour,
        Reason::OtherHost,
        Reason::Martian,
        Reason::IcmpUnmatched,
        Reason::DirectToReal,
        Reason::SnatPortsExhausted,
        Reason::SnatUnknown,
        Reason::Ipv6ExtensionHeaders,
    ];

    /// Label used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::NotIp => "not_ip",
            Reason::NotForVip => "not_for_vip",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::NoReal => "no_real",
            Reason::NotUnicast => "not_unicast",
            Reason::TtlExpired => "ttl_expired",
            Reason::NoRoute => "no_route",
            Reason::NoNeighbour => "no_neighbour",
            Reason::OtherHost => "other_host",
            Reason::Martian => "martian_source",
            Reason::IcmpUnmatched => "icmp_unmatched",
            Reason::DirectToReal => "direct_to_real",
            Reason::SnatPortsExhausted => "snat_ports_exhausted",
            Reason::SnatUnknown => "snat_unknown",
            Reason::Ipv6ExtensionHeaders => "ipv6_extension_headers",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data.
    unsafe impl aya::Pod for super::TrafficCounters {}
}
