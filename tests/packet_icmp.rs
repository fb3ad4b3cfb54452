//! ICMP errors about VIP flows (Path MTU discovery above all), packet by packet through the
//! real XDP program: DR sends them to the real that owns the flow, NAT translates them both
//! ways. Frames are built and checked with etherparse.

use std::net::Ipv4Addr;

use etherparse::{
    IcmpEchoHeader, Icmpv4Slice, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
};
use lb_common::counters::Reason;
use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, Outcome, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, CLIENT_MAC, Flow, LB_MAC, Shape, macs},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A router between the balancer and the client (a smaller-MTU link behind it).
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// A router on the servers' side.
const INSIDE_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const NAT_REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const NAT_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x19, 0x11];
const SNAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
/// The balancer's inside address, the SNAT service's source toward the real.
const SNAT_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const DR_REALS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (Ipv4Addr::new(198, 18, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
    (Ipv4Addr::new(198, 18, 0, 13), [0x02, 0, 0, 0, 0, 0x13]),
];

const POLICY: &str = "
interfaces:
  - name: out0
  - name: in0
    role: inside
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
  - name: viewer
    vip: 198.18.0.101
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: snat-viewer
    vip: 198.18.0.102
    ports: [443]
    protocol: tcp
    forwarding: snat
    snat_address: 198.19.0.1
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: dns
    vip: 198.18.0.101
    ports: [53]
    protocol: udp
    forwarding: nat
    reals:
      - address: 198.19.0.11
";

fn setup() -> (FibRouter, Dataplane) {
    let router = FibRouter::new(&[
        (CLIENT, CLIENT_MAC, "out0"),
        (NAT_REAL, NAT_REAL_MAC, "in0"),
    ])
    .unwrap();
    let dp = Dataplane::on_router(POLICY, &DR_REALS, &router);
    (router, dp)
}

/// The IP datagram of an Ethernet frame without a VLAN tag.
fn datagram(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// A TCP packet `from` -> `to` with `payload`, TTL `ttl`, as its sender put it on the wire.
fn tcp_datagram(from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xaa], [2, 0, 0, 0, 0, 0xbb])
        .ipv4(from.0.octets(), to.0.octets(), ttl)
        .tcp(from.1, to.1, 7000, 64240)
        .ack(1)
        .write(&mut frame, payload)
        .unwrap();
    datagram(&frame).to_vec()
}

fn udp_datagram(from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xaa], [2, 0, 0, 0, 0, 0xbb])
        .ipv4(from.0.octets(), to.0.octets(), ttl)
        .udp(from.1, to.1)
        .write(&mut frame, payload)
        .unwrap();
    datagram(&frame).to_vec()
}

/// An ICMP error frame `from` -> `to`, quoting `quote`, addressed to `dst_mac`.
fn icmp_frame(
    from: Ipv4Addr,
    to: Ipv4Addr,
    kind: Icmpv4Type,
    quote: &[u8],
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xcc], dst_mac)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(kind)
        .write(&mut frame, quote)
        .unwrap();
    frame
}

fn frag_needed() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    })
}

/// The ICMP message of `frame` after the program: its outer addresses and TTL, and its quote.
/// Asserts the outer IP checksum and the ICMP checksum, with etherparse.
fn icmp_out(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, Vec<u8>) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("output parses");
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4")
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "outer IP checksum"
    );
    let icmp = Icmpv4Slice::from_slice(ip.payload().payload).unwrap();
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload()),
        "ICMP checksum"
    );
    (
        header.source.into(),
        header.destination.into(),
        header.time_to_live,
        icmp.payload().to_vec(),
    )
}

fn dr_syn(sport: u16) -> Vec<u8> {
    frames::tcp(
        &Flow::new(CLIENT, sport, DR_VIP, 104),
        &Shape {
            syn: true,
            ..Default::default()
        },
        b"",
    )
}

