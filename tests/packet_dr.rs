//! DR forwarding, packet by packet, through the real XDP program under BPF_PROG_TEST_RUN.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use xdplb_tests::{
    fixture::{Dataplane, XDP_DROP, XDP_PASS, XDP_TX},
    frames::{self, Flow, LB_MAC, Shape, assert_checksums_valid, macs},
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REALS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (Ipv4Addr::new(198, 18, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
    (Ipv4Addr::new(198, 18, 0, 13), [0x02, 0, 0, 0, 0, 0x13]),
];

const POLICY: &str = "
interfaces:
  - name: lo
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104, 11112]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.13
  - name: syslog
    vip: 198.18.0.101
    ports: [514]
    protocol: udp
    forwarding: dr
    reals:
      - address: 198.18.0.12
";

fn dataplane() -> Dataplane {
    Dataplane::new(POLICY, &REALS)
}

fn real_mac(addr: Ipv4Addr) -> [u8; 6] {
    REALS.iter().find(|(a, _)| *a == addr).unwrap().1
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    frames::tcp(
        &Flow::new(CLIENT, sport, VIP, dport),
        &Shape {
            syn: true,
            ..Default::default()
        },
        b"",
    )
}

/// Asserts a DR forward: XDP_TX, destination MAC one of the reals', source MAC the balancer's,
/// every byte after the Ethernet addresses unchanged. Returns the chosen real's MAC.
fn assert_dr_forward(input: &[u8], out: &xdplb_tests::fixture::Outcome) -> [u8; 6] {
    assert_eq!(out.action, XDP_TX, "expected XDP_TX");
    let (dst, src) = macs(&out.frame);
    assert!(
        REALS.iter().any(|(_, m)| *m == dst),
        "destination MAC {dst:02x?} is no real's"
    );
    assert_eq!(src, LB_MAC, "source MAC must be the balancer's");
    assert_eq!(
        &out.frame[12..],
        &input[12..],
        "DR must not change anything past the MACs"
    );
    assert_checksums_valid(&out.frame);
    dst
}

#[test]
fn syn_and_later_packets_of_a_flow_go_to_the_same_real() {
    let dp = dataplane();
    let flow = Flow::new(CLIENT, 40000, VIP, 104);
    let first = syn(40000, 104);
    let real = assert_dr_forward(&first, &dp.run(&first).unwrap());
    for payload in [&b"A-ASSOCIATE"[..], b"P-DATA", b""] {
        let later = frames::tcp(&flow, &Shape::default(), payload);
        assert_eq!(
            assert_dr_forward(&later, &dp.run(&later).unwrap()),
            real,
            "flow changed real"
        );
    }
}

#[test]
fn many_flows_spread_over_every_real() {
    let dp = dataplane();
    let mut counts: HashMap<[u8; 6], usize> = HashMap::new();
    let n = 3000;
    for i in 0..n {
        let client = Ipv4Addr::new(198, 18, 1 + (i / 250) as u8, (i % 250) as u8 + 1);
        let frame = frames::tcp(
            &Flow::new(client, 30000 + i, VIP, 11112),
            &Shape {
                syn: true,
                ..Default::default()
            },
            b"",
        );
        *counts
            .entry(assert_dr_forward(&frame, &dp.run(&frame).unwrap()))
            .or_default() += 1;
    }
    for (addr, mac) in REALS {
        let share = counts.get(&mac).copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (0.25..0.42).contains(&share),
            "real {addr} got {share:.3} of new flows"
        );
    }
}

#[test]
fn udp_service_is_forwarded() {
    let dp = dataplane();
    let frame = frames::udp(
        &Flow::new(CLIENT, 5000, Ipv4Addr::new(198, 18, 0, 101), 514),
        &Shape::default(),
        b"<13>msg",
    );
    let out = dp.run(&frame).unwrap();
    assert_eq!(
        assert_dr_forward(&frame, &out),
        real_mac(Ipv4Addr::new(198, 18, 0, 12))
    );
}

