//! Scheduling semantics in the data plane, packet by packet (DR, BPF_PROG_TEST_RUN):
//! persistence across a service's ports, drained and down reals (also for flows the per-CPU
//! flow cache holds), source hashing (established connections kept through changes), and the
//! fallback server.

use std::{collections::HashSet, net::Ipv4Addr};

use xdplb::policy::RealRef;
use xdplb_tests::{
    fixture::{Dataplane, XDP_TX},
    frames::{self, Flow, Shape},
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const REALS: [(Ipv4Addr, [u8; 6]); 3] = [
    (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (Ipv4Addr::new(198, 18, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
    (Ipv4Addr::new(198, 18, 0, 13), [0x02, 0, 0, 0, 0, 0x13]),
];
const FALLBACK: (Ipv4Addr, [u8; 6]) = (Ipv4Addr::new(198, 18, 0, 99), [0x02, 0, 0, 0, 0, 0x99]);

fn policy(extra: &str) -> String {
    format!(
        "interfaces:\n  - name: lo\nservices:\n  - name: dicom\n    vip: 198.18.0.100\n    ports: [104, 11112]\n    protocol: tcp\n    forwarding: dr\n{extra}    reals:\n      - address: 198.18.0.11\n      - address: 198.18.0.12\n      - address: 198.18.0.13\n"
    )
}

fn dataplane(extra: &str) -> Dataplane {
    let mut macs = REALS.to_vec();
    macs.push(FALLBACK);
    Dataplane::new(&policy(extra), &macs)
}

fn frame(client: Ipv4Addr, sport: u16, port: u16, syn: bool) -> Vec<u8> {
    frames::tcp(
        &Flow::new(client, sport, VIP, port),
        &Shape {
            syn,
            ..Default::default()
        },
        b"",
    )
}

/// Which MAC the program sent the frame to.
fn sent_to(dp: &Dataplane, frame: &[u8]) -> [u8; 6] {
    let out = dp.run(frame).unwrap();
    assert_eq!(out.action, XDP_TX);
    out.frame[0..6].try_into().unwrap()
}

fn client(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1 + (i / 200) as u8, (i % 200) as u8 + 1)
}

fn mark(dp: &mut Dataplane, index: usize, healthy: bool) {
    let real = RealRef::of(&dp.policy.services[0], &dp.policy.services[0].reals[index]);
    if healthy {
        dp.observed.unhealthy.remove(&real);
    } else {
        dp.observed.unhealthy.insert(real);
    }
    dp.apply();
}

#[test]
fn a_persistent_client_keeps_its_real_across_ports_and_its_netmask() {
    let dp = dataplane("    persistence:\n      timeout: 3600s\n      netmask: 24\n");
    let first = sent_to(&dp, &frame(Ipv4Addr::new(198, 18, 7, 1), 40000, 104, true));
    for i in 0..40 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        // Other source ports, other hosts of the same /24.
        let c = Ipv4Addr::new(198, 18, 7, 1 + (i % 5) as u8);
        assert_eq!(sent_to(&dp, &frame(c, 41000 + i, port, true)), first);
    }
    // Without persistence, the same clients spread.
    let spread = dataplane("");
    let seen: HashSet<[u8; 6]> = (0..40)
        .map(|i| {
            sent_to(
                &spread,
                &frame(Ipv4Addr::new(198, 18, 7, 1), 41000 + i, 104, true),
            )
        })
        .collect();
    assert!(seen.len() > 1);
}

#[test]
fn drained_or_down_reals_take_no_new_clients_but_keep_their_flows() {
    let mut dp = dataplane("    persistence:\n      timeout: 3600s\n");
    // Find a client on real 0 and keep one of its flows open.
    let c = (0..500)
        .map(client)
        .find(|c| sent_to(&dp, &frame(*c, 40000, 104, true)) == REALS[0].1)
        .unwrap();
    let held = frame(c, 40000, 104, false);

    // Drained: the held flow stays, the persistent client's new flows go elsewhere.
    dp.policy.services[0].reals[0].weight = 0;
    dp.apply();
    assert_eq!(sent_to(&dp, &held), REALS[0].1);
    let moved = sent_to(&dp, &frame(c, 40001, 11112, true));
    assert_ne!(moved, REALS[0].1);
    // The client now sticks to its new real.
    assert_eq!(sent_to(&dp, &frame(c, 40002, 104, true)), moved);

    // A new client never lands on the drained real either.
    for i in 500..700 {
        assert_ne!(
            sent_to(&dp, &frame(client(i), 40000, 104, true)),
            REALS[0].1
        );
    }

    // Down (health): even the held flow moves.
    dp.policy.services[0].reals[0].weight = 100;
    mark(&mut dp, 0, false);
    assert_ne!(sent_to(&dp, &held), REALS[0].1);
}

#[test]
fn a_flow_cached_this_tick_still_moves_at_once_when_its_real_goes_down() {
    // The data plane serves a DR flow's packets from a per-CPU cache for the rest of the clock
    // tick in which it last went through the connection table (flow_cache.rs). Marking its
    // real down must still move it from the very next packet. Three flows, so that at least
    // one pair of packets falls inside one tick (a tick is about a second).
    let mut dp = dataplane("");
    for sport in [45000, 45001, 45002] {
        let c = (0..500)
            .map(client)
            .find(|c| sent_to(&dp, &frame(*c, sport, 104, true)) == REALS[1].1)
            .unwrap();
        let held = frame(c, sport, 104, false);
        assert_eq!(sent_to(&dp, &held), REALS[1].1);
        mark(&mut dp, 1, false);
        assert_ne!(
            sent_to(&dp, &held),
            REALS[1].1,
            "flow {sport} stayed on a down real"
        );
        mark(&mut dp, 1, true);
    }
}

#[test]
fn source_hash_sends_a_clients_flows_to_one_real_and_keeps_established_ones_through_changes() {
    let mut dp = dataplane("    scheduler: source-hash\n");
    let c = Ipv4Addr::new(198, 18, 9, 9);
    let first = sent_to(&dp, &frame(c, 40000, 104, true));
    for i in 1..30 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        assert_eq!(sent_to(&dp, &frame(c, 40000 + i, port, true)), first);
    }
    let seen: HashSet<[u8; 6]> = (0..60)
        .map(|i| sent_to(&dp, &frame(client(i), 40000, 104, true)))
        .collect();
    assert_eq!(seen.len(), 3, "clients spread over every real");

    // Like IPVS's `sh`, established connections keep their real when the reals change: the
    // client's real drained, another real removed, a new one added.
    let index = REALS.iter().position(|(_, mac)| *mac == first).unwrap();
    dp.policy.services[0].reals[index].weight = 0;
    dp.apply();
    let other = (index + 1) % 3;
    dp.policy.services[0].reals.remove(other);
    let added = xdplb::policy::Real {
        address: FALLBACK.0.into(),
        ..dp.policy.services[0].reals[0].clone()
    };
    dp.policy.services[0].reals.push(added);
    dp.apply();
    for i in 0..30 {
        let port = if i % 2 == 0 { 104 } else { 11112 };
        assert_eq!(
            sent_to(&dp, &frame(c, 40000 + i, port, false)),
            first,
            "established connection {i} moved"
        );
    }
    // New connections of the client go to a real still in the table.
    assert_ne!(sent_to(&dp, &frame(c, 41000, 104, true)), first);
}

#[test]
fn the_fallback_takes_new_flows_only_while_no_real_is_up() {
    let mut dp = dataplane("    fallback: 198.18.0.99\n");
    assert_ne!(
        sent_to(&dp, &frame(client(1), 40000, 104, true)),
        FALLBACK.1
    );
    for i in 0..3 {
        mark(&mut dp, i, false);
    }
    let on_fallback = frame(client(2), 40000, 104, false);
    assert_eq!(
        sent_to(&dp, &frame(client(2), 40000, 104, true)),
        FALLBACK.1
    );
    // One real returns: new flows go to it, the flow on the fallback stays.
    mark(&mut dp, 1, true);
    for i in 10..30 {
        assert_eq!(
            sent_to(&dp, &frame(client(i), 40000, 104, true)),
            REALS[1].1
        );
    }
    assert_eq!(sent_to(&dp, &on_fallback), FALLBACK.1);
}

/// Two balancers of a pair share no memory: a persistent client must still be placed alike
/// by both, whichever of its connections each one sees first.
#[test]
fn both_nodes_of_a_pair_place_a_persistent_client_alike() {
    let extra = "    persistence:\n      timeout: 1h\n      netmask: 24\n";
    let (a, b) = (dataplane(extra), dataplane(extra));
    let mut reals_used = HashSet::new();
    for i in 0..60u16 {
        // Clients of one /24 count as one.
        let (first, neighbour) = (
            Ipv4Addr::new(198, 18, 10 + i as u8, 1),
            Ipv4Addr::new(198, 18, 10 + i as u8, 77),
        );
        let on_a = sent_to(&a, &frame(first, 40000 + i, 104, true));
        // Node B sees other connections of the same client (and its /24) first.
        let on_b = sent_to(&b, &frame(neighbour, 50000 + i, 11112, true));
        assert_eq!(
            on_a, on_b,
            "client {first} placed differently by the two nodes"
        );
        assert_eq!(sent_to(&a, &frame(neighbour, 41000 + i, 11112, true)), on_a);
        reals_used.insert(on_a);
    }
    assert_eq!(reals_used.len(), 3, "clients spread over every real");
}
