//! An active/standby pair of balancers under real keepalived (VRRP): both run `xdplb run` with
//! the same policy (`vip_announcement: none`), keepalived moves the floating addresses.
//!
//! DR, everything on one bridge:
//! ```text
//!   client 198.18.0.1 ──────┐
//!   node A 198.18.0.2 ──────┤ br0 ├─ real-1 198.18.0.11 (VIP on lo)
//!   node B 198.18.0.3 ──────┘     └─ real-2 198.18.0.12 ...
//!   VIP 198.18.0.100/32: on eth0 of the master
//! ```
//! Two-arm NAT:
//! ```text
//!   client 198.18.0.1 ── br-out ─┬─ eth0 198.18.0.2 [A] eth1 198.19.0.2 ─┬─ br-in ── reals 198.19.0.11..
//!                                └─ eth0 198.18.0.3 [B] eth1 198.19.0.3 ─┘   (default via 198.19.0.1)
//!   VIP 198.18.0.100/32 on eth0 and the reals' gateway 198.19.0.1/24 on eth1 of the master
//! ```
//! The NAT client reaches the servers' network through the VIP (as a router in front of an
//! LVS-NAT pair would), so a real's packet that the pair forwards untranslated reaches the
//! client, which answers it with a reset.
//!
//! A cable pull sets a node's switch ports down: the node loses carrier, as with a real NIC.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Balancer, EchoServer, Switch,
    balancer::xdplb_binary,
    dr::realserver_up,
    keepalived::{Keepalived, KeepalivedConfig, Node, XdplbPaths},
    netns::{self, Netns, run},
};

pub const PAIR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const PAIR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The NAT reals' default gateway, held by the master on its inside interface.
pub const PAIR_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// Where the NAT reals serve (the policy maps VIP:80 to it).
pub const NAT_REAL_PORT: u16 = 8080;
/// Health checks: short, so a node cut off from its reals notices within about a second.
pub const CHECK_INTERVAL_MS: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMode {
    Dr,
    Nat,
}

/// Fields drop in order: keepalived first (it removes the floating addresses), then the
/// balancers (`xdplb down`, their namespaces), the servers, the hosts and the switch.
pub struct PairLab {
    keepalived: [Option<Keepalived>; 2],
    nodes: [Balancer; 2],
    _servers: Vec<EchoServer>,
    pub mode: PairMode,
    /// The service's ports (DR: the reals serve them; NAT: 80, translated to 8080).
    pub ports: Vec<u16>,
    pub prefix: String,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    pub client: Netns,
    pub switch: Switch,
}

fn real_address(mode: PairMode, i: usize) -> Ipv4Addr {
    match mode {
        PairMode::Dr => Ipv4Addr::new(198, 18, 0, 11 + i as u8),
        PairMode::Nat => Ipv4Addr::new(198, 19, 0, 11 + i as u8),
    }
}

fn node_address(node: Node, net: [u8; 3]) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], 2 + node.index() as u8)
}

