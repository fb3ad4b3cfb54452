//! SNAT forwarding, packet by packet, through the real XDP program under BPF_PROG_TEST_RUN, in
//! a namespace whose routes and neighbours bpf_fib_lookup consults:
//!
//! ```text
//!   clients 198.18.0.0/24 -- out0 198.18.0.2 [balancer] in0 198.19.0.1 -- reals 198.19.0.0/24
//! ```
//!
//! The reals see every connection come from the balancer's SNAT address and a port of xdplb's
//! range; their replies, addressed there, go back to the client from the VIP. Checksums are
//! checked by etherparse.

use std::{collections::HashSet, net::Ipv4Addr};

use lb_common::{
    addr::Addr,
    counters::Reason,
    flow::{FlowKey, NatReverse},
    hash::flow_hash,
    maps::{SNAT_PORT_COUNT, SNAT_PORT_FIRST, SNAT_PROBES},
};
use xdplb::dataplane::snat_sweep;
use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, CLIENT_MAC, Flow, Shape, macs, seen},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const ONE_ARM_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x19, 0x11];
/// The balancer's own address on each side: the SNAT addresses.
const INSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// A real on the client-side network (one-arm SNAT).
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
    forwarding: snat
    snat_address: 198.19.0.1
    reals:
      - address: 198.19.0.11
        port: 8443
  - name: syslog
    vip: 198.18.0.100
    ports: [514]
    protocol: udp
    forwarding: snat
    reals:
      - address: 198.19.0.11
  - name: one-arm
    vip: 198.18.0.102
    ports: [17035]
    protocol: tcp
    forwarding: snat
    snat_address: 198.18.0.2
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

/// The program loaded with POLICY; `syslog` (no `snat_address`) gets the source the controller
/// would find toward its real: the inside address.
fn dataplane(r: &FibRouter) -> Dataplane {
    let mut dp = Dataplane::on_router(POLICY, &[], r);
    dp.observed.snat_sources.insert(REAL.into(), INSIDE.into());
    dp.apply();
    dp
}

fn syn(r: &FibRouter, client_port: u16, vip: Ipv4Addr, port: u16) -> Vec<u8> {
    frames::tcp(
        &Flow::new(CLIENT, client_port, vip, port),
        &Shape {
            syn: true,
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    )
}

/// An established client packet (no SYN) of the flow from `client_port` to VIP:443.
fn from_client(r: &FibRouter, client_port: u16, payload: &[u8]) -> Vec<u8> {
    frames::tcp(
        &Flow::new(CLIENT, client_port, VIP, 443),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        payload,
    )
}

fn from_real(r: &FibRouter, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = frames::tcp(
        &Flow::new(REAL, sport, dst, dport),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        payload,
    );
    frame[6..12].copy_from_slice(&REAL_MAC);
    frame
}

fn in_range(port: u16) -> bool {
    (SNAT_PORT_FIRST..SNAT_PORT_FIRST + SNAT_PORT_COUNT).contains(&port)
}

#[test]
fn tcp_reaches_the_real_from_the_balancer_and_the_reply_the_client_from_the_vip() {
    let r = router();
    let dp = dataplane(&r);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, 50000, VIP, 443));
    assert_eq!(
        out.action, XDP_REDIRECT,
        "two-arm: out of the inside interface"
    );
    assert_eq!(macs(&out.frame), (REAL_MAC, r.in_mac));
    let s = seen(&out.frame);
    assert_eq!((s.src, s.dst, s.dport, s.ttl), (INSIDE, REAL, 8443, 63));
    assert!(
        in_range(s.sport),
        "source port {} outside xdplb's range",
        s.sport
    );
    let port = s.sport;

    // Replies come to the SNAT address:port; the client sees VIP:443 answer its own port.
    let reply = from_real(&r, 8443, INSIDE, port, b"200 OK");
    let back = dp.run_in(&r.ns, "in0", &reply);
    assert_eq!(back.action, XDP_REDIRECT);
    assert_eq!(macs(&back.frame), (CLIENT_MAC, r.out_mac));
    let s = seen(&back.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl),
        (VIP, 443, CLIENT, 50000, 63)
    );
    assert_eq!(s.payload, b"200 OK");

    // Every later packet, from the flow cache or the tables, comes out exactly alike.
    let request = from_client(&r, 50000, b"GET /study");
    let first_in = dp.run_in(&r.ns, "out0", &request);
    let s = seen(&first_in.frame);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (INSIDE, port, REAL, 8443));
    for i in 0..5 {
        assert_eq!(dp.run_in(&r.ns, "out0", &request), first_in, "request {i}");
        assert_eq!(dp.run_in(&r.ns, "in0", &reply), back, "reply {i}");
    }
}

