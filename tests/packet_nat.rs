//! NAT forwarding, packet by packet, through the real XDP program under BPF_PROG_TEST_RUN,
//! run inside a namespace whose routes and neighbours bpf_fib_lookup consults:
//!
//! ```text
//!   clients 198.18.0.0/24 -- out0 [balancer namespace] in0 -- reals 198.19.0.0/24
//! ```

use std::net::Ipv4Addr;

use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, CLIENT_MAC, Flow, Shape, macs, seen},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x19, 0x11];
/// A real with a route but no neighbour entry yet.
const UNRESOLVED_REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 12);
/// A real on the client-side network (one-arm NAT).
const ONE_ARM_REAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const ONE_ARM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x18, 0x21];

const POLICY: &str = "
interfaces:
  - name: out0
  - name: in0
    role: inside
services:
  - name: viewer
    vip: 198.18.0.100
    ports: [443]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: dns
    vip: 198.18.0.100
    ports: [53]
    protocol: udp
    forwarding: nat
    reals:
      - address: 198.19.0.11
  - name: unresolved
    vip: 198.18.0.101
    ports: [2575]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.19.0.12
  - name: one-arm
    vip: 198.18.0.102
    ports: [17035]
    protocol: tcp
    forwarding: nat
    reals:
      - address: 198.18.0.21
        port: 8080
";

fn router() -> FibRouter {
    FibRouter::new(&[
        (CLIENT, CLIENT_MAC, "out0"),
        (REAL, REAL_MAC, "in0"),
        (ONE_ARM_REAL, ONE_ARM_MAC, "out0"),
    ])
    .unwrap()
}

/// The program loaded with POLICY, attached (as far as it knows) to the router's interfaces.
fn dataplane(r: &FibRouter) -> Dataplane {
    Dataplane::on_router(POLICY, &[], r)
}

#[test]
fn tcp_in_and_back_out_with_port_translation() {
    let r = router();
    let dp = dataplane(&r);
    let request = frames::tcp(
        &Flow::new(CLIENT, 50000, VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"GET /",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(
        out.action, XDP_REDIRECT,
        "two-arm: out of the inside interface"
    );
    assert_eq!(macs(&out.frame), (REAL_MAC, r.in_mac));
    let s = seen(&out.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (CLIENT, 50000, REAL, 8443)
    );
    assert_eq!((s.ttl, s.payload.as_slice()), (63, &b"GET /"[..]));

    // The real answers from 198.19.0.11:8443; the client must see VIP:443.
    let mut reply = frames::tcp(
        &Flow::new(REAL, 8443, CLIENT, 50000),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"200 OK",
    );
    reply[6..12].copy_from_slice(&REAL_MAC);
    let out = dp.run_in(&r.ns, "in0", &reply);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(macs(&out.frame), (CLIENT_MAC, r.out_mac));
    let s = seen(&out.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl),
        (VIP, 443, CLIENT, 50000, 63)
    );
    assert_eq!(s.payload, b"200 OK");
}

#[test]
fn every_packet_of_an_established_flow_is_translated_alike_both_ways() {
    // After a flow's first packet in a clock tick went through the connection table, the
    // rest of that tick is served from the per-CPU flow cache (flow_cache.rs), in both
    // directions: those packets must come out exactly as the first did.
    let r = router();
    let dp = dataplane(&r);
    let open = frames::tcp(
        &Flow::new(CLIENT, 50100, VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "out0", &open).action, XDP_REDIRECT);
    let request = frames::tcp(
        &Flow::new(CLIENT, 50100, VIP, 443),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"GET /study",
    );
    let mut reply = frames::tcp(
        &Flow::new(REAL, 8443, CLIENT, 50100),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"200 OK",
    );
    reply[6..12].copy_from_slice(&REAL_MAC);
    // The SYN already cached the flow, so even the first request may be served from the
    // cache: check it in full, and every later packet against it byte for byte.
    let first_in = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(first_in.action, XDP_REDIRECT);
    assert_eq!(macs(&first_in.frame), (REAL_MAC, r.in_mac));
    let s = seen(&first_in.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl),
        (CLIENT, 50100, REAL, 8443, 63)
    );
    let first_back = dp.run_in(&r.ns, "in0", &reply);
    assert_eq!(first_back.action, XDP_REDIRECT);
    assert_eq!(macs(&first_back.frame), (CLIENT_MAC, r.out_mac));
    let s = seen(&first_back.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl),
        (VIP, 443, CLIENT, 50100, 63)
    );
    for i in 0..6 {
        let again = dp.run_in(&r.ns, "out0", &request);
        assert_eq!(
            (again.action, &again.frame),
            (first_in.action, &first_in.frame),
            "request {i}"
        );
        let again = dp.run_in(&r.ns, "in0", &reply);
        assert_eq!(
            (again.action, &again.frame),
            (first_back.action, &first_back.frame),
            "reply {i}"
        );
    }
}

