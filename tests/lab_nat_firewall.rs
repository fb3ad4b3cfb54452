//! The NAT firewall (README, "NAT firewall"): a two-arm NAT balancer is its reals' gateway,
//! with IP forwarding on; from the client side only the VIPs' services may reach the server
//! side. Real TCP in a namespace lab, the real `xdplb run`, the real nftables.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use lb_common::counters::Reason;
use xdplb_lab::lab::{Arms, CLIENT_PORT, EchoServer, NatLab, who};

/// Whether the client gets a TCP connection to `to` within a second.
fn connects(lab: &NatLab, to: SocketAddr) -> Result<bool> {
    lab.client
        .within(move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok())
}

fn tables(lab: &NatLab) -> Result<String> {
    let out = xdplb_lab::lab::netns::run(lab.balancer.ns.command("nft").args(["list", "tables"]))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn from_the_client_side_only_the_vips_reach_the_server_side() -> Result<()> {
    let mut lab = NatLab::build(Arms::Two, 2)?;
    let (real_ns, real, _) = &lab.reals[0];
    let real = *real;
    // Another service on the real, outside the policy: open to the world if routed.
    let _other = EchoServer::start(real_ns, 2222, "real-1-other")?;
    lab.balancer.start(&lab.policy())?;
    let service_port = SocketAddr::from((real, 8080));
    let other_port = SocketAddr::from((real, 2222));

    // The VIP works.
    who(&lab.client, lab.vip(80)).context("through the VIP")?;
    // The real's service port and its other port, straight through the balancer: no.
    ensure!(
        !connects(&lab, service_port)?,
        "reached the real's service port directly"
    );
    ensure!(
        !connects(&lab, other_port)?,
        "reached another port of the real directly"
    );
    // The reals' own traffic to the client side, and its replies, pass.
    let client_service = SocketAddr::from((lab.client_addr, CLIENT_PORT));
    for (ns, _, name) in &lab.reals {
        ensure!(who(ns, client_service).with_context(|| format!("{name} -> client"))? == "client");
    }
    // Dropped and counted: the service port by the data plane, the other one by nftables.
    let stats = lab.balancer.stats()?;
    let in_xdp = stats
        .reasons
        .iter()
        .find(|(r, _)| *r == Reason::DirectToReal)
        .map_or(0, |(_, n)| *n);
    ensure!(in_xdp > 0, "the data plane dropped nothing: {stats:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&lab.balancer.ctl(&["status", "--json"])?.stdout)?;
    ensure!(status["nat_firewall"]["active"] == true, "{status}");
    let dropped = status["nat_firewall"]["dropped_packets"]
        .as_u64()
        .unwrap_or(0);
    ensure!(dropped > in_xdp, "nftables dropped nothing: {status}");

    // The first packet of a VIP flow whose next hop is not resolved yet is handed to the
    // kernel translated: the firewall lets it through.
    let no_neighbour = |lab: &NatLab| -> Result<u64> {
        Ok(lab
            .balancer
            .stats()?
            .reasons
            .iter()
            .find(|(r, _)| *r == Reason::NoNeighbour)
            .map_or(0, |(_, n)| *n))
    };
    let before = no_neighbour(&lab)?;
    let mut unresolved = 0;
    for _ in 0..10 {
        lab.balancer.ns.ip(&["neigh", "flush", "dev", "eth1"])?;
        lab.balancer.ns.ip(&["neigh", "flush", "dev", "eth0"])?;
        who(&lab.client, lab.vip(80)).context("a VIP flow with its next hop unresolved")?;
        unresolved = no_neighbour(&lab)? - before;
        if unresolved > 0 {
            break;
        }
    }
    ensure!(unresolved > 0, "never met an unresolved next hop");

    // `nat_routing: open`: a plain router again (validate warns).
    let open = format!("nat_routing: open\n{}", lab.policy());
    let file = lab.balancer.work_dir.join("open.yaml");
    std::fs::write(&file, &open)?;
    let out = lab
        .balancer
        .ctl(&["validate", "--config", file.to_str().unwrap()])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && said.contains("warning: nat_routing: open"),
        "{said}"
    );
    lab.balancer.reload(&open)?;
    ensure!(
        connects(&lab, other_port)?,
        "nat_routing: open still blocks"
    );
    ensure!(
        !tables(&lab)?.contains("xdplb"),
        "the table stayed with nat_routing: open"
    );
    lab.balancer.reload(&lab.policy())?;
    ensure!(
        !connects(&lab, other_port)?,
        "closed again, yet reached the real"
    );

    // `xdplb down` leaves no table behind.
    ensure!(tables(&lab)?.contains("table inet xdplb"));
    lab.balancer.stop();
    ensure!(
        !tables(&lab)?.contains("xdplb"),
        "xdplb down left its table"
    );
    Ok(())
}
