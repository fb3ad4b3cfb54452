//! NAT flows taken over from a real's reply (README, "Running a pair"): node B of a pair has
//! never seen the flows node A opened; when it becomes active, a real's reply often reaches it
//! before the client's next packet. Through the real XDP program of two data planes (A and B)
//! under BPF_PROG_TEST_RUN, in one namespace whose routes bpf_fib_lookup consults:
//!
//! ```text
//!   clients 198.18.0.0/24 -- out0 [balancer namespace] in0 -- reals 198.19.0.0/24
//! ```

use std::net::Ipv4Addr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use xdplb::policy::RealRef;
use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, XDP_PASS, XDP_REDIRECT},
    frames::{self, CLIENT_MAC, Flow, Shape, assert_checksums_valid},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const REALS: [(Ipv4Addr, [u8; 6]); 2] = [
    (Ipv4Addr::new(198, 19, 0, 11), [0x02, 0, 0, 0, 0x19, 0x11]),
    (Ipv4Addr::new(198, 19, 0, 12), [0x02, 0, 0, 0, 0x19, 0x12]),
];

fn policy(second_weight: u16) -> String {
    format!(
        "interfaces:\n  - name: out0\n  - name: in0\n    role: inside\nservices:\n  \
         - name: viewer\n    vip: {VIP}\n    ports: [443]\n    protocol: tcp\n    forwarding: nat\n    \
         reals:\n      - address: 198.19.0.11\n        port: 8443\n      \
         - address: 198.19.0.12\n        port: 8443\n        weight: {second_weight}\n"
    )
}

fn router() -> FibRouter {
    let mut neighbours = vec![(CLIENT, CLIENT_MAC, "out0")];
    neighbours.extend(REALS.iter().map(|(a, m)| (*a, *m, "in0")));
    FibRouter::new(&neighbours).unwrap()
}

fn client_packet(r: &FibRouter, sport: u16, syn: bool) -> Vec<u8> {
    frames::tcp(
        &Flow::new(CLIENT, sport, VIP, 443),
        &Shape {
            syn,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    )
}

fn reply(r: &FibRouter, real: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    frames::tcp(
        &Flow::new(real, 8443, CLIENT, dport),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        payload,
    )
}

/// Source and destination (address, port) of a forwarded frame, its checksums checked by
/// etherparse.
fn ends(frame: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    assert_checksums_valid(frame);
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("not TCP")
    };
    (
        (ip.header().source_addr(), t.source_port()),
        (ip.header().destination_addr(), t.destination_port()),
    )
}

#[test]
fn a_reply_of_a_flow_the_peer_opened_is_translated_and_the_flow_kept_on_its_real() {
    let r = router();
    // Node B's table differs (a real drained there): the adopted flow must still stay on the
    // real that answered, not follow B's table.
    let a = Dataplane::on_router(&policy(100), &[], &r);
    let mut b = Dataplane::on_router(&policy(0), &[], &r);
    // B is the standby: its controller keeps adoption open.
    b.set_nat_adoption(true);

    // Flows opened through A, on both reals.
    let mut opened = Vec::new();
    for sport in 50000..50040 {
        let out = a.run_in(&r.ns, "out0", &client_packet(&r, sport, true));
        assert_eq!(out.action, XDP_REDIRECT);
        opened.push((sport, ends(&out.frame).1.0));
    }
    let on_second = opened
        .iter()
        .filter(|(_, real)| *real == REALS[1].0)
        .count();
    assert!(on_second > 0, "no flow went to the second real");

    // A fails; the reals' retransmitted replies reach B first. B translates each exactly as A
    // would have.
    for &(sport, real) in &opened {
        let frame = reply(&r, real, sport, b"rest of the study");
        let by_a = a.run_in(&r.ns, "in0", &frame);
        let by_b = b.run_in(&r.ns, "in0", &frame);
        assert_eq!(
            by_b.action, XDP_REDIRECT,
            "reply of {sport} not translated by B"
        );
        assert_eq!(ends(&by_b.frame), ((VIP, 443), (CLIENT, sport)));
        assert_eq!(by_b.frame, by_a.frame, "B's translation differs from A's");
    }
    assert_eq!(b.adopted(), opened.len() as u64);

    // The clients' next packets stay on the real that answered, although B's own table would
    // send them all to the first real; later replies need no adoption.
    for &(sport, real) in &opened {
        let out = b.run_in(&r.ns, "out0", &client_packet(&r, sport, false));
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(ends(&out.frame).1, (real, 8443), "flow {sport} moved");
        let out = b.run_in(&r.ns, "in0", &reply(&r, real, sport, b""));
        assert_eq!(out.action, XDP_REDIRECT);
    }
    assert_eq!(b.adopted(), opened.len() as u64, "a flow was adopted twice");
}