#[test]
fn udp_both_ways_with_the_source_found_toward_the_real_and_no_checksum_kept_none() {
    let r = router();
    let dp = dataplane(&r);
    let message = frames::udp(
        &Flow::new(CLIENT, 514, VIP, 514),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"<13>study stored",
    );
    let out = dp.run_in(&r.ns, "out0", &message);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen(&out.frame);
    assert_eq!((s.src, s.dst, s.dport), (INSIDE, REAL, 514));
    assert!(in_range(s.sport));
    let answer = frames::udp(
        &Flow::new(REAL, 514, INSIDE, s.sport),
        &Shape {
            dst_mac: Some(r.in_mac),
            ..Default::default()
        },
        b"ack",
    );
    let back = dp.run_in(&r.ns, "in0", &answer);
    assert_eq!(back.action, XDP_REDIRECT);
    let s = seen(&back.frame);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP, 514, CLIENT, 514));

    // A datagram sent without a checksum (0) keeps having none.
    let mut bare = frames::udp(
        &Flow::new(CLIENT, 515, VIP, 514),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"x",
    );
    let check_at = 14 + 20 + 6;
    bare[check_at..check_at + 2].copy_from_slice(&[0, 0]);
    let out = dp.run_in(&r.ns, "out0", &bare);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(&out.frame[check_at..check_at + 2], &[0, 0]);
    assert_eq!(seen(&out.frame).src, INSIDE);
}

#[test]
fn one_arm_snat_sends_back_out_the_same_interface() {
    let r = router();
    let dp = dataplane(&r);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, 50001, ONE_ARM_VIP, 17035));
    assert_eq!(out.action, XDP_TX);
    assert_eq!(macs(&out.frame), (ONE_ARM_MAC, r.out_mac));
    let s = seen(&out.frame);
    assert_eq!((s.src, s.dst, s.dport), (OUTSIDE, ONE_ARM_REAL, 8080));
    let mut reply = frames::tcp(
        &Flow::new(ONE_ARM_REAL, 8080, OUTSIDE, s.sport),
        &Shape {
            dst_mac: Some(r.out_mac),
            ..Default::default()
        },
        b"",
    );
    reply[6..12].copy_from_slice(&ONE_ARM_MAC);
    let back = dp.run_in(&r.ns, "out0", &reply);
    assert_eq!(back.action, XDP_TX);
    assert_eq!(macs(&back.frame), (CLIENT_MAC, r.out_mac));
    let s = seen(&back.frame);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ONE_ARM_VIP, 17035, CLIENT, 50001)
    );
}

/// Many clients toward one real:port: every flow its own source port, and every reply back to
/// its own client.
#[test]
fn every_flow_gets_its_own_port_and_its_replies_find_their_client() {
    let r = router();
    let dp = dataplane(&r);
    let mut ports = HashSet::new();
    let mut flows = Vec::new();
    for i in 0..2000u16 {
        let client_port = 20000 + i;
        let out = dp.run_in(&r.ns, "out0", &syn(&r, client_port, VIP, 443));
        assert_eq!(out.action, XDP_REDIRECT, "flow {i}");
        let s = seen(&out.frame);
        assert!(in_range(s.sport));
        assert!(
            ports.insert(s.sport),
            "port {} given twice (flow {i})",
            s.sport
        );
        flows.push((client_port, s.sport));
    }
    for (client_port, port) in flows.iter().step_by(7) {
        let back = dp.run_in(&r.ns, "in0", &from_real(&r, 8443, INSIDE, *port, b""));
        let s = seen(&back.frame);
        assert_eq!((s.dst, s.dport), (CLIENT, *client_port));
    }
}

