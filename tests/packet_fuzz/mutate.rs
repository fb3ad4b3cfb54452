//! Mutations: how the generator breaks a valid frame on purpose (or, for a few, changes it
//! keeping it valid) — truncations, flipped bits, another MAC or EtherType, VLAN tags, IP
//! version, IHL, total length, fragments, protocol, TCP data offset, UDP length, martian
//! sources, TTL, checksums, ports — and names what it did.

use std::net::Ipv4Addr;

use rand::RngExt;

use crate::{
    ETHERTYPE_VLAN, TCP, UDP,
    bytes::{be16, fix_ip_checksum, put16},
    generate::{Generator, Shape},
    report::mac_text,
};

impl Generator {
    /// Breaks (or, for a few, keeps valid while changing) a frame; returns what it did.
    pub(crate) fn mutate(&mut self, f: &mut Vec<u8>, shape: Option<Shape>) -> String {
        let Some(s) = shape else {
            // ARP, ICMP, IPv6: only what does not need the IP layout.
            return match self.below(4) {
                0 => self.truncate(f, None),
                1 => {
                    let len = f.len();
                    self.flip_bits(f, len)
                }
                2 => self.other_mac(f),
                _ => self.ethertype(f),
            };
        };
        if f.len() < s.l4 + s.l4_header {
            // Cut short by an earlier mutation: the layout no longer holds.
            let len = f.len();
            return self.flip_bits(f, len);
        }
        if s.v6 {
            return self.mutate6(f, s);
        }
        // Most mutations fix the IP checksum afterwards, so that the frame is judged on what
        // was changed rather than on the checksum.
        let fix = self.chance(0.85);
        let name = match self.below(27) {
            0..3 => return self.truncate(f, Some(s)),
            3 | 4 => {
                let len = f.len();
                return self.flip_bits(f, len);
            }
            5 | 6 => {
                let headers = (s.l4 + s.l4_header).min(f.len());
                let n = self.flip_bits(f, headers);
                if self.chance(0.5) {
                    fix_ip_checksum(f, s.l3);
                    return format!("{n}, IP checksum fixed");
                }
                return n;
            }
            7 => {
                let at = self.below((s.l4 + s.l4_header).min(f.len()));
                let v = self.rng.random();
                f[at] = v;
                format!("byte {at} set to {v:#04x}")
            }
            8 | 9 => return self.other_mac(f),
            10 => return self.ethertype(f),
            11 => {
                // 802.1Q tags inserted after the MACs: one on an untagged frame keeps it valid,
                // anything that ends with two or more (QinQ) is not "one tag, then IPv4".
                let tagged = be16(f, 12) == ETHERTYPE_VLAN;
                let count = if tagged || self.chance(0.5) { 1 } else { 2 };
                for _ in 0..count {
                    let id = self.rng.random_range(0..4096u16);
                    f.splice(12..12, [0x81, 0x00, (id >> 8) as u8, id as u8]);
                }
                let tags = count + usize::from(tagged);
                return format!("{count} 802.1Q tag(s) inserted, {tags} now");
            }
            12 => {
                let v = loop {
                    let v = self.rng.random_range(0..16u8);
                    if v != 4 {
                        break v;
                    }
                };
                f[s.l3] = (v << 4) | (f[s.l3] & 0x0f);
                format!("IP version {v}")
            }
            13 => {
                let ihl = self.rng.random_range(0..5u8);
                f[s.l3] = 0x40 | ihl;
                format!("IHL {ihl}")
            }
            14 => {
                let actual = f[s.l3] & 0x0f;
                let ihl = if actual < 15 {
                    self.rng.random_range(actual + 1..=15)
                } else {
                    self.rng.random_range(0..5)
                };
                f[s.l3] = 0x40 | ihl;
                format!("IHL {ihl} (actual {actual})")
            }
            15 | 16 => self.total_length(f, s),
            17 => {
                let extra = self.rng.random_range(1..=46);
                let mut pad = vec![0u8; extra];
                self.rng.fill(&mut pad[..]);
                f.extend_from_slice(&pad);
                return format!("{extra} bytes Ethernet padding");
            }
            18 => {
                let more = self.chance(0.5);
                let offset = if more && self.chance(0.4) {
                    0
                } else {
                    self.rng.random_range(1..0x2000u16)
                };
                let flags = be16(f, s.l3 + 6) & 0x4000; // keep DF as it was
                let v = flags | if more { 0x2000 } else { 0 } | offset;
                put16(f, s.l3 + 6, v);
                format!("fragment (MF {more}, offset {offset})")
            }
            19 => {
                let random = self.rng.random();
                let p = self.pick(&[1u8, 2, 6, 17, 47, 50, 132, random]);
                f[s.l3 + 9] = p;
                format!("protocol {p}")
            }
            20 if s.proto == TCP => {
                let doff = if self.chance(0.5) {
                    self.rng.random_range(0..5u8)
                } else {
                    let tot = be16(f, s.l3 + 2) as usize;
                    let room = (tot.saturating_sub(s.l4 - s.l3) / 4).min(15) as u8;
                    self.rng.random_range(room.saturating_add(1).min(15)..=15)
                };
                f[s.l4 + 12] = (doff << 4) | (f[s.l4 + 12] & 0x0f);
                format!("TCP data offset {doff}")
            }
            20 => {
                let ip_payload = (be16(f, s.l3 + 2) as usize).saturating_sub(s.l4 - s.l3);
                let len = match self.below(3) {
                    0 => self.rng.random_range(0..8u16),
                    1 => (ip_payload + self.rng.random_range(1..=100)).min(0xffff) as u16,
                    // Shorter than the IP payload but whole: valid.
                    _ if ip_payload >= 8 => {
                        self.rng.random_range(8..=ip_payload.min(0xffff) as u16)
                    }
                    _ => 8,
                };
                put16(f, s.l4 + 4, len);
                format!("UDP length {len} (IP payload {ip_payload})")
            }
            21 => {
                let src = match self.below(5) {
                    0 => Ipv4Addr::new(0, self.rng.random(), self.rng.random(), 1),
                    1 => Ipv4Addr::new(127, 0, 0, self.rng.random()),
                    2 => Ipv4Addr::new(self.rng.random_range(224..240), 0, 0, 5),
                    3 => Ipv4Addr::new(self.rng.random_range(240..=255), 1, 2, 3),
                    _ => Ipv4Addr::BROADCAST,
                };
                f[s.l3 + 12..s.l3 + 16].copy_from_slice(&src.octets());
                format!("source {src}")
            }
            22 => {
                let ttl = self.rng.random_range(0..=2u8);
                f[s.l3 + 8] = ttl;
                format!("TTL {ttl}")
            }
            23 => {
                let x: u16 = self.rng.random_range(1..=0xffff);
                let v = be16(f, s.l3 + 10) ^ x;
                put16(f, s.l3 + 10, v);
                return "IP checksum broken".into();
            }
            24 => {
                // The L4 checksum goes wrong; the balancer does not check it, NAT must keep it
                // wrong by exactly as much.
                let from = s.l4 + if s.proto == TCP { 16 } else { 6 };
                let at = self.rng.random_range(from..f.len());
                f[at] ^= 1 << self.below(8);
                return format!("bit flipped at {at} (L4 checksum now wrong)");
            }
            25 if s.proto == UDP => {
                put16(f, s.l4 + 6, 0);
                return "UDP checksum 0 (none)".into();
            }
            _ => {
                let at = s.l4 + if self.chance(0.5) { 0 } else { 2 };
                let port = self.rng.random();
                put16(f, at, port);
                return format!("port at {at} set to {port}");
            }
        };
        if fix {
            fix_ip_checksum(f, s.l3);
            name
        } else {
            format!("{name}, IP checksum left")
        }
    }