impl PairLab {
    /// The DR pair: reals prepared with `xdplb realserver up`, each serving `who` on every
    /// port in `ports` (none: the test starts its own servers).
    pub fn dr(reals: usize, ports: &[u16]) -> Result<PairLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let mut switch = Switch::new(&prefix, &["br0"])?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let nodes = [
            Balancer::new(&format!("{prefix}-a"))?,
            Balancer::new(&format!("{prefix}-b"))?,
        ];
        switch.plug(&client, "eth0", "br0", PAIR_CLIENT, 24)?;
        for node in Node::BOTH {
            let address = node_address(node, [198, 18, 0]);
            switch.plug(&nodes[node.index()].ns, "eth0", "br0", address, 24)?;
        }
        let mut hosts = Vec::new();
        for i in 0..reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            let address = real_address(PairMode::Dr, i);
            switch.plug(&ns, "eth0", "br0", address, 24)?;
            hosts.push((ns, address, format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;

        let mut servers = Vec::new();
        for (ns, _, name) in &hosts {
            realserver_up(ns, PAIR_VIP, name)?;
            for &port in ports {
                servers.push(EchoServer::start(ns, port, name)?);
            }
        }
        Ok(PairLab {
            keepalived: [None, None],
            nodes,
            _servers: servers,
            mode: PairMode::Dr,
            ports: ports.to_vec(),
            prefix,
            reals: hosts,
            client,
            switch,
        })
    }

    /// The two-arm NAT pair: reals serve `who` and HTTP on 8080, default route via the
    /// floating gateway.
    pub fn nat(reals: usize) -> Result<PairLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let mut switch = Switch::new(&prefix, &["br-out", "br-in"])?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let nodes = [
            Balancer::new(&format!("{prefix}-a"))?,
            Balancer::new(&format!("{prefix}-b"))?,
        ];
        switch.plug(&client, "eth0", "br-out", PAIR_CLIENT, 24)?;
        client.ip(&[
            "route",
            "add",
            "198.19.0.0/24",
            "via",
            &PAIR_VIP.to_string(),
        ])?;
        for node in Node::BOTH {
            let ns = &nodes[node.index()].ns;
            switch.plug(ns, "eth0", "br-out", node_address(node, [198, 18, 0]), 24)?;
            switch.plug(ns, "eth1", "br-in", node_address(node, [198, 19, 0]), 24)?;
        }
        let mut hosts = Vec::new();
        for i in 0..reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            let address = real_address(PairMode::Nat, i);
            switch.plug(&ns, "eth0", "br-in", address, 24)?;
            ns.ip(&["route", "add", "default", "via", &PAIR_GATEWAY.to_string()])?;
            hosts.push((ns, address, format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;
        let mut servers = Vec::new();
        for (ns, _, name) in &hosts {
            servers.push(EchoServer::start(ns, NAT_REAL_PORT, name)?);
        }
        Ok(PairLab {
            keepalived: [None, None],
            nodes,
            _servers: servers,
            mode: PairMode::Nat,
            ports: vec![80],
            prefix,
            reals: hosts,
            client,
            switch,
        })
    }

    pub fn node(&self, node: Node) -> &Balancer {
        &self.nodes[node.index()]
    }

    pub fn node_mut(&mut self, node: Node) -> &mut Balancer {
        &mut self.nodes[node.index()]
    }

    /// The service's first port on the VIP.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((PAIR_VIP, self.ports[0]))
    }

    /// The pair's policy, the same on both nodes: keepalived owns the addresses; TCP checks
    /// every 500 ms, down after 2 failures, up after 2 successes.
    pub fn policy(&self) -> String {
        let ports = self
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = String::from(
            "vip_announcement: none\ninterfaces:\n  - name: eth0\n    xdp_mode: driver\n",
        );
        let forwarding = match self.mode {
            PairMode::Dr => "dr",
            PairMode::Nat => {
                text += "  - name: eth1\n    xdp_mode: driver\n    role: inside\n";
                "nat"
            }
        };
        text += &format!(
            "services:\n  - name: pair\n    vip: {PAIR_VIP}\n    ports: [{ports}]\n    protocol: tcp\n    forwarding: {forwarding}\n    health:\n      check: tcp\n      interval: {CHECK_INTERVAL_MS}ms\n      timeout: 400ms\n      rise: 2\n      fall: 2\n    reals:\n"
        );
        for (_, address, _) in &self.reals {
            text += &format!("      - address: {address}\n");
            if self.mode == PairMode::Nat {
                text += &format!("        port: {NAT_REAL_PORT}\n");
            }
        }
        text
    }

    /// Starts `xdplb run` with `policy` on both nodes; returns once each has every real up.
    pub fn start_balancers(&mut self, policy: &str) -> Result<()> {
        for node in &mut self.nodes {
            node.start(policy)?;
        }
        Ok(())
    }

    /// This node's keepalived configuration, for the lab's paths and interfaces.
    pub fn keepalived_config(&self, node: Node) -> Result<KeepalivedConfig> {
        let balancer = self.node(node);
        let paths = XdplbPaths {
            binary: xdplb_binary()?.to_str().context("binary path")?.into(),
            pin_dir: balancer.pin_dir.to_str().context("pin dir")?.into(),
            socket: balancer
                .work_dir
                .join("xdplb.sock")
                .to_str()
                .context("socket")?
                .into(),
        };
        let vip = PAIR_VIP.to_string();
        Ok(match self.mode {
            PairMode::Dr => KeepalivedConfig::dr(node, &paths, "eth0", &vip),
            PairMode::Nat => KeepalivedConfig::nat(
                node,
                &paths,
                ("eth0", &vip),
                ("eth1", &format!("{PAIR_GATEWAY}/24")),
            ),
        })
    }

    /// Starts keepalived on `node`.
    pub fn start_keepalived(&mut self, node: Node) -> Result<()> {
        let config = self.keepalived_config(node)?;
        let balancer = self.node(node);
        self.keepalived[node.index()] = Some(Keepalived::start(
            &balancer.ns,
            &balancer.work_dir,
            &config,
        )?);
        Ok(())
    }

    pub fn keepalived(&mut self, node: Node) -> Result<&mut Keepalived> {
        self.keepalived[node.index()]
            .as_mut()
            .with_context(|| format!("keepalived is not running on {node}"))
    }

    /// Both balancers with `policy`, then both keepalived; returns once A is master.
    pub fn start(&mut self, policy: &str) -> Result<()> {
        self.start_balancers(policy)?;
        for node in Node::BOTH {
            self.start_keepalived(node)?;
        }
        self.wait_for_master(Node::A, Duration::from_secs(15))?;
        Ok(())
    }

    /// The floating addresses `node` must hold as master, as (interface, `ADDRESS/PREFIX`).
    fn floating(&self) -> Vec<(&'static str, String)> {
        let mut addresses = vec![("eth0", format!("{PAIR_VIP}/32"))];
        if self.mode == PairMode::Nat {
            addresses.push(("eth1", format!("{PAIR_GATEWAY}/24")));
        }
        addresses
    }

    /// How many of the floating addresses `node` holds now.
    pub fn held(&self, node: Node) -> Result<usize> {
        let ns = &self.node(node).ns;
        let mut held = 0;
        for (interface, address) in self.floating() {
            let text = ns.ip(&["-o", "-4", "addr", "show", "dev", interface])?;
            if text.contains(&format!("inet {address} ")) {
                held += 1;
            }
        }
        Ok(held)
    }

    /// The node that holds every floating address while its peer holds none, if there is one.
    pub fn master(&self) -> Result<Option<Node>> {
        let all = self.floating().len();
        let held = [self.held(Node::A)?, self.held(Node::B)?];
        Ok(Node::BOTH
            .into_iter()
            .find(|n| held[n.index()] == all && held[n.other().index()] == 0))
    }

    /// Waits until `node` is the master; returns how long that took.
    pub fn wait_for_master(&self, node: Node, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.master()? == Some(node) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("{node} not master within {timeout:?}\n{}", self.diagnosis());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pulls `node`'s cable(s): its switch ports go down and it loses carrier.
    pub fn cable_pull(&self, node: Node) -> Result<()> {
        self.set_cables(node, false)
    }

    /// Plugs `node`'s cable(s) back in.
    pub fn cable_plug(&self, node: Node) -> Result<()> {
        self.set_cables(node, true)
    }

    fn set_cables(&self, node: Node, up: bool) -> Result<()> {
        let ns = &self.node(node).ns;
        for (interface, _) in self.floating() {
            self.switch.set_port(ns, interface, up)?;
        }
        Ok(())
    }

    /// An operator takes `node` out of service: keepalived stopped politely (its peer takes
    /// over at once), then the controller stopped and `xdplb down`.
    pub fn take_out_of_service(&mut self, node: Node) -> Result<()> {
        if let Some(mut keepalived) = self.keepalived[node.index()].take() {
            keepalived.stop()?;
        }
        // The recipe's plain `xdplb down`: with keepalived stopped, the node holds no VIP and
        // it is not refused.
        let balancer = self.node(node);
        let out = balancer.ctl(&["down", "--pin-dir", balancer.pin_dir.to_str().unwrap()])?;
        anyhow::ensure!(
            out.status.success(),
            "xdplb down on {node} after keepalived stopped: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.node_mut(node).stop();
        Ok(())
    }

    /// `xdplb ready` on `node`, as keepalived runs it: (exit 0, what it said).
    pub fn ready(&self, node: Node) -> Result<(bool, String)> {
        let balancer = self.node(node);
        let out = balancer.ctl(&["ready", "--pin-dir", balancer.pin_dir.to_str().unwrap()])?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        ))
    }

    /// Packets `node`'s data plane has forwarded for the services (both directions in NAT).
    pub fn forwarded(&self, node: Node) -> Result<u64> {
        Ok(self
            .node(node)
            .stats()?
            .services
            .iter()
            .map(|(_, c)| c.packets)
            .sum())
    }

    /// What `node` did with packets: its data plane's counts (forwarded, and the reasons it
    /// passed or dropped others), and how many packets its kernel forwarded itself (in NAT,
    /// packets the data plane passed on untranslated, or translated for the kernel to resolve
    /// the next hop).
    pub fn forwarding_summary(&self, node: Node) -> String {
        let data_plane = match self.node(node).stats() {
            Ok(stats) => {
                let forwarded: u64 = stats.services.iter().map(|(_, c)| c.packets).sum();
                let mut parts = vec![format!("forwarded {forwarded}")];
                for (reason, count) in &stats.reasons {
                    if *count > 0 && *reason != lb_common::counters::Reason::Forwarded {
                        parts.push(format!("{} {count}", reason.name()));
                    }
                }
                parts.join(", ")
            }
            Err(e) => format!("no data plane ({e})"),
        };
        let kernel = self
            .kernel_forwarded(node)
            .map(|n| n.to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        format!("node {node}: data plane {data_plane}; kernel forwarded {kernel}")
    }

    /// `Ip: ForwDatagrams` of `node`'s namespace.
    pub fn kernel_forwarded(&self, node: Node) -> Result<u64> {
        let out = run(self.node(node).ns.command("cat").arg("/proc/net/snmp"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ip = text.lines().filter(|l| l.starts_with("Ip: "));
        let (names, values) = (ip.next().context("Ip:")?, ip.next().context("Ip:")?);
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "ForwDatagrams")
            .context("ForwDatagrams")?
            .1
            .parse()
            .context("ForwDatagrams")
    }

    /// `node`'s keepalived log (empty if it never ran).
    pub fn keepalived_log(&self, node: Node) -> String {
        std::fs::read_to_string(self.node(node).work_dir.join("keepalived.log")).unwrap_or_default()
    }

    /// For a failure message: each node's addresses, readiness and the ends of its logs.
    pub fn diagnosis(&self) -> String {
        let tail = |text: String, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = String::new();
        for node in Node::BOTH {
            let balancer = self.node(node);
            out += &format!(
                "--- node {node}: holds {:?} of {} floating addresses; ready: {:?}\n{}\n\
                 keepalived log (end):\n{}\nxdplb log (end):\n{}\n",
                self.held(node).ok(),
                self.floating().len(),
                self.ready(node).ok(),
                self.forwarding_summary(node),
                tail(self.keepalived_log(node), 40),
                tail(balancer.log(), 15),
            );
        }
        out
    }
}
