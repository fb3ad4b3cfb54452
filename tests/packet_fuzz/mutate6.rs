//! Mutations of IPv6 frames, as mutate.rs does for IPv4: truncations, flipped bits, another
//! MAC or EtherType, VLAN tags, IP version, payload length, extension headers (lengths running
//! past the datagram, chains of more than four, fragment headers), next header, martian and
//! IPv4-mapped addresses, hop limit, checksums, ports. A few keep the frame valid, and some
//! fix the upper-layer checksum afterwards so that the frame is judged on what was changed.

use rand::RngExt;

use crate::{
    ETHERTYPE_VLAN, ICMPV6, TCP, UDP,
    bytes::{be16, fold, ones_sum, put16},
    generate::{Generator, Shape},
    oracle::{DESTINATION_OPTIONS, FRAGMENT, HOP_BY_HOP, is_extension},
};

impl Generator {
    pub(crate) fn mutate6(&mut self, f: &mut Vec<u8>, s: Shape) -> String {
        let l3 = s.l3;
        let plen = be16(f, l3 + 4) as usize;
        let end = (l3 + 40 + plen).min(f.len());
        let fix = self.chance(0.5);
        let name = match self.below(30) {
            0..3 => return self.truncate(f, Some(s)),
            3 | 4 => {
                let len = f.len();
                return self.flip_bits(f, len);
            }
            5 | 6 => {
                let headers = (s.l4 + s.l4_header).min(f.len());
                return self.flip_bits(f, headers);
            }
            7 => {
                let at = self.below((s.l4 + s.l4_header).min(f.len()));
                let v = self.rng.random();
                f[at] = v;
                return format!("byte {at} set to {v:#04x}");
            }
            8 | 9 => return self.other_mac(f),
            10 => return self.ethertype(f),
            11 => {
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
                    if v != 6 {
                        break v;
                    }
                };
                f[l3] = (v << 4) | (f[l3] & 0x0f);
                return format!("IP version {v}");
            }
            13 | 14 => return self.payload_length(f, s),
            15 => {
                let extra = self.rng.random_range(1..=46);
                let mut pad = vec![0u8; extra];
                self.rng.fill(&mut pad[..]);
                f.extend_from_slice(&pad);
                return format!("{extra} bytes Ethernet padding");
            }
            16 => return self.extension_length(f, s),
            17 => {
                // Valid 8-byte destination-options (or hop-by-hop) headers in front of the
                // chain: 1-5 more, so a chain may now be longer than the data plane walks.
                let count = self.rng.random_range(1..=5);
                for _ in 0..count {
                    let kind = if self.chance(0.5) {
                        DESTINATION_OPTIONS
                    } else {
                        HOP_BY_HOP
                    };
                    let next = f[l3 + 6];
                    f.splice(l3 + 40..l3 + 40, [next, 0, 1, 4, 0, 0, 0, 0]);
                    f[l3 + 6] = kind;
                }
                let plen = be16(f, l3 + 4) as usize + 8 * count;
                put16(f, l3 + 4, plen.min(0xffff) as u16);
                return format!("{count} extension header(s) inserted");
            }
            18 => {
                let (offset, more) = match self.below(3) {
                    0 => (0, false),
                    1 => (0, true),
                    _ => (self.rng.random_range(1..0x2000u16), self.chance(0.5)),
                };
                let next = f[l3 + 6];
                let v = (offset << 3) | u16::from(more);
                let id: [u8; 4] = self.rng.random();
                let mut header = vec![next, 0, (v >> 8) as u8, v as u8];
                header.extend_from_slice(&id);
                f.splice(l3 + 40..l3 + 40, header);
                f[l3 + 6] = FRAGMENT;
                let plen = be16(f, l3 + 4) as usize + 8;
                put16(f, l3 + 4, plen.min(0xffff) as u16);
                return format!("fragment header inserted (offset {offset}, M {more})");
            }
            19 => {
                let random = self.rng.random();
                let p = self.pick(&[0u8, 43, 44, 60, 58, 6, 17, 50, 51, 59, 135, random]);
                let at = self.last_next_header(f, s);
                f[at] = p;
                format!("next header {p} (at {at})")
            }
            20 if s.proto == TCP => {
                let doff = if self.chance(0.5) {
                    self.rng.random_range(0..5u8)
                } else {
                    let room = (end.saturating_sub(s.l4) / 4).min(15) as u8;
                    self.rng.random_range(room.saturating_add(1).min(15)..=15)
                };
                f[s.l4 + 12] = (doff << 4) | (f[s.l4 + 12] & 0x0f);
                format!("TCP data offset {doff}")
            }
            20 if s.proto == UDP => {
                let ip_payload = end.saturating_sub(s.l4);
                let len = match self.below(3) {
                    0 => self.rng.random_range(0..8u16),
                    1 => (ip_payload + self.rng.random_range(1..=100)).min(0xffff) as u16,
                    _ if ip_payload >= 8 => {
                        self.rng.random_range(8..=ip_payload.min(0xffff) as u16)
                    }
                    _ => 8,
                };
                put16(f, s.l4 + 4, len);
                format!("UDP length {len} (IP payload {ip_payload})")
            }
            20 | 21 => {
                let mut a = [0u8; 16];
                let (name, at) = match self.below(6) {
                    0 => ("source ::", l3 + 8),
                    1 => {
                        a[15] = 1;
                        ("source ::1", l3 + 8)
                    }
                    2 => {
                        a[0] = 0xff;
                        a[1] = self.pick(&[0x02u8, 0x05, 0x0e]);
                        a[15] = 1;
                        ("source multicast", l3 + 8)
                    }
                    3 => {
                        a[12..].copy_from_slice(&self.rng.random::<[u8; 4]>());
                        ("source ::a.b.c.d (compatible)", l3 + 8)
                    }
                    4 => {
                        a[10] = 0xff;
                        a[11] = 0xff;
                        a[12..].copy_from_slice(&[198, 18, 0, self.rng.random()]);
                        ("source IPv4-mapped", l3 + 8)
                    }
                    _ => {
                        a[10] = 0xff;
                        a[11] = 0xff;
                        a[12..].copy_from_slice(&[198, 18, 0, self.pick(&[100u8, 110, 40])]);
                        ("destination IPv4-mapped", l3 + 24)
                    }
                };
                f[at..at + 16].copy_from_slice(&a);
                name.to_string()
            }
            22 => {
                let hops = self.rng.random_range(0..=2u8);
                f[l3 + 7] = hops;
                format!("hop limit {hops}")
            }
            23 => {
                // The upper-layer checksum goes wrong; NAT must keep it wrong by as much.
                let from = s.l4
                    + match s.proto {
                        TCP => 16,
                        UDP => 6,
                        _ => 2,
                    };
                let at = self.rng.random_range(from..f.len());
                f[at] ^= 1 << self.below(8);
                return format!("bit flipped at {at} (checksum now wrong)");
            }
            24 if s.proto == UDP => {
                put16(f, s.l4 + 6, 0);
                return "UDP checksum 0 (none, not allowed in IPv6)".into();
            }
            24 | 25 => {
                let at = l3 + 8 + self.below(32);
                let bit = self.below(8);
                f[at] ^= 1 << bit;
                format!("address bit flipped at {at}.{bit}")
            }
            26 => {
                let tc_flow: u32 = self.rng.random();
                let word = 0x6000_0000 | (tc_flow & 0x0fff_ffff);
                f[l3..l3 + 4].copy_from_slice(&word.to_be_bytes());
                format!("traffic class/flow label {:#09x}", tc_flow & 0x0fff_ffff)
            }
            _ => {
                let at = s.l4 + if self.chance(0.5) { 0 } else { 2 };
                let port = self.rng.random();
                put16(f, at, port);
                format!("port at {at} set to {port}")
            }
        };
        if fix && refix_checksum(f, s) {
            format!("{name}, checksum fixed")
        } else {
            name
        }
    }

    /// Where the next-header field naming the upper layer is: the IPv6 header's, or the last
    /// extension header's (walked as generated, without limits).
    fn last_next_header(&mut self, f: &[u8], s: Shape) -> usize {
        let mut at = s.l3 + 6;
        let mut offset = s.l3 + 40;
        while is_extension(f[at]) && offset + 8 <= s.l4 {
            let next = f[at];
            at = offset;
            offset += if next == FRAGMENT {
                8
            } else {
                (f[offset + 1] as usize + 1) * 8
            };
        }
        at
    }

    /// An extension header's length made to run past the datagram (or, if there is none, one
    /// inserted that does).
    fn extension_length(&mut self, f: &mut Vec<u8>, s: Shape) -> String {
        let l3 = s.l3;
        let mut candidates = Vec::new();
        let (mut next, mut offset) = (f[l3 + 6], l3 + 40);
        while is_extension(next) && offset + 8 <= s.l4 {
            if next != FRAGMENT {
                candidates.push(offset);
            }
            let here = offset;
            offset += if next == FRAGMENT {
                8
            } else {
                (f[here + 1] as usize + 1) * 8
            };
            next = f[here];
        }
        if candidates.is_empty() {
            let next = f[l3 + 6];
            let units = self.rng.random_range(1..=255u8);
            f.splice(l3 + 40..l3 + 40, [next, units, 1, 4, 0, 0, 0, 0]);
            f[l3 + 6] = DESTINATION_OPTIONS;
            let plen = be16(f, l3 + 4) as usize + 8;
            put16(f, l3 + 4, plen.min(0xffff) as u16);
            return format!(
                "destination options inserted, length {} bytes",
                (units as usize + 1) * 8
            );
        }
        let at = self.pick(&candidates);
        let units = f[at + 1];
        let new = if units < 255 {
            self.rng.random_range(units + 1..=255)
        } else {
            0
        };
        f[at + 1] = new;
        format!(
            "extension header at {at}: length {} bytes (was {})",
            (new as usize + 1) * 8,
            (units as usize + 1) * 8
        )
    }

    fn payload_length(&mut self, f: &mut [u8], s: Shape) -> String {
        let l3 = s.l3;
        let plen = be16(f, l3 + 4) as usize;
        let in_frame = f.len() - l3 - 40;
        let headers = s.l4 - l3 - 40 + s.l4_header;
        let new = match self.below(4) {
            0 => self.rng.random_range(0..headers.max(1)),
            1 => self
                .rng
                .random_range(in_frame + 1..=in_frame + 64)
                .min(0xffff),
            2 => 0xffff,
            _ if plen >= headers => self.rng.random_range(headers..=plen),
            _ => headers,
        };
        put16(f, l3 + 4, new as u16);
        if s.proto == UDP && new >= headers && new <= plen && self.chance(0.7) {
            let udp = new - (s.l4 - l3 - 40);
            put16(f, s.l4 + 4, udp as u16);
            return format!("payload length {new} (was {plen}), UDP length to match");
        }
        format!("payload length {new} (was {plen})")
    }
}

/// Recomputes the upper-layer checksum after a mutation that kept the layout, if the
/// message is whole in the frame; whether it did.
fn refix_checksum(f: &mut [u8], s: Shape) -> bool {
    let l3 = s.l3;
    if f.len() < l3 + 40 || f.len() < s.l4 + s.l4_header {
        return false;
    }
    let end = l3 + 40 + be16(f, l3 + 4) as usize;
    let (stop, at, proto) = match s.proto {
        TCP => (end, s.l4 + 16, TCP),
        UDP => (s.l4 + be16(f, s.l4 + 4) as usize, s.l4 + 6, UDP),
        _ => (end, s.l4 + 2, ICMPV6),
    };
    if stop > f.len() || stop > end || stop < s.l4 + s.l4_header {
        return false;
    }
    put16(f, at, 0);
    let mut sum = ones_sum(0, &f[l3 + 8..l3 + 40]);
    sum += proto as u64 + (stop - s.l4) as u64;
    sum = ones_sum(sum, &f[s.l4..stop]);
    let check = match !fold(sum) {
        0 => 0xffff,
        c => c,
    };
    put16(f, at, check);
    true
}
