//! The NAT labs (networks in arms.rs). Real servers use the balancer as their default gateway.
//!
//! Each real serves TCP on 8080 (the `who` protocol and HTTP GET) and UDP on 53, answering
//! with its name; the policy maps VIP:80 to real:8080 and VIP:53 to real:53. The client serves
//! TCP on 7000, for the reals' ordinary traffic routed through the balancer.
//!
//! Dual stack (`build_dual_stack`): the same over IPv6 too (addresses in arms.rs), the
//! balancer also the reals' IPv6 default gateway, and the servers listening on both families.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};

use super::{
    Balancer, EchoServer, Switch, UdpNameServer,
    arms::{Arms, Ipv6Plan, NAT_VIP, NAT_VIP6, Topology, interfaces_policy},
    netns::Netns,
};

/// The client's own TCP service, for traffic from the reals.
pub const CLIENT_PORT: u16 = 7000;

pub struct NatLab {
    pub balancer: Balancer,
    _tcp: Vec<EchoServer>,
    _udp: Vec<UdpNameServer>,
    pub arms: Arms,
    pub prefix: String,
    pub client: Netns,
    pub client_addr: Ipv4Addr,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    /// Dual stack: the IPv6 addresses.
    pub ipv6: Option<Ipv6Plan>,
    /// More hosts can be plugged in (then `attach_pass`).
    pub switch: Switch,
}

impl NatLab {
    pub fn build(arms: Arms, reals: usize) -> Result<NatLab> {
        NatLab::from_topology(Topology::build(arms, reals)?)
    }

    /// As `build`, with IPv6 beside IPv4 (see the module's notes).
    pub fn build_dual_stack(arms: Arms, reals: usize) -> Result<NatLab> {
        NatLab::from_topology(Topology::build_dual_stack(arms, reals)?)
    }

    fn from_topology(topology: Topology) -> Result<NatLab> {
        let Topology {
            balancer,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            real_side,
            ipv6,
            switch,
        } = topology;
        for (ns, _, _) in &hosts {
            ns.ip(&["route", "add", "default", "via", &real_side.to_string()])?;
            if let Some(plan) = &ipv6 {
                let gateway = plan.real_side.to_string();
                ns.ip(&["-6", "route", "add", "default", "via", &gateway])?;
            }
        }
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
            ipv6,
            switch,
        })
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((NAT_VIP, port))
    }

    /// The IPv6 VIP with `port` (dual stack).
    pub fn vip6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((NAT_VIP6, port))
    }

    /// `policy`'s services and the same over IPv6: `viewer6` VIP6:80 (TCP) to [real]:8080 and
    /// `dns6` VIP6:53 (UDP) to [real]:53, over every real's IPv6 address (dual stack).
    pub fn dual_stack_policy(&self) -> Result<String> {
        let plan = self
            .ipv6
            .as_ref()
            .context("an IPv6 policy needs a dual-stack lab (build_dual_stack)")?;
        let mut text = self.policy();
        text += &format!(
            "  - name: viewer6\n    vip: {NAT_VIP6}\n    ports: [80]\n    protocol: tcp\n    forwarding: nat\n    reals:\n"
        );
        for addr in &plan.reals {
            text += &format!("      - address: {addr}\n        port: 8080\n");
        }
        text += &format!(
            "  - name: dns6\n    vip: {NAT_VIP6}\n    ports: [53]\n    protocol: udp\n    forwarding: nat\n    reals:\n"
        );
        for addr in &plan.reals {
            text += &format!("      - address: {addr}\n");
        }
        Ok(text)
    }

    /// VIP:80 (TCP) to real:8080 and VIP:53 (UDP) to real:53, over every real.
    pub fn policy(&self) -> String {
        let mut text = interfaces_policy(self.arms);
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
