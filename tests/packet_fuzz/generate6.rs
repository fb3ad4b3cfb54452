//! The IPv6 frames of the generator: TCP/UDP of a flow with 0-5 extension headers (hop-by-hop,
//! routing, destination options, fragment: atomic, or a first or later fragment), ICMPv6
//! errors about the flows made so far (DR, NAT toward the real, NAT toward the client),
//! neighbour discovery, echo, and IPv4-mapped addresses. Built by hand (etherparse has no
//! builder for extension headers), checksums included; etherparse checks them on the way out.

use std::net::{IpAddr, Ipv6Addr};

use rand::RngExt;

use crate::{
    ETHERTYPE_IPV6, ICMPV6, MTU, Mode, SERVICES, Side, TCP,
    bytes::{addr_bytes, fold, ones_sum, put16},
    client6,
    generate::{Case, Generator, Shape},
    host_mac, inside6,
    oracle::{DESTINATION_OPTIONS, FRAGMENT, HOP_BY_HOP, Oracle, ROUTING, Tuple},
    side_of,
};

/// The router that reports an error on the client side, and one on the server side.
const ROUTER_OUT: IpAddr = client6(0xfe);
const ROUTER_IN: IpAddr = inside6(0xfe);

/// A frame under construction: Ethernet (and a VLAN tag), the IPv6 header, extension headers,
/// then the upper-layer message; `finish` fills the lengths and the checksum.
struct Frame6 {
    bytes: Vec<u8>,
    l3: usize,
    /// Where the last next-header field is (the IPv6 header's, then each extension header's).
    next_at: usize,
}

impl Frame6 {
    fn new(dst_mac: [u8; 6], src_mac: [u8; 6], vlan: Option<u16>) -> Frame6 {
        let mut bytes = Vec::with_capacity(1600);
        bytes.extend_from_slice(&dst_mac);
        bytes.extend_from_slice(&src_mac);
        if let Some(id) = vlan {
            bytes.extend_from_slice(&[0x81, 0x00, (id >> 8) as u8, id as u8]);
        }
        bytes.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let l3 = bytes.len();
        Frame6 {
            bytes,
            l3,
            next_at: l3 + 6,
        }
    }

    fn ip(&mut self, tc_flow: u32, hops: u8, src: IpAddr, dst: IpAddr) {
        let word = 0x6000_0000 | (tc_flow & 0x0fff_ffff);
        self.bytes.extend_from_slice(&word.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0, 0, hops]);
        self.bytes.extend_from_slice(&addr_bytes(src));
        self.bytes.extend_from_slice(&addr_bytes(dst));
    }

    /// Appends an extension header of `kind` whose own bytes are `body` (without the first
    /// two); links it into the chain.
    fn extension(&mut self, kind: u8, units: u8, body: &[u8]) {
        self.bytes[self.next_at] = kind;
        self.next_at = self.bytes.len();
        self.bytes.extend_from_slice(&[0, units]);
        self.bytes.extend_from_slice(body);
    }

    fn fragment(&mut self, offset: u16, more: bool, id: u32) {
        self.bytes[self.next_at] = FRAGMENT;
        self.next_at = self.bytes.len();
        let v = (offset << 3) | u16::from(more);
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self.bytes.extend_from_slice(&id.to_be_bytes());
    }

    /// Appends the upper-layer message (`proto`), sets the payload length and, at
    /// `checksum_at` (from the message's start), its checksum with the IPv6 pseudo-header.
    fn finish(mut self, proto: u8, message: &[u8], checksum_at: Option<usize>) -> (Vec<u8>, usize) {
        self.bytes[self.next_at] = proto;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(message);
        let payload_len = self.bytes.len() - self.l3 - 40;
        put16(&mut self.bytes, self.l3 + 4, payload_len as u16);
        if let Some(at) = checksum_at {
            put16(&mut self.bytes, start + at, 0);
            let sum = checksum6(&self.bytes, self.l3, start, proto);
            put16(&mut self.bytes, start + at, sum);
        }
        (self.bytes, start)
    }
}

