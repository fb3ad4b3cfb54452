//! IPv6 through the real XDP program under BPF_PROG_TEST_RUN: DR, NAT and SNAT for IPv6
//! services, extension headers, fragments, neighbour discovery and ICMPv6 errors, beside IPv4
//! services in the same policy. Frames are built, and checksums checked, with etherparse.
//!
//! ```text
//!   clients 2001:2::/64 -- out0 [balancer namespace] in0 -- reals 2001:2:0:1::/64
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv6Slice, Icmpv6Type, IpNumber, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    icmpv6::{DestUnreachableCode, TimeExceededCode},
};
use lb_common::counters::Reason;
use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, Outcome, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{CLIENT_MAC, LB_MAC, macs},
};

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);
const DR_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const NAT_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x101);
const SNAT_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x102);
const DR_REALS: [(Ipv6Addr, [u8; 6]); 2] = [
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11),
        [0x02, 0, 0, 0, 0x66, 0x11],
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x12),
        [0x02, 0, 0, 0, 0x66, 0x12],
    ),
];
const NAT_REAL: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x11);
const NAT_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x67, 0x11];
const SNAT_REAL: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x12);
const SNAT_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x67, 0x12];
/// The balancer's inside address: the SNAT service's source toward its real.
const SNAT_ADDRESS: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
const V4_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const V4_REAL: (Ipv4Addr, [u8; 6]) = (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]);

const POLICY: &str = "
interfaces:
  - name: out0
  - name: in0
    role: inside
services:
  - name: viewer6
    vip: 2001:2::100
    ports: [443]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 2001:2::11
      - address: 2001:2::12
  - name: dns6
    vip: 2001:2::100
    ports: [53]
    protocol: udp
    forwarding: dr
    reals:
      - address: 2001:2::12
  - name: dicom6
    vip: 2001:2::101
    ports: [104]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 2001:2:0:1::11
        port: 11112
  - name: hl7-6
    vip: 2001:2::102
    ports: [2575]
    protocol: tcp
    forwarding: snat
    snat_address: 2001:2:0:1::1
    reals:
      - address: 2001:2:0:1::12
  - name: viewer4
    vip: 198.18.0.100
    ports: [443]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
";

fn router() -> FibRouter {
    FibRouter::new(&[
        (IpAddr::V6(CLIENT), CLIENT_MAC, "out0"),
        (IpAddr::V6(ROUTER), [0x02, 0, 0, 0, 0x66, 0xfe], "out0"),
        (IpAddr::V6(NAT_REAL), NAT_REAL_MAC, "in0"),
        (IpAddr::V6(SNAT_REAL), SNAT_REAL_MAC, "in0"),
    ])
    .unwrap()
}

fn dataplane(r: &FibRouter) -> Dataplane {
    let mut macs: Vec<(IpAddr, [u8; 6])> =
        DR_REALS.iter().map(|(a, m)| (IpAddr::V6(*a), *m)).collect();
    macs.push((IpAddr::V4(V4_REAL.0), V4_REAL.1));
    Dataplane::on_router_with(POLICY, &macs, r)
}

/// TCP flags of a test frame.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    fin: bool,
}

/// A client opening a connection, and one closing it.
const SYN: Flags = Flags {
    syn: true,
    fin: false,
};
const FIN: Flags = Flags {
    syn: false,
    fin: true,
};

fn tcp6(
    macs: ([u8; 6], [u8; 6]),
    from: (Ipv6Addr, u16),
    to: (Ipv6Addr, u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(from.0.octets(), to.0.octets(), 64)
        .tcp(from.1, to.1, 1000, 64240);
    if flags.syn {
        builder = builder.syn();
    } else {
        builder = builder.ack(1);
    }
    if flags.fin {
        builder = builder.fin();
    }
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn udp6(macs: ([u8; 6], [u8; 6]), from: (Ipv6Addr, u16), to: (Ipv6Addr, u16)) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(from.0.octets(), to.0.octets(), 64)
        .udp(from.1, to.1);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"query").unwrap();
    frame
}

/// A client's TCP packet to the DR VIP, addressed to the balancer's MAC (for `run`).
fn dr_packet(sport: u16, flags: Flags) -> Vec<u8> {
    tcp6(
        (CLIENT_MAC, LB_MAC),
        (CLIENT, sport),
        (DR_VIP, 443),
        flags,
        b"hello",
    )
}

