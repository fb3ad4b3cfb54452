//! Connection-table expiry, through the real XDP program: a flow idle longer than its
//! service's timeout is forgotten (a NAT reply of it is no longer translated, a client packet
//! starts a new flow), a TCP FIN or RST in either direction shortens that to the closing
//! timeout, and a NAT flow lives while either direction keeps sending.
//!
//! The data plane's clock ticks every 256 jiffies (1.024 s at this kernel's HZ=250), so a 1 s
//! timeout (one tick) has certainly passed after two ticks; the tests wait two ticks and 0.4 s,
//! at the HZ the loader measured.

use std::{net::Ipv4Addr, thread::sleep, time::Duration};

use xdplb_lab::lab::FibRouter;
use xdplb_tests::{
    fixture::{Dataplane, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frames::{self, CLIENT_MAC, Flow, Shape},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
const REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x19, 0x11];
/// Short idle timeout (NAT, port 80); long idle but short closing timeout (NAT, port 81);
/// short idle timeout over DR (VIP .101 port 104, real on the client side).
const IDLE_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const DR_REAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const DR_REAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x18, 0x21];

const POLICY: &str = "
interfaces:
  - name: out0
  - name: in0
    role: inside
services:
  - name: short-idle
    vip: 198.18.0.100
    ports: [80]
    protocol: tcp
    forwarding: nat
    timeouts:
      idle: 1s
    reals:
      - address: 198.19.0.11
  - name: short-closing
    vip: 198.18.0.100
    ports: [81]
    protocol: tcp
    forwarding: nat
    timeouts:
      idle: 60s
      closing: 1s
    reals:
      - address: 198.19.0.11
  - name: udp-short-idle
    vip: 198.18.0.100
    ports: [53]
    protocol: udp
    forwarding: nat
    timeouts:
      idle: 2s
    reals:
      - address: 198.19.0.11
  - name: dr-short-idle
    vip: 198.18.0.101
    ports: [104]
    protocol: tcp
    forwarding: dr
    timeouts:
      idle: 1s
    reals:
      - address: 198.18.0.21
";

fn router() -> FibRouter {
    FibRouter::new(&[
        (CLIENT, CLIENT_MAC, "out0"),
        (REAL, REAL_MAC, "in0"),
        (DR_REAL, DR_REAL_MAC, "out0"),
    ])
    .unwrap()
}

struct Lab {
    router: FibRouter,
    dp: Dataplane,
}

impl Lab {
    fn new() -> Lab {
        let router = router();
        let dp = Dataplane::on_router(POLICY, &[(DR_REAL, DR_REAL_MAC)], &router);
        Lab { router, dp }
    }

    /// Long enough for a one-tick timeout to have passed.
    fn timeout_passed(&self) -> Duration {
        let tick = lb_common::clock::TICK_JIFFIES as f64 / self.dp.loaded.hz as f64;
        Duration::from_secs_f64(2.0 * tick + 0.4)
    }