#[test]
fn replies_the_policy_cannot_place_are_left_to_the_kernel() {
    let r = router();
    // real .11:8443 serves two VIPs: which one a reply belongs to cannot be known.
    let ambiguous = format!(
        "{}  - name: viewer-2\n    vip: 198.18.0.103\n    ports: [443]\n    protocol: tcp\n    \
         forwarding: nat\n    reals:\n      - address: 198.19.0.11\n        port: 8443\n",
        policy(100)
    );
    let mut dp = Dataplane::on_router(&ambiguous, &[], &r);
    dp.set_nat_adoption(true);
    let stray = reply(&r, REALS[0].0, 40000, b"");
    let out = dp.run_in(&r.ns, "in0", &stray);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &stray));

    // .12 serves one VIP:port, but its checks say down: its replies are not taken over.
    let service = &dp.policy.services[0];
    let down = RealRef::of(service, &service.reals[1]);
    dp.observed.unhealthy.insert(down);
    dp.apply();
    let stray = reply(&r, REALS[1].0, 40001, b"");
    let out = dp.run_in(&r.ns, "in0", &stray);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &stray));

    // Neither is a reply from the service port of another port of the real.
    let other_port = frames::tcp(
        &Flow::new(REALS[1].0, 8444, CLIENT, 40002),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    let out = dp.run_in(&r.ns, "in0", &other_port);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &other_port));
    assert_eq!(dp.adopted(), 0);
}

/// Not every packet from a real's service port is a reply of a VIP flow: someone may talk to
/// the real directly through this host, the host's own health checks get answers, a packet
/// may be forged. Each is left to the kernel untouched, and nothing is adopted.
#[test]
fn only_replies_that_can_be_a_vip_flows_are_adopted() {
    let r = router();
    let mut dp = Dataplane::on_router(&policy(100), &[], &r);
    let real = REALS[0].0;
    let passes = |dp: &Dataplane, interface: &str, frame: &[u8], what: &str| {
        let out = dp.run_in(&r.ns, interface, frame);
        assert_eq!(
            (out.action, out.frame.as_slice()),
            (XDP_PASS, frame),
            "{what}"
        );
    };

    // A balancer on its own (adoption closed): a real answering a host that reached it
    // directly, routed through this host.
    let direct = reply(&r, real, 40000, b"");
    passes(&dp, "in0", &direct, "adoption closed");

    dp.set_nat_adoption(true);
    // The answer to this host's own health check (to its inside address).
    let check = frames::tcp(
        &Flow::new(real, 8443, Ipv4Addr::new(198, 19, 0, 1), 40001),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    passes(&dp, "in0", &check, "a health check's answer");
    // A real opening a connection of its own from its service port.
    let syn = frames::tcp(
        &Flow::new(real, 8443, CLIENT, 40002),
        &Shape {
            syn: true,
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"",
    );
    passes(&dp, "in0", &syn, "a SYN from the real");
    // Forged on the client side: the real is not there.
    let forged = frames::tcp(
        &Flow::new(real, 8443, CLIENT, 40003),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    passes(
        &dp,
        "out0",
        &forged,
        "a reply arriving where the real is not",
    );
    // A "reply" from another real of the service to a client whose flow is live on the
    // first: the flow stays where it is.
    let out = dp.run_in(&r.ns, "out0", &client_packet(&r, 40005, true));
    let owner = ends(&out.frame).1.0;
    let other = REALS.iter().map(|(a, _)| *a).find(|a| *a != owner).unwrap();
    passes(
        &dp,
        "in0",
        &reply(&r, other, 40005, b""),
        "a reply from another real",
    );
    let out = dp.run_in(&r.ns, "out0", &client_packet(&r, 40005, false));
    assert_eq!(ends(&out.frame).1.0, owner, "the client's flow moved");
    // A VIP:port on its way out of the policy: its service entry is gone, its origins not
    // yet (a reload removes them in a later step).
    let key = lb_common::service::VipKey {
        addr: lb_common::addr::Addr::from(VIP),
        port: 443u16.to_be(),
        proto: lb_common::IPPROTO_TCP,
        _pad: 0,
        _pad2: 0,
    };
    dp.loaded.maps.services.remove(&key).unwrap();
    passes(
        &dp,
        "in0",
        &reply(&r, real, 40004, b""),
        "a VIP:port being removed",
    );
    assert_eq!(dp.adopted(), 0);
}

/// UDP too, with and without a checksum (0 stays 0).
#[test]
fn a_udp_reply_is_adopted_with_its_checksum_kept_right() {
    let r = router();
    let policy = "interfaces:\n  - name: out0\n  - name: in0\n    role: inside\nservices:\n  \
                  - name: dns\n    vip: 198.18.0.100\n    ports: [53]\n    protocol: udp\n    \
                  forwarding: nat\n    reals:\n      - address: 198.19.0.11\n        port: 5353\n";
    let mut dp = Dataplane::on_router(policy, &[], &r);
    dp.set_nat_adoption(true);
    for (sport, checksum) in [(40000, true), (40001, false)] {
        let mut frame = frames::udp(
            &Flow::new(REALS[0].0, 5353, CLIENT, sport),
            &Shape {
                dst_mac: Some(r.in_mac),
                ..Default::default()
            },
            b"answer",
        );
        if !checksum {
            let check_at = 14 + 20 + 6;
            frame[check_at..check_at + 2].copy_from_slice(&[0, 0]);
        }
        let out = dp.run_in(&r.ns, "in0", &frame);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_checksums_valid(&out.frame);
        let p = SlicedPacket::from_ethernet(&out.frame).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) = (&p.net, &p.transport)
        else {
            panic!("not UDP over IPv4")
        };
        assert_eq!((ip.header().source_addr(), u.source_port()), (VIP, 53));
        assert_eq!(
            u.checksum() == 0,
            !checksum,
            "a checksum of 0 (none) stays 0"
        );
    }
    assert_eq!(dp.adopted(), 2);
}