/// Inserts IPv6 extension headers (next header, 8-byte units after the first 8 bytes, rest of
/// the header as zero padding) between the IPv6 header and its payload, fixing the chain and the
/// payload length. `kinds` lists each header's own type, outermost first.
fn with_extensions(frame: &[u8], kinds: &[(u8, u8)]) -> Vec<u8> {
    const IP: usize = 14;
    let payload_next = frame[IP + 6];
    let mut headers = Vec::new();
    for (i, (_, units)) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).map_or(payload_next, |(kind, _)| *kind);
        let mut header = vec![0u8; (*units as usize + 1) * 8];
        header[0] = next;
        header[1] = *units;
        if kinds[i].0 == 44 {
            header[1] = 0; // a fragment header has a reserved byte, and is 8 bytes
            header.truncate(8);
        }
        // Destination/hop-by-hop options: PadN over the rest, so the option area is valid.
        if (kinds[i].0 == 0 || kinds[i].0 == 60) && header.len() > 2 {
            header[2] = 1;
            header[3] = (header.len() - 4) as u8;
        }
        headers.extend_from_slice(&header);
    }
    let mut out = frame[..IP + 40].to_vec();
    out[IP + 6] = kinds[0].0;
    let len = u16::from_be_bytes([out[IP + 4], out[IP + 5]]) as usize + headers.len();
    out[IP + 4..IP + 6].copy_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&frame[IP + 40..]);
    out
}

/// What an IPv6 frame carries, every checksum checked by etherparse first.
#[derive(Debug, PartialEq, Eq)]
struct Seen6 {
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    hop_limit: u8,
    payload: Vec<u8>,
}

fn seen6(frame: &[u8]) -> Seen6 {
    let p = SlicedPacket::from_ethernet(frame).expect("output frame parses");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let header = ip.header().to_header();
    let (sport, dport, payload) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv6(&header, t.payload()).unwrap(),
                "TCP checksum"
            );
            (t.source_port(), t.destination_port(), t.payload().to_vec())
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv6(&header, u.payload()).unwrap(),
                "UDP checksum"
            );
            (u.source_port(), u.destination_port(), u.payload().to_vec())
        }
        other => panic!("no TCP/UDP: {other:?}"),
    };
    Seen6 {
        src: (header.source_addr(), sport),
        dst: (header.destination_addr(), dport),
        hop_limit: header.hop_limit,
        payload,
    }
}

fn passed(dp: &Dataplane, frame: &[u8], reason: Reason) {
    let before = dp.reason_count(reason);
    let out = dp.run(frame).unwrap();
    assert_eq!(
        out.action, XDP_PASS,
        "expected the frame passed as {reason:?}"
    );
    assert_eq!(out.frame, frame, "a passed frame is untouched");
    assert_eq!(dp.reason_count(reason), before + 1, "counted as {reason:?}");
}

/// A DR forward: XDP_TX to one of the reals' MACs from the balancer's, nothing past the MACs
/// changed. Returns the real's MAC.
fn dr_forwarded(input: &[u8], out: &Outcome) -> [u8; 6] {
    assert_eq!(out.action, XDP_TX, "expected XDP_TX");
    let (dst, src) = macs(&out.frame);
    assert!(
        DR_REALS.iter().any(|(_, m)| *m == dst),
        "destination MAC {dst:02x?} is no IPv6 real's"
    );
    assert_eq!(src, LB_MAC);
    assert_eq!(
        &out.frame[12..],
        &input[12..],
        "DR changes nothing past the MACs"
    );
    seen6(&out.frame);
    dst
}

#[test]
fn dr_keeps_each_flow_on_one_real_and_spreads_flows() {
    let r = router();
    let dp = dataplane(&r);
    let mut used = std::collections::HashSet::new();
    for sport in 40000..40064 {
        let syn = dr_packet(sport, SYN);
        let first = dr_forwarded(&syn, &dp.run(&syn).unwrap());
        for _ in 0..3 {
            let data = dr_packet(sport, Flags::default());
            assert_eq!(dr_forwarded(&data, &dp.run(&data).unwrap()), first);
        }
        let fin = dr_packet(sport, FIN);
        assert_eq!(dr_forwarded(&fin, &dp.run(&fin).unwrap()), first);
        used.insert(first);
    }
    assert_eq!(used.len(), 2, "64 flows use both reals");

    // UDP to the same VIP, another service.
    let query = udp6((CLIENT_MAC, LB_MAC), (CLIENT, 5353), (DR_VIP, 53));
    assert_eq!(
        dr_forwarded(&query, &dp.run(&query).unwrap()),
        DR_REALS[1].1
    );
}

