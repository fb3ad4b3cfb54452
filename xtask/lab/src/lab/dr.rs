//! The DR lab: a client, the balancer and N real servers on one bridge (198.18.0.0/24).
//!
//! ```text
//!   client 198.18.0.1 ───┐
//!   balancer 198.18.0.2 ─┤ br0 ├─ real-1 198.18.0.11 (VIP on lo)
//!                        └─ real-2 198.18.0.12 ...
//! ```
//! The balancer runs the real `xdplb run` binary; the reals are prepared with the real
//! `xdplb realserver up`; traffic is real TCP.
//!
//! Dual stack (`build_dual_stack`): every host also has an IPv6 address on the same link
//! (2001:2::/64: client 2001:2::1, balancer 2001:2::2, reals 2001:2::11..), the reals hold
//! VIP6 (2001:2::100) on lo beside the VIP, and each real answers UDP on port 53 of both
//! VIPs. Duplicate address detection is off, so the addresses work at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};

use super::{
    Balancer, EchoServer, Switch, UdpNameServer,
    balancer::xdplb_binary,
    netns::{self, Netns, run},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const BALANCER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The dual-stack lab's IPv6 VIP, client and balancer.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const BALANCER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// The UDP port each real of the dual-stack lab answers on, at both VIPs.
pub const DR_UDP_PORT: u16 = 53;

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
    /// Dual stack: each real's UDP servers on the VIPs.
    _udp: Vec<UdpNameServer>,
    /// Whether the hosts have IPv6 addresses too (`build_dual_stack`).
    pub ipv6: bool,
    ports: Vec<u16>,
    pub prefix: String,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    pub client: Netns,
    /// More hosts can be plugged in (then `attach_pass`).
    pub switch: Switch,
}

/// Prepares DR real `name` in `ns` for `vip` as an operator would, with the real
/// `xdplb realserver up` (ARP suppressed on eth0, the VIP on lo).
pub fn realserver_up(ns: &Netns, vip: impl Into<IpAddr>, name: &str) -> Result<()> {
    realserver_up_all(ns, &[vip.into()], name)
}

/// As `realserver_up`, for several VIPs in one `xdplb realserver up`.
pub fn realserver_up_all(ns: &Netns, vips: &[IpAddr], name: &str) -> Result<()> {
    let mut cmd = ns.command(xdplb_binary()?.to_str().context("xdplb path")?);
    cmd.args(["realserver", "up"]);
    for vip in vips {
        cmd.arg("--vip").arg(vip.to_string());
    }
    run(cmd.args(["--interface", "eth0"]))
        .with_context(|| format!("xdplb realserver up on {name}"))?;
    Ok(())
}

pub fn real_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

/// Real `i`'s IPv6 address in the dual-stack lab: 2001:2::11, 2001:2::12, ...
pub fn real_address6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

impl DrLab {
    /// Builds the topology and prepares the real servers; `balancer.start` runs xdplb.
    pub fn build(config: &LabConfig) -> Result<DrLab> {
        DrLab::build_with(config, false)
    }

    /// As `build`, with IPv6 beside IPv4 on every host (see the module's notes).
    pub fn build_dual_stack(config: &LabConfig) -> Result<DrLab> {
        DrLab::build_with(config, true)
    }

    fn build_with(config: &LabConfig, ipv6: bool) -> Result<DrLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let mut switch = Switch::new(&prefix, &["br0"])?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let balancer = Balancer::new(&prefix)?;
        let plug = |switch: &mut Switch, ns: &Netns, v4: Ipv4Addr, v6: Ipv6Addr| -> Result<()> {
            if ipv6 {
                ns.ipv6_without_dad()?;
            }
            switch.plug(ns, "eth0", "br0", v4, 24)?;
            if ipv6 {
                ns.add_ipv6("eth0", v6, 64)?;
            }
            Ok(())
        };
        plug(&mut switch, &client, CLIENT, CLIENT6)?;
        plug(&mut switch, &balancer.ns, BALANCER, BALANCER6)?;
        let mut reals = Vec::new();
        for i in 0..config.reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            plug(&mut switch, &ns, real_address(i), real_address6(i))?;
            reals.push((ns, real_address(i), format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;

        let mut servers = Vec::new();
        let mut udp = Vec::new();
        for (ns, _, name) in &reals {
            let mut own = Vec::new();
            if ipv6 {
                realserver_up_all(ns, &[VIP.into(), VIP6.into()], name)?;
                for vip in [IpAddr::from(VIP), IpAddr::from(VIP6)] {
                    udp.push(UdpNameServer::start_on(
                        ns,
                        SocketAddr::new(vip, DR_UDP_PORT),
                        name,
                    )?);
                }
            } else {
                realserver_up(ns, VIP, name)?;
            }
            for &port in &config.ports {
                own.push(EchoServer::start(ns, port, name)?);
            }
            servers.push(own);
        }
        Ok(DrLab {
            balancer,
            servers,
            _udp: udp,
            ipv6,
            ports: config.ports.clone(),
            prefix,
            reals,
            client,
            switch,
        })
    }

    /// Stops real `i`'s service (its TCP listeners close, both families; connections already
    /// open carry on, as when a PACS process stops accepting).
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

    /// The IPv6 VIP with `port` (dual stack).
    pub fn vip6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((VIP6, port))
    }

    /// Real `i`'s IPv6 address (dual stack).
    pub fn real6(&self, i: usize) -> Ipv6Addr {
        real_address6(i)
    }

    /// The client's neighbour-table MAC for the VIP, if it has one.
    pub fn client_mac_for_vip(&self) -> Result<Option<String>> {
        self.client_mac_for(VIP.into())
    }

    /// The client's neighbour-table MAC for `address` (ARP or IPv6 neighbour table), if it has
    /// one: an entry still resolving, or that failed, has none.
    pub fn client_mac_for(&self, address: IpAddr) -> Result<Option<String>> {
        let text = self.client.ip(&["neigh", "show", &address.to_string()])?;
        Ok(text
            .split("lladdr ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string))
    }
}

impl Drop for DrLab {
    /// Undoes `xdplb realserver up` on each real, as an operator's `down` would, before the
    /// namespaces go: what `up` changed is recorded in /run/xdplb per namespace, and would
    /// otherwise stay there, one file per real and run. The fields drop after this.
    fn drop(&mut self) {
        let Ok(xdplb) = xdplb_binary() else {
            return;
        };
        let mut vips = vec![VIP.to_string()];
        if self.ipv6 {
            vips.push(VIP6.to_string());
        }
        for (ns, _, _) in &self.reals {
            let _ = ns
                .command(&xdplb.to_string_lossy())
                .args(["realserver", "down", "--vip"])
                .args(&vips)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
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