#[test]
fn udp_in_and_back_out_and_a_zero_checksum_stays_zero() {
    let r = router();
    let dp = dataplane(&r);
    let query = frames::udp(
        &Flow::new(CLIENT, 5353, VIP, 53),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"query",
    );
    let out = dp.run_in(&r.ns, "out0", &query);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen(&out.frame);
    assert_eq!(
        (s.dst, s.dport),
        (REAL, 53),
        "no port translation: the port stays"
    );

    let answer = frames::udp(
        &Flow::new(REAL, 53, CLIENT, 5353),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"answer",
    );
    let out = dp.run_in(&r.ns, "in0", &answer);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen(&out.frame);
    assert_eq!((s.src, s.sport), (VIP, 53));

    // A datagram sent without a checksum (0) keeps having none.
    let mut bare = frames::udp(
        &Flow::new(CLIENT, 5354, VIP, 53),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"q2",
    );
    let check_at = 14 + 20 + 6;
    bare[check_at..check_at + 2].copy_from_slice(&[0, 0]);
    let out = dp.run_in(&r.ns, "out0", &bare);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(&out.frame[check_at..check_at + 2], &[0, 0]);
    assert_eq!(seen(&out.frame).dst, REAL);
}

#[test]
fn one_arm_nat_sends_back_out_the_same_interface() {
    let r = router();
    let dp = dataplane(&r);
    let vip = Ipv4Addr::new(198, 18, 0, 102);
    let request = frames::tcp(
        &Flow::new(CLIENT, 50001, vip, 17035),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame), (ONE_ARM_MAC, r.out_mac));
    let s = seen(&out.frame);
    assert_eq!((s.dst, s.dport), (ONE_ARM_REAL, 8080));

    let reply = frames::tcp(
        &Flow::new(ONE_ARM_REAL, 8080, CLIENT, 50001),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run_in(&r.ns, "out0", &reply);
    assert_eq!(out.action, XDP_TX);
    let s = seen(&out.frame);
    assert_eq!((s.src, s.sport, s.dst), (vip, 17035, CLIENT));
}