/// The checksum of the upper-layer message from `start` to the frame's end, with the pseudo-
/// header of the IPv6 header at `l3` (0 becomes 0xffff).
pub(crate) fn checksum6(f: &[u8], l3: usize, start: usize, proto: u8) -> u16 {
    let len = f.len() - start;
    let mut sum = ones_sum(0, &f[l3 + 8..l3 + 40]);
    sum += proto as u64 + len as u64;
    sum = ones_sum(sum, &f[start..]);
    match !fold(sum) {
        0 => 0xffff,
        s => s,
    }
}

impl Generator {
    fn vlan(&mut self) -> Option<u16> {
        self.chance(0.25).then(|| self.rng.random_range(0..4096))
    }

    /// Extension headers for a TCP/UDP frame: mostly none, up to 5 (one more than the data
    /// plane walks); a fragment header is atomic unless `fragment` says otherwise.
    fn extensions(&mut self, frame: &mut Frame6, fragment: Option<(u16, bool)>) -> String {
        let count = match self.below(100) {
            0..55 => 0,
            55..75 => 1,
            75..85 => 2,
            85..91 => 3,
            91..96 => 4,
            _ => 5,
        };
        let count = if fragment.is_some() {
            count.clamp(1, 4)
        } else {
            count
        };
        // Where the fragment header goes, if one must be there.
        let fragment_at = fragment.map(|_| self.below(count));
        let mut names = Vec::new();
        for i in 0..count {
            let kind = if fragment_at == Some(i) {
                FRAGMENT
            } else if i == 0 && self.chance(0.4) {
                HOP_BY_HOP
            } else {
                self.pick(&[ROUTING, DESTINATION_OPTIONS, FRAGMENT, DESTINATION_OPTIONS])
            };
            match kind {
                FRAGMENT => {
                    let (offset, more) = if fragment_at == Some(i) {
                        fragment.unwrap()
                    } else {
                        (0, false)
                    };
                    let id = self.rng.random();
                    frame.fragment(offset, more, id);
                    names.push(if offset == 0 && !more {
                        "fragment (atomic)".to_string()
                    } else {
                        format!("fragment (offset {offset}, M {more})")
                    });
                }
                ROUTING => {
                    let units = self.rng.random_range(0..=2u8);
                    let mut body = vec![0u8; 6 + units as usize * 8];
                    body[0] = self.pick(&[0u8, 2, 3, 4, 253]); // routing type
                    body[1] = 0; // segments left: nothing to route through
                    frame.extension(ROUTING, units, &body);
                    names.push(format!("routing ({} bytes)", 8 + units as usize * 8));
                }
                _ => {
                    let units = self.rng.random_range(0..=3u8);
                    // One PadN option filling the header.
                    let mut body = vec![0u8; 6 + units as usize * 8];
                    body[0] = 1;
                    body[1] = (body.len() - 2) as u8;
                    frame.extension(kind, units, &body);
                    names.push(format!(
                        "{} ({} bytes)",
                        if kind == HOP_BY_HOP {
                            "hop-by-hop"
                        } else {
                            "destination options"
                        },
                        8 + units as usize * 8
                    ));
                }
            }
        }
        if names.is_empty() {
            String::new()
        } else {
            format!(
                ", {} extension header(s): {}",
                names.len(),
                names.join(", ")
            )
        }
    }

