//! The checks: what the program did with a frame, compared with the oracle's verdict
//! (`Oracle::check`) — a pass untouched, the exact DR and NAT rewrites, the L4 checksum updated
//! incrementally, no flow moved to another real — learning the NAT flows the program opened.

use std::net::IpAddr;

use etherparse::{Icmpv6Slice, Ipv4Slice, Ipv6Slice, TcpSlice, UdpSlice};
use xdplb_tests::fixture::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

use crate::{
    Outcome, SERVICES, Side, TCP, UDP,
    bytes::{addr_bytes, be16, fold, ip_checksum_ok, ones_sum, put16},
    host_mac,
    oracle::{IcmpLayout, IcmpRewrite, Layout, Oracle, Reply, Route, Tuple, Verdict},
    report::{Problem, action_name, got, mac_text, problem},
};

impl Oracle {
    /// Checks what the program did against the verdict; learns the flows it opened.
    pub(crate) fn check(
        &mut self,
        v: &Verdict,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        match *v {
            Verdict::Pass { why, drop_ok } => {
                if out.action == XDP_PASS && out.frame == input {
                    return Ok(());
                }
                if out.action == XDP_DROP && drop_ok {
                    return Ok(());
                }
                Err(problem(
                    format!(
                        "not forwardable ({why}), expected XDP_PASS unchanged{}: got {}",
                        if drop_ok { " or XDP_DROP" } else { "" },
                        got(input, out)
                    ),
                    "a frame that is not forwardable must be left to the kernel untouched",
                ))
            }
            Verdict::NatRefused { why, t } => {
                self.refused.insert(t);
                self.check(
                    &Verdict::Pass {
                        why,
                        drop_ok: false,
                    },
                    side,
                    input,
                    out,
                )
            }
            Verdict::IcmpMaybe { what, l, to } => {
                if out.action == XDP_PASS && out.frame == input {
                    return Ok(());
                }
                let mut first = None;
                for (to, route) in to.into_iter().flatten() {
                    if matches!(route, Route::None) {
                        continue;
                    }
                    match self.check_icmp_nat(what, l, to, route, side, input, out) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(first.unwrap_or_else(|| {
                    problem(
                        format!(
                            "{what}: expected XDP_PASS unchanged, got {}",
                            got(input, out)
                        ),
                        "no route for any translation",
                    )
                }))
            }
            Verdict::AdoptMaybe { reply, t, l, route } => {
                if out.action == XDP_PASS && out.frame == input {
                    return Ok(());
                }
                self.check(&Verdict::NatReply { reply, t, l, route }, side, input, out)
            }
            Verdict::Dr { svc, t } => self.check_dr(svc, t, side, input, out),
            Verdict::NatIn { svc, t, l } => self.check_nat_in(svc, t, l, side, input, out),
            Verdict::NatReply { reply, t, l, route } => {
                // A reply of no open flow is adopted (README, "Running a pair"): from then on
                // its flow is open, both ways, on the real that replied.
                self.replies.entry(t).or_insert(reply);
                let client = Tuple {
                    src: t.dst,
                    sport: t.dport,
                    dst: reply.vip,
                    dport: reply.vip_port,
                    proto: t.proto,
                };
                if !self.nat_real.contains_key(&client) {
                    self.adopted.insert(client, t.src);
                }
                self.check_nat_reply(reply, t, l, route, side, input, out)
            }
            Verdict::IcmpDr { svc, mac } => self.check_icmp_dr(svc, mac, side, input, out),
            Verdict::IcmpNat { what, l, to, route } => {
                self.check_icmp_nat(what, l, to, route, side, input, out)
            }
        }
    }

    /// An ICMPv6 error about a DR flow: XDP_TX to the flow's real (any real of the service if
    /// the oracle never saw the flow: scheduling's choice), nothing past the MACs changed.
    fn check_icmp_dr(
        &mut self,
        svc: usize,
        mac: Option<[u8; 6]>,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        if out.action != XDP_TX {
            return Err(problem(
                format!(
                    "ICMPv6 error about a DR flow, expected XDP_TX: got {}",
                    got(input, out)
                ),
                "errors about VIP flows reach the real that owns the flow",
            ));
        }
        if out.frame.len() != input.len() || out.frame[12..] != input[12..] {
            return Err(problem(
                "ICMPv6 error, DR: bytes past the MACs changed",
                format!("{} -> {} bytes", input.len(), out.frame.len()),
            ));
        }
        let dst: [u8; 6] = out.frame[0..6].try_into().unwrap();
        let right = match mac {
            Some(mac) => mac == dst,
            None => SERVICES[svc].reals.iter().any(|r| host_mac(*r) == dst),
        };
        if !right || out.frame[6..12] != self.own_mac(side) {
            return Err(problem(
                "ICMPv6 error, DR: not to the flow's real, or not from our MAC",
                format!(
                    "to {} from {}, expected {}",
                    mac_text(&dst),
                    mac_text(&out.frame[6..12]),
                    mac.map_or("a real of the service".into(), |m| mac_text(&m))
                ),
            ));
        }
        Ok(())
    }

    /// An ICMPv6 error about a NAT flow: the outer and quoted addresses and ports exactly as the
    /// oracle expects, the hop limit down by one and the next hop's MACs (resolved), the ICMPv6
    /// checksum right if and only if it was (by our sum and by etherparse's).
    #[allow(clippy::too_many_arguments)]
    fn check_icmp_nat(
        &self,
        what: &str,
        l: IcmpLayout,
        to: IcmpRewrite,
        route: Route,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        if matches!(route, Route::Local) && out.action == XDP_PASS && out.frame == input {
            return Ok(());
        }
        let mut expected = input.to_vec();
        let mut put_addr = |at: usize, a: IpAddr| {
            let b = addr_bytes(a);
            expected[at..at + b.len()].copy_from_slice(&b);
        };
        put_addr(l.l3 + 8, to.outer_src);
        put_addr(l.l3 + 24, to.outer_dst);
        put_addr(l.quote + 8, to.quote_src.0);
        put_addr(l.quote + 24, to.quote_dst.0);
        put16(&mut expected, l.quote_l4, to.quote_src.1);
        put16(&mut expected, l.quote_l4 + 2, to.quote_dst.1);
        let action = match route {
            Route::Resolved { side: egress, mac } => {
                expected[l.l3 + 7] -= 1;
                expected[0..6].copy_from_slice(&mac);
                expected[6..12].copy_from_slice(&self.own_mac(egress));
                if egress == side { XDP_TX } else { XDP_REDIRECT }
            }
            _ => XDP_PASS,
        };
        if out.action != action {
            return Err(problem(
                format!(
                    "{what}: expected {}, got {}",
                    action_name(action),
                    got(input, out)
                ),
                format!("route {route:?}"),
            ));
        }
        if out.frame.len() != expected.len() {
            return Err(problem(
                format!("{what}: frame length changed"),
                format!("{} -> {} bytes", input.len(), out.frame.len()),
            ));
        }
        let icmp_check = l.icmp + 2;
        let quote_check = l.quote_l4 + if l.quote_proto == TCP { 16 } else { 6 };
        let differs: Vec<usize> = (0..expected.len())
            .filter(|i| {
                !(icmp_check..icmp_check + 2).contains(i)
                    && !(quote_check..quote_check + 2).contains(i)
                    && out.frame[*i] != expected[*i]
            })
            .collect();
        if let Some(&at) = differs.first() {
            return Err(problem(
                format!("{what}: rewrite not exact (offset {at})"),
                format!(
                    "bytes differing from the expected rewrite at offsets {differs:?}: expected                      {:02x?}, got {:02x?}",
                    differs.iter().map(|i| expected[*i]).collect::<Vec<_>>(),
                    differs.iter().map(|i| out.frame[*i]).collect::<Vec<_>>()
                ),
            ));
        }
        // The quoted TCP/UDP checksum, when the quote holds the whole segment: updated for the
        // quoted addresses and ports (right if and only if it was); a UDP 0 stays 0.
        let quoted_len = be16(input, l.quote + 4) as usize;
        // The segment as the quote declares it must hold its own checksum field (TCP: bytes
        // 16-17; a quote whose length field was cut below it has no checksum to verify).
        let holds_check = if l.quote_proto == UDP { 8 } else { 18 };
        if l.quote_l4 + quoted_len <= l.end && quoted_len >= holds_check {
            let (q_in, q_out) = (be16(input, quote_check), be16(&out.frame, quote_check));
            let zero_udp = l.quote_proto == UDP && q_in == 0;
            let residual = |f: &[u8]| {
                let mut sum = ones_sum(0, &f[l.quote + 8..l.quote + 40]);
                sum += l.quote_proto as u64 + quoted_len as u64;
                fold(ones_sum(sum, &f[l.quote_l4..l.quote_l4 + quoted_len]))
            };
            let norm = |r: u16| if r == 0 { 0xffff } else { r };
            if (zero_udp && q_out != 0)
                || (!zero_udp && norm(residual(input)) != norm(residual(&out.frame)))
            {
                return Err(problem(
                    format!("{what}: quoted TCP/UDP checksum not updated"),
                    format!("checksum {q_in:#06x} -> {q_out:#06x}"),
                ));
            }
        }
        let before = icmp6_residual(input, &l);
        let after = icmp6_residual(&out.frame, &l);
        if before != after {
            return Err(problem(
                format!(
                    "{what}: ICMPv6 checksum not updated (residual {before:#06x} -> {after:#06x})"
                ),
                format!(
                    "checksum {:#06x} -> {:#06x}",
                    be16(input, icmp_check),
                    be16(&out.frame, icmp_check)
                ),
            ));
        }
        let ours = after == 0xffff;
        let theirs = Ipv6Slice::from_slice(&out.frame[l.l3..l.end])
            .ok()
            .and_then(|ip| {
                let h = ip.header();
                let (src, dst) = (h.source_addr().octets(), h.destination_addr().octets());
                Icmpv6Slice::from_slice(ip.payload().payload)
                    .ok()
                    .map(|icmp| icmp.is_checksum_valid(src, dst))
            });
        if theirs.is_some_and(|theirs| theirs != ours) {
            return Err(problem(
                "ICMPv6 checksum validity differs from etherparse's",
                format!("ours {ours}, etherparse {theirs:?}"),
            ));
        }
        Ok(())
    }

    fn check_dr(
        &mut self,
        svc: usize,
        t: Tuple,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        if out.action != XDP_TX {
            return Err(problem(
                format!("DR forwardable, expected XDP_TX: got {}", got(input, out)),
                "a DR packet to a VIP:port with reals up is sent back out to a real",
            ));
        }
        if out.frame.len() != input.len() {
            return Err(problem(
                "DR: frame length changed",
                format!("{} -> {} bytes", input.len(), out.frame.len()),
            ));
        }
        let dst: [u8; 6] = out.frame[0..6].try_into().unwrap();
        let reals = SERVICES[svc].reals;
        if !reals.iter().any(|r| host_mac(*r) == dst) {
            return Err(problem(
                "DR: destination MAC is not a real of the service",
                format!("{} ({})", mac_text(&dst), SERVICES[svc].name),
            ));
        }
        if out.frame[6..12] != self.own_mac(side) {
            return Err(problem(
                "DR: source MAC is not the interface's own",
                format!(
                    "{} instead of {}",
                    mac_text(&out.frame[6..12]),
                    mac_text(&self.own_mac(side))
                ),
            ));
        }
        if out.frame[12..] != input[12..] {
            let at = (12..input.len())
                .find(|i| out.frame[*i] != input[*i])
                .unwrap();
            return Err(problem(
                "DR: bytes past the MACs changed",
                format!("first difference at offset {at}"),
            ));
        }
        let first = *self.dr_real.entry(t).or_insert(dst);
        if first != dst {
            return Err(problem(
                "DR: flow moved to another real",
                format!("{t}: first {}, now {}", mac_text(&first), mac_text(&dst)),
            ));
        }
        Ok(())
    }

    fn check_nat_in(
        &mut self,
        svc: usize,
        t: Tuple,
        l: Layout,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        let s = &SERVICES[svc];
        if out.action == XDP_PASS && out.frame == input {
            return Err(problem(
                "NAT inbound forwardable, expected a translation: got XDP_PASS unchanged",
                "every real has a route and a resolved neighbour",
            ));
        }
        if !matches!(out.action, XDP_TX | XDP_REDIRECT | XDP_PASS) {
            return Err(problem(
                format!(
                    "NAT inbound forwardable, expected XDP_TX/XDP_REDIRECT: got {}",
                    got(input, out)
                ),
                "",
            ));
        }
        if out.frame.len() != input.len() {
            return Err(problem(
                "NAT inbound: frame length changed",
                format!("{} -> {} bytes", input.len(), out.frame.len()),
            ));
        }
        // The real, as an independent parser reads it from the output.
        let parsed = if l.v6 {
            // (Read from the bytes: etherparse refuses some chains the data plane forwards.)
            Ok(crate::bytes::addr6_at(&out.frame, l.l3 + 24))
        } else {
            Ipv4Slice::from_slice(&out.frame[l.l3..])
                .map(|ip| IpAddr::V4(ip.header().destination_addr()))
                .map_err(|e| format!("{e:?}"))
        };
        let real = match parsed {
            Ok(real) => real,
            Err(e) => {
                return Err(problem("NAT inbound: output does not parse", e));
            }
        };
        if !s.reals.contains(&real) {
            return Err(problem(
                "NAT inbound: destination address is not a real of the service",
                format!("{real} ({})", s.name),
            ));
        }
        let first = *self.nat_real.entry(t).or_insert(real);
        if first != real {
            return Err(problem(
                "NAT inbound: flow moved to another real",
                format!("{t}: first {first}, now {real}"),
            ));
        }
        let port = s.real_port.unwrap_or(t.dport);
        // The flow is open (even if the rewrite below is wrong): its replies come back from
        // real:port.
        let reply = Tuple {
            src: real,
            sport: port,
            dst: t.src,
            dport: t.sport,
            proto: t.proto,
        };
        if let std::collections::hash_map::Entry::Vacant(entry) = self.replies.entry(reply) {
            entry.insert(Reply {
                vip: t.dst,
                vip_port: t.dport,
            });
            self.opened.push(reply);
        }
        let route = self.route(real, l.tot);
        self.check_nat_rewrite(
            "NAT inbound",
            Rewrite::Destination(real, port),
            route,
            l,
            side,
            input,
            out,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn check_nat_reply(
        &mut self,
        reply: Reply,
        t: Tuple,
        l: Layout,
        route: Route,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        if matches!(route, Route::Local) && out.action == XDP_PASS {
            // Not a case the README pins down beyond "passed"; translated or not is fine as long
            // as nothing else changes.
            if out.frame == input {
                return Ok(());
            }
            return self.check_nat_rewrite(
                "NAT reply",
                Rewrite::Source(reply.vip, reply.vip_port),
                Route::Unresolved,
                l,
                side,
                input,
                out,
            );
        }
        if out.action == XDP_PASS && out.frame == input {
            return Err(problem(
                format!(
                    "NAT reply of an open flow ({}), expected a translation: got XDP_PASS unchanged",
                    Verdict::NatReply { reply, t, l, route }.label()
                ),
                format!("the flow's replies become {}:{}", reply.vip, reply.vip_port),
            ));
        }
        self.check_nat_rewrite(
            "NAT reply",
            Rewrite::Source(reply.vip, reply.vip_port),
            route,
            l,
            side,
            input,
            out,
        )
    }

    /// The exact NAT result: the input with one address and port replaced, TTL - 1 and the
    /// next hop's MACs (when the neighbour is resolved), the IP checksum right and the L4
    /// checksum off by exactly what it was off before.
    #[allow(clippy::too_many_arguments)]
    fn check_nat_rewrite(
        &self,
        what: &str,
        rewrite: Rewrite,
        route: Route,
        l: Layout,
        side: Side,
        input: &[u8],
        out: &Outcome,
    ) -> Result<(), Problem> {
        let mut expected = input.to_vec();
        let (src_at, dst_at, ttl_at) = if l.v6 {
            (l.l3 + 8, l.l3 + 24, l.l3 + 7)
        } else {
            (l.l3 + 12, l.l3 + 16, l.l3 + 8)
        };
        let (addr_at_, port_at, addr, port) = match rewrite {
            Rewrite::Destination(a, p) => (dst_at, l.l4 + 2, a, p),
            Rewrite::Source(a, p) => (src_at, l.l4, a, p),
        };
        let bytes = addr_bytes(addr);
        expected[addr_at_..addr_at_ + bytes.len()].copy_from_slice(&bytes);
        put16(&mut expected, port_at, port);
        let action = match route {
            Route::Resolved { side: egress, mac } => {
                // TTL, or the IPv6 hop limit, down by one.
                expected[ttl_at] -= 1;
                expected[0..6].copy_from_slice(&mac);
                expected[6..12].copy_from_slice(&self.own_mac(egress));
                if egress == side { XDP_TX } else { XDP_REDIRECT }
            }
            // Translated, TTL untouched: the kernel forwards it and resolves the neighbour.
            _ => XDP_PASS,
        };
        if out.action != action {
            return Err(problem(
                format!(
                    "{what}: expected {}, got {}",
                    action_name(action),
                    got(input, out)
                ),
                format!("route {route:?}"),
            ));
        }
        if out.frame.len() != expected.len() {
            return Err(problem(
                format!("{what}: frame length changed"),
                format!("{} -> {} bytes", input.len(), out.frame.len()),
            ));
        }
        // IPv6 has no header checksum: no byte is exempt there.
        let ip_check = if l.v6 { usize::MAX - 2 } else { l.l3 + 10 };
        let l4_check = l4_checksum_at(&l);
        let differs: Vec<usize> = (0..expected.len())
            .filter(|i| {
                !(ip_check..ip_check + 2).contains(i)
                    && !(l4_check..l4_check + 2).contains(i)
                    && out.frame[*i] != expected[*i]
            })
            .collect();
        if let Some(&at) = differs.first() {
            return Err(problem(
                format!("{what}: rewrite not exact ({})", field_name(&l, at)),
                format!(
                    "bytes differing from the expected rewrite at offsets {differs:?}: expected \
                     {:02x?}, got {:02x?}",
                    differs.iter().map(|i| expected[*i]).collect::<Vec<_>>(),
                    differs.iter().map(|i| out.frame[*i]).collect::<Vec<_>>()
                ),
            ));
        }
        if !l.v6 && !ip_checksum_ok(&out.frame[l.l3..l.l3 + l.ihl]) {
            return Err(problem(
                format!("{what}: IP header checksum wrong after the rewrite"),
                format!("checksum {:#06x}", be16(&out.frame, ip_check)),
            ));
        }
        let in_check = be16(input, l4_check);
        let out_check = be16(&out.frame, l4_check);
        if l.proto == UDP && in_check == 0 {
            if out_check != 0 {
                return Err(problem(
                    format!("{what}: UDP sent without a checksum got one"),
                    format!("checksum {out_check:#06x}"),
                ));
            }
            return Ok(());
        }
        let before = l4_residual(input, &l);
        let after = l4_residual(&out.frame, &l);
        if l.proto == UDP && out_check == 0 {
            return Err(problem(
                format!("{what}: UDP checksum became 0 (\"none\")"),
                format!("input checksum {in_check:#06x}"),
            ));
        }
        if before != after {
            let valid = |r: u16| if r == 0xffff { "valid" } else { "invalid" };
            return Err(problem(
                format!(
                    "{what}: L4 checksum not updated incrementally ({} before, {} after)",
                    valid(before),
                    valid(after)
                ),
                format!(
                    "checksum {in_check:#06x} -> {out_check:#06x}; residual {before:#06x} -> \
                     {after:#06x}"
                ),
            ));
        }
        // Cross-check the verdict on validity with etherparse where it computes the same sum.
        if let Some(problem) = etherparse_l4_cross_check(&out.frame, &l, after == 0xffff) {
            return Err(problem);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Rewrite {
    Destination(IpAddr, u16),
    Source(IpAddr, u16),
}

/// The one's-complement sum of a TCP/UDP segment with its pseudo-header, checksum field
/// included: 0xffff when the checksum is right. An incremental update keeps it as it was.
/// Normalised so that the two zeros (0x0000 and 0xffff) compare equal.
fn l4_residual(f: &[u8], l: &Layout) -> u16 {
    let (seg_len, pseudo_len) = if l.proto == TCP {
        (l.tot - l.ihl, (l.tot - l.ihl) as u16)
    } else {
        let ulen = be16(f, l.l4 + 4);
        (ulen as usize, ulen)
    };
    // The pseudo-header: both addresses, the protocol and the segment length (IPv6's 32-bit
    // length and next header add up the same way in one's-complement).
    let addresses = if l.v6 {
        &f[l.l3 + 8..l.l3 + 40]
    } else {
        &f[l.l3 + 12..l.l3 + 20]
    };
    let mut sum = ones_sum(0, addresses);
    sum += l.proto as u64 + pseudo_len as u64;
    sum = ones_sum(sum, &f[l.l4..l.l4 + seg_len]);
    match fold(sum) {
        0 => 0xffff,
        s => s,
    }
}

/// `l4_residual` for an ICMPv6 message (its pseudo-header: the outer addresses, the length
/// and next header 58).
fn icmp6_residual(f: &[u8], l: &IcmpLayout) -> u16 {
    let len = l.end - l.icmp;
    let mut sum = ones_sum(0, &f[l.l3 + 8..l.l3 + 40]);
    sum += crate::ICMPV6 as u64 + len as u64;
    sum = ones_sum(sum, &f[l.icmp..l.end]);
    match fold(sum) {
        0 => 0xffff,
        s => s,
    }
}

fn l4_checksum_at(l: &Layout) -> usize {
    if l.proto == TCP { l.l4 + 16 } else { l.l4 + 6 }
}

/// Whether etherparse computes the same L4 checksum verdict (TCP, and UDP whose length field
/// spans the whole IP payload).
fn etherparse_l4_cross_check(f: &[u8], l: &Layout, valid: bool) -> Option<Problem> {
    if l.v6 {
        return etherparse_l4_cross_check6(f, l, valid);
    }
    let ip = Ipv4Slice::from_slice(&f[l.l3..]).ok()?;
    let header = ip.header().to_header();
    let payload = ip.payload().payload;
    let theirs = if l.proto == TCP {
        // From the raw segment: TcpHeader drops the reserved bits, which the checksum covers.
        let tcp = TcpSlice::from_slice(payload).ok()?;
        let calc = tcp
            .calc_checksum_ipv4(header.source, header.destination)
            .ok()?;
        same_checksum(calc, tcp.checksum())
    } else {
        let udp = UdpSlice::from_slice(payload).ok()?;
        let h = udp.to_header();
        if h.length as usize != payload.len() || h.checksum == 0 {
            return None;
        }
        let calc = h.calc_checksum_ipv4(&header, udp.payload()).ok()?;
        same_checksum(calc, h.checksum)
    };
    (theirs != valid).then(|| {
        problem(
            "oracle self-check: L4 checksum validity differs from etherparse's",
            format!("ours {valid}, etherparse {theirs}"),
        )
    })
}

/// `etherparse_l4_cross_check` for IPv6 (its pseudo-header has the 16-byte addresses).
fn etherparse_l4_cross_check6(f: &[u8], l: &Layout, valid: bool) -> Option<Problem> {
    let ip = match Ipv6Slice::from_slice(&f[l.l3..]) {
        Ok(ip) => ip,
        Err(_) if crate::oracle::etherparse_differs6(f, l.l3) => return None,
        Err(e) => {
            return Some(problem(
                "IPv6 output does not parse (etherparse)",
                format!("{e:?}"),
            ));
        }
    };
    let (src, dst) = (
        ip.header().source_addr().octets(),
        ip.header().destination_addr().octets(),
    );
    let payload = ip.payload().payload;
    let theirs = if l.proto == TCP {
        let tcp = TcpSlice::from_slice(payload).ok()?;
        let calc = tcp.calc_checksum_ipv6(src, dst).ok()?;
        same_checksum(calc, tcp.checksum())
    } else {
        let udp = UdpSlice::from_slice(payload).ok()?;
        let h = udp.to_header();
        if h.length as usize != payload.len() {
            return None;
        }
        let calc = h.calc_checksum_ipv6_raw(src, dst, udp.payload()).ok()?;
        same_checksum(calc, h.checksum)
    };
    (theirs != valid).then(|| {
        problem(
            "IPv6: L4 checksum validity differs from etherparse's",
            format!("ours {valid}, etherparse {theirs}"),
        )
    })
}

/// Checksums equal in one's-complement arithmetic (0x0000 and 0xffff are both zero).
fn same_checksum(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Which field a byte offset of a well-formed frame is in.
fn field_name(l: &Layout, at: usize) -> &'static str {
    match at {
        0..6 => "destination MAC",
        6..12 => "source MAC",
        _ if at < l.l3 => "EtherType/VLAN tag",
        _ if l.v6 && at < l.l4 => match at - l.l3 {
            0..4 => "IPv6 version/traffic class/flow label",
            4 | 5 => "IPv6 payload length",
            6 => "IPv6 next header",
            7 => "IPv6 hop limit",
            8..24 => "IPv6 source address",
            24..40 => "IPv6 destination address",
            _ => "IPv6 extension headers",
        },
        _ if at < l.l4 => match at - l.l3 {
            0 => "IP version/IHL",
            1 => "IP TOS",
            2 | 3 => "IP total length",
            4 | 5 => "IP identification",
            6 | 7 => "IP flags/fragment offset",
            8 => "IP TTL",
            9 => "IP protocol",
            10 | 11 => "IP checksum",
            12..16 => "IP source address",
            16..20 => "IP destination address",
            _ => "IP options",
        },
        _ if at < l.l4 + 2 => "source port",
        _ if at < l.l4 + 4 => "destination port",
        _ if at < l.l4 + l.l4_header => "L4 header",
        _ if at < l.l3 + l.tot => "payload",
        _ => "Ethernet padding",
    }
}
