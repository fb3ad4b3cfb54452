//! The flood defence (lb_common::flood), packet by packet: while a CPU sees more new flows per
//! second than the limit, new DR flows get no connection-table entry, whatever their first
//! packet; traffic that makes no entries never counts as a flood.

use std::net::Ipv4Addr;

use lb_common::flood::FLOOD_NEW_FLOWS_PER_TICK;
use xdplb::dataplane::counters;
use xdplb_tests::{
    fixture::{Dataplane, XDP_TX},
    frames::{self, Flow, Shape, macs},
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const REALS: [(Ipv4Addr, [u8; 6]); 2] = [
    (Ipv4Addr::new(198, 18, 0, 11), [0x02, 0, 0, 0, 0, 0x11]),
    (Ipv4Addr::new(198, 18, 0, 12), [0x02, 0, 0, 0, 0, 0x12]),
];
const POLICY: &str = "
interfaces:
  - name: lo
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
    scheduler: source-hash
    reals:
      - address: 198.18.0.11
      - address: 198.18.0.12
";

/// A spoofed source: the nth of 198.18.128.0/17.
fn source(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + n)
}

fn tcp(src: Ipv4Addr, sport: u16, syn: bool) -> Vec<u8> {
    frames::tcp(
        &Flow::new(src, sport, VIP, 104),
        &Shape {
            syn,
            ..Default::default()
        },
        b"",
    )
}

fn entries(dp: &Dataplane) -> usize {
    dp.maps().flows.keys().count()
}

#[test]
fn during_a_flood_no_new_flow_gets_an_entry_whatever_its_first_packet() {
    // The detector is per CPU: every run must see the same CPU's state.
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).unwrap();
    let dp = Dataplane::new(POLICY, &REALS);
    // Start at the beginning of a clock tick, so the flood below begins and is detected in
    // one tick, and stays known through the next (more than a second for what follows).
    let start = dp.loaded.now_tick().unwrap();
    while dp.loaded.now_tick().unwrap() == start {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let flood_tick = dp.loaded.now_tick().unwrap();
    // An established connection, entered before the flood.
    let held = dp
        .run(&tcp(Ipv4Addr::new(198, 18, 0, 1), 40000, true))
        .unwrap();
    let held_real = macs(&held.frame).0;
    // SYNs from spoofed sources, past the limit: the first ones are entered, then none.
    for n in 0..FLOOD_NEW_FLOWS_PER_TICK * 2 {
        assert_eq!(dp.run(&tcp(source(n), 1024, true)).unwrap().action, XDP_TX);
    }
    // The flood is known until the end of the tick after the last SYN's.
    let last_syn_tick = dp.loaded.now_tick().unwrap();
    assert!(
        last_syn_tick <= flood_tick + 1,
        "the SYNs took more than a tick"
    );
    let flooded_until = flood_tick + 1;
    let before = entries(&dp);
    assert!(
        before <= FLOOD_NEW_FLOWS_PER_TICK as usize + 2,
        "{before} entries: the flood's SYNs were entered"
    );
    // A flood of ACKs (or anything else) from new sources adds nothing either, and every packet
    // of such a flow goes to the same real. (On a slow machine the ticks may run out first:
    // what comes after the flood is entered again, rightly.)
    let mut during = 0;
    for n in 0..2000 {
        if dp.loaded.now_tick().unwrap() > flooded_until {
            break;
        }
        let first = dp.run(&tcp(source(100_000 + n), 2048, false)).unwrap();
        assert_eq!(first.action, XDP_TX);
        let again = dp.run(&tcp(source(100_000 + n), 2048, false)).unwrap();
        assert_eq!(macs(&again.frame).0, macs(&first.frame).0, "flow {n} moved");
        if dp.loaded.now_tick().unwrap() <= flooded_until {
            during = n + 1;
            assert_eq!(entries(&dp), before, "the flood added entries");
        }
    }
    assert!(during >= 100, "only {during} flows ran during the flood");
    let snapshot = counters::snapshot(dp.maps()).unwrap();
    assert!(
        snapshot.untracked >= 2 * during as u64,
        "untracked {}",
        snapshot.untracked
    );
    // The established connection still goes to its real, from its entry.
    let later = dp
        .run(&tcp(Ipv4Addr::new(198, 18, 0, 1), 40000, false))
        .unwrap();
    assert_eq!(macs(&later.frame).0, held_real);
}

#[test]
fn busy_traffic_of_entered_flows_is_not_a_flood() {
    let dp = Dataplane::new(POLICY, &REALS);
    // Syslog from 500 clients, six datagrams each, far past the limit in packets: each
    // client's flow is entered once, and only new entries count.
    for round in 0..6 {
        for n in 0..500 {
            let datagram = frames::udp(
                &Flow::new(source(n), 5140, VIP, 514),
                &Shape::default(),
                b"<13>message",
            );
            assert_eq!(dp.run(&datagram).unwrap().action, XDP_TX, "round {round}");
        }
    }
    let snapshot = counters::snapshot(dp.maps()).unwrap();
    assert_eq!(
        snapshot.flooded_at, 0,
        "syslog traffic was taken for a flood"
    );
    // So new TCP flows are still entered.
    let before = entries(&dp);
    dp.run(&tcp(Ipv4Addr::new(198, 18, 0, 1), 40001, true))
        .unwrap();
    assert_eq!(entries(&dp), before + 1);
}