    /// A valid IPv6 frame of `t` arriving on `side`, from the source host's MAC, with random
    /// optional parts: a VLAN tag, extension headers (a few frames a fragment), TCP flags and
    /// options, hop limit, traffic class and flow label, a payload of random length.
    pub(crate) fn build6(&mut self, side: Side, t: Tuple, what: &str) -> (Case, Option<Shape>) {
        let vlan = self.vlan();
        let mut frame = Frame6::new(self.own_mac(side), host_mac(t.src), vlan);
        let hops = if self.chance(0.85) {
            64
        } else {
            self.rng.random_range(2..=255)
        };
        let tc_flow = if self.chance(0.3) {
            self.rng.random()
        } else {
            0
        };
        frame.ip(tc_flow, hops, t.src, t.dst);
        let fragment = match self.below(100) {
            0..3 => Some((0, true)),
            3..6 => Some((self.rng.random_range(1..0x2000u16), self.chance(0.5))),
            _ => None,
        };
        let ext = self.extensions(&mut frame, fragment);
        let l3 = frame.l3;
        let l4 = frame.bytes.len();
        let mut tcp_options = Vec::new();
        if t.proto == TCP && self.chance(0.2) {
            let words = self.rng.random_range(1..=10);
            tcp_options = vec![1u8; words * 4];
            tcp_options[..4].copy_from_slice(&[2, 4, 0x05, 0xa0]); // MSS 1440
        }
        let l4_header = if t.proto == TCP {
            20 + tcp_options.len()
        } else {
            8
        };
        let max_payload = MTU - (l4 - l3) - l4_header;
        let payload_len = match self.below(10) {
            0..3 => 0,
            3..8 => self.rng.random_range(1..=64),
            _ => self.rng.random_range(65..=max_payload),
        };
        let mut message = vec![0u8; l4_header + payload_len];
        self.rng.fill(&mut message[l4_header..]);
        message[0..2].copy_from_slice(&t.sport.to_be_bytes());
        message[2..4].copy_from_slice(&t.dport.to_be_bytes());
        let mut flags = String::new();
        let checksum_at = if t.proto == TCP {
            let seq: u32 = self.rng.random();
            message[4..8].copy_from_slice(&seq.to_be_bytes());
            let mut bits = 0u8;
            for (p, bit, name) in [
                (0.1, 0x01, "F"),
                (0.25, 0x02, "S"),
                (0.05, 0x04, "R"),
                (0.3, 0x08, "P"),
                (0.75, 0x10, "A"),
            ] {
                if self.chance(p) {
                    bits |= bit;
                    flags.push_str(name);
                }
            }
            if bits & 0x10 != 0 {
                let ack: u32 = self.rng.random();
                message[8..12].copy_from_slice(&ack.to_be_bytes());
            }
            message[12] = ((l4_header / 4) as u8) << 4;
            message[13] = bits;
            message[14..16].copy_from_slice(&self.rng.random::<u16>().to_be_bytes());
            message[20..20 + tcp_options.len()].copy_from_slice(&tcp_options);
            16
        } else {
            put16(&mut message, 4, (8 + payload_len) as u16);
            6
        };
        let (bytes, _) = frame.finish(t.proto, &message, Some(checksum_at));
        let made = format!(
            "IPv6 {what}: {t} on {}{}{ext}, hop limit {hops}, {payload_len} bytes payload{}",
            side.name(),
            vlan.map(|v| format!(", VLAN {v}")).unwrap_or_default(),
            if flags.is_empty() {
                String::new()
            } else {
                format!(", flags {flags}")
            },
        );
        (
            Case {
                side,
                frame: bytes,
                made,
            },
            Some(Shape {
                v6: true,
                l3,
                l4,
                l4_header,
                proto: t.proto,
            }),
        )
    }

