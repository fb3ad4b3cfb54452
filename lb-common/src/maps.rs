//! Names and sizes of the BPF maps. The names are the ELF symbols in lb-ebpf and the file names
//! the maps are pinned under, so both sides must agree on them.

/// Most services (distinct service ids); each owns two Maglev tables (active and standby).
pub const MAX_SERVICES: u32 = 64;
/// Most VIP:port:protocol entries (a service with several ports has one entry per port).
pub const MAX_VIP_PORTS: u32 = 4096;
/// Most reals over all services (a real serving two services counts twice).
pub const MAX_REALS: u32 = 4096;
/// NAT reply sources (real address:port:protocol) whose VIP:port is known (`NAT_ORIGINS`).
pub const MAX_NAT_ORIGINS: u32 = 16384;
/// Connection-table entries; LRU eviction beyond this.
pub const MAX_FLOWS: u32 = 1 << 20;
/// SNAT flows (entries of `SNAT_REVERSE`, allocated as used): beyond this, new SNAT flows are
/// refused (`Reason::SnatPortsExhausted`).
pub const MAX_SNAT_FLOWS: u32 = 1 << 18;
/// The source ports SNAT gives flows, reserved in the kernel (`ip_local_reserved_ports`) while
/// SNAT services exist, so the host's own connections never take one: 16384 ports per SNAT
/// address and real address:port.
pub const SNAT_PORT_FIRST: u16 = 40960;
pub const SNAT_PORT_COUNT: u16 = 16384;
/// Ports tried for a new SNAT flow before it is refused: each is the flow's hash stepped
/// through the range, so both balancers of a pair try the same ports in the same order.
pub const SNAT_PROBES: u32 = 8;
/// Slots of the per-CPU flow cache (`flow::CachedFlow`, 128 bytes each: 4 MiB per CPU).
pub const FLOW_CACHE_SLOTS: u32 = 1 << 15;
/// Persistent clients remembered (LRU) over all services.
pub const MAX_PERSISTENT_CLIENTS: u32 = 1 << 18;
/// Entries of one Maglev lookup table; prime, as the algorithm requires.
pub const MAGLEV_TABLE_SIZE: u32 = 65537;
/// Maglev tables: two per service so a new one is written beside the live one, then switched.
pub const MAGLEV_TABLES: u32 = MAX_SERVICES * 2;
/// Bits of the VIP filter: a bitmap of hashed VIP:port:protocol, checked before any hash-map
/// lookup so traffic for other destinations costs one array read.
pub const VIP_FILTER_BITS: u32 = 1 << 16;
pub const VIP_FILTER_WORDS: u32 = VIP_FILTER_BITS / 64;
/// Value of a Maglev table entry or a service's fallback with no real behind it.
pub const NO_REAL: u32 = u32::MAX;