/// The ports a flow tries, in order, as the data plane computes them (snat.rs).
fn probes(client_port: u16) -> Vec<u16> {
    let flow = FlowKey {
        src: Addr::from(CLIENT),
        dst: Addr::from(VIP),
        sport: client_port.to_be(),
        dport: 443u16.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    let hash = flow_hash(&flow.src, &flow.dst, flow.sport, flow.dport, flow.proto);
    let step = (hash >> 16) | 1;
    (0..SNAT_PROBES)
        .map(|i| {
            let offset = hash.wrapping_add(i.wrapping_mul(step)) & (SNAT_PORT_COUNT as u32 - 1);
            SNAT_PORT_FIRST + offset as u16
        })
        .collect()
}

fn reply_key(port: u16) -> FlowKey {
    FlowKey {
        src: Addr::from(REAL),
        dst: Addr::from(INSIDE),
        sport: 8443u16.to_be(),
        dport: port.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    }
}

/// When every port a flow may take is another live flow's, the flow is refused and counted,
/// never given a port in use; once one is free, it gets exactly that one.
#[test]
fn a_flow_whose_ports_are_all_taken_is_refused_not_given_one_in_use() {
    let r = router();
    let mut dp = dataplane(&r);
    let client_port = 50500;
    let tried = probes(client_port);
    // A live flow of another client on each of them.
    let now = dp.loaded.now_tick().unwrap();
    let (id, generation) = {
        // The real's id and generation, from a flow of another client.
        let out = dp.run_in(&r.ns, "out0", &syn(&r, 40001, VIP, 443));
        let port = seen(&out.frame).sport;
        let back = dp
            .loaded
            .maps
            .snat_reverse
            .get(&reply_key(port), 0)
            .unwrap();
        (back.real, back.generation)
    };
    for (i, port) in tried.iter().enumerate() {
        let taken = NatReverse {
            vip: Addr::from(VIP),
            vip_port: 443u16.to_be(),
            _pad: 0,
            real: id,
            generation,
            seen: now,
            flags: 0,
            hop: Default::default(),
            client: Addr::from(Ipv4Addr::new(198, 18, 0, 50 + i as u8)),
            client_port: 1234u16.to_be(),
            _pad2: 0,
        };
        dp.loaded
            .maps
            .snat_reverse
            .insert(reply_key(*port), taken, 0)
            .unwrap();
    }
    let before = dp.reason_count(Reason::SnatPortsExhausted);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, client_port, VIP, 443));
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(dp.reason_count(Reason::SnatPortsExhausted), before + 1);
    // Nothing of the refused flow stays: its next packet is scheduled afresh.
    let forward = FlowKey {
        src: Addr::from(CLIENT),
        dst: Addr::from(VIP),
        sport: client_port.to_be(),
        dport: 443u16.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    };
    assert!(dp.loaded.maps.flows.get(&forward, 0).is_err());

    // One of them freed (its flow expired and was swept): the flow gets that one.
    let freed = tried[SNAT_PROBES as usize / 2];
    dp.loaded
        .maps
        .snat_reverse
        .remove(&reply_key(freed))
        .unwrap();
    let out = dp.run_in(&r.ns, "out0", &syn(&r, client_port, VIP, 443));
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(seen(&out.frame).sport, freed);
}

/// Two balancers with the same policy give a flow the same port: a flow whose entries are gone
/// (a fresh node, or a forward entry lost to the LRU) is given its port again.
#[test]
fn a_flow_is_given_the_same_port_again_after_its_entries_are_gone() {
    let r = router();
    let mut dp = dataplane(&r);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, 50600, VIP, 443));
    let port = seen(&out.frame).sport;
    assert_eq!(port, probes(50600)[0], "the flow's first choice");
    // Forward entry lost: the next packet finds its own reverse entry and keeps the port.
    for key in dp
        .loaded
        .maps
        .flows
        .keys()
        .filter_map(|k| k.ok())
        .collect::<Vec<_>>()
    {
        let _ = dp.loaded.maps.flows.remove(&key);
    }
    let again = from_client(&r, 50600, b"more");
    let out = dp.run_in(&r.ns, "out0", &again);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(seen(&out.frame).sport, port);
    // A fresh node (no entries at all) chooses it too.
    let fresh = dataplane(&r);
    let out = fresh.run_in(&r.ns, "out0", &syn(&r, 50600, VIP, 443));
    assert_eq!(seen(&out.frame).sport, port);
}

/// A packet to the SNAT address in xdplb's range that belongs to no flow is dropped (the
/// kernel would reset the real's connection); outside the range it is the host's.
#[test]
fn unknown_packets_to_snat_ports_are_dropped_and_others_left_to_the_host() {
    let r = router();
    let dp = dataplane(&r);
    let before = dp.reason_count(Reason::SnatUnknown);
    let stray = from_real(&r, 8443, INSIDE, SNAT_PORT_FIRST + 77, b"late");
    assert_eq!(dp.run_in(&r.ns, "in0", &stray).action, XDP_DROP);
    assert_eq!(dp.reason_count(Reason::SnatUnknown), before + 1);
    // The host's own connection to the real (a health check, an ssh session) from its own
    // ephemeral ports: untouched.
    let own = from_real(&r, 8443, INSIDE, 35000, b"hello host");
    let out = dp.run_in(&r.ns, "in0", &own);
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.frame, own);
}