    /// An ICMPv6 error (unreachable, packet too big, time exceeded) about a flow made so far:
    /// a DR flow's reply (to its VIP, from a router on the client side), a NAT flow's reply
    /// (likewise), or what the balancer sent to a NAT real (from the real itself or a router
    /// on its side, to the client). Flows the data plane never opened make errors about no
    /// flow of ours.
    pub(crate) fn icmp6_error(&mut self, oracle: &Oracle) -> (Case, Option<Shape>) {
        let roll = self.below(3);
        let dr = roll == 0;
        let Some(flow) = self.pooled6(dr) else {
            return self.dr(true);
        };
        // The flow's packet the error quotes, as it was on the wire, and who reports it.
        let (side, quote, outer_src, what) = if roll < 2 {
            // The reply sent from the VIP to the client.
            let quote = Tuple {
                src: flow.dst,
                sport: flow.dport,
                dst: flow.src,
                dport: flow.sport,
                proto: flow.proto,
            };
            let from = if self.chance(0.8) {
                ROUTER_OUT
            } else {
                self.public_addr(true)
            };
            (Side::Out, quote, from, "about a reply from the VIP")
        } else {
            // What the balancer sent to the real: the flow's packet, translated.
            let s = SERVICES
                .iter()
                .find(|s| {
                    s.mode == Mode::Nat
                        && s.vip == flow.dst
                        && s.proto == flow.proto
                        && s.ports.contains(&flow.dport)
                })
                .unwrap();
            let real = oracle
                .nat_real
                .get(&flow)
                .copied()
                .unwrap_or_else(|| self.pick(s.reals));
            let quote = Tuple {
                src: flow.src,
                sport: flow.sport,
                dst: real,
                dport: s.real_port.unwrap_or(flow.dport),
                proto: flow.proto,
            };
            let from = if self.chance(0.6) { real } else { ROUTER_IN };
            let side = side_of(real).unwrap();
            let from = if side == Side::Out && from == ROUTER_IN {
                ROUTER_OUT
            } else {
                from
            };
            (side, quote, from, "about a packet to a NAT real")
        };
        let (kind, code, word) = match self.below(3) {
            0 => (1u8, self.pick(&[0u8, 1, 3, 4]), 0u32),
            1 => (2, 0, self.rng.random_range(1280..1500)),
            _ => (3, 0, 0),
        };
        // The quoted packet: its header, TCP/UDP header, some payload (as much as fits).
        let payload_len = self.pick(&[0usize, 0, 8, 100, 1000]);
        let l4_len = if quote.proto == TCP { 20 } else { 8 } + payload_len;
        let mut quoted = Vec::new();
        quoted.extend_from_slice(&[0x60, 0, 0, 0]);
        quoted.extend_from_slice(&(l4_len as u16).to_be_bytes());
        quoted.extend_from_slice(&[quote.proto, 63]);
        quoted.extend_from_slice(&addr_bytes(quote.src));
        quoted.extend_from_slice(&addr_bytes(quote.dst));
        let mut l4 = vec![0u8; l4_len];
        self.rng.fill(&mut l4[4..]);
        l4[0..2].copy_from_slice(&quote.sport.to_be_bytes());
        l4[2..4].copy_from_slice(&quote.dport.to_be_bytes());
        if quote.proto == TCP {
            l4[12] = 0x50;
        } else {
            put16(&mut l4, 4, l4_len as u16);
        }
        quoted.extend_from_slice(&l4);
        // Quote only the first 8 bytes of TCP/UDP at times, or cut it short to fit the MTU.
        let keep = if self.chance(0.2) { 48 } else { quoted.len() };
        let max_quote = MTU - 40 - 8;
        quoted.truncate(keep.min(max_quote));
        let mut message = vec![kind, code, 0, 0];
        message.extend_from_slice(&word.to_be_bytes());
        message.extend_from_slice(&quoted);
        let vlan = self.vlan();
        let hops = if self.chance(0.9) {
            64
        } else {
            self.rng.random_range(2..=255)
        };
        let mut frame = Frame6::new(self.own_mac(side), host_mac(outer_src), vlan);
        frame.ip(0, hops, outer_src, quote.src);
        let l3 = frame.l3;
        let (bytes, icmp) = frame.finish(ICMPV6, &message, Some(2));
        let made = format!(
            "ICMPv6 error type {kind} code {code} {what} from {outer_src} on {}{}, quoting {quote} \
             ({} bytes), hop limit {hops}",
            side.name(),
            vlan.map(|v| format!(", VLAN {v}")).unwrap_or_default(),
            quoted.len()
        );
        (
            Case {
                side,
                frame: bytes,
                made,
            },
            Some(Shape {
                v6: true,
                l3,
                l4: icmp,
                l4_header: 8,
                proto: ICMPV6,
            }),
        )
    }

