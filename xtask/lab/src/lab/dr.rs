//! The DR lab: a client, the balancer and N real servers on one bridge (198.18.0.0/24).
//!
//! ```text
//!   client 198.18.0.1 ───┐
//!   balancer 198.18.0.2 ─┤ br0 ├─ real-1 198.18.0.11 (VIP on lo)
//!                        └─ real-2 198.18.0.12 ...
//! ```
//! The balancer runs the real `xdplb run` binary; the reals are prepared with the real
//! `xdplb realserver up`; traffic is real TCP.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};

use super::{
    Balancer, EchoServer, Switch,
    balancer::xdplb_binary,
    netns::{self, Netns, run},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const BALANCER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub struct LabConfig {
    pub reals: usize,
    pub ports: Vec<u16>,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            reals: 3,
            ports: vec![104, 11112],
        }
    }
}

/// Fields drop in order: the balancer (controller stopped, `xdplb down`) first, then the
/// servers, the switch and the hosts.
pub struct DrLab {
    pub balancer: Balancer,
    /// Each real's servers, one per port.
    servers: Vec<Vec<EchoServer>>,
    ports: Vec<u16>,
    pub prefix: String,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    pub client: Netns,
    /// More hosts can be plugged in (then `attach_pass`).
    pub switch: Switch,
}

/// Prepares DR real `name` in `ns` for `vip` as an operator would, with the real
/// `xdplb realserver up` (ARP suppressed on eth0, the VIP on lo).
pub fn realserver_up(ns: &Netns, vip: Ipv4Addr, name: &str) -> Result<()> {
    run(ns
        .command(xdplb_binary()?.to_str().context("xdplb path")?)
        .args([
            "realserver",
            "up",
            "--vip",
            &vip.to_string(),
            "--interface",
            "eth0",
        ]))
    .with_context(|| format!("xdplb realserver up on {name}"))?;
    Ok(())
}

pub fn real_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

impl DrLab {
    /// Builds the topology and prepares the real servers; `balancer.start` runs xdplb.
    pub fn build(config: &LabConfig) -> Result<DrLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let mut switch = Switch::new(&prefix, &["br0"])?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let balancer = Balancer::new(&prefix)?;
        switch.plug(&client, "eth0", "br0", CLIENT, 24)?;
        switch.plug(&balancer.ns, "eth0", "br0", BALANCER, 24)?;
        let mut reals = Vec::new();
        for i in 0..config.reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            switch.plug(&ns, "eth0", "br0", real_address(i), 24)?;
            reals.push((ns, real_address(i), format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;

        let mut servers = Vec::new();
        for (ns, _, name) in &reals {
            let mut own = Vec::new();
            realserver_up(ns, VIP, name)?;
            for &port in &config.ports {
                own.push(EchoServer::start(ns, port, name)?);
            }
            servers.push(own);
        }
        Ok(DrLab {
            balancer,
            servers,
            ports: config.ports.clone(),
            prefix,
            reals,
            client,
            switch,
        })
    }

    /// Stops real `i`'s service (its listeners close; connections already open carry on, as
    /// when a PACS process stops accepting).
    pub fn stop_service(&mut self, i: usize) {
        self.servers[i].clear();
    }

    /// Starts real `i`'s service again.
    pub fn start_service(&mut self, i: usize) -> Result<()> {
        let (ns, _, name) = &self.reals[i];
        for &port in &self.ports {
            self.servers[i].push(EchoServer::start(ns, port, name)?);
        }
        Ok(())
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((VIP, port))
    }

    /// The client's neighbour-table MAC for the VIP, if it has one.
    pub fn client_mac_for_vip(&self) -> Result<Option<String>> {
        let text = self.client.ip(&["neigh", "show", &VIP.to_string()])?;
        Ok(text
            .split("lladdr ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string))
    }
}

/// A DR policy for the lab: one service on `ports` over every real.
pub fn dr_policy(lab: &DrLab, ports: &[u16]) -> String {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n  - name: dicom\n    vip: {VIP}\n    ports: [{ports}]\n    protocol: tcp\n    forwarding: dr\n    reals:\n"
    );
    for (_, addr, _) in &lab.reals {
        text += &format!("      - address: {addr}\n        weight: 100\n");
    }
    text
}