    fn shape(&self, inside: bool, flags: &str) -> Shape {
        Shape {
            dst_mac: Some(if inside {
                self.router.in_mac
            } else {
                self.router.out_mac
            }),
            syn: flags.contains('S'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            ..Default::default()
        }
    }

    /// Client -> VIP:port; returns the action.
    fn send(&self, vip: Ipv4Addr, sport: u16, port: u16, flags: &str) -> u32 {
        let frame = frames::tcp(
            &Flow::new(CLIENT, sport, vip, port),
            &self.shape(false, flags),
            b"",
        );
        self.dp.run_in(&self.router.ns, "out0", &frame).action
    }

    /// Real -> client reply; returns the action (XDP_REDIRECT: translated toward the client).
    fn reply(&self, sport: u16, port: u16, flags: &str) -> u32 {
        let mut frame = frames::tcp(
            &Flow::new(REAL, port, CLIENT, sport),
            &self.shape(true, flags),
            b"",
        );
        frame[6..12].copy_from_slice(&REAL_MAC);
        self.dp.run_in(&self.router.ns, "in0", &frame).action
    }

    fn udp(&self, from_real: bool, sport: u16) -> u32 {
        let (flow, iface) = if from_real {
            (Flow::new(REAL, 53, CLIENT, sport), "in0")
        } else {
            (Flow::new(CLIENT, sport, IDLE_VIP, 53), "out0")
        };
        let frame = frames::udp(&flow, &self.shape(from_real, ""), b"x");
        self.dp.run_in(&self.router.ns, iface, &frame).action
    }

    /// New flows counted for the service named `name` so far.
    fn new_flows(&self, name: &str) -> u64 {
        let index = self
            .dp
            .policy
            .services
            .iter()
            .position(|s| s.name == name)
            .unwrap() as u32;
        let snapshot = xdplb::dataplane::counters::snapshot(self.dp.maps()).unwrap();
        snapshot
            .services
            .iter()
            .find(|(id, _)| *id == index)
            .map(|(_, c)| c.new_flows)
            .unwrap_or(0)
    }
}

#[test]
fn idle_flows_expire_and_closing_ones_sooner() {
    let lab = Lab::new();
    // Short idle timeout: an idle flow is forgotten.
    assert_eq!(lab.send(IDLE_VIP, 40001, 80, "S"), XDP_REDIRECT);
    assert_eq!(lab.reply(40001, 80, "S"), XDP_REDIRECT);
    // Long idle, short closing timeout: a plain flow, one closed by the client's FIN, one
    // reset by the real.
    for sport in [40011, 40012, 40013] {
        assert_eq!(lab.send(IDLE_VIP, sport, 81, "S"), XDP_REDIRECT);
        assert_eq!(lab.reply(sport, 81, "S"), XDP_REDIRECT);
    }
    assert_eq!(lab.send(IDLE_VIP, 40012, 81, "F"), XDP_REDIRECT);
    assert_eq!(lab.reply(40013, 81, "R"), XDP_REDIRECT);
    // DR flow with a short idle timeout.
    assert_eq!(lab.send(DR_VIP, 40021, 104, "S"), XDP_TX);
    assert_eq!(lab.new_flows("dr-short-idle"), 1);
    assert_eq!(lab.new_flows("short-closing"), 3);

    sleep(lab.timeout_passed());

    assert_eq!(
        lab.reply(40001, 80, ""),
        XDP_PASS,
        "a reply of an expired flow is the kernel's, untranslated"
    );
    assert_eq!(
        lab.reply(40011, 81, ""),
        XDP_REDIRECT,
        "an open flow inside its idle timeout is still translated"
    );
    assert_eq!(
        lab.reply(40012, 81, ""),
        XDP_PASS,
        "a flow the client closed expires after the closing timeout"
    );
    // The real's RST closed the client's direction too: its next packet is a new flow.
    assert_eq!(lab.send(IDLE_VIP, 40013, 81, ""), XDP_REDIRECT);
    assert_eq!(lab.new_flows("short-closing"), 4);
    // An expired DR flow is scheduled afresh.
    assert_eq!(lab.send(DR_VIP, 40021, 104, ""), XDP_TX);
    assert_eq!(lab.new_flows("dr-short-idle"), 2);
}

#[test]
fn a_nat_flow_lives_while_either_direction_sends() {
    let lab = Lab::new();
    // One query, then the real streams replies for twice the 2 s idle timeout.
    assert_eq!(lab.udp(false, 5000), XDP_REDIRECT);
    for _ in 0..10 {
        sleep(Duration::from_millis(500));
        assert_eq!(lab.udp(true, 5000), XDP_REDIRECT, "replies keep flowing");
    }
    // The client's side has been silent for 5 s but the flow is alive: no new flow.
    assert_eq!(lab.udp(false, 5000), XDP_REDIRECT);
    assert_eq!(lab.new_flows("udp-short-idle"), 1);
}