#[test]
fn dr_fragmentation_needed_goes_to_the_real_that_owns_the_flow() {
    let (_router, dp) = setup();
    for sport in 40000..40030 {
        let open = dp.run(&dr_syn(sport)).unwrap();
        assert_eq!(open.action, XDP_TX);
        let real_mac = macs(&open.frame).0;
        // The real's reply (VIP:104 -> client), too big for the client's link: the router
        // tells its source, the VIP, quoting its IP header and the start of its TCP header.
        let reply = tcp_datagram((DR_VIP, 104), (CLIENT, sport), 63, &[0u8; 1400]);
        for quote_len in [28, 48, 576] {
            let error = icmp_frame(ROUTER, DR_VIP, frag_needed(), &reply[..quote_len], LB_MAC);
            let out = dp.run(&error).unwrap();
            assert_eq!(out.action, XDP_TX, "sent on to the real");
            assert_eq!(
                macs(&out.frame),
                (real_mac, LB_MAC),
                "to the real that owns the flow (client port {sport})"
            );
            assert_eq!(&out.frame[12..], &error[12..], "DR changes only the MACs");
        }
    }
    // Time exceeded is an error about the flow too.
    let open = dp.run(&dr_syn(40100)).unwrap();
    let reply = tcp_datagram((DR_VIP, 104), (CLIENT, 40100), 1, b"");
    let error = icmp_frame(
        ROUTER,
        DR_VIP,
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
        &reply,
        LB_MAC,
    );
    let out = dp.run(&error).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame).0, macs(&open.frame).0);
}

#[test]
fn dr_errors_about_a_flow_without_an_entry_go_where_its_packets_would() {
    let (_router, dp) = setup();
    let flows_before = dp.maps().flows.keys().count();
    let mut to_real = Vec::new();
    for sport in 41000..41020 {
        let reply = tcp_datagram((DR_VIP, 104), (CLIENT, sport), 63, b"");
        let out = dp
            .run(&icmp_frame(ROUTER, DR_VIP, frag_needed(), &reply, LB_MAC))
            .unwrap();
        assert_eq!(out.action, XDP_TX);
        to_real.push(macs(&out.frame).0);
    }
    assert_eq!(
        dp.maps().flows.keys().count(),
        flows_before,
        "an ICMP error creates no flow"
    );
    // The flows' own packets, arriving now, go to the same reals.
    for (i, sport) in (41000..41020).enumerate() {
        let open = dp.run(&dr_syn(sport)).unwrap();
        assert_eq!(macs(&open.frame).0, to_real[i], "client port {sport}");
    }
}

#[test]
fn forged_errors_move_no_flow_and_are_passed_when_they_match_none() {
    let (_router, dp) = setup();
    let open = dp.run(&dr_syn(42000)).unwrap();
    let real_mac = macs(&open.frame).0;
    let flows_before = dp.maps().flows.keys().count();
    // A flood of errors quoting made-up flows to the VIP, from random ports.
    for sport in 1..2000u16 {
        let reply = tcp_datagram((DR_VIP, 104), (CLIENT, sport.wrapping_mul(31)), 63, b"");
        let _ = dp
            .run(&icmp_frame(ROUTER, DR_VIP, frag_needed(), &reply, LB_MAC))
            .unwrap();
    }
    assert_eq!(dp.maps().flows.keys().count(), flows_before);
    let again = dp
        .run(&frames::tcp(
            &Flow::new(CLIENT, 42000, DR_VIP, 104),
            &Shape::default(),
            b"",
        ))
        .unwrap();
    assert_eq!(
        macs(&again.frame).0,
        real_mac,
        "the flow stayed on its real"
    );

    let passed = |frame: &[u8], reason: Reason| {
        let before = dp.reason_count(reason);
        let out: Outcome = dp.run(frame).unwrap();
        assert_eq!(out.action, XDP_PASS, "{reason:?}");
        assert_eq!(out.frame, frame, "passed unchanged");
        assert_eq!(dp.reason_count(reason), before + 1, "{reason:?} counted");
    };
    // A port the VIP does not serve, or a source that is not the VIP.
    let other_port = tcp_datagram((DR_VIP, 105), (CLIENT, 42000), 63, b"");
    passed(
        &icmp_frame(ROUTER, DR_VIP, frag_needed(), &other_port, LB_MAC),
        Reason::IcmpUnmatched,
    );
    let not_from_vip = tcp_datagram((CLIENT, 42000), (ROUTER, 104), 63, b"");
    passed(
        &icmp_frame(ROUTER, DR_VIP, frag_needed(), &not_from_vip, LB_MAC),
        Reason::IcmpUnmatched,
    );
    // A quote too short to hold the ports, or a broken quoted header.
    let reply = tcp_datagram((DR_VIP, 104), (CLIENT, 42000), 63, b"");
    passed(
        &icmp_frame(ROUTER, DR_VIP, frag_needed(), &reply[..24], LB_MAC),
        Reason::Malformed,
    );
    let mut bad_version = reply.clone();
    bad_version[0] = 0x65;
    passed(
        &icmp_frame(ROUTER, DR_VIP, frag_needed(), &bad_version, LB_MAC),
        Reason::Malformed,
    );
    // Addressed to another station's MAC.
    passed(
        &icmp_frame(ROUTER, DR_VIP, frag_needed(), &reply, [2, 0, 0, 0, 0, 0x77]),
        Reason::OtherHost,
    );
    // Echo requests to the VIP are the kernel's to answer.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT.octets(), DR_VIP.octets(), 64)
        .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 }))
        .write(&mut ping, b"ping")
        .unwrap();
    passed(&ping, Reason::NotForVip);
}