    /// Neighbour discovery: a solicitation for a VIP (to its solicited-node multicast group,
    /// or unicast), an advertisement, a router solicitation; all the kernel's.
    pub(crate) fn neighbour_discovery(&mut self) -> Case {
        let vip = self.any_service(true).vip;
        let IpAddr::V6(target) = vip else {
            unreachable!()
        };
        let client = client6(0x40);
        let o = target.octets();
        let solicited = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | o[13] as u16,
            u16::from_be_bytes([o[14], o[15]]),
        );
        let (kind, dst, dst_mac, name) = match self.below(4) {
            0 => (
                135u8,
                IpAddr::V6(solicited),
                [0x33, 0x33, 0xff, o[13], o[14], o[15]],
                "neighbour solicitation (multicast)",
            ),
            1 => (135, vip, self.out_mac, "neighbour solicitation (unicast)"),
            2 => (136, client, self.out_mac, "neighbour advertisement"),
            _ => (
                133,
                IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2)),
                [0x33, 0x33, 0, 0, 0, 2],
                "router solicitation",
            ),
        };
        let mut message = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        if kind != 133 {
            message.extend_from_slice(&o);
        }
        // Source link-layer address option.
        message.extend_from_slice(&[1, 1]);
        message.extend_from_slice(&host_mac(client));
        let mut frame = Frame6::new(dst_mac, host_mac(client), None);
        frame.ip(0, 255, client, dst);
        let (frame, _) = frame.finish(ICMPV6, &message, Some(2));
        Case {
            side: Side::Out,
            frame,
            made: format!("ICMPv6 {name} for {vip}"),
        }
    }

    /// An echo request to a VIP: the kernel's to answer.
    pub(crate) fn echo6(&mut self) -> (Case, Option<Shape>) {
        let vip = self.any_service(true).vip;
        let client = self.public_addr(true);
        let vlan = self.vlan();
        let mut frame = Frame6::new(self.out_mac, host_mac(client), vlan);
        frame.ip(0, 64, client, vip);
        let l3 = frame.l3;
        let mut message = vec![128, 0, 0, 0, 0, 7, 0, 1];
        message.extend_from_slice(b"ping6");
        let (frame, icmp) = frame.finish(ICMPV6, &message, Some(2));
        (
            Case {
                side: Side::Out,
                frame,
                made: format!("ICMPv6 echo request to {vip}"),
            },
            Some(Shape {
                v6: true,
                l3,
                l4: icmp,
                l4_header: 8,
                proto: ICMPV6,
            }),
        )
    }

    /// A TCP/UDP frame of a service's port with an IPv4-mapped source or destination (an
    /// IPv4 VIP's mapped form among them): martian.
    pub(crate) fn mapped(&mut self) -> (Case, Option<Shape>) {
        let v6 = self.chance(0.5);
        let s = self.any_service(v6);
        let port = self.pick(s.ports);
        let map = |a: IpAddr| match a {
            IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
            a => a,
        };
        let v4_client = self.public_addr(false);
        let (src, dst) = match (s.vip, self.below(3)) {
            (IpAddr::V4(_), _) => (map(v4_client), map(s.vip)),
            (_, 0) => (map(v4_client), s.vip),
            (_, 1) => (self.public_addr(true), map(v4_client)),
            _ => (map(v4_client), map(v4_client)),
        };
        let t = Tuple {
            src,
            sport: self.rng.random_range(1024..=65535),
            dst,
            dport: port,
            proto: s.proto,
        };
        self.build6(Side::Out, t, "IPv4-mapped address")
    }
}
