//! The oracle, written from the README's promises rather than from the data plane's code:
//! the well-formedness rules a frame meets in order (`Oracle::judge`), where the parts of a
//! well-formed frame are (`Layout`), its flow (`Tuple`), the route a NAT reply takes, and the
//! expected outcome of every frame (`Verdict`); with a self-check of the rules against
//! etherparse. Comparing what the program did with the verdict is in checks.rs.

use std::{collections::HashMap, net::IpAddr};

use etherparse::{IpNumber, Ipv4Slice, Ipv6Slice, TcpSlice, UdpSlice};

use crate::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, ICMPV6, MTU, Mode, SERVICES, Side, TCP, UDP,
    bytes::{addr_at, addr6_at, be16, ip_checksum_ok},
    host_mac, neighbours,
    report::{Problem, problem},
    side_of,
};

/// A source address no forwarded packet may have: 0/8, loopback, multicast and above; IPv6:
/// ::/96 (unspecified, loopback, the old compatible form), multicast (ff00::/8) and link-local
/// (fe80::/10).
pub(crate) fn martian(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let first = a.octets()[0];
            first == 0 || first == 127 || first >= 224
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            o[..12].iter().all(|b| *b == 0) || o[0] == 0xff || a.is_unicast_link_local()
        }
    }
}

/// An IPv4-mapped IPv6 address (::ffff:a.b.c.d): on no wire legitimately; an IPv6 packet with
/// one (source or destination) is refused as martian.
pub(crate) fn mapped(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(_) => false,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
    }
}

/// IPv6 extension headers the data plane walks, and how many at most.
pub(crate) const HOP_BY_HOP: u8 = 0;
pub(crate) const ROUTING: u8 = 43;
pub(crate) const FRAGMENT: u8 = 44;
pub(crate) const DESTINATION_OPTIONS: u8 = 60;
pub(crate) const EXTENSION_HEADERS_WALKED: usize = 4;

pub(crate) fn is_extension(next: u8) -> bool {
    matches!(next, HOP_BY_HOP | ROUTING | FRAGMENT | DESTINATION_OPTIONS)
}

/// Whether an IPv6 frame's chain (as the data plane walks it) has a hop-by-hop header after
/// the first position, or its payload length is 0: etherparse refuses the first (RFC 8200
/// puts hop-by-hop first; the data plane walks it anywhere) and reads the second as a
/// jumbogram, so neither can be checked against etherparse.
pub(crate) fn etherparse_differs6(f: &[u8], l3: usize) -> bool {
    if f.len() < l3 + 40 {
        return false;
    }
    if be16(f, l3 + 4) == 0 {
        return true;
    }
    let (mut next, mut offset) = (f[l3 + 6], l3 + 40);
    for i in 0..EXTENSION_HEADERS_WALKED {
        if !is_extension(next) || offset + 8 > f.len() {
            break;
        }
        if next == HOP_BY_HOP && i > 0 {
            return true;
        }
        let here = offset;
        offset += if next == FRAGMENT {
            8
        } else {
            (f[here + 1] as usize + 1) * 8
        };
        next = f[here];
    }
    false
}

fn pass(why: &'static str) -> Verdict {
    Verdict::Pass {
        why,
        drop_ok: false,
    }
}

/// Where the parts of a well-formed TCP/UDP frame are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) v6: bool,
    pub(crate) l3: usize,
    /// From the IP header to TCP/UDP: IPv4 IHL bytes; IPv6 header and extension headers.
    pub(crate) ihl: usize,
    pub(crate) l4: usize,
    /// The IP datagram's length (IPv4 total length; IPv6 40 + payload length).
    pub(crate) tot: usize,
    pub(crate) proto: u8,
    /// TCP: data offset * 4; UDP: 8.
    pub(crate) l4_header: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Tuple {
    pub(crate) src: IpAddr,
    pub(crate) sport: u16,
    pub(crate) dst: IpAddr,
    pub(crate) dport: u16,
    pub(crate) proto: u8,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            if self.proto == TCP { "tcp" } else { "udp" },
            std::net::SocketAddr::new(self.src, self.sport),
            std::net::SocketAddr::new(self.dst, self.dport),
        )
    }
}

