//! The oracle, written from the README's promises rather than from the data plane's code:
//! the well-formedness rules a frame meets in order (`Oracle::judge`), where the parts of a
//! well-formed frame are (`Layout`), its flow (`Tuple`), the route a NAT reply takes, and the
//! expected outcome of every frame (`Verdict`); with a self-check of the rules against
//! etherparse. Comparing what the program did with the verdict is in checks.rs.

use std::{collections::HashMap, net::Ipv4Addr};

use etherparse::{IpNumber, Ipv4Slice, TcpSlice, UdpSlice};

use crate::{
    ETHERTYPE_IPV4, ETHERTYPE_VLAN, MTU, Mode, SERVICES, Side, TCP, UDP,
    bytes::{addr_at, be16, ip_checksum_ok},
    host_mac, neighbours,
    report::{Problem, problem},
    side_of,
};

/// A source address no forwarded packet may have: 0/8, loopback, multicast and above.
pub(crate) fn martian(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first == 0 || first == 127 || first >= 224
}

/// Where the parts of a well-formed TCP/UDP frame are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) l3: usize,
    pub(crate) ihl: usize,
    pub(crate) l4: usize,
    /// IPv4 total length.
    pub(crate) tot: usize,
    pub(crate) proto: u8,
    /// TCP: data offset * 4; UDP: 8.
    pub(crate) l4_header: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Tuple {
    pub(crate) src: Ipv4Addr,
    pub(crate) sport: u16,
    pub(crate) dst: Ipv4Addr,
    pub(crate) dport: u16,
    pub(crate) proto: u8,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            if self.proto == TCP { "tcp" } else { "udp" },
            self.src,
            self.sport,
            self.dst,
            self.dport
        )
    }
}

/// A NAT reply's translation: the VIP:port its source becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    pub(crate) vip: Ipv4Addr,
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
}

impl Verdict {
    pub(crate) fn label(&self) -> String {
        match self {
            Verdict::Pass { why, .. } => format!("not forwardable: {why}"),
            Verdict::Dr { .. } => "DR forward".into(),
            Verdict::NatIn { .. } => "NAT inbound forward".into(),
            Verdict::NatReply { route, .. } => match route {
                Route::Resolved { .. } => "NAT reply forward".into(),
                Route::Unresolved => "NAT reply, neighbour unresolved (translate, pass)".into(),
                Route::Local => "NAT reply to a local/broadcast address".into(),
                Route::None => "NAT reply, no route (pass untouched)".into(),
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
    pub(crate) nat_real: HashMap<Tuple, Ipv4Addr>,
    /// Replies of the NAT flows opened so far (reply 5-tuple: real:port -> client:port).
    pub(crate) replies: HashMap<Tuple, Reply>,
    /// The same, in opening order, for the generator.
    pub(crate) opened: Vec<Tuple>,
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
        }
    }

    pub(crate) fn own_mac(&self, side: Side) -> [u8; 6] {
        match side {
            Side::Out => self.out_mac,
            Side::In => self.in_mac,
        }
    }

    pub(crate) fn service(&self, dst: Ipv4Addr, port: u16, proto: u8) -> Option<usize> {
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

    fn is_vip(&self, addr: Ipv4Addr) -> bool {
        SERVICES.iter().any(|s| s.vip == addr)
    }

    pub(crate) fn route(&self, dst: Ipv4Addr, tot: usize) -> Route {
        let Some(side) = side_of(dst) else {
            return Route::None;
        };
        if tot > MTU {
            return Route::None;
        }
        let host = dst.octets()[3];
        let own = match side {
            Side::Out => 2,
            Side::In => 1,
        };
        if host == 0 || host == 255 || host == own {
            return Route::Local;
        }
        if neighbours().iter().any(|(a, _, _)| *a == dst) {
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
        let pass = |why| Verdict::Pass {
            why,
            drop_ok: false,
        };
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
        let l3 = match be16(f, 12) {
            ETHERTYPE_IPV4 => 14,
            ETHERTYPE_VLAN if f.len() < 18 => return pass("truncated in the VLAN tag"),
            ETHERTYPE_VLAN if be16(f, 16) == ETHERTYPE_IPV4 => 18,
            ETHERTYPE_VLAN => return pass("not IPv4 after one VLAN tag"),
            _ => return pass("not IPv4 (EtherType)"),
        };
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
        let l4 = l3 + ihl;
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
        let src = addr_at(f, l3 + 12);
        if martian(src) {
            return pass("martian source");
        }
        let l = Layout {
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
        let ttl = f[l3 + 8];
        if let Some(svc) = self.service(dst, t.dport, proto) {
            match SERVICES[svc].mode {
                Mode::Dr => Verdict::Dr { svc, t },
                Mode::Nat if ttl <= 1 => pass("NAT: TTL would expire"),
                // Every real has a route and a resolved neighbour.
                Mode::Nat if tot > MTU => pass("NAT: over the egress MTU"),
                Mode::Nat => Verdict::NatIn { svc, t, l },
            }
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
            match self.route(dst, tot) {
                route @ (Route::Resolved { .. } | Route::Unresolved)
                    if !syn_only && !elsewhere && from_real && ttl > 1 =>
                {
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
            ),
            _ => false,
        };
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
        let l3 = if be16(f, 12) == ETHERTYPE_VLAN {
            18
        } else {
            14
        };
        let parsed = Ipv4Slice::from_slice(&f[l3..])
            .map_err(|e| format!("{e:?}"))
            .and_then(|ip| {
                let payload = ip.payload().payload;
                match ip.header().protocol() {
                    IpNumber::TCP => TcpSlice::from_slice(payload)
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                    IpNumber::UDP => UdpSlice::from_slice(payload)
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                    other => Err(format!("protocol {other:?}")),
                }
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
