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
//!
//! Dual stack (`build_dual_stack`): IPv6 on the same links, the client on 2001:2::/64 (client
//! 2001:2::1, the balancer 2001:2::2) and the reals on 2001:2:0:1::/64 (the balancer
//! 2001:2:0:1::1, reals 2001:2:0:1::11..), in one-arm too (both prefixes on the one segment).
//! The client's IPv6 default route is the balancer; duplicate address detection is off.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use super::{
    Balancer, Switch,
    netns::{self, Netns},
};

/// The VIP of the NAT and SNAT labs.
pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The IPv6 VIP of the dual-stack NAT lab.
pub const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

/// The IPv6 side of a dual-stack NAT or SNAT lab.
#[derive(Clone, Debug)]
pub struct Ipv6Plan {
    pub client: Ipv6Addr,
    /// The reals' addresses, in `Topology::reals` order.
    pub reals: Vec<Ipv6Addr>,
    /// The balancer's address on the reals' network (NAT's gateway).
    pub real_side: Ipv6Addr,
}

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
    /// Dual stack: the IPv6 addresses.
    pub ipv6: Option<Ipv6Plan>,
    pub switch: Switch,
}

impl Topology {
    pub fn build(arms: Arms, reals: usize) -> Result<Topology> {
        Topology::build_with(arms, reals, false)
    }

    /// As `build`, with IPv6 beside IPv4 (see the module's notes).
    pub fn build_dual_stack(arms: Arms, reals: usize) -> Result<Topology> {
        Topology::build_with(arms, reals, true)
    }

    fn build_with(arms: Arms, reals: usize, ipv6: bool) -> Result<Topology> {
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
        if ipv6 {
            client.ipv6_without_dad()?;
            balancer.ns.ipv6_without_dad()?;
        }
        let v6 = |last: u16| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last);
        let v6_inside = |last: u16| Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, last);

        // Client side.
        let (client_addr, client_gw) = match arms {
            Arms::Two => (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)),
            Arms::One => (Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2)),
        };
        switch.plug(&client, "eth0", out_bridge, client_addr, 24)?;
        client.ip(&["route", "add", "default", "via", &client_gw.to_string()])?;
        if ipv6 {
            client.add_ipv6("eth0", v6(1), 64)?;
            client.ip(&["-6", "route", "add", "default", "via", &v6(2).to_string()])?;
        }

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
        if ipv6 {
            balancer.ns.add_ipv6("eth0", v6(2), 64)?;
            let inside = if arms == Arms::Two { "eth1" } else { "eth0" };
            balancer.ns.add_ipv6(inside, v6_inside(1), 64)?;
        }
        let mut hosts = Vec::new();
        let mut reals6 = Vec::new();
        for i in 0..reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            let addr = Ipv4Addr::new(real_net[0], real_net[1], real_net[2], 11 + i as u8);
            if ipv6 {
                ns.ipv6_without_dad()?;
            }
            switch.plug(&ns, "eth0", in_bridge, addr, 24)?;
            if ipv6 {
                let addr6 = v6_inside(0x11 + i as u16);
                ns.add_ipv6("eth0", addr6, 64)?;
                reals6.push(addr6);
            }
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
            ipv6: ipv6.then(|| Ipv6Plan {
                client: v6(1),
                reals: reals6,
                real_side: v6_inside(1),
            }),
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