#[test]
fn extension_headers_are_walked_and_a_fragment_is_dropped() {
    let r = router();
    let dp = dataplane(&r);
    let plain = dr_packet(41000, SYN);
    let real = dr_forwarded(&plain, &dp.run(&plain).unwrap());

    // Hop-by-hop, routing-free destination options: the same flow, the same real.
    let data = dr_packet(41000, Flags::default());
    let options = with_extensions(&data, &[(0, 0), (60, 1)]);
    let out = dp.run(&options).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame).0, real);
    assert_eq!(&out.frame[12..], &options[12..]);

    // An atomic fragment (offset 0, no more fragments) is a whole packet (RFC 6946).
    let atomic = with_extensions(&data, &[(44, 0)]);
    assert_eq!(macs(&dp.run(&atomic).unwrap().frame).0, real);

    // A real fragment of a datagram to a VIP: dropped and counted, as in IPv4.
    let mut first_fragment = with_extensions(&data, &[(44, 0)]);
    first_fragment[14 + 40 + 3] = 1; // more fragments
    let before = dp.reason_count(Reason::Fragment);
    assert_eq!(dp.run(&first_fragment).unwrap().action, XDP_DROP);
    assert_eq!(dp.reason_count(Reason::Fragment), before + 1);

    // Five extension headers: more than the data plane walks; passed untouched.
    let long = with_extensions(&data, &[(0, 0), (60, 0), (60, 0), (60, 0), (60, 0)]);
    passed(&dp, &long, Reason::Ipv6ExtensionHeaders);

    // An extension header running past the datagram: malformed, passed.
    let mut truncated = with_extensions(&data, &[(60, 0)]);
    truncated[14 + 40 + 1] = 200;
    passed(&dp, &truncated, Reason::Malformed);
}

#[test]
fn mapped_addresses_never_reach_ipv4_services() {
    // ::ffff:198.18.0.100 is how the maps keep the IPv4 VIP: an IPv6 packet carrying it must
    // not be taken for IPv4 traffic, in either address.
    let r = router();
    let dp = dataplane(&r);
    let mapped = V4_VIP.to_ipv6_mapped();
    let to_mapped = tcp6(
        (CLIENT_MAC, LB_MAC),
        (CLIENT, 42000),
        (mapped, 443),
        SYN,
        b"",
    );
    passed(&dp, &to_mapped, Reason::Martian);
    let from_mapped = tcp6(
        (CLIENT_MAC, LB_MAC),
        (Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped(), 42000),
        (DR_VIP, 443),
        SYN,
        b"",
    );
    passed(&dp, &from_mapped, Reason::Martian);
    // Other sources no host has.
    for src in [
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    ] {
        let frame = tcp6((CLIENT_MAC, LB_MAC), (src, 42000), (DR_VIP, 443), SYN, b"");
        passed(&dp, &frame, Reason::Martian);
    }
}

#[test]
fn neighbour_discovery_and_echo_are_left_to_the_kernel() {
    let r = router();
    let dp = dataplane(&r);
    // A neighbour solicitation for the VIP, to its solicited-node multicast address.
    let solicited = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x100);
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&DR_VIP.octets());
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 1, 0])
        .ipv6(CLIENT.octets(), solicited.octets(), 255)
        .icmpv6_raw(135, 0, [0; 4]);
    let mut solicitation = Vec::new();
    builder.write(&mut solicitation, &DR_VIP.octets()).unwrap();
    let out = dp.run(&solicitation).unwrap();
    assert_eq!((out.action, out.frame), (XDP_PASS, solicitation));

    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT.octets(), DR_VIP.octets(), 64)
        .icmpv6_echo_request(7, 1);
    let mut ping = Vec::new();
    builder.write(&mut ping, b"ping").unwrap();
    passed(&dp, &ping, Reason::NotForVip);
}