/// A NAT reply's translation: the VIP:port its source becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub(crate) vip: IpAddr,
    pub(crate) vip_port: u16,
}

/// Where bpf_fib_lookup sends a NAT packet.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// Next hop resolved: out of `side`, to `mac`.
    Resolved { side: Side, mac: [u8; 6] },
    /// On a connected subnet without a neighbour entry: translated and passed (README).
    Unresolved,
    /// The router's own address, or a subnet's network or broadcast address: the lookup does
    /// not forward it; passed, translated or not.
    Local,
    /// No route (or over the MTU): passed untouched.
    None,
}

/// The oracle's judgement of one frame before it is run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Verdict {
    /// Must be passed unchanged; `drop_ok`: a fragment to a VIP, which may also be dropped.
    Pass {
        why: &'static str,
        drop_ok: bool,
    },
    Dr {
        svc: usize,
        t: Tuple,
    },
    NatIn {
        svc: usize,
        t: Tuple,
        l: Layout,
    },
    NatReply {
        reply: Reply,
        t: Tuple,
        l: Layout,
        route: Route,
    },
    /// A reply adoptable but for a client flow adopted on another real before (which a flood
    /// may have left without entries): passed unchanged, or adopted as `NatReply`.
    AdoptMaybe {
        reply: Reply,
        t: Tuple,
        l: Layout,
        route: Route,
    },
    /// A NAT packet to a VIP that must be passed unchanged, but whose flow the data plane
    /// enters first (so errors about it may be translated later: `IcmpMaybe`).
    NatRefused {
        why: &'static str,
        t: Tuple,
    },
    /// An ICMPv6 error about a NAT flow that may or may not have been entered (`NatRefused`):
    /// passed unchanged, or translated exactly as one of `to` says.
    IcmpMaybe {
        what: &'static str,
        l: IcmpLayout,
        to: [Option<(IcmpRewrite, Route)>; 3],
    },
    /// An ICMPv6 error about a DR flow (its quote is the reply the real sent from the VIP):
    /// unchanged to the flow's real, `mac` when the oracle saw where the flow went.
    IcmpDr {
        svc: usize,
        mac: Option<[u8; 6]>,
    },
    /// An ICMPv6 error about a NAT flow, translated: the outer and quoted addresses and ports
    /// as `to` says, the hop limit down by one, the checksums right, where `route` says.
    IcmpNat {
        what: &'static str,
        l: IcmpLayout,
        to: IcmpRewrite,
        route: Route,
    },
}

/// Where the parts of a well-formed ICMPv6 error are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IcmpLayout {
    pub(crate) l3: usize,
    pub(crate) icmp: usize,
    /// The quoted IPv6 header and its TCP/UDP header.
    pub(crate) quote: usize,
    pub(crate) quote_l4: usize,
    pub(crate) quote_proto: u8,
    /// The end of the outer datagram.
    pub(crate) end: usize,
}

/// What an ICMPv6 error about a NAT flow becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IcmpRewrite {
    pub(crate) outer_src: IpAddr,
    pub(crate) outer_dst: IpAddr,
    pub(crate) quote_src: (IpAddr, u16),
    pub(crate) quote_dst: (IpAddr, u16),
}

