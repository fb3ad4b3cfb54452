//! NAT end to end in namespace labs: real HTTP (curl) and UDP through the real XDP program
//! attached by the real `xdplb run`, with replies routed back through the balancer.

use std::{collections::HashMap, net::SocketAddr};

use anyhow::Result;
use xdplb_lab::lab::{Arms, CLIENT_PORT, Conversation, NatLab, http_get, udp_who, who};

fn nat_end_to_end(arms: Arms) -> Result<()> {
    let mut lab = NatLab::build(arms, 2)?;
    lab.balancer.start(&lab.policy())?;
    let fail = |what: String, e: anyhow::Error, lab: &NatLab| {
        anyhow::anyhow!(
            "{what}: {e}\nstats: {:?}\nlog:\n{}",
            lab.balancer.stats(),
            lab.balancer.log()
        )
    };

    // A long-lived connection through VIP:80 -> real:8080, held for the whole test.
    let mut held = Conversation::open(&lab.client, lab.vip(80))
        .map_err(|e| fail("held connection".into(), e, &lab))?;
    let held_real = held.who()?;

    // HTTP with port translation: curl to VIP:80, served on real:8080.
    let mut http: HashMap<String, usize> = HashMap::new();
    for i in 0..60 {
        let body = http_get(&lab.client, lab.vip(80))
            .map_err(|e| fail(format!("HTTP request {i}"), e, &lab))?;
        *http.entry(body).or_default() += 1;
    }
    // UDP request/response: the answer must come from VIP:53 (the socket is connected to it).
    let mut udp: HashMap<String, usize> = HashMap::new();
    for i in 0..60 {
        let name = udp_who(&lab.client, lab.vip(53))
            .map_err(|e| fail(format!("UDP request {i}"), e, &lab))?;
        *udp.entry(name).or_default() += 1;
    }
    for (_, _, name) in &lab.reals {
        assert!(
            http.get(name).copied().unwrap_or(0) >= 10,
            "HTTP shares {http:?}"
        );
        assert!(
            udp.get(name).copied().unwrap_or(0) >= 10,
            "UDP shares {udp:?}"
        );
    }

    // The balancer is the reals' gateway for their own traffic too.
    let client_service = SocketAddr::from((lab.client_addr, CLIENT_PORT));
    for (ns, _, name) in &lab.reals {
        assert_eq!(
            who(ns, client_service).map_err(|e| fail(format!("{name} -> client"), e, &lab))?,
            "client"
        );
    }

    assert_eq!(held.who()?, held_real, "the held connection kept its real");
    let forwarded = lab
        .balancer
        .stats()?
        .reals
        .iter()
        .map(|r| r.counters.packets)
        .sum::<u64>();
    assert!(forwarded > 600, "XDP forwarded only {forwarded} packets");
    Ok(())
}

#[test]
fn two_arm_nat_with_port_translation_tcp_and_udp() -> Result<()> {
    nat_end_to_end(Arms::Two)
}

#[test]
fn one_arm_nat_with_port_translation_tcp_and_udp() -> Result<()> {
    nat_end_to_end(Arms::One)
}