#[test]
fn nat_translates_both_ways_with_hop_limit_and_checksums() {
    let r = router();
    let dp = dataplane(&r);
    let request = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 50000),
        (NAT_VIP, 104),
        SYN,
        b"A-ASSOCIATE",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(out.action, XDP_REDIRECT, "out of the inside interface");
    assert_eq!(macs(&out.frame), (NAT_REAL_MAC, r.in_mac));
    assert_eq!(
        seen6(&out.frame),
        Seen6 {
            src: (CLIENT, 50000),
            dst: (NAT_REAL, 11112),
            hop_limit: 63,
            payload: b"A-ASSOCIATE".to_vec(),
        }
    );
    let reply = tcp6(
        (NAT_REAL_MAC, r.in_mac),
        (NAT_REAL, 11112),
        (CLIENT, 50000),
        Flags::default(),
        b"A-ASSOCIATE-AC",
    );
    let out = dp.run_in(&r.ns, "in0", &reply);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(macs(&out.frame), (CLIENT_MAC, r.out_mac));
    assert_eq!(
        seen6(&out.frame),
        Seen6 {
            src: (NAT_VIP, 104),
            dst: (CLIENT, 50000),
            hop_limit: 63,
            payload: b"A-ASSOCIATE-AC".to_vec(),
        }
    );
    // Established packets (served from the flow cache) come out the same.
    for _ in 0..3 {
        let data = tcp6(
            (CLIENT_MAC, r.out_mac),
            (CLIENT, 50000),
            (NAT_VIP, 104),
            Flags::default(),
            b"P-DATA",
        );
        let out = dp.run_in(&r.ns, "out0", &data);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(seen6(&out.frame).dst, (NAT_REAL, 11112));
    }
    // A hop limit of 1 would expire here: the kernel answers it.
    let mut expiring = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 50000),
        (NAT_VIP, 104),
        Flags::default(),
        b"",
    );
    expiring[14 + 7] = 1;
    let out = dp.run_in(&r.ns, "out0", &expiring);
    assert_eq!((out.action, out.frame), (XDP_PASS, expiring));
}

#[test]
fn snat_gives_the_real_the_balancer_as_source_and_returns_replies() {
    let r = router();
    let dp = dataplane(&r);
    let request = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 51000),
        (SNAT_VIP, 2575),
        SYN,
        b"MSH|",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen6(&out.frame);
    assert_eq!(s.dst, (SNAT_REAL, 2575));
    assert_eq!(s.src.0, SNAT_ADDRESS, "the real sees the SNAT address");
    let port = s.src.1;
    assert!(
        (40960..57344).contains(&port),
        "port {port} of xdplb's range"
    );

    let reply = tcp6(
        (SNAT_REAL_MAC, r.in_mac),
        (SNAT_REAL, 2575),
        (SNAT_ADDRESS, port),
        Flags::default(),
        b"MSA|AA",
    );
    let out = dp.run_in(&r.ns, "in0", &reply);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(macs(&out.frame), (CLIENT_MAC, r.out_mac));
    let s = seen6(&out.frame);
    assert_eq!((s.src, s.dst), ((SNAT_VIP, 2575), (CLIENT, 51000)));

    // A packet to the SNAT address in the range that belongs to no flow is dropped.
    let stray = tcp6(
        (SNAT_REAL_MAC, r.in_mac),
        (SNAT_REAL, 2575),
        (SNAT_ADDRESS, if port == 40960 { 40961 } else { 40960 }),
        Flags::default(),
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "in0", &stray).action, XDP_DROP);
}

/// An ICMPv6 error from `from` to `to` quoting `quoted` (an IPv6 datagram), as a router sends.
fn icmp6_error(
    macs: ([u8; 6], [u8; 6]),
    from: Ipv6Addr,
    to: Ipv6Addr,
    kind: Icmpv6Type,
    quoted: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(from.octets(), to.octets(), 64)
        .icmpv6(kind);
    let mut frame = Vec::new();
    builder.write(&mut frame, quoted).unwrap();
    frame
}

/// The IPv6 datagram of a frame (what an error quotes).
fn datagram(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// An error's outer addresses and the quote's 5-tuple, the ICMPv6 checksum checked, and the
/// quoted TCP checksum when whole.
fn icmp6_out(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, (Ipv6Addr, u16), (Ipv6Addr, u16)) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6")
    };
    let icmp: &Icmpv6Slice = icmp;
    assert!(
        icmp.is_checksum_valid(src.octets(), dst.octets()),
        "ICMPv6 checksum"
    );
    let quote = icmp.payload();
    let quoted = SlicedPacket::from_ip(quote).expect("the quote parses");
    let Some(NetSlice::Ipv6(qip)) = &quoted.net else {
        panic!("quote not IPv6")
    };
    let Some(TransportSlice::Tcp(tcp)) = &quoted.transport else {
        panic!("quote not TCP")
    };
    let h = tcp.to_header();
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv6(&qip.header().to_header(), tcp.payload())
            .unwrap(),
        "quoted TCP checksum"
    );
    (
        src,
        dst,
        (qip.header().source_addr(), tcp.source_port()),
        (qip.header().destination_addr(), tcp.destination_port()),
    )
}