#[test]
fn traffic_not_for_a_service_passes_unchanged() {
    let dp = dataplane();
    let other_host = frames::tcp(
        &Flow::new(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 50), 104),
        &Shape::default(),
        b"x",
    );
    let other_port = frames::tcp(&Flow::new(CLIENT, 40000, VIP, 80), &Shape::default(), b"x");
    let wrong_proto = frames::udp(&Flow::new(CLIENT, 40000, VIP, 104), &Shape::default(), b"x");
    for frame in [
        other_host,
        other_port,
        wrong_proto,
        frames::arp_request(VIP),
        frames::ipv6_udp(),
    ] {
        let out = dp.run(&frame).unwrap();
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(
            out.frame, frame,
            "a passed frame must be byte-for-byte unchanged"
        );
    }
}

#[test]
fn vlan_tagged_and_ip_options_packets_are_forwarded() {
    let dp = dataplane();
    let flow = Flow::new(CLIENT, 40001, VIP, 104);
    for shape in [
        Shape {
            vlan: Some(42),
            syn: true,
            ..Default::default()
        },
        Shape {
            ip_options: true,
            syn: true,
            ..Default::default()
        },
        Shape {
            vlan: Some(7),
            ip_options: true,
            ..Default::default()
        },
    ] {
        let frame = frames::tcp(&flow, &shape, b"payload");
        let out = dp.run(&frame).unwrap();
        assert_dr_forward(&frame, &out);
        if shape.vlan.is_some() {
            assert_eq!(&out.frame[12..14], &[0x81, 0x00], "VLAN tag kept");
        }
    }
}

#[test]
fn truncated_frames_are_never_forwarded() {
    let dp = dataplane();
    for shape in [
        Shape::default(),
        Shape {
            vlan: Some(9),
            ip_options: true,
            ..Default::default()
        },
    ] {
        let tcp = frames::tcp(&Flow::new(CLIENT, 40002, VIP, 104), &shape, b"");
        let udp = frames::udp(
            &Flow::new(CLIENT, 5000, Ipv4Addr::new(198, 18, 0, 101), 514),
            &shape,
            b"",
        );
        for full in [tcp, udp] {
            assert_eq!(
                dp.run(&full).unwrap().action,
                XDP_TX,
                "the whole frame is forwarded"
            );
            // The kernel refuses test frames shorter than an Ethernet header; test every cut above.
            for len in 14..full.len() {
                let out = dp.run(&full[..len]).unwrap();
                assert_ne!(
                    out.action,
                    XDP_TX,
                    "frame cut to {len} of {} bytes was forwarded",
                    full.len()
                );
                assert_eq!(out.frame, &full[..len], "cut frame changed");
            }
        }
    }
}

#[test]
fn fragments_to_a_vip_are_dropped_and_others_passed() {
    let dp = dataplane();
    for fragment in [(true, 0), (false, 100), (true, 50)] {
        let shape = Shape {
            fragment: Some(fragment),
            ..Default::default()
        };
        let to_vip = frames::udp(
            &Flow::new(CLIENT, 5000, Ipv4Addr::new(198, 18, 0, 101), 514),
            &shape,
            b"part",
        );
        assert_eq!(
            dp.run(&to_vip).unwrap().action,
            XDP_DROP,
            "fragment {fragment:?} to a VIP"
        );
        let elsewhere = frames::udp(
            &Flow::new(CLIENT, 5000, Ipv4Addr::new(198, 18, 0, 77), 514),
            &shape,
            b"part",
        );
        let out = dp.run(&elsewhere).unwrap();
        assert_eq!((out.action, out.frame), (XDP_PASS, elsewhere));
    }
}