#[test]
fn nat_errors_about_replies_are_translated_in_to_the_real() {
    let (router, dp) = setup();
    let syn = frames::tcp(
        &Flow::new(CLIENT, 50000, NAT_VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(router.out_mac),
            ..Default::default()
        },
        b"",
    );
    assert_eq!(dp.run_in(&router.ns, "out0", &syn).action, XDP_REDIRECT);
    // The real's reply, as it sent it and as the balancer passed it on (source VIP:443, one
    // hop less); the router before the client quotes the latter.
    let sent = tcp_datagram((NAT_REAL, 8443), (CLIENT, 50000), 63, &[7u8; 1400]);
    let translated = tcp_datagram((NAT_VIP, 443), (CLIENT, 50000), 63, &[7u8; 1400]);
    for quote_len in [28, 40, 576] {
        let error = icmp_frame(
            ROUTER,
            NAT_VIP,
            frag_needed(),
            &translated[..quote_len],
            router.out_mac,
        );
        let out = dp.run_in(&router.ns, "out0", &error);
        assert_eq!(out.action, XDP_REDIRECT, "in to the real");
        assert_eq!(macs(&out.frame), (NAT_REAL_MAC, router.in_mac));
        let (src, dst, ttl, quote) = icmp_out(&out.frame);
        assert_eq!((src, dst, ttl), (ROUTER, NAT_REAL, 63));
        // The quote is the real's own packet again: addresses, ports, IP checksum, and the
        // TCP checksum where the quote holds it.
        assert_eq!(quote, &sent[..quote_len], "quote of {quote_len} bytes");
    }
    // An error about a flow that does not exist is passed.
    let unknown = tcp_datagram((NAT_VIP, 443), (CLIENT, 50001), 63, b"");
    let error = icmp_frame(ROUTER, NAT_VIP, frag_needed(), &unknown, router.out_mac);
    let out = dp.run_in(&router.ns, "out0", &error);
    assert_eq!((out.action, out.frame), (XDP_PASS, error));
}

#[test]
fn nat_errors_about_requests_are_translated_out_to_the_client() {
    let (router, dp) = setup();
    let query = frames::udp(
        &Flow::new(CLIENT, 5353, NAT_VIP, 53),
        &Shape {
            dst_mac: Some(router.out_mac),
            ..Default::default()
        },
        b"query",
    );
    assert_eq!(dp.run_in(&router.ns, "out0", &query).action, XDP_REDIRECT);
    // The client's datagram as it sent it, and as the balancer passed it to the real.
    let sent = udp_datagram((CLIENT, 5353), (NAT_VIP, 53), 63, b"query");
    let translated = udp_datagram((CLIENT, 5353), (NAT_REAL, 53), 63, b"query");
    // The real answers "port unreachable" itself: the client must see it from the VIP.
    let unreachable = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let mut error = icmp_frame(NAT_REAL, CLIENT, unreachable, &translated, router.in_mac);
    error[6..12].copy_from_slice(&NAT_REAL_MAC);
    let out = dp.run_in(&router.ns, "in0", &error);
    assert_eq!(out.action, XDP_REDIRECT, "out to the client");
    assert_eq!(macs(&out.frame), (CLIENT_MAC, router.out_mac));
    let (src, dst, ttl, quote) = icmp_out(&out.frame);
    assert_eq!((src, dst, ttl), (NAT_VIP, CLIENT, 63));
    assert_eq!(
        quote, sent,
        "the client's own datagram, UDP checksum included"
    );

    // A router on the servers' side keeps its own address.
    let exceeded = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);
    let error = icmp_frame(
        INSIDE_ROUTER,
        CLIENT,
        exceeded,
        &translated[..28],
        router.in_mac,
    );
    let out = dp.run_in(&router.ns, "in0", &error);
    assert_eq!(out.action, XDP_REDIRECT);
    let (src, dst, _, quote) = icmp_out(&out.frame);
    assert_eq!((src, dst), (INSIDE_ROUTER, CLIENT));
    assert_eq!(quote, &sent[..28]);
}