pub const MAP_SERVICES: &str = "SERVICES";
pub const MAP_VIP_ADDRS: &str = "VIP_ADDRS";
pub const MAP_VIP_FILTER: &str = "VIP_FILTER";
pub const MAP_REAL_FILTER: &str = "REAL_FILTER";
pub const MAP_NAT_REVERSE: &str = "NAT_REVERSE";
/// SNAT reply 5-tuple (real -> SNAT address:port) -> the flow it belongs to (`flow::NatReverse`
/// with the client). A plain hash map, never evicting: a port is free only once the controller
/// removed its flow's entry after the flow expired (`dataplane/snat_sweep.rs`), so no live
/// flow's port is ever given to another.
pub const MAP_SNAT_REVERSE: &str = "SNAT_REVERSE";
/// The SNAT addresses in use (key: address, network byte order; value unused), so a packet to
/// one of them in xdplb's port range that belongs to no flow is dropped rather than answered
/// with a reset by the kernel.
pub const MAP_SNAT_ADDRS: &str = "SNAT_ADDRS";
/// Most SNAT addresses (`SNAT_ADDRS`).
pub const MAX_SNAT_ADDRS: u32 = 256;
/// NAT reals' reply sources -> the one VIP:port each serves (`flow::NatOrigin`).
pub const MAP_NAT_ORIGINS: &str = "NAT_ORIGINS";
/// Per CPU, one u64: NAT flows adopted from a real's reply (`flow::NatOrigin`).
pub const MAP_NAT_ADOPTED: &str = "NAT_ADOPTED";
/// One u32: the clock tick until which NAT flows may be adopted (`NAT_ADOPT_ALWAYS`: no end;
/// 0: closed). The controller keeps it open while this node is a pair's standby and for
/// `ADOPTION_WINDOW_SECS` after it took its VIPs over.
pub const MAP_NAT_ADOPT_UNTIL: &str = "NAT_ADOPT_UNTIL";
pub const NAT_ADOPT_ALWAYS: u32 = u32::MAX;
/// How long after taking the VIPs over a node adopts flows from the reals' replies: long
/// enough for any reply a real was retransmitting, or sending on a flow that was quiet.
pub const ADOPTION_WINDOW_SECS: u64 = 120;
pub const MAP_REALS: &str = "REALS";
pub const MAP_MAGLEV: &str = "MAGLEV";
pub const MAP_FLOWS: &str = "FLOWS";
pub const MAP_PERSIST: &str = "PERSIST";
/// One u32: the `LAYOUT_VERSION` of the build that created the pinned maps.
pub const MAP_META: &str = "META";
/// One u64: jiffies, as the clock program (`CLOCK_PROGRAM`) last read them, for the
/// controller (userspace cannot read jiffies).
pub const MAP_CLOCK: &str = "CLOCK";
/// One u32, not pinned: bumped by the controller after each change it makes to the maps. The
/// data plane's flow cache (`FLOW_CACHE`, not pinned either) ignores slots cached under an
/// earlier epoch, so a change takes effect at once, not at the next clock tick.
pub const MAP_CACHE_EPOCH: &str = "CACHE_EPOCH";
/// Attached interfaces' own MACs (`interface::InterfaceMac`), filled by the loader before its
/// program is attached or swapped in.
pub const MAP_INTERFACE_MACS: &str = "INTERFACE_MACS";
/// Per CPU: the SYN-flood detector's state and counter (`flood::FloodState`).
pub const MAP_FLOOD: &str = "FLOOD";
pub const MAP_SERVICE_COUNTERS: &str = "SERVICE_COUNTERS";
pub const MAP_REAL_COUNTERS: &str = "REAL_COUNTERS";
pub const MAP_REASON_COUNTERS: &str = "REASON_COUNTERS";

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xdplb";
/// The ICMP program, which `xdplb` tail-calls through `PROGRAMS` at index `PROGRAM_ICMP`.
pub const ICMP_PROGRAM: &str = "xdplb_icmp";
/// The program for NAT replies the flow cache did not serve: their flow's reverse entry, else
/// the flow adopted from the policy (`flow::NatOrigin`); tail-called by `xdplb` at
/// `PROGRAM_NAT_REPLY`.
pub const NAT_REPLY_PROGRAM: &str = "xdplb_nat_reply";
/// The program for NAT and SNAT packets through the connection table: a new NAT flow's first
/// packet, and a SNAT flow's first of a clock tick, claiming a new flow's source port
/// (`flow::NatReverse` in `SNAT_REVERSE`); tail-called by `xdplb` at `PROGRAM_NAT_TABLE`.
pub const NAT_TABLE_PROGRAM: &str = "xdplb_nat_table";
/// IPv6 has programs of its own, the same code built for the other family, so each family's
/// verifier budget (and IPv4's per-packet cost) is what it would be alone: `xdplb` tail-calls
/// `xdplb_v6` for every IPv6 frame, which tail-calls the IPv6 versions of the others.
pub const IPV6_PROGRAM: &str = "xdplb_v6";
pub const ICMP6_PROGRAM: &str = "xdplb_icmp6";
pub const NAT_REPLY6_PROGRAM: &str = "xdplb_nat_reply6";
pub const NAT_TABLE6_PROGRAM: &str = "xdplb_nat_table6";
/// A packet the flow cache did not serve, through the connection tables: scheduling, an
/// established flow's first packet of a clock tick, a NAT reply; `xdplb` holds only the
/// cached paths.
pub const TABLE_PROGRAM: &str = "xdplb_table";
pub const TABLE6_PROGRAM: &str = "xdplb_table6";
pub const MAP_PROGRAMS: &str = "PROGRAMS";
pub const PROGRAM_ICMP: u32 = 0;
pub const PROGRAM_NAT_REPLY: u32 = 1;
pub const PROGRAM_NAT_TABLE: u32 = 2;
pub const PROGRAM_IPV6: u32 = 3;
pub const PROGRAM_ICMP6: u32 = 4;
pub const PROGRAM_NAT_REPLY6: u32 = 5;
pub const PROGRAM_NAT_TABLE6: u32 = 6;
pub const PROGRAM_TABLE: u32 = 7;
pub const PROGRAM_TABLE6: u32 = 8;
/// Every tail-called program: its name and `PROGRAMS` slot.
pub const TAIL_CALLED: [(&str, u32); 9] = [
    (ICMP_PROGRAM, PROGRAM_ICMP),
    (NAT_REPLY_PROGRAM, PROGRAM_NAT_REPLY),
    (NAT_TABLE_PROGRAM, PROGRAM_NAT_TABLE),
    (IPV6_PROGRAM, PROGRAM_IPV6),
    (ICMP6_PROGRAM, PROGRAM_ICMP6),
    (NAT_REPLY6_PROGRAM, PROGRAM_NAT_REPLY6),
    (NAT_TABLE6_PROGRAM, PROGRAM_NAT_TABLE6),
    (TABLE_PROGRAM, PROGRAM_TABLE),
    (TABLE6_PROGRAM, PROGRAM_TABLE6),
];
/// Entries of `PROGRAMS`: room for tail-called programs to come without a new layout.
pub const PROGRAM_SLOTS: u32 = 16;
/// A second XDP program, never attached: each BPF_PROG_TEST_RUN of it stores the current
/// jiffies in `CLOCK`, so the controller reads the data plane's clock.
pub const CLOCK_PROGRAM: &str = "xdplb_clock";