#[test]
fn broadcast_frames_to_a_vip_are_not_forwarded() {
    let dp = dataplane();
    let frame = frames::tcp(
        &Flow::new(CLIENT, 40003, VIP, 104),
        &Shape {
            dst_mac: Some([0xff; 6]),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run(&frame).unwrap();
    assert_eq!((out.action, out.frame), (XDP_PASS, frame));
}

#[test]
fn established_flows_stay_when_a_real_is_added() {
    let mut dp = dataplane();
    let flows: Vec<Vec<u8>> = (0..300).map(|i| syn(20000 + i, 104)).collect();
    let before: Vec<[u8; 6]> = flows
        .iter()
        .map(|f| assert_dr_forward(f, &dp.run(f).unwrap()))
        .collect();
    // A fourth real joins: new flows may go to it, established ones must not move.
    dp.policy.services[0].reals.push(xdplb::policy::Real {
        address: Ipv4Addr::new(198, 18, 0, 14).into(),
        weight: 100,
        port: None,
        backup: false,
    });
    dp.observed.macs.insert(
        Ipv4Addr::new(198, 18, 0, 14).into(),
        [0x02, 0, 0, 0, 0, 0x14],
    );
    dp.apply();
    for (frame, real) in flows.iter().zip(&before) {
        let later = frames::tcp(
            &Flow::new(CLIENT, u16::from_be_bytes([frame[34], frame[35]]), VIP, 104),
            &Shape::default(),
            b"",
        );
        let out = dp.run(&later).unwrap();
        assert_eq!(out.action, XDP_TX);
        assert_eq!(&macs(&out.frame).0, real, "an established flow moved");
    }
}

#[test]
fn flows_of_an_unreachable_real_move_and_no_real_means_drop() {
    let mut dp = dataplane();
    let udp_vip = Ipv4Addr::new(198, 18, 0, 101);
    let frame = frames::udp(
        &Flow::new(CLIENT, 6000, udp_vip, 514),
        &Shape::default(),
        b"x",
    );
    assert_eq!(dp.run(&frame).unwrap().action, XDP_TX);
    // The only real of the UDP service becomes unreachable: its flows must not be sent to it.
    dp.observed
        .macs
        .remove(&IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)));
    dp.apply();
    assert_eq!(
        dp.run(&frame).unwrap().action,
        XDP_DROP,
        "no real left: drop"
    );
    // TCP flows pinned to .12 are rescheduled onto the remaining reals.
    for i in 0..200 {
        let f = syn(50000 + i, 104);
        let dst = assert_dr_forward(&f, &dp.run(&f).unwrap());
        assert_ne!(dst, real_mac(Ipv4Addr::new(198, 18, 0, 12)));
    }
}

#[test]
fn counters_count_forwarded_packets_per_real() {
    let dp = dataplane();
    let frame = syn(41000, 104);
    let out = dp.run(&frame).unwrap();
    let real = macs(&out.frame).0;
    for _ in 0..4 {
        dp.run(&frame).unwrap();
    }
    let snapshot = xdplb::dataplane::counters::snapshot(dp.maps()).unwrap();
    let addr = REALS.iter().find(|(_, m)| *m == real).unwrap().0;
    let counted = snapshot
        .reals
        .iter()
        .find(|r| r.address == addr && r.service_id == 0)
        .unwrap();
    assert_eq!(counted.counters.packets, 5);
    assert_eq!(counted.counters.bytes, 5 * frame.len() as u64);
    assert_eq!(counted.counters.new_flows, 1);
}

#[test]
fn a_port_removed_from_the_policy_stops_forwarding_even_established_flows() {
    let mut dp = dataplane();
    let flow = Flow::new(CLIENT, 42000, VIP, 11112);
    let first = syn(42000, 11112);
    assert_dr_forward(&first, &dp.run(&first).unwrap());
    dp.policy.services[0].ports = vec![104];
    dp.apply();
    let later = frames::tcp(&flow, &Shape::default(), b"after reload");
    let out = dp.run(&later).unwrap();
    assert_eq!(
        (out.action, out.frame),
        (XDP_PASS, later),
        "traffic to a removed port passes"
    );
    // The remaining port is unaffected.
    let other = syn(42001, 104);
    assert_dr_forward(&other, &dp.run(&other).unwrap());
}
