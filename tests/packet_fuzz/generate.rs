//! The generator: a seeded stream of valid frames — DR, NAT inbound, replies of the NAT flows
//! the oracle saw opened, and traffic that is not for a service (another address, port or
//! protocol, replies of no flow, a NAT real's own traffic, ICMP, ARP, IPv6) — each with where it
//! arrives and how it was made; about a third are IPv6 (generate6.rs builds those, and the
//! ICMPv6 errors, neighbour discovery, echo and mapped addresses among the rest). A part of
//! them is then broken on purpose (mutate.rs, mutate6.rs).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header,
    Ipv4Options, PacketBuilder, TcpHeader, VlanId,
};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;

use crate::{
    MTU, Mode, SERVICES, Service, Side, TCP, UDP,
    bytes::put16,
    client_net, client6, host_mac, nat_clients, nat_clients6,
    oracle::{Oracle, Tuple, martian},
    side_of,
};

/// A frame to run, where it arrives, and how it was made (for the failure report).
pub(crate) struct Case {
    pub(crate) side: Side,
    pub(crate) frame: Vec<u8>,
    pub(crate) made: String,
}

/// Where the parts of a generated IP frame are (before mutation).
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) v6: bool,
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    pub(crate) l4_header: usize,
    pub(crate) proto: u8,
}

pub(crate) struct Generator {
    pub(crate) rng: Pcg64,
    pub(crate) out_mac: [u8; 6],
    pub(crate) in_mac: [u8; 6],
    /// Flows made so far, by forwarding (DR, NAT) and family (IPv4, IPv6).
    pools: [[Vec<Tuple>; 2]; 2],
}

const POOL: usize = 3000;
/// The share of frames built as IPv6 (the rest IPv4).
const V6_SHARE: f64 = 0.35;

impl Generator {
    pub(crate) fn new(seed: u64, out_mac: [u8; 6], in_mac: [u8; 6]) -> Self {
        Generator {
            rng: Pcg64::seed_from_u64(seed),
            out_mac,
            in_mac,
            pools: Default::default(),
        }
    }

    pub(crate) fn own_mac(&self, side: Side) -> [u8; 6] {
        match side {
            Side::Out => self.out_mac,
            Side::In => self.in_mac,
        }
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub(crate) fn any_service(&mut self, v6: bool) -> &'static Service {
        let candidates: Vec<&'static Service> =
            SERVICES.iter().filter(|s| s.vip.is_ipv6() == v6).collect();
        self.pick(&candidates)
    }

    /// An address that is not martian and not on the balancer's subnets (IPv6: in 2003::/16,
    /// to which the router has no route).
    pub(crate) fn public_addr(&mut self, v6: bool) -> IpAddr {
        if v6 {
            let mut o: [u8; 16] = self.rng.random();
            o[0] = 0x20;
            o[1] = 0x03;
            return IpAddr::V6(Ipv6Addr::from(o));
        }
        loop {
            let a = IpAddr::V4(Ipv4Addr::from(self.rng.random::<u32>()));
            if !martian(a) && side_of(a).is_none() {
                return a;
            }
        }
    }

    /// A host on the client network (out0's subnet) of the family.
    fn client_host(&mut self, v6: bool) -> IpAddr {
        if v6 {
            client6(self.rng.random_range(1..=0xffff))
        } else {
            client_net(self.rng.random_range(1..=254))
        }
    }

    /// A flow from the pool of its forwarding and family (70%) or a new one made by `fresh`,
    /// remembered.
    fn flow(&mut self, dr: bool, v6: bool, fresh: impl FnOnce(&mut Self) -> Tuple) -> Tuple {
        let (d, f) = (usize::from(dr), usize::from(v6));
        let len = self.pools[d][f].len();
        if len > 0 && self.chance(0.7) {
            let i = self.below(len);
            return self.pools[d][f][i];
        }
        let t = fresh(self);
        let at = if len < POOL {
            None
        } else {
            Some(self.below(POOL))
        };
        let pool = &mut self.pools[d][f];
        match at {
            None => pool.push(t),
            Some(i) => pool[i] = t,
        }
        t
    }

