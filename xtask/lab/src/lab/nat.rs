//! The NAT labs (networks in arms.rs). Real servers use the balancer as their default gateway.
//!
//! Each real serves TCP on 8080 (the `who` protocol and HTTP GET) and UDP on 53, answering
//! with its name; the policy maps VIP:80 to real:8080 and VIP:53 to real:53. The client serves
//! TCP on 7000, for the reals' ordinary traffic routed through the balancer.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Result;

use super::{
    Balancer, EchoServer, Switch, UdpNameServer,
    arms::{Arms, NAT_VIP, Topology, interfaces_policy},
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
    /// More hosts can be plugged in (then `attach_pass`).
    pub switch: Switch,
}

impl NatLab {
    pub fn build(arms: Arms, reals: usize) -> Result<NatLab> {
        let Topology {
            balancer,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            real_side,
            switch,
        } = Topology::build(arms, reals)?;
        for (ns, _, _) in &hosts {
            ns.ip(&["route", "add", "default", "via", &real_side.to_string()])?;
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
            switch,
        })
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((NAT_VIP, port))
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