impl Verdict {
    pub(crate) fn label(&self) -> String {
        match self {
            Verdict::Pass { why, .. } | Verdict::NatRefused { why, .. } => {
                format!("not forwardable: {why}")
            }
            Verdict::IcmpMaybe { what, .. } => format!("{what}, of a flow perhaps entered"),
            Verdict::AdoptMaybe { .. } => {
                "NAT reply adoptable, its client adopted on another real before".into()
            }
            Verdict::Dr { .. } => "DR forward".into(),
            Verdict::NatIn { .. } => "NAT inbound forward".into(),
            Verdict::NatReply { route, .. } => match route {
                Route::Resolved { .. } => "NAT reply forward".into(),
                Route::Unresolved => "NAT reply, neighbour unresolved (translate, pass)".into(),
                Route::Local => "NAT reply to a local/broadcast address".into(),
                Route::None => "NAT reply, no route (pass untouched)".into(),
            },
            Verdict::IcmpDr { .. } => "ICMPv6 error about a DR flow, to its real".into(),
            Verdict::IcmpNat { what, route, .. } => match route {
                Route::Resolved { .. } => format!("{what}, translated and forwarded"),
                _ => format!("{what}, translated and passed (route {route:?})"),
            },
        }
    }
}

pub(crate) struct Oracle {
    out_mac: [u8; 6],
    in_mac: [u8; 6],
    /// The real (its MAC) every DR flow went to.
    pub(crate) dr_real: HashMap<Tuple, [u8; 6]>,
    /// The real every NAT flow went to.
    pub(crate) nat_real: HashMap<Tuple, IpAddr>,
    /// Replies of the NAT flows opened so far (reply 5-tuple: real:port -> client:port).
    pub(crate) replies: HashMap<Tuple, Reply>,
    /// The same, in opening order, for the generator.
    pub(crate) opened: Vec<Tuple>,
    /// Client flows adopted from a real's reply (the last real that replied): entered, unless
    /// a flood was on (no entries then).
    pub(crate) adopted: HashMap<Tuple, IpAddr>,
    /// The router's neighbours (`neighbours()`), for `route`.
    neighbours: std::collections::HashSet<IpAddr>,
    /// NAT flows whose first packet was refused (TTL, MTU) after the flow was entered, on a
    /// real the oracle does not know, and not seen forwarded since.
    pub(crate) refused: std::collections::HashSet<Tuple>,
}

impl Oracle {
    pub(crate) fn new(out_mac: [u8; 6], in_mac: [u8; 6]) -> Self {
        Oracle {
            out_mac,
            in_mac,
            dr_real: HashMap::new(),
            nat_real: HashMap::new(),
            replies: HashMap::new(),
            opened: Vec::new(),
            refused: Default::default(),
            adopted: HashMap::new(),
            neighbours: neighbours().into_iter().map(|(a, _, _)| a).collect(),
        }
    }

    pub(crate) fn own_mac(&self, side: Side) -> [u8; 6] {
        match side {
            Side::Out => self.out_mac,
            Side::In => self.in_mac,
        }
    }

    pub(crate) fn service(&self, dst: IpAddr, port: u16, proto: u8) -> Option<usize> {
        SERVICES
            .iter()
            .position(|s| s.vip == dst && s.proto == proto && s.ports.contains(&port))
    }