/// The controller frees the port of a flow whose both directions expired, and no other.
#[test]
fn expired_flows_ports_are_freed_and_live_ones_kept() {
    let r = router();
    let mut dp = dataplane(&r);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, 50700, VIP, 443));
    let port = seen(&out.frame).sport;
    let now = dp.loaded.now_tick().unwrap();
    let hz = dp.loaded.hz;
    let secs = |s| lb_common::clock::ticks_from_secs(s, hz);
    // The client's second packet: no longer half-open.
    let ack = from_client(&r, 50700, b"");
    assert_eq!(dp.run_in(&r.ns, "out0", &ack).action, XDP_REDIRECT);
    assert_eq!(snat_sweep::sweep(&mut dp.loaded.maps, now, hz).unwrap(), 0);
    // Quiet for a minute: still alive (TCP's idle timeout is 900 s).
    let minute = now + secs(61);
    assert_eq!(
        snat_sweep::sweep(&mut dp.loaded.maps, minute, hz).unwrap(),
        0
    );
    assert!(dp.loaded.maps.snat_reverse.get(&reply_key(port), 0).is_ok());
    // Past the idle timeout in both directions.
    let later = now + secs(901);
    assert_eq!(
        snat_sweep::sweep(&mut dp.loaded.maps, later, hz).unwrap(),
        1
    );
    assert!(
        dp.loaded
            .maps
            .snat_reverse
            .get(&reply_key(port), 0)
            .is_err()
    );
}

/// A SYN flood to a SNAT VIP: a half-open flow's port is freed once the client's side is past
/// the closing timeout (10 s), even while the real keeps answering.
#[test]
fn half_open_flows_free_their_ports_after_the_closing_timeout() {
    let r = router();
    let mut dp = dataplane(&r);
    let out = dp.run_in(&r.ns, "out0", &syn(&r, 50800, VIP, 443));
    let port = seen(&out.frame).sport;
    let now = dp.loaded.now_tick().unwrap();
    let hz = dp.loaded.hz;
    let secs = |s| lb_common::clock::ticks_from_secs(s, hz);
    // The real answers (its SYN-ACK), keeping the reply side fresh.
    let answer = from_real(&r, 8443, INSIDE, port, b"");
    assert_eq!(dp.run_in(&r.ns, "in0", &answer).action, XDP_REDIRECT);
    let soon = now + secs(5);
    assert_eq!(snat_sweep::sweep(&mut dp.loaded.maps, soon, hz).unwrap(), 0);
    let after = now + secs(11);
    assert_eq!(
        snat_sweep::sweep(&mut dp.loaded.maps, after, hz).unwrap(),
        1
    );
    assert!(
        dp.loaded
            .maps
            .snat_reverse
            .get(&reply_key(port), 0)
            .is_err()
    );
}

/// A service's SNAT address changed (a reload, or a new route toward a real): its established
/// flows are scheduled afresh, with a port claimed under the new address, never sent on from a
/// port nobody claimed there.
#[test]
fn a_changed_snat_address_reschedules_flows_instead_of_reusing_their_ports() {
    let r = router();
    let mut dp = dataplane(&r);
    assert_eq!(
        dp.run_in(&r.ns, "out0", &syn(&r, 50900, VIP, 443)).action,
        XDP_REDIRECT
    );
    let moved = Ipv4Addr::new(198, 19, 0, 5);
    dp.policy.services[0].snat_address = Some(moved.into());
    dp.apply();
    let data = from_client(&r, 50900, b"more");
    let out = dp.run_in(&r.ns, "out0", &data);
    assert_eq!(out.action, XDP_REDIRECT);
    let s = seen(&out.frame);
    assert_eq!(s.src, moved);
    // The real's reply to the new address finds the client: the port was claimed there.
    let back = dp.run_in(&r.ns, "in0", &from_real(&r, 8443, moved, s.sport, b""));
    assert_eq!(back.action, XDP_REDIRECT);
    let s = seen(&back.frame);
    assert_eq!((s.src, s.dst, s.dport), (VIP, CLIENT, 50900));
}