#[test]
fn ttl_1_is_left_to_the_kernel_unchanged() {
    let r = router();
    let dp = dataplane(&r);
    let mut request = frames::tcp(
        &Flow::new(CLIENT, 50002, VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    // TTL 1 with a correct header checksum.
    request[14 + 8] = 1;
    request[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let header = etherparse::Ipv4HeaderSlice::from_slice(&request[14..])
        .unwrap()
        .to_header();
    request[14 + 10..14 + 12].copy_from_slice(&header.calc_header_checksum().to_be_bytes());
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!((out.action, out.frame), (XDP_PASS, request));
}

#[test]
fn unknown_next_hop_is_translated_and_left_to_the_kernel_to_resolve() {
    let r = router();
    let dp = dataplane(&r);
    let vip = Ipv4Addr::new(198, 18, 0, 101);
    let request = frames::tcp(
        &Flow::new(CLIENT, 50003, vip, 2575),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"MSH|",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(out.action, XDP_PASS);
    let s = seen(&out.frame);
    assert_eq!(
        (s.dst, s.dport),
        (UNRESOLVED_REAL, 2575),
        "translated, so the kernel forwards it"
    );
    assert_eq!(s.ttl, 64, "the kernel decrements TTL when it forwards");
    assert_eq!(dp.reason_count(lb_common::counters::Reason::NoNeighbour), 1);
    let snapshot = xdplb::dataplane::counters::snapshot(dp.maps()).unwrap();
    let flows: u64 = snapshot.services.iter().map(|(_, c)| c.new_flows).sum();
    assert_eq!(
        flows, 1,
        "the flow counts as new although its first packet went to the kernel"
    );
}

#[test]
fn replies_of_unknown_flows_and_ordinary_routed_traffic_pass_unchanged() {
    let r = router();
    let dp = dataplane(&r);
    // From the real's service port, but no client flow is known: not ours.
    let stray = frames::tcp(
        &Flow::new(REAL, 8443, CLIENT, 40000),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    // The real's own traffic (an update download, say), routed by the balancer as gateway.
    let routed = frames::tcp(
        &Flow::new(REAL, 41000, CLIENT, 8080),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    for frame in [stray, routed] {
        let out = dp.run_in(&r.ns, "in0", &frame);
        assert_eq!((out.action, out.frame), (XDP_PASS, frame));
    }
}

#[test]
fn a_nat_port_removed_from_the_policy_stops_both_directions() {
    let r = router();
    let mut dp = dataplane(&r);
    // Another VIP served by the same real:port, so the real's reply filter bit stays set and
    // only the purge of the reverse entries can stop the old replies being translated.
    let mut other = dp.policy.services[0].clone();
    other.name = "viewer-2".into();
    other.vip = Ipv4Addr::new(198, 18, 0, 103).into();
    dp.policy.services.push(other);
    dp.apply();
    let request = frames::tcp(
        &Flow::new(CLIENT, 50010, VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "out0", &request).action, XDP_REDIRECT);
    let reply = frames::tcp(
        &Flow::new(REAL, 8443, CLIENT, 50010),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "in0", &reply).action, XDP_REDIRECT);

    dp.policy.services.retain(|s| s.name != "viewer");
    dp.apply();
    for (interface, frame) in [("out0", &request), ("in0", &reply)] {
        let out = dp.run_in(&r.ns, interface, frame);
        assert_eq!(
            (out.action, &out.frame),
            (XDP_PASS, frame),
            "on {interface}"
        );
    }
}

/// The NAT firewall's part in the data plane (README, "NAT firewall"): on a guarded
/// (client-side) interface, frames routed straight to a real's service address:port, not
/// through a VIP, are dropped; the same from the inside, and VIP flows, are not.
#[test]
fn a_guarded_interface_drops_routed_frames_to_a_reals_service_port() {
    let r = router();
    let mut dp = dataplane(&r);
    let out0 = xdplb_lab::lab::in_netns(&r.ns, || xdplb::netconf::if_index("out0")).unwrap();
    dp.loaded.maps.set_interface_guard(out0, true).unwrap();
    let direct = |dst_mac| {
        frames::tcp(
            &Flow::new(CLIENT, 50020, REAL, 8443),
            &Shape {
                syn: true,
                dst_mac: Some(dst_mac),
                ..Default::default()
            },
            b"",
        )
    };
    let out = dp.run_in(&r.ns, "out0", &direct(r.out_mac));
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(
        dp.reason_count(lb_common::counters::Reason::DirectToReal),
        1
    );
    // Not guarded: the inside.
    let frame = direct(r.in_mac);
    let out = dp.run_in(&r.ns, "in0", &frame);
    assert_eq!((out.action, out.frame), (XDP_PASS, frame));
    // Another station's frame is not ours to judge.
    let frame = direct([0x02, 0, 0, 0, 0x77, 0x77]);
    let out = dp.run_in(&r.ns, "out0", &frame);
    assert_eq!((out.action, out.frame), (XDP_PASS, frame));
    // Through the VIP, as ever.
    let request = frames::tcp(
        &Flow::new(CLIENT, 50021, VIP, 443),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    assert_eq!(dp.run_in(&r.ns, "out0", &request).action, XDP_REDIRECT);
}

/// `fallback: ADDRESS:PORT` (NAT): with no real up, new flows go to the sorry server, its
/// port translated like a real's.
#[test]
fn a_nat_fallback_with_a_port_takes_new_flows_when_no_real_is_up() {
    let r = router();
    let policy = POLICY.replace(
        "      - address: 198.18.0.21\n        port: 8080\n",
        "      - address: 198.18.0.21\n        port: 8080\n    fallback: 198.19.0.11:9443\n",
    );
    let mut dp = Dataplane::on_router(&policy, &[], &r);
    let service = dp
        .policy
        .services
        .iter()
        .find(|s| s.name == "one-arm")
        .unwrap()
        .clone();
    dp.observed
        .unhealthy
        .insert(xdplb::policy::RealRef::of(&service, &service.reals[0]));
    dp.apply();
    let vip = Ipv4Addr::new(198, 18, 0, 102);
    let request = frames::tcp(
        &Flow::new(CLIENT, 50030, vip, 17035),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run_in(&r.ns, "out0", &request);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen(&out.frame);
    assert_eq!((s.dst, s.dport), (REAL, 9443));
}