    /// The VIP:port a reply from a NAT real's address:port belongs to, when the policy says
    /// (the address:port serves exactly one VIP:port): the flow is adopted, even though this
    /// balancer never saw it open (README, "Running a pair").
    fn origin(&self, t: &Tuple) -> Option<Reply> {
        let mut found = SERVICES
            .iter()
            .filter(|s| s.mode == Mode::Nat)
            .flat_map(|s| {
                s.ports
                    .iter()
                    .filter(move |&&p| {
                        s.proto == t.proto
                            && s.reals.contains(&t.src)
                            && s.real_port.unwrap_or(p) == t.sport
                    })
                    .map(move |&p| Reply {
                        vip: s.vip,
                        vip_port: p,
                    })
            });
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    fn is_vip(&self, addr: IpAddr) -> bool {
        SERVICES.iter().any(|s| s.vip == addr)
    }

    pub(crate) fn route(&self, dst: IpAddr, tot: usize) -> Route {
        let Some(side) = side_of(dst) else {
            return Route::None;
        };
        if tot > MTU {
            return Route::None;
        }
        let own = match side {
            Side::Out => 2,
            Side::In => 1,
        };
        let local = match dst {
            // The broadcast address is local; the network address (host part 0) is not: Linux
            // has made no broadcast route for it since 5.14, and routes it on-link.
            IpAddr::V4(a) => {
                let host = a.octets()[3];
                host == 255 || host == own
            }
            // The router's address, or the subnet-router anycast address (host part 0).
            IpAddr::V6(a) => {
                let s = a.segments();
                s[4..7] == [0, 0, 0] && (s[7] == 0 || s[7] == own as u16)
            }
        };
        if local {
            return Route::Local;
        }
        if self.neighbours.contains(&dst) {
            Route::Resolved {
                side,
                mac: host_mac(dst),
            }
        } else {
            Route::Unresolved
        }
    }

    /// The promises, from the README and the issue, in the order a frame meets them.
    pub(crate) fn judge(&self, side: Side, f: &[u8]) -> Verdict {
        if f.len() < 14 {
            return pass("shorter than an Ethernet header");
        }
        if f[0..6] != self.own_mac(side) {
            return pass(if f[0] & 1 != 0 {
                "destination MAC broadcast/multicast"
            } else {
                "destination MAC another station's"
            });
        }
        let (l3, ether_type) = match be16(f, 12) {
            ETHERTYPE_VLAN if f.len() < 18 => return pass("truncated in the VLAN tag"),
            ETHERTYPE_VLAN => (18, be16(f, 16)),
            t => (14, t),
        };
        match ether_type {
            ETHERTYPE_IPV4 => self.judge4(side, f, l3),
            ETHERTYPE_IPV6 => self.judge6(side, f, l3),
            _ if l3 == 18 => pass("not IP after one VLAN tag"),
            _ => pass("not IP (EtherType)"),
        }
    }

    fn judge4(&self, side: Side, f: &[u8], l3: usize) -> Verdict {
        if f.len() < l3 + 20 {
            return pass("truncated in the IPv4 header");
        }
        if f[l3] >> 4 != 4 {
            return pass("IP version not 4");
        }
        let ihl = (f[l3] & 0x0f) as usize * 4;
        if ihl < 20 {
            return pass("IHL < 5");
        }
        // A fragment to a VIP may be dropped (README) as soon as its fixed header shows it is
        // one, whatever else is wrong with it.
        let dst = addr_at(f, l3 + 16);
        if be16(f, l3 + 6) & 0x3fff != 0 {
            return Verdict::Pass {
                why: "fragment (MF or offset)",
                drop_ok: self.is_vip(dst),
            };
        }
        if f.len() < l3 + ihl {
            return pass("truncated in the IP options (IHL beyond the frame)");
        }
        if !ip_checksum_ok(&f[l3..l3 + ihl]) {
            return pass("IP header checksum");
        }
        let tot = be16(f, l3 + 2) as usize;
        if tot < ihl {
            return pass("total length < IHL");
        }
        if l3 + tot > f.len() {
            return pass("datagram longer than the frame (total length / truncated)");
        }
        let proto = f[l3 + 9];
        if proto != TCP && proto != UDP {
            return pass("not TCP or UDP");
        }
        let src = addr_at(f, l3 + 12);
        let hops = f[l3 + 8];
        self.judge_l4(side, f, l3, l3 + ihl, tot, proto, (src, dst), hops, false)
    }

    /// IPv6: the fixed header, mapped addresses, up to `EXTENSION_HEADERS_WALKED` extension
    /// headers (an atomic fragment is a whole packet), then ICMPv6 errors or TCP/UDP.
    fn judge6(&self, side: Side, f: &[u8], l3: usize) -> Verdict {
        if f.len() < l3 + 40 {
            return pass("truncated in the IPv6 header");
        }
        if f[l3] >> 4 != 6 {
            return pass("IP version not 6");
        }
        let end = l3 + 40 + be16(f, l3 + 4) as usize;
        if end > f.len() {
            return pass("IPv6: datagram longer than the frame (payload length / truncated)");
        }
        let (src, dst) = (addr6_at(f, l3 + 8), addr6_at(f, l3 + 24));
        if mapped(src) || mapped(dst) {
            return pass("IPv6 with an IPv4-mapped address (martian)");
        }
        let mut next = f[l3 + 6];
        let mut offset = l3 + 40;
        let mut fragment = false;
        let mut later = false;
        for _ in 0..EXTENSION_HEADERS_WALKED {
            if !is_extension(next) {
                break;
            }
            if offset + 8 > f.len() {
                return pass("IPv6: extension header beyond the frame");
            }
            if next == FRAGMENT {
                // Offset or M set; offset 0 and M clear is an atomic fragment, a whole packet.
                let offset_and_mf = be16(f, offset + 2);
                fragment |= offset_and_mf & 0xfff9 != 0;
                next = f[offset];
                offset += 8;
                if offset_and_mf & 0xfff8 != 0 {
                    // A later fragment: what follows is data, not headers.
                    later = true;
                    break;
                }
            } else {
                if next == ROUTING && f[offset + 3] != 0 {
                    return pass("IPv6: routing header with segments left (the VIP a waypoint)");
                }
                next = f[offset];
                offset += (f[offset + 1] as usize + 1) * 8;
            }
        }
        if !later && is_extension(next) {
            return pass("IPv6: more than 4 extension headers");
        }
        if offset > end {
            return pass("IPv6: extension headers beyond the datagram");
        }
        if fragment {
            // A fragment to a VIP may be dropped (README), TCP/UDP or not.
            return Verdict::Pass {
                why: "IPv6 fragment (M or offset)",
                drop_ok: self.is_vip(dst),
            };
        }
        if next == ICMPV6 {
            return self.judge_icmp6(f, l3, offset, end, (src, dst));
        }
        if next != TCP && next != UDP {
            return pass("not TCP or UDP");
        }
        let hops = f[l3 + 7];
        self.judge_l4(side, f, l3, offset, end - l3, next, (src, dst), hops, true)
    }

    /// The rest, for either family: TCP/UDP lengths, martian sources, services, replies.
    #[allow(clippy::too_many_arguments)]
    fn judge_l4(
        &self,
        side: Side,
        f: &[u8],
        l3: usize,
        l4: usize,
        tot: usize,
        proto: u8,
        (src, dst): (IpAddr, IpAddr),
        ttl: u8,
        v6: bool,
    ) -> Verdict {
        let ihl = l4 - l3;
        let l4_len = tot - ihl;
        let l4_header = if proto == TCP {
            if l4_len < 20 {
                return pass("TCP header beyond the datagram (total length)");
            }
            let doff = (f[l4 + 12] >> 4) as usize;
            if doff < 5 {
                return pass("TCP data offset < 5");
            }
            if doff * 4 > l4_len {
                return pass("TCP data offset beyond the datagram");
            }
            doff * 4
        } else {
            if l4_len < 8 {
                return pass("UDP header beyond the datagram (total length)");
            }
            let ulen = be16(f, l4 + 4) as usize;
            if ulen < 8 {
                return pass("UDP length < 8");
            }
            if ulen > l4_len {
                return pass("UDP length beyond the datagram");
            }
            8
        };
        let l = Layout {
            v6,
            l3,
            ihl,
            l4,
            tot,
            proto,
            l4_header,
        };
        let t = Tuple {
            src,
            sport: be16(f, l4),
            dst,
            dport: be16(f, l4 + 2),
            proto,
        };
        if let Some(svc) = self.service(dst, t.dport, proto) {
            if martian(src) {
                return pass("martian source");
            }
            if src == dst {
                return pass("martian source: the destination itself");
            }
            match SERVICES[svc].mode {
                Mode::Dr => Verdict::Dr { svc, t },
                // Passed, but the flow is entered (on a real the oracle cannot tell) before the
                // packet is refused, so that its later packets and replies find it (nat.rs).
                Mode::Nat if ttl <= 1 => Verdict::NatRefused {
                    why: "NAT: TTL would expire",
                    t,
                },
                // Every real has a route and a resolved neighbour.
                Mode::Nat if tot > MTU => Verdict::NatRefused {
                    why: "NAT: over the egress MTU",
                    t,
                },
                Mode::Nat => Verdict::NatIn { svc, t, l },
            }
        } else if martian(src) {
            pass("martian source")
        } else if let Some(reply) = self.replies.get(&t).copied() {
            if ttl <= 1 {
                return pass("NAT reply: TTL would expire");
            }
            match self.route(dst, tot) {
                Route::None => pass("NAT reply: no route to the client"),
                route => Verdict::NatReply { reply, t, l, route },
            }
        } else if let Some(origin) = self.origin(&t) {
            // Adopted (README, "Running a pair"; adoption is open in this run) unless it
            // cannot be a reply of a VIP flow: a SYN, the client's flow on another real, not
            // from where the real is, or not routed on to a client.
            let syn_only = proto == TCP && f[l4 + 13] & 0x12 == 0x02;
            // The client's flow open on another real: not its reply (flows never expire here).
            let client = Tuple {
                src: t.dst,
                sport: t.dport,
                dst: origin.vip,
                dport: origin.vip_port,
                proto,
            };
            let elsewhere = self
                .nat_real
                .get(&client)
                .is_some_and(|&real| real != t.src);
            let from_real = matches!(
                self.route(t.src, tot),
                Route::Resolved { side: real_side, .. } if real_side == side
            );
            // Adopted on another real before: during a flood, adoption makes no entries, so
            // whether the client's flow is live there is not the oracle's to know.
            let maybe_elsewhere = self.adopted.get(&client).is_some_and(|&real| real != t.src);
            match self.route(dst, tot) {
                route @ (Route::Resolved { .. } | Route::Unresolved)
                    if !syn_only && !elsewhere && from_real && ttl > 1 =>
                {
                    if maybe_elsewhere {
                        return Verdict::AdoptMaybe {
                            reply: origin,
                            t,
                            l,
                            route,
                        };
                    }
                    Verdict::NatReply {
                        reply: origin,
                        t,
                        l,
                        route,
                    }
                }
                _ => pass("from a NAT real's service port, but no reply to adopt"),
            }
        } else {
            pass("not for a VIP:port:protocol, nor from a NAT real's service address:port")
        }
    }

    /// An ICMPv6 message: an error (types 1, 2, 3) quoting a TCP/UDP packet of a VIP flow is
    /// forwarded (DR) or translated (NAT); anything else (echo, neighbour discovery, errors
    /// about no flow of ours) is the kernel's.
    fn judge_icmp6(
        &self,
        f: &[u8],
        l3: usize,
        icmp: usize,
        end: usize,
        (outer_src, outer_dst): (IpAddr, IpAddr),
    ) -> Verdict {
        if icmp + 8 > f.len() {
            return pass("ICMPv6: header beyond the frame");
        }
        if !matches!(f[icmp], 1..=3) {
            return pass("ICMPv6 other than an error (echo, neighbour discovery...)");
        }
        let quote = icmp + 8;
        if quote + 40 > f.len() {
            return pass("ICMPv6 error: quoted header beyond the frame");
        }
        if f[quote] >> 4 != 6 {
            return pass("ICMPv6 error: quoted IP version not 6");
        }
        let (qsrc, qdst) = (addr6_at(f, quote + 8), addr6_at(f, quote + 24));
        if mapped(qsrc) || mapped(qdst) {
            return pass("ICMPv6 error: IPv4-mapped address in the quote");
        }
        let quote_proto = f[quote + 6];
        if quote_proto != TCP && quote_proto != UDP {
            return pass("ICMPv6 error: quote not TCP/UDP (or behind extension headers)");
        }
        let quote_l4 = quote + 40;
        if quote_l4 + 8 > f.len() || quote_l4 + 8 > end {
            return pass("ICMPv6 error: quote too short for the ports");
        }
        let quoted = Tuple {
            src: qsrc,
            sport: be16(f, quote_l4),
            dst: qdst,
            dport: be16(f, quote_l4 + 2),
            proto: quote_proto,
        };
        if quoted.src != outer_dst {
            return pass("ICMPv6 error: not sent to the quoted packet's source");
        }
        let flow = Tuple {
            src: quoted.dst,
            sport: quoted.dport,
            dst: quoted.src,
            dport: quoted.sport,
            proto: quote_proto,
        };
        let l = IcmpLayout {
            l3,
            icmp,
            quote,
            quote_l4,
            quote_proto,
            end,
        };
        let hops = f[l3 + 7];
        let tot = end - l3;
        let nat = |what, to: IcmpRewrite| {
            if hops <= 1 {
                return pass("ICMPv6 error, NAT: hop limit would expire");
            }
            // No rule of the README covers an error from a martian source: the FIB lookup
            // refuses some (multicast, loopback), so passed unchanged or translated.
            if martian(to.outer_src) {
                return Verdict::IcmpMaybe {
                    what: "ICMPv6 error from a martian source, NAT",
                    l,
                    to: [Some((to, self.route(to.outer_dst, tot))), None, None],
                };
            }
            match self.route(to.outer_dst, tot) {
                Route::None => pass("ICMPv6 error, NAT: no route"),
                route => Verdict::IcmpNat { what, l, to, route },
            }
        };
        if let Some(svc) = self.service(quoted.src, quoted.sport, quote_proto) {
            // About a reply sent from a VIP: the client's flow is the quote reversed.
            let s = &SERVICES[svc];
            if s.mode == Mode::Dr {
                return Verdict::IcmpDr {
                    svc,
                    mac: self.dr_real.get(&flow).copied(),
                };
            }
            let rewrite = |real: IpAddr| IcmpRewrite {
                outer_src,
                outer_dst: real,
                quote_src: (real, s.real_port.unwrap_or(quoted.sport)),
                quote_dst: (quoted.dst, quoted.dport),
            };
            let what = "ICMPv6 error about a NAT reply, to the real";
            let Some(&real) = self.nat_real.get(&flow) else {
                if self.refused.contains(&flow) && hops > 1 {
                    let mut to = [None; 3];
                    for (slot, real) in to.iter_mut().zip(s.reals) {
                        *slot = Some((rewrite(*real), self.route(*real, tot)));
                    }
                    return Verdict::IcmpMaybe { what, l, to };
                }
                return pass("ICMPv6 error about no NAT flow of ours");
            };
            return nat(
                "ICMPv6 error about a NAT reply, to the real",
                IcmpRewrite {
                    outer_src,
                    outer_dst: real,
                    quote_src: (real, s.real_port.unwrap_or(quoted.sport)),
                    quote_dst: (quoted.dst, quoted.dport),
                },
            );
        }
        // About what the balancer sent to a NAT real: its reply's entry names the VIP:port.
        let Some(reply) = self.replies.get(&flow).copied() else {
            // A refused first packet of the client's flow may have entered this reply.
            let refused = SERVICES.iter().find_map(|s| {
                let vip_port = s.ports.iter().copied().find(|&p| {
                    s.mode == Mode::Nat
                        && s.proto == quote_proto
                        && s.reals.contains(&quoted.dst)
                        && s.real_port.unwrap_or(p) == quoted.dport
                })?;
                let client = Tuple {
                    src: quoted.src,
                    sport: quoted.sport,
                    dst: s.vip,
                    dport: vip_port,
                    proto: quote_proto,
                };
                (self.refused.contains(&client) && !self.nat_real.contains_key(&client))
                    .then_some((s.vip, vip_port))
            });
            if let Some((vip, vip_port)) = refused
                && hops > 1
            {
                let to = IcmpRewrite {
                    outer_src: if outer_src == quoted.dst {
                        vip
                    } else {
                        outer_src
                    },
                    outer_dst,
                    quote_src: (quoted.src, quoted.sport),
                    quote_dst: (vip, vip_port),
                };
                return Verdict::IcmpMaybe {
                    what: "ICMPv6 error about a packet to a NAT real, to the client",
                    l,
                    to: [Some((to, self.route(outer_dst, tot))), None, None],
                };
            }
            return pass("ICMPv6 error about no flow of ours");
        };
        nat(
            "ICMPv6 error about a packet to a NAT real, to the client",
            IcmpRewrite {
                outer_src: if outer_src == quoted.dst {
                    reply.vip
                } else {
                    outer_src
                },
                outer_dst,
                quote_src: (quoted.src, quoted.sport),
                quote_dst: (reply.vip, reply.vip_port),
            },
        )
    }

    /// The oracle's own structure check against etherparse's: a frame judged well formed must
    /// parse, a frame judged broken in its lengths must not.
    pub(crate) fn self_check(&self, side: Side, f: &[u8], verdict: &Verdict) -> Option<Problem> {
        if f.len() < 14 || f[0..6] != self.own_mac(side) {
            return None;
        }
        let structural_break = match verdict {
            Verdict::Pass { why, .. } => matches!(
                *why,
                "total length < IHL"
                    | "datagram longer than the frame (total length / truncated)"
                    | "TCP header beyond the datagram (total length)"
                    | "TCP data offset < 5"
                    | "TCP data offset beyond the datagram"
                    | "UDP header beyond the datagram (total length)"
                    | "UDP length beyond the datagram"
                    | "IPv6: datagram longer than the frame (payload length / truncated)"
                    | "IPv6: extension headers beyond the datagram"
            ),
            _ => false,
        };
        if matches!(
            verdict,
            Verdict::IcmpDr { .. } | Verdict::IcmpNat { .. } | Verdict::IcmpMaybe { .. }
        ) {
            return None;
        }
        let well_formed = !matches!(verdict, Verdict::Pass { .. })
            || matches!(
                verdict,
                Verdict::Pass { why, .. } if why.starts_with("martian")
                    || why.starts_with("NAT")
                    || why.starts_with("not for a VIP")
            );
        if !structural_break && !well_formed {
            return None;
        }
        let (l3, ether_type) = if be16(f, 12) == ETHERTYPE_VLAN {
            (18, be16(f, 16))
        } else {
            (14, be16(f, 12))
        };
        if ether_type == ETHERTYPE_IPV6 && etherparse_differs6(f, l3) {
            return None;
        }
        let ip = if ether_type == ETHERTYPE_IPV6 {
            Ipv6Slice::from_slice(&f[l3..])
                .map(|ip| (ip.payload().ip_number, ip.payload().payload))
                .map_err(|e| format!("{e:?}"))
        } else {
            Ipv4Slice::from_slice(&f[l3..])
                .map(|ip| (ip.payload().ip_number, ip.payload().payload))
                .map_err(|e| format!("{e:?}"))
        };
        let parsed = ip.and_then(|(protocol, payload)| match protocol {
            IpNumber::TCP => TcpSlice::from_slice(payload)
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            IpNumber::UDP => UdpSlice::from_slice(payload)
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            other => Err(format!("protocol {other:?}")),
        });
        match (well_formed, parsed) {
            (true, Err(e)) => Some(problem(
                "oracle self-check: judged well formed, etherparse disagrees",
                e,
            )),
            (false, Ok(())) => Some(problem(
                "oracle self-check: judged malformed, etherparse parses it",
                format!("{verdict:?}"),
            )),
            _ => None,
        }
    }
}
