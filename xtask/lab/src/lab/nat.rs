//! The NAT labs. Real servers use the balancer as their default gateway.
//!
//! Two-arm: clients and reals on separate networks, the balancer between them.
//! ```text
//!   client 198.18.0.1 ── br-out ── eth0 198.18.0.2 [balancer] eth1 198.19.0.1 ── br-in ── reals 198.19.0.11..
//! ```
//! One-arm: one network segment, two subnets; the balancer sends back out the interface it
//! received on.
//! ```text
//!   client 198.18.1.1 ─┐
//!   balancer eth0 ─────┤ br0   (198.18.0.2 and 198.18.1.2)
//!   reals 198.18.0.11.. ┘
//! ```
//! Each real serves TCP on 8080 (the `who` protocol and HTTP GET) and UDP on 53, answering
//! with its name; the policy maps VIP:80 to real:8080 and VIP:53 to real:53. The client serves
//! TCP on 7000, for the reals' ordinary traffic routed through the balancer.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Result;

use super::{
    Balancer, EchoServer, Switch, UdpNameServer,
    netns::{self, Netns},
};

pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The client's own TCP service, for traffic from the reals.
pub const CLIENT_PORT: u16 = 7000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arms {
    One,
    Two,
}

pub struct NatLab {
    pub balancer: Balancer,
    _tcp: Vec<EchoServer>,
    _udp: Vec<UdpNameServer>,
    pub arms: Arms,
    pub prefix: String,
    pub client: Netns,
    pub client_addr: Ipv4Addr,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    /// More hosts can be plugged in (then `attach_pass`).
    pub switch: Switch,
}

impl NatLab {
    pub fn build(arms: Arms, reals: usize) -> Result<NatLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let bridges: &[&str] = match arms {
            Arms::Two => &["br-out", "br-in"],
            Arms::One => &["br0"],
        };
        let (out_bridge, in_bridge) = (bridges[0], bridges[bridges.len() - 1]);
        let mut switch = Switch::new(&prefix, bridges)?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let balancer = Balancer::new(&prefix)?;

        // Client side.
        let (client_addr, client_gw) = match arms {
            Arms::Two => (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)),
            Arms::One => (Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2)),
        };
        switch.plug(&client, "eth0", out_bridge, client_addr, 24)?;
        client.ip(&["route", "add", "default", "via", &client_gw.to_string()])?;

        // Balancer and the reals' network.
        switch.plug(
            &balancer.ns,
            "eth0",
            out_bridge,
            Ipv4Addr::new(198, 18, 0, 2),
            24,
        )?;
        let (real_net, real_gw) = match arms {
            Arms::Two => {
                switch.plug(
                    &balancer.ns,
                    "eth1",
                    in_bridge,
                    Ipv4Addr::new(198, 19, 0, 1),
                    24,
                )?;
                ([198, 19, 0], Ipv4Addr::new(198, 19, 0, 1))
            }
            Arms::One => {
                balancer
                    .ns
                    .ip(&["addr", "add", "198.18.1.2/24", "dev", "eth0"])?;
                ([198, 18, 0], Ipv4Addr::new(198, 18, 0, 2))
            }
        };
        let mut hosts = Vec::new();
        for i in 0..reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            let addr = Ipv4Addr::new(real_net[0], real_net[1], real_net[2], 11 + i as u8);
            switch.plug(&ns, "eth0", in_bridge, addr, 24)?;
            ns.ip(&["route", "add", "default", "via", &real_gw.to_string()])?;
            hosts.push((ns, addr, format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;

        let mut tcp = vec![EchoServer::start(&client, CLIENT_PORT, "client")?];
        let mut udp = Vec::new();
        for (ns, _, name) in &hosts {
            tcp.push(EchoServer::start(ns, 8080, name)?);
            udp.push(UdpNameServer::start(ns, 53, name)?);
        }
        Ok(NatLab {
            balancer,
            _tcp: tcp,
            _udp: udp,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            switch,
        })
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((NAT_VIP, port))
    }

    /// VIP:80 (TCP) to real:8080 and VIP:53 (UDP) to real:53, over every real.
    pub fn policy(&self) -> String {
        let mut text = String::from("interfaces:\n  - name: eth0\n    xdp_mode: driver\n");
        if self.arms == Arms::Two {
            text += "  - name: eth1\n    xdp_mode: driver\n    role: inside\n";
        }
        text += &format!(
            "services:\n  - name: viewer\n    vip: {NAT_VIP}\n    ports: [80]\n    protocol: tcp\n    forwarding: nat\n    reals:\n"
        );
        for (_, addr, _) in &self.reals {
            text += &format!("      - address: {addr}\n        port: 8080\n");
        }
        text += &format!(
            "  - name: dns\n    vip: {NAT_VIP}\n    ports: [53]\n    protocol: udp\n    forwarding: nat\n    reals:\n"
        );
        for (_, addr, _) in &self.reals {
            text += &format!("      - address: {addr}\n");
        }
        text
    }
}
