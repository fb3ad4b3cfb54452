//! The networks of the NAT and SNAT labs, one-arm or two-arm: a client, the balancer and the
//! reals, with nothing on the reals but their own address. Each lab adds what its mode needs
//! (NAT: the balancer as the reals' default gateway; SNAT: nothing at all).
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
//! The client's default route is the balancer; the reals have only the route to their own
//! subnet.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{
    Balancer, Switch,
    netns::{self, Netns},
};

/// The VIP of the NAT and SNAT labs.
pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arms {
    One,
    Two,
}

/// The hosts of a NAT or SNAT lab, plugged in, with `lab_pass` on every switch port.
pub struct Topology {
    pub balancer: Balancer,
    pub arms: Arms,
    pub prefix: String,
    pub client: Netns,
    pub client_addr: Ipv4Addr,
    /// (namespace, address, name `real-N`).
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    /// The balancer's address on the reals' network: NAT's gateway, SNAT's default source.
    pub real_side: Ipv4Addr,
    pub switch: Switch,
}

impl Topology {
    pub fn build(arms: Arms, reals: usize) -> Result<Topology> {
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
        let (real_net, real_side) = match arms {
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
            hosts.push((ns, addr, format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;
        Ok(Topology {
            balancer,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            real_side,
            switch,
        })
    }
}

/// The policy's `interfaces:` block for `arms`: eth0 client-facing, and eth1 inside (two-arm).
pub fn interfaces_policy(arms: Arms) -> String {
    let mut text = String::from("interfaces:\n  - name: eth0\n    xdp_mode: driver\n");
    if arms == Arms::Two {
        text += "  - name: eth1\n    xdp_mode: driver\n    role: inside\n";
    }
    text
}