#[test]
fn packet_too_big_about_a_dr_reply_goes_to_the_real_that_owns_the_flow() {
    let r = router();
    let dp = dataplane(&r);
    for sport in [43000, 43001, 43002, 43003] {
        let syn = dr_packet(sport, SYN);
        let real = dr_forwarded(&syn, &dp.run(&syn).unwrap());
        // The real's reply (from the VIP) hit a smaller link behind a router.
        let reply = tcp6(
            (real, CLIENT_MAC),
            (DR_VIP, 443),
            (CLIENT, sport),
            Flags::default(),
            &[0u8; 1300],
        );
        let error = icmp6_error(
            ([0x02, 0, 0, 0, 0x66, 0xfe], LB_MAC),
            ROUTER,
            DR_VIP,
            Icmpv6Type::PacketTooBig { mtu: 1280 },
            &datagram(&reply)[..1232],
        );
        let out = dp.run(&error).unwrap();
        assert_eq!(out.action, XDP_TX);
        assert_eq!(macs(&out.frame), (real, LB_MAC), "to the flow's real");
        assert_eq!(&out.frame[12..], &error[12..]);
    }
    // Time exceeded quoting a packet of no flow of a VIP: passed.
    let other = tcp6(
        (CLIENT_MAC, LB_MAC),
        (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99), 443),
        (CLIENT, 44000),
        Flags::default(),
        b"",
    );
    let error = icmp6_error(
        ([0x02, 0, 0, 0, 0x66, 0xfe], LB_MAC),
        ROUTER,
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
        datagram(&other),
    );
    passed(&dp, &error, Reason::IcmpUnmatched);
}

#[test]
fn icmpv6_errors_about_nat_flows_are_translated_both_ways() {
    let r = router();
    let dp = dataplane(&r);
    let request = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 52000),
        (NAT_VIP, 104),
        SYN,
        b"",
    );
    let forwarded = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(forwarded.action, XDP_REDIRECT);

    // In: a router on the client side says the VIP's reply was too big. The real sent it as
    // real:11112 -> client, and must see that in the quote, addressed to itself.
    let reply_as_sent = tcp6(
        (CLIENT_MAC, r.out_mac),
        (NAT_VIP, 104),
        (CLIENT, 52000),
        Flags::default(),
        &[0u8; 64],
    );
    let error = icmp6_error(
        ([0x02, 0, 0, 0, 0x66, 0xfe], r.out_mac),
        ROUTER,
        NAT_VIP,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        datagram(&reply_as_sent),
    );
    let out = dp.run_in(&r.ns, "out0", &error);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(macs(&out.frame), (NAT_REAL_MAC, r.in_mac));
    let (src, dst, quote_src, quote_dst) = icmp6_out(&out.frame);
    assert_eq!((src, dst), (ROUTER, NAT_REAL));
    assert_eq!((quote_src, quote_dst), ((NAT_REAL, 11112), (CLIENT, 52000)));

    // Out: the real says its port is unreachable, quoting what the balancer sent it.
    let error = icmp6_error(
        (NAT_REAL_MAC, r.in_mac),
        NAT_REAL,
        CLIENT,
        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
        datagram(&forwarded.frame),
    );
    let out = dp.run_in(&r.ns, "in0", &error);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(macs(&out.frame), (CLIENT_MAC, r.out_mac));
    let (src, dst, quote_src, quote_dst) = icmp6_out(&out.frame);
    assert_eq!(
        (src, dst),
        (NAT_VIP, CLIENT),
        "the real's error comes from the VIP"
    );
    assert_eq!((quote_src, quote_dst), ((CLIENT, 52000), (NAT_VIP, 104)));
}

#[test]
fn ipv4_and_ipv6_services_live_side_by_side() {
    let r = router();
    let dp = dataplane(&r);
    let v4 = xdplb_tests::frames::tcp(
        &xdplb_tests::frames::Flow::new(Ipv4Addr::new(198, 18, 0, 1), 45000, V4_VIP, 443),
        &xdplb_tests::frames::Shape {
            syn: true,
            ..Default::default()
        },
        b"",
    );
    let out = dp.run(&v4).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame).0, V4_REAL.1);
    let v6 = dr_packet(45000, SYN);
    dr_forwarded(&v6, &dp.run(&v6).unwrap());
    // IPv6 to the IPv4 VIP's port on another IPv6 address: not a VIP.
    let stray = tcp6(
        (CLIENT_MAC, LB_MAC),
        (CLIENT, 45001),
        (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x200), 443),
        SYN,
        b"",
    );
    passed(&dp, &stray, Reason::NotForVip);
    let _ = IpNumber::TCP;
}