/// A SNAT flow's source port toward the real, from its first packet.
fn snat_flow(router: &FibRouter, dp: &Dataplane, client_port: u16) -> u16 {
    let syn = frames::tcp(
        &Flow::new(CLIENT, client_port, SNAT_VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(router.out_mac),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run_in(&router.ns, "out0", &syn);
    assert_eq!(out.action, XDP_REDIRECT);
    frames::seen(&out.frame).sport
}

/// Path MTU discovery through SNAT: a client-side router's error about a reply reaches the
/// real quoting the packet the real sent (to the SNAT address and port).
#[test]
fn snat_errors_about_replies_are_translated_in_to_the_real() {
    let (router, dp) = setup();
    let port = snat_flow(&router, &dp, 50010);
    let sent = tcp_datagram((NAT_REAL, 8443), (SNAT_ADDRESS, port), 63, &[7u8; 1400]);
    let translated = tcp_datagram((SNAT_VIP, 443), (CLIENT, 50010), 63, &[7u8; 1400]);
    for quote_len in [28, 40, 576] {
        let error = icmp_frame(
            ROUTER,
            SNAT_VIP,
            frag_needed(),
            &translated[..quote_len],
            router.out_mac,
        );
        let out = dp.run_in(&router.ns, "out0", &error);
        assert_eq!(out.action, XDP_REDIRECT, "in to the real");
        assert_eq!(macs(&out.frame), (NAT_REAL_MAC, router.in_mac));
        let (src, dst, ttl, quote) = icmp_out(&out.frame);
        assert_eq!((src, dst, ttl), (ROUTER, NAT_REAL, 63));
        assert_eq!(quote, &sent[..quote_len], "quote of {quote_len} bytes");
    }
}

/// An error about a packet the balancer sent to a SNAT real comes to the SNAT address; it goes
/// on to the client, quoting the client's own packet.
#[test]
fn snat_errors_about_requests_are_translated_out_to_the_client() {
    let (router, dp) = setup();
    let port = snat_flow(&router, &dp, 50011);
    let sent = tcp_datagram((CLIENT, 50011), (SNAT_VIP, 443), 63, &[5u8; 1400]);
    let translated = tcp_datagram((SNAT_ADDRESS, port), (NAT_REAL, 8443), 63, &[5u8; 1400]);
    // A router on the servers' side: too big for its next link.
    let error = icmp_frame(
        INSIDE_ROUTER,
        SNAT_ADDRESS,
        frag_needed(),
        &translated[..576],
        router.in_mac,
    );
    let out = dp.run_in(&router.ns, "in0", &error);
    assert_eq!(out.action, XDP_REDIRECT, "out to the client");
    assert_eq!(macs(&out.frame), (CLIENT_MAC, router.out_mac));
    let (src, dst, ttl, quote) = icmp_out(&out.frame);
    assert_eq!((src, dst, ttl), (INSIDE_ROUTER, CLIENT, 63));
    assert_eq!(
        quote,
        &sent[..576],
        "the client's own packet, TCP checksum included"
    );
    // The real's own error seems to come from the VIP.
    let unreachable = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let mut error = icmp_frame(
        NAT_REAL,
        SNAT_ADDRESS,
        unreachable,
        &translated[..28],
        router.in_mac,
    );
    error[6..12].copy_from_slice(&NAT_REAL_MAC);
    let out = dp.run_in(&router.ns, "in0", &error);
    assert_eq!(out.action, XDP_REDIRECT);
    let (src, dst, _, quote) = icmp_out(&out.frame);
    assert_eq!((src, dst), (SNAT_VIP, CLIENT));
    assert_eq!(quote, &sent[..28]);
}