    /// Cuts the frame inside a chosen part: Ethernet/VLAN header, IP header, L4 header or
    /// payload. The kernel refuses test frames shorter than an Ethernet header.
    pub(crate) fn truncate(&mut self, f: &mut Vec<u8>, s: Option<Shape>) -> String {
        let len = f.len();
        let (lo, hi, part) = match s {
            Some(s) => match self.below(4) {
                0 => (14, s.l3 + 1, "Ethernet/VLAN header"),
                1 => (s.l3, s.l4, "IP header"),
                2 => (s.l4, s.l4 + s.l4_header, "L4 header"),
                _ => (s.l4 + s.l4_header, len, "payload"),
            },
            None => (14, len, "frame"),
        };
        let hi = hi.min(len);
        if lo >= hi {
            return "truncation (nothing to cut)".into();
        }
        let cut = self.rng.random_range(lo..hi);
        f.truncate(cut);
        format!("truncated to {cut} bytes (in the {part})")
    }

    pub(crate) fn flip_bits(&mut self, f: &mut [u8], within: usize) -> String {
        let n = self.rng.random_range(1..=3);
        let mut at = Vec::new();
        for _ in 0..n {
            let byte = self.below(within);
            let bit = self.below(8);
            f[byte] ^= 1 << bit;
            at.push(format!("{byte}.{bit}"));
        }
        format!("bits flipped at {}", at.join(" "))
    }

    pub(crate) fn other_mac(&mut self, f: &mut [u8]) -> String {
        let mac: [u8; 6] = match self.below(4) {
            0 => [0xff; 6],
            1 => [0x01, 0x00, 0x5e, 0x00, 0x00, self.rng.random()],
            2 => [0x33, 0x33, 0, 0, 0, self.rng.random()],
            _ => {
                let mut m: [u8; 6] = self.rng.random();
                m[0] &= 0xfe; // unicast
                if m == self.out_mac || m == self.in_mac {
                    m[5] ^= 1;
                }
                m
            }
        };
        f[0..6].copy_from_slice(&mac);
        format!("destination MAC {}", mac_text(&mac))
    }

    pub(crate) fn ethertype(&mut self, f: &mut [u8]) -> String {
        let random = self.rng.random();
        let t = self.pick(&[0x86dd, 0x0806, 0x88a8, 0x8100, 0x0800, random]);
        put16(f, 12, t);
        format!("EtherType {t:#06x}")
    }

    fn total_length(&mut self, f: &mut [u8], s: Shape) -> String {
        let tot = be16(f, s.l3 + 2) as usize;
        let ihl = s.l4 - s.l3;
        let in_frame = f.len() - s.l3;
        let headers = ihl + s.l4_header;
        let new = match self.below(4) {
            // Smaller than the headers.
            0 => self.rng.random_range(0..headers),
            // Larger than the frame.
            1 => self
                .rng
                .random_range(in_frame + 1..=in_frame + 64)
                .min(0xffff),
            2 => 0xffff,
            // Smaller than the frame but covering the headers: the rest is Ethernet padding.
            _ if tot >= headers => self.rng.random_range(headers..=tot),
            _ => headers,
        };
        put16(f, s.l3 + 2, new as u16);
        if s.proto == UDP && new >= headers && new <= tot && self.chance(0.7) {
            put16(f, s.l4 + 4, (new - ihl) as u16);
            return format!("total length {new} (was {tot}), UDP length to match");
        }
        format!("total length {new} (was {tot})")
    }
}
