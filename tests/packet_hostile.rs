//! Frames an attacker, a broken NIC or a promiscuous interface hands the data plane: each must
//! pass untouched (or be dropped where the README says so), be counted under its reason, and
//! never be forwarded, rewritten or leave a flow behind that breaks a later connection.

use std::net::Ipv4Addr;

use etherparse::Ipv4Header;
use lb_common::counters::Reason;
use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, Outcome, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, CLIENT_MAC, Flow, Shape, assert_checksums_valid, macs},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const UNRESOLVED_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const NAT_REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const NAT_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x19, 0x11];
const DR_REALS: [(Ipv4Addr, [u8; 6]); 2] = [
    (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (Ipv4Addr::new(198, 18, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
];
/// Another station on the segment: frames to it reach us only through promiscuity or floods.
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

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
  - name: syslog
    vip: 198.18.0.100
    ports: [514]
    protocol: udp
    forwarding: dr
    reals:
      - address: 198.18.0.11
  - name: viewer
    vip: 198.18.0.101
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: unresolved
    vip: 198.18.0.102
    ports: [2575]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.12
";

/// A router namespace for NAT's next hops (198.19.0.12 has a route but no neighbour), and the
/// program, registered on its interfaces and on loopback (DR frames, `Dataplane::run`).
fn setup() -> (FibRouter, Dataplane) {
    let router = FibRouter::new(&[
        (CLIENT, CLIENT_MAC, "out0"),
        (NAT_REAL, NAT_REAL_MAC, "in0"),
    ])
    .unwrap();
    let dp = Dataplane::on_router(POLICY, &DR_REALS, &router);
    (router, dp)
}

/// Asserts the program passed `input` to the kernel byte for byte, counted under `reason`.
fn assert_passed_as(dp: &Dataplane, input: &[u8], out: &Outcome, reason: Reason, before: u64) {
    assert_eq!(out.action, XDP_PASS, "expected XDP_PASS ({reason:?})");
    assert_eq!(out.frame, input, "a passed frame must be unchanged");
    assert_eq!(
        dp.reason_count(reason),
        before + 1,
        "counted as {}",
        reason.name()
    );
}

/// Runs `frame` on loopback (DR) and asserts it was passed untouched under `reason`.
fn assert_dr_refuses(dp: &Dataplane, frame: &[u8], reason: Reason) {
    let before = dp.reason_count(reason);
    let out = dp.run(frame).unwrap();
    assert_passed_as(dp, frame, &out, reason, before);
}

fn dr_tcp(sport: u16, shape: Shape, payload: &[u8]) -> Vec<u8> {
    frames::tcp(&Flow::new(CLIENT, sport, DR_VIP, 104), &shape, payload)
}

/// Rewrites the IPv4 header of `frame` (no VLAN tag) with `change`, then fixes its checksum.
fn edit_ip(frame: &mut [u8], change: impl FnOnce(&mut Ipv4Header)) {
    let (mut ip, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    change(&mut ip);
    ip.header_checksum = ip.calc_header_checksum();
    let bytes = ip.to_bytes();
    frame[14..14 + bytes.len()].copy_from_slice(&bytes);
}

/// Sets the IPv4 total length field directly (etherparse refuses inconsistent ones) and
/// recomputes the header checksum.
fn set_total_length(frame: &mut [u8], total: u16) {
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[24..26].fill(0);
    let (ip, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    frame[24..26].copy_from_slice(&ip.calc_header_checksum().to_be_bytes());
}

#[test]
fn frames_unicast_to_another_station_are_never_forwarded() {
    let (router, dp) = setup();
    // DR, first packet and (after a packet of ours cached the flow) an established one.
    let to_other = |syn| {
        dr_tcp(
            40000,
            Shape {
                syn,
                dst_mac: Some(OTHER_MAC),
                ..Default::default()
            },
            b"",
        )
    };
    assert_dr_refuses(&dp, &to_other(true), Reason::OtherHost);
    assert_eq!(
        dp.run(&dr_tcp(
            40000,
            Shape {
                syn: true,
                ..Default::default()
            },
            b""
        ))
        .unwrap()
        .action,
        XDP_TX
    );
    assert_dr_refuses(&dp, &to_other(false), Reason::OtherHost);
    // Broadcast and multicast keep their own reason.
    let broadcast = dr_tcp(
        40000,
        Shape {
            dst_mac: Some([0xff; 6]),
            ..Default::default()
        },
        b"",
    );
    assert_dr_refuses(&dp, &broadcast, Reason::NotUnicast);
    // A fragment to a VIP is dropped only when it was sent to us.
    let fragment = dr_tcp(
        40001,
        Shape {
            fragment: Some((true, 0)),
            dst_mac: Some(OTHER_MAC),
            ..Default::default()
        },
        b"12345678",
    );
    assert_dr_refuses(&dp, &fragment, Reason::OtherHost);

    // NAT, both directions: a client's packet to the VIP and a real's reply of an open flow.
    let request = |dst_mac, syn| {
        frames::tcp(
            &Flow::new(CLIENT, 50000, NAT_VIP, 443),
            &Shape {
                syn,
                dst_mac: Some(dst_mac),
                ..Default::default()
            },
            b"",
        )
    };
    let open = dp.run_in(&router.ns, "out0", &request(router.out_mac, true));
    assert_eq!(open.action, XDP_REDIRECT);
    let before = dp.reason_count(Reason::OtherHost);
    let foreign = request(OTHER_MAC, false);
    let out = dp.run_in(&router.ns, "out0", &foreign);
    assert_passed_as(&dp, &foreign, &out, Reason::OtherHost, before);
    let mut reply = frames::tcp(
        &Flow::new(NAT_REAL, 8443, CLIENT, 50000),
        &Shape {
            dst_mac: Some(OTHER_MAC),
            ..Default::default()
        },
        b"",
    );
    reply[6..12].copy_from_slice(&NAT_REAL_MAC);
    let before = dp.reason_count(Reason::OtherHost);
    let out = dp.run_in(&router.ns, "in0", &reply);
    assert_passed_as(&dp, &reply, &out, Reason::OtherHost, before);
    // A frame to the MAC of the *other* interface is not ours on this one either.
    let crossed = request(router.in_mac, false);
    let before = dp.reason_count(Reason::OtherHost);
    let out = dp.run_in(&router.ns, "out0", &crossed);
    assert_passed_as(&dp, &crossed, &out, Reason::OtherHost, before);
}

#[test]
fn a_transport_header_beyond_the_ip_datagram_is_malformed() {
    let (_router, dp) = setup();
    // The IP total length ends inside the TCP header: the rest of it lies in what is only
    // Ethernet padding.
    let mut tcp = dr_tcp(40010, Shape::default(), b"");
    set_total_length(&mut tcp, 20 + 12);
    assert_dr_refuses(&dp, &tcp, Reason::Malformed);
    // The same with UDP: the length field says 8 but the datagram ends after 4 bytes.
    let mut udp = frames::udp(
        &Flow::new(CLIENT, 40011, DR_VIP, 514),
        &Shape::default(),
        b"",
    );
    set_total_length(&mut udp, 20 + 4);
    assert_dr_refuses(&dp, &udp, Reason::Malformed);
    // UDP length larger than the IP payload, or smaller than its own header.
    for bad_len in [8 + 5 + 1, 7, 0] {
        let mut udp = frames::udp(
            &Flow::new(CLIENT, 40012, DR_VIP, 514),
            &Shape::default(),
            b"hello",
        );
        udp[38..40].copy_from_slice(&(bad_len as u16).to_be_bytes());
        assert_dr_refuses(&dp, &udp, Reason::Malformed);
    }
    // Well-formed with Ethernet padding after the datagram (a 60-byte minimum frame): forwarded.
    let mut padded = frames::udp(
        &Flow::new(CLIENT, 40013, DR_VIP, 514),
        &Shape::default(),
        b"",
    );
    padded.resize(60, 0);
    let out = dp.run(&padded).unwrap();
    assert_eq!(out.action, XDP_TX, "padding after a whole datagram is fine");
    assert_eq!(&out.frame[12..], &padded[12..]);
}

#[test]
fn a_tcp_data_offset_outside_the_datagram_is_malformed() {
    let (_router, dp) = setup();
    for offset in [0u8, 1, 4, 6, 15] {
        let mut frame = dr_tcp(40020, Shape::default(), b"");
        // The data offset is the high nibble of TCP byte 12 (frame byte 14 + 20 + 12).
        frame[46] = (offset << 4) | (frame[46] & 0x0f);
        assert_dr_refuses(&dp, &frame, Reason::Malformed);
    }
    // Offset 6 with 4 bytes of options present: well-formed, forwarded.
    let mut frame = dr_tcp(40021, Shape::default(), &[1, 1, 1, 0]);
    frame[46] = (6 << 4) | (frame[46] & 0x0f);
    assert_eq!(dp.run(&frame).unwrap().action, XDP_TX);
}

#[test]
fn a_wrong_ip_header_checksum_or_a_martian_source_is_never_forwarded() {
    let (_router, dp) = setup();
    let mut frame = dr_tcp(40030, Shape::default(), b"");
    frame[24] ^= 0x40; // checksum's high byte
    assert_dr_refuses(&dp, &frame, Reason::Malformed);
    // With IP options, the options count too.
    let mut frame = dr_tcp(
        40031,
        Shape {
            ip_options: true,
            ..Default::default()
        },
        b"",
    );
    frame[14 + 21] ^= 0x01; // inside the options
    assert_dr_refuses(&dp, &frame, Reason::Malformed);
    for source in [
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(255, 255, 255, 255),
        DR_VIP,
    ] {
        let mut frame = dr_tcp(40032, Shape::default(), b"");
        edit_ip(&mut frame, |ip| ip.source = source.octets());
        assert_dr_refuses(&dp, &frame, Reason::Martian);
    }
}

#[test]
fn a_nat_flow_whose_first_packet_was_refused_still_gets_its_replies_translated() {
    let (router, dp) = setup();
    let shape = |syn| Shape {
        syn,
        dst_mac: Some(router.out_mac),
        ..Default::default()
    };
    // One SYN with TTL 1: the kernel must answer "time exceeded", nothing is forwarded.
    let mut dying = frames::tcp(&Flow::new(CLIENT, 40001, NAT_VIP, 443), &shape(true), b"");
    edit_ip(&mut dying, |ip| ip.time_to_live = 1);
    let before = dp.reason_count(Reason::TtlExpired);
    let out = dp.run_in(&router.ns, "out0", &dying);
    assert_passed_as(&dp, &dying, &out, Reason::TtlExpired, before);
    // Then an ordinary connection from the same port: in, and its reply back out translated.
    let syn = frames::tcp(&Flow::new(CLIENT, 40001, NAT_VIP, 443), &shape(true), b"");
    assert_eq!(dp.run_in(&router.ns, "out0", &syn).action, XDP_REDIRECT);
    let mut reply = frames::tcp(
        &Flow::new(NAT_REAL, 8443, CLIENT, 40001),
        &Shape {
            syn: true,
            dst_mac: Some(router.in_mac),
            ..Default::default()
        },
        b"",
    );
    reply[6..12].copy_from_slice(&NAT_REAL_MAC);
    let out = dp.run_in(&router.ns, "in0", &reply);
    assert_eq!(
        out.action, XDP_REDIRECT,
        "the reply must be translated, not left to the kernel"
    );
    assert_eq!(macs(&out.frame), (CLIENT_MAC, router.out_mac));
    assert_checksums_valid(&out.frame);
    assert_eq!(&out.frame[26..30], &NAT_VIP.octets(), "source is the VIP");
    assert_eq!(&out.frame[34..36], &443u16.to_be_bytes(), "source port 443");
}

#[test]
fn malformed_frames_to_an_unresolved_nat_real_are_passed_untranslated() {
    let (router, dp) = setup();
    let shape = Shape {
        dst_mac: Some(router.out_mac),
        ..Default::default()
    };
    let flow = Flow::new(CLIENT, 40040, UNRESOLVED_VIP, 2575);
    // A well-formed one is translated and handed to the kernel to resolve the neighbour.
    let good = frames::tcp(&flow, &shape, b"MSH");
    let out = dp.run_in(&router.ns, "out0", &good);
    assert_eq!(out.action, XDP_PASS);
    assert_ne!(out.frame, good, "translated for the kernel to forward");
    // Broken ones are passed exactly as they came.
    let mut bad_offset = frames::tcp(&flow, &shape, b"MSH");
    bad_offset[46] &= 0x0f;
    let mut short = frames::tcp(&flow, &shape, b"MSH");
    set_total_length(&mut short, 20 + 10);
    let foreign = frames::tcp(
        &flow,
        &Shape {
            dst_mac: Some(OTHER_MAC),
            ..Default::default()
        },
        b"MSH",
    );
    for (frame, reason) in [
        (bad_offset, Reason::Malformed),
        (short, Reason::Malformed),
        (foreign, Reason::OtherHost),
    ] {
        let before = dp.reason_count(reason);
        let out = dp.run_in(&router.ns, "out0", &frame);
        assert_passed_as(&dp, &frame, &out, reason, before);
    }
}