#[test]
fn hostile_ipv6_headers_are_refused_as_a_router_would() {
    let r = router();
    let dp = dataplane(&r);
    let data = dr_packet(46000, Flags::default());
    // A routing header with segments left: the VIP is a waypoint, not the destination.
    let mut waypoint = with_extensions(&data, &[(43, 0)]);
    waypoint[14 + 40 + 3] = 1;
    passed(&dp, &waypoint, Reason::NotForVip);
    // With no segments left it is the packet's end: forwarded.
    let done = with_extensions(&data, &[(43, 0)]);
    assert_eq!(dp.run(&done).unwrap().action, XDP_TX);
    // A later fragment whose first fragment began with destination options: its payload is
    // data, never read as headers (before, it could be taken for a long header chain).
    let mut later = with_extensions(&data, &[(44, 0)]);
    later[14 + 40] = 60;
    later[14 + 40 + 3] = 0x08; // offset 1 (8 bytes)
    passed(&dp, &later, Reason::NotForVip);
    // A later fragment of TCP to a VIP: dropped, as in IPv4.
    let mut later_tcp = with_extensions(&data, &[(44, 0)]);
    later_tcp[14 + 40 + 3] = 0x08;
    let before = dp.reason_count(Reason::Fragment);
    assert_eq!(dp.run(&later_tcp).unwrap().action, XDP_DROP);
    assert_eq!(dp.reason_count(Reason::Fragment), before + 1);
    // A link-local source has no route back: no flow is made for it.
    let link_local = tcp6(
        (CLIENT_MAC, LB_MAC),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 46001),
        (DR_VIP, 443),
        SYN,
        b"",
    );
    passed(&dp, &link_local, Reason::Martian);
}

#[test]
fn a_client_address_that_looks_half_mapped_still_gets_its_packet_too_big() {
    // 2001:2::ffff:c000:201 has the IPv4-mapped prefix's third word, but is no mapped address.
    let r = router();
    let dp = dataplane(&r);
    let client = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0xffff, 0xc000, 0x201);
    let syn = tcp6(
        (CLIENT_MAC, LB_MAC),
        (client, 47000),
        (DR_VIP, 443),
        SYN,
        b"",
    );
    let real = dr_forwarded(&syn, &dp.run(&syn).unwrap());
    let reply = tcp6(
        (real, CLIENT_MAC),
        (DR_VIP, 443),
        (client, 47000),
        Flags::default(),
        &[0u8; 1300],
    );
    let error = icmp6_error(
        ([0x02, 0, 0, 0, 0x66, 0xfe], LB_MAC),
        ROUTER,
        DR_VIP,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        &datagram(&reply)[..1232],
    );
    let out = dp.run(&error).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame), (real, LB_MAC));
}

#[test]
fn a_packet_over_the_egress_mtu_is_refused_even_with_its_next_hop_cached() {
    // The FIB refuses a packet over the egress MTU ("fragmentation needed"), so the kernel
    // answers with "packet too big". A flow's later packets are served with the next hop its
    // first one found: they must be held to the same MTU.
    let r = router();
    r.ns.ip(&["link", "set", "in0", "mtu", "1280"]).unwrap();
    let dp = dataplane(&r);
    let small = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 53000),
        (NAT_VIP, 104),
        SYN,
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "out0", &small).action, XDP_REDIRECT);
    let fits = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 53000),
        (NAT_VIP, 104),
        Flags::default(),
        &[0u8; 1000],
    );
    assert_eq!(dp.run_in(&r.ns, "out0", &fits).action, XDP_REDIRECT);
    let too_big = tcp6(
        (CLIENT_MAC, r.out_mac),
        (CLIENT, 53000),
        (NAT_VIP, 104),
        Flags::default(),
        &[0u8; 1400],
    );
    passed_in(&dp, &r, &too_big, Reason::NoRoute);
}

fn passed_in(dp: &Dataplane, r: &FibRouter, frame: &[u8], reason: Reason) {
    let before = dp.reason_count(reason);
    let out = dp.run_in(&r.ns, "out0", frame);
    assert_eq!(
        out.action, XDP_PASS,
        "expected the frame passed as {reason:?}"
    );
    assert_eq!(out.frame, frame, "a passed frame is untouched");
    assert_eq!(dp.reason_count(reason), before + 1, "counted as {reason:?}");
}