    /// A flow made so far (DR or NAT, IPv6), if any.
    pub(crate) fn pooled6(&mut self, dr: bool) -> Option<Tuple> {
        let pool = &self.pools[usize::from(dr)][1];
        if pool.is_empty() {
            return None;
        }
        let i = self.below(pool.len());
        Some(self.pools[usize::from(dr)][1][i])
    }

    fn service_of(&mut self, mode: Mode, v6: bool) -> &'static Service {
        let candidates: Vec<&'static Service> = SERVICES
            .iter()
            .filter(|s| s.mode == mode && s.vip.is_ipv6() == v6)
            .collect();
        self.pick(&candidates)
    }

    pub(crate) fn next(&mut self, oracle: &Oracle) -> Case {
        let v6 = self.chance(V6_SHARE);
        let roll = self.below(100);
        let (mut case, shape) = match roll {
            0..30 => self.dr(v6),
            30..54 => self.nat_inbound(v6),
            54..74 if !oracle.opened.is_empty() => self.nat_reply(oracle),
            54..74 => self.nat_inbound(v6),
            74..80 if v6 => self.icmp6_error(oracle),
            _ => self.other(oracle, v6),
        };
        if self.chance(0.42) {
            let count = if self.chance(0.2) { 2 } else { 1 };
            let mut names = Vec::new();
            for _ in 0..count {
                names.push(self.mutate(&mut case.frame, shape));
            }
            let _ = write!(case.made, "; mutated: {}", names.join(", "));
        }
        case
    }

    pub(crate) fn dr(&mut self, v6: bool) -> (Case, Option<Shape>) {
        let t = self.flow(true, v6, |g| {
            let s = g.service_of(Mode::Dr, v6);
            let port = g.pick(s.ports);
            Tuple {
                src: g.public_addr(v6),
                sport: g.rng.random_range(1024..=65535),
                dst: s.vip,
                dport: port,
                proto: s.proto,
            }
        });
        self.build(Side::Out, t, "DR")
    }

    fn nat_inbound(&mut self, v6: bool) -> (Case, Option<Shape>) {
        let t = self.flow(false, v6, |g| {
            let s = g.service_of(Mode::Nat, v6);
            let port = g.pick(s.ports);
            // Mostly clients the router can answer; a few from afar, whose replies have no route.
            let src = if g.chance(0.9) {
                g.nat_client(v6)
            } else {
                g.public_addr(v6)
            };
            Tuple {
                src,
                sport: g.rng.random_range(20000..40000),
                dst: s.vip,
                dport: port,
                proto: s.proto,
            }
        });
        self.build(Side::Out, t, "NAT inbound")
    }

    fn nat_reply(&mut self, oracle: &Oracle) -> (Case, Option<Shape>) {
        let t = self.pick(&oracle.opened);
        self.build(side_of(t.src).unwrap(), t, "NAT reply")
    }

    fn nat_client(&mut self, v6: bool) -> IpAddr {
        let clients: Vec<_> = if v6 {
            nat_clients6().collect()
        } else {
            nat_clients().collect()
        };
        self.pick(&clients)
    }

    /// Traffic that is not for a service: the kernel's.
    fn other(&mut self, oracle: &Oracle, v6: bool) -> (Case, Option<Shape>) {
        let proto = if self.chance(0.5) { TCP } else { UDP };
        let sport = self.rng.random_range(1..=65535);
        let roll = self.below(100);
        let (side, t, what) = match roll {
            0..20 => {
                let dst = if self.chance(0.5) {
                    self.public_addr(v6)
                } else {
                    self.client_host(v6)
                };
                let side = if self.chance(0.7) {
                    Side::Out
                } else {
                    Side::In
                };
                (
                    side,
                    (self.public_addr(v6), sport, dst, 80, proto),
                    "to a non-VIP address",
                )
            }
            20..35 => {
                let s = self.any_service(v6);
                let port = loop {
                    let p = self.rng.random_range(1..=65535);
                    if oracle.service(s.vip, p, proto).is_none() {
                        break p;
                    }
                };
                let src = self.public_addr(v6);
                (
                    Side::Out,
                    (src, sport, s.vip, port, proto),
                    "to a VIP, another port",
                )
            }
            35..47 => {
                let s = self.any_service(v6);
                let port = self.pick(s.ports);
                let other = if s.proto == TCP { UDP } else { TCP };
                let src = self.public_addr(v6);
                let t = Tuple {
                    src,
                    sport,
                    dst: s.vip,
                    dport: port,
                    proto: other,
                };
                return self.build(Side::Out, t, "to a VIP's port, the other protocol");
            }
            47..62 => {
                // Looks like a reply, but of no flow that was opened.
                let s = self.service_of(Mode::Nat, v6);
                let real = self.pick(s.reals);
                let client = self.nat_client(v6);
                let t = Tuple {
                    src: real,
                    sport: s.real_port.unwrap_or(s.ports[0]),
                    dst: client,
                    dport: self.rng.random_range(40000..60000),
                    proto: s.proto,
                };
                return self.build(
                    side_of(real).unwrap(),
                    t,
                    "reply-like from a NAT real, no open flow",
                );
            }
            62..72 if !oracle.opened.is_empty() => {
                // An open flow's reply, but from another real of its service.
                let open = self.pick(&oracle.opened);
                let s = SERVICES
                    .iter()
                    .find(|s| s.mode == Mode::Nat && s.reals.contains(&open.src))
                    .unwrap();
                let others: Vec<_> = s.reals.iter().filter(|r| **r != open.src).collect();
                let real = *self.pick(&others);
                let t = Tuple { src: real, ..open };
                return self.build(
                    side_of(real).unwrap(),
                    t,
                    "an open flow's reply from another real",
                );
            }
            62..80 => {
                // A NAT real's own traffic, routed by the balancer.
                let s = self.service_of(Mode::Nat, v6);
                let real = self.pick(s.reals);
                let dst = self.public_addr(v6);
                let t = Tuple {
                    src: real,
                    sport: self.rng.random_range(1024..=65535),
                    dst,
                    dport: 443,
                    proto,
                };
                return self.build(side_of(real).unwrap(), t, "a NAT real's own traffic");
            }
            80..87 if v6 => return self.icmp6_error(oracle),
            87..93 if v6 => return (self.neighbour_discovery(), None),
            93..96 if v6 => return self.echo6(),
            _ if v6 => return self.mapped(),
            80..87 => return (self.icmp(), None),
            87..93 => return (self.arp(), None),
            _ => return (self.ipv6(), None),
        };
        let (src, sport, dst, dport, proto) = t;
        let t = Tuple {
            src,
            sport,
            dst,
            dport,
            proto,
        };
        self.build(side, t, what)
    }

    fn icmp(&mut self) -> Case {
        let IpAddr::V4(vip) = self.any_service(false).vip else {
            unreachable!()
        };
        let IpAddr::V4(client) = client_net(40) else {
            unreachable!()
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(host_mac(client_net(40)), self.out_mac)
            .ipv4(client.octets(), vip.octets(), 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut frame, b"ping")
            .unwrap();
        Case {
            side: Side::Out,
            frame,
            made: format!("ICMP echo to {vip}"),
        }
    }

    fn arp(&mut self) -> Case {
        let IpAddr::V4(vip) = self.any_service(false).vip else {
            unreachable!()
        };
        let IpAddr::V4(client) = client_net(40) else {
            unreachable!()
        };
        let mut frame = Vec::new();
        let sender = host_mac(client_net(40));
        PacketBuilder::ethernet2(sender, [0xff; 6])
            .arp(
                ArpPacket::new(
                    ArpHardwareId::ETHERNET,
                    EtherType::IPV4,
                    ArpOperation::REQUEST,
                    &sender,
                    &client.octets(),
                    &[0; 6],
                    &vip.octets(),
                )
                .unwrap(),
            )
            .write(&mut frame)
            .unwrap();
        Case {
            side: Side::Out,
            frame,
            made: format!("ARP who-has {vip}"),
        }
    }

    fn ipv6(&mut self) -> Case {
        let mut frame = Vec::new();
        let mut dst = [0u8; 16];
        dst[0] = 0x20;
        dst[1] = 0x01;
        dst[15] = 2;
        let mut src = dst;
        src[15] = 1;
        PacketBuilder::ethernet2(host_mac(client_net(40)), self.out_mac)
            .ipv6(src, dst, 64)
            .udp(5000, 53)
            .write(&mut frame, b"query")
            .unwrap();
        Case {
            side: Side::Out,
            frame,
            made: "IPv6 UDP".into(),
        }
    }

    /// A valid frame of `t` arriving on `side`, from the source host's MAC, with random optional
    /// parts: a VLAN tag, IP options, TCP flags and options, TTL, DF, a payload of random length,
    /// a UDP datagram without checksum.
    fn build(&mut self, side: Side, t: Tuple, what: &str) -> (Case, Option<Shape>) {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (t.src, t.dst) else {
            return self.build6(side, t, what);
        };
        let vlan = self
            .chance(0.25)
            .then(|| self.rng.random_range(0..=VlanId::MAX_U16));
        let ip_options = if self.chance(0.25) {
            let words = self.rng.random_range(1..=10);
            let mut o = vec![1u8; words * 4]; // NOPs
            if self.chance(0.5) {
                o[..4].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]); // router alert
            }
            if self.chance(0.3) {
                let last = o.len() - 1;
                o[last] = 0; // end of list
            }
            o
        } else {
            Vec::new()
        };
        let ttl = if self.chance(0.85) {
            64
        } else {
            self.rng.random_range(2..=255)
        };
        let mut ip =
            Ipv4Header::new(0, ttl, IpNumber(t.proto), src.octets(), dst.octets()).unwrap();
        ip.options = Ipv4Options::try_from(&ip_options[..]).unwrap();
        ip.dont_fragment = self.chance(0.8);
        ip.identification = self.rng.random();
        let mut tcp_options = Vec::new();
        if t.proto == TCP && self.chance(0.2) {
            let words = self.rng.random_range(1..=10);
            tcp_options = vec![1u8; words * 4];
            tcp_options[..4].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        }
        let max_payload = MTU - 20 - ip_options.len() - 20 - tcp_options.len();
        let payload_len = match self.below(10) {
            0..3 => 0,
            3..8 => self.rng.random_range(1..=64),
            _ => self.rng.random_range(65..=max_payload),
        };
        let mut payload = vec![0u8; payload_len];
        self.rng.fill(&mut payload[..]);

        let eth = PacketBuilder::ethernet2(host_mac(t.src), self.own_mac(side));
        let step = match vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).unwrap())
                .ip(IpHeaders::Ipv4(ip, Default::default())),
            None => eth.ip(IpHeaders::Ipv4(ip, Default::default())),
        };
        let mut frame = Vec::new();
        let mut flags = String::new();
        if t.proto == TCP {
            let mut tcp = TcpHeader::new(t.sport, t.dport, self.rng.random(), self.rng.random());
            tcp.syn = self.chance(0.25);
            tcp.ack = self.chance(0.75);
            tcp.fin = self.chance(0.1);
            tcp.rst = self.chance(0.05);
            tcp.psh = self.chance(0.3);
            if tcp.ack {
                tcp.acknowledgment_number = self.rng.random();
            }
            for (on, name) in [
                (tcp.syn, "S"),
                (tcp.ack, "A"),
                (tcp.fin, "F"),
                (tcp.rst, "R"),
                (tcp.psh, "P"),
            ] {
                if on {
                    flags.push_str(name);
                }
            }
            tcp.set_options_raw(&tcp_options).unwrap();
            step.tcp_header(tcp).write(&mut frame, &payload).unwrap();
        } else {
            step.udp(t.sport, t.dport)
                .write(&mut frame, &payload)
                .unwrap();
        }
        let l3 = if vlan.is_some() { 18 } else { 14 };
        let l4 = l3 + 20 + ip_options.len();
        let l4_header = if t.proto == TCP {
            20 + tcp_options.len()
        } else {
            8
        };
        let mut made = format!(
            "{what}: {t} on {}{}{}{}, ttl {ttl}, {payload_len} bytes payload",
            side.name(),
            vlan.map(|v| format!(", VLAN {v}")).unwrap_or_default(),
            if ip_options.is_empty() {
                String::new()
            } else {
                format!(", {} bytes IP options", ip_options.len())
            },
            if flags.is_empty() {
                String::new()
            } else {
                format!(", flags {flags}")
            },
        );
        if t.proto == UDP && self.chance(0.08) {
            put16(&mut frame, l4 + 6, 0);
            made.push_str(", no UDP checksum");
        }
        (
            Case { side, frame, made },
            Some(Shape {
                v6: false,
                l3,
                l4,
                l4_header,
                proto: t.proto,
            }),
        )
    }
}
