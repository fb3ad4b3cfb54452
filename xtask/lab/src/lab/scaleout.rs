//! Several active balancers behind an ECMP router, each announcing the VIPs over BGP with
//! BIRD 2 (`vip_announcement: bgp`), DR reals answering the clients through the router.
//!
//! ```text
//!   client 198.18.1.1 ── eth1 198.18.1.254 [router] eth0 198.18.0.254 ── br0 ─┬─ lb-1 198.18.0.2 ─┐
//!                        BIRD: BGP + BFD to each balancer,                    ├─ lb-2 198.18.0.3  ├─ xdplb run + BIRD,
//!                        ECMP (merge paths), L4 multipath hash                ├─ lb-3 198.18.0.4 ─┘  VIPs on lo
//!                                                                             └─ real-1 198.18.0.11 ... (VIPs on lo,
//!   VIPs 198.18.2.100 (service `pacs`), 198.18.2.101 (`viewer`), port 104        client via the router)
//! ```
//!
//! The client and the router are lab/remote.rs's remote client (the router forwards between
//! the client's link and the lab's bridge). Every balancer runs the same policy; xdplb keeps
//! each VIP/32 on its `lo` while it can serve it, BIRD's `protocol direct` announces it, and the
//! router's kernel route for the VIP has a next hop for every balancer that announces it. A
//! pulled cable sets a balancer's switch port down: it loses carrier, and the router notices
//! through BFD only (its own link stays up).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_common::{addr::Addr, flow::FlowKey};
use xdplb::dataplane::maps::Maps;

use super::{
    Balancer, EchoServer, RemoteClient, Switch,
    bird::{BalancerBird, Bird, BirdLog, RouterBird, balancer_protocol},
    dr::realserver_up,
    netns::{self, Netns, run},
    pair::CHECK_INTERVAL_MS,
    remote::ROUTER,
};

/// The VIPs' range: the balancers announce /32s inside it, the router accepts only those.
pub const SCALEOUT_VIPS: &str = "198.18.2.0/24";
/// Service `pacs`: the clients' traffic.
pub const SCALEOUT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
/// Service `viewer`: the same reals, a VIP of its own (withdrawn alone when its reals fail).
pub const SECOND_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 101);
/// Both services' port; every real serves `who` on it.
pub const SCALEOUT_PORT: u16 = 104;

/// Balancer `i`'s address on the lab's bridge (and its BGP router id).
pub fn scaleout_balancer_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i as u8)
}

fn real_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

/// Fields drop in order: BIRD everywhere first (the router's in `Drop`), then the balancers
/// (`xdplb down`), the servers, the hosts and the switch.
pub struct ScaleoutLab {
    router_bird: Option<Bird>,
    birds: Vec<Option<Bird>>,
    pub balancers: Vec<Balancer>,
    _servers: Vec<EchoServer>,
    pub prefix: String,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    /// The client, and the router it sits behind.
    pub remote: RemoteClient,
    pub switch: Switch,
    router_dir: PathBuf,
}

impl ScaleoutLab {
    /// `balancers` balancer hosts and `reals` DR reals (prepared with `xdplb realserver up`
    /// for both VIPs, serving `who` on port 104) on one bridge, the router on it too, the
    /// client behind the router. Nothing runs yet: `start`.
    pub fn build(balancers: usize, reals: usize) -> Result<ScaleoutLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let mut switch = Switch::new(&prefix, &["br0"])?;
        let remote = RemoteClient::build(&prefix, &mut switch, "br0", 1500)?;
        // Hash on the ports too: one client's connections spread over the balancers.
        run(remote
            .router
            .command("sysctl")
            .args(["-qw", "net.ipv4.fib_multipath_hash_policy=1"]))?;
        let mut hosts = Vec::new();
        for i in 0..balancers {
            let balancer = Balancer::new(&format!("{prefix}-{}", i + 1))?;
            switch.plug(
                &balancer.ns,
                "eth0",
                "br0",
                scaleout_balancer_address(i),
                24,
            )?;
            hosts.push(balancer);
        }
        let mut real_hosts = Vec::new();
        for i in 0..reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            switch.plug(&ns, "eth0", "br0", real_address(i), 24)?;
            // Replies go to the client through the router, not back through a balancer.
            RemoteClient::route_via_router(&ns)?;
            real_hosts.push((ns, real_address(i), format!("real-{}", i + 1)));
        }
        switch.attach_pass()?;
        let mut servers = Vec::new();
        for (ns, _, name) in &real_hosts {
            for vip in [SCALEOUT_VIP, SECOND_VIP] {
                realserver_up(ns, vip, name)?;
            }
            servers.push(EchoServer::start(ns, SCALEOUT_PORT, name)?);
        }
        let router_dir = std::env::temp_dir().join(format!("{prefix}-router"));
        Ok(ScaleoutLab {
            router_bird: None,
            birds: (0..balancers).map(|_| None).collect(),
            balancers: hosts,
            _servers: servers,
            prefix,
            reals: real_hosts,
            remote,
            switch,
            router_dir,
        })
    }

    pub fn client(&self) -> &Netns {
        &self.remote.client
    }

    pub fn router(&self) -> &Netns {
        &self.remote.router
    }

    /// The clients' service.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((SCALEOUT_VIP, SCALEOUT_PORT))
    }

    /// Every balancer's policy: `vip_announcement: bgp`, two DR services over every real,
    /// TCP checks every 500 ms (down after 2 failures, up after 2 successes).
    pub fn policy(&self) -> String {
        let mut text = String::from(
            "vip_announcement: bgp\ninterfaces:\n  - name: eth0\n    xdp_mode: driver\nservices:\n",
        );
        for (name, vip) in [("pacs", SCALEOUT_VIP), ("viewer", SECOND_VIP)] {
            text += &format!(
                "  - name: {name}\n    vip: {vip}\n    ports: [{SCALEOUT_PORT}]\n    protocol: tcp\n    forwarding: dr\n    health:\n      check: tcp\n      interval: {CHECK_INTERVAL_MS}ms\n      timeout: 400ms\n      rise: 2\n      fall: 2\n    reals:\n"
            );
            for (_, address, _) in &self.reals {
                text += &format!("      - address: {address}\n");
            }
        }
        text
    }

    /// Balancer `i`'s BIRD configuration (`log`: the lab's, or a packaged install's).
    pub fn balancer_bird_config(i: usize, log: BirdLog) -> BalancerBird {
        BalancerBird {
            address: scaleout_balancer_address(i),
            interface: "eth0".into(),
            router: ROUTER,
            vips: SCALEOUT_VIPS.into(),
            log,
        }
    }

    /// The router's BIRD configuration for `balancers` balancers.
    pub fn router_bird_config(balancers: usize, log: BirdLog) -> RouterBird {
        RouterBird {
            address: ROUTER,
            interface: "eth0".into(),
            balancers: (0..balancers).map(scaleout_balancer_address).collect(),
            vips: SCALEOUT_VIPS.into(),
            log,
        }
    }

    /// `xdplb run` with `policy` on every balancer (each returns once every real is up), BIRD
    /// on each and on the router; returns once every BGP session is established and the
    /// router's route to each VIP has every balancer as next hop.
    pub fn start(&mut self, policy: &str) -> Result<()> {
        for balancer in &mut self.balancers {
            balancer.start(policy)?;
        }
        self.router_bird = Some(Bird::start(
            &self.remote.router,
            &self.router_dir,
            &ScaleoutLab::router_bird_config(self.balancers.len(), BirdLog::Lab).render(),
        )?);
        for i in 0..self.balancers.len() {
            self.start_bird(i)?;
        }
        let sessions: Vec<String> = (0..self.balancers.len()).map(balancer_protocol).collect();
        self.router_bird()?
            .wait_established(&sessions, Duration::from_secs(20))
            .with_context(|| self.diagnosis())?;
        let all: Vec<usize> = (0..self.balancers.len()).collect();
        for vip in [SCALEOUT_VIP, SECOND_VIP] {
            self.wait_for_next_hops(vip, &all, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Starts BIRD on balancer `i`.
    pub fn start_bird(&mut self, i: usize) -> Result<()> {
        let config = ScaleoutLab::balancer_bird_config(i, BirdLog::Lab).render();
        let balancer = &self.balancers[i];
        self.birds[i] = Some(Bird::start(&balancer.ns, &balancer.work_dir, &config)?);
        Ok(())
    }

    /// Stops BIRD on balancer `i` (it closes its session: the router withdraws its routes at
    /// once); xdplb keeps running.
    pub fn stop_bird(&mut self, i: usize) {
        self.birds[i] = None;
    }

    pub fn router_bird(&self) -> Result<&Bird> {
        self.router_bird
            .as_ref()
            .context("BIRD is not running on the router")
    }

    pub fn bird(&self, i: usize) -> Result<&Bird> {
        self.birds[i]
            .as_ref()
            .with_context(|| format!("BIRD is not running on balancer {}", i + 1))
    }

    /// The balancers (by index) that the router's kernel route to `vip` goes through now.
    pub fn next_hops(&self, vip: Ipv4Addr) -> Result<Vec<usize>> {
        let text = self
            .remote
            .router
            .ip(&["-4", "route", "show", &format!("{vip}/32")])?;
        let mut hops = Vec::new();
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            if word == "via" {
                let address: Ipv4Addr =
                    words.next().context("`via` without an address")?.parse()?;
                let i = (0..self.balancers.len())
                    .find(|&i| scaleout_balancer_address(i) == address)
                    .with_context(|| format!("the route to {vip} goes via {address}: {text}"))?;
                hops.push(i);
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's route to `vip` goes through exactly the balancers `want`
    /// (none: no route); returns how long that took, polling every 5 ms.
    pub fn wait_for_next_hops(
        &self,
        vip: Ipv4Addr,
        want: &[usize],
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.next_hops(vip)? == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the router's route to {vip} is not via balancers {:?} within {timeout:?}\n{}",
                    want.iter().map(|i| i + 1).collect::<Vec<_>>(),
                    self.diagnosis()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pulls balancer `i`'s cable (`up: false`: its switch port goes down and it loses
    /// carrier) or plugs it back.
    pub fn set_cable(&self, i: usize, up: bool) -> Result<()> {
        self.switch.set_port(&self.balancers[i].ns, "eth0", up)
    }

    /// Flows balancer `i`'s data plane has scheduled (connection-table misses), all services.
    pub fn new_flows(&self, i: usize) -> Result<u64> {
        Ok(self.balancers[i]
            .stats()?
            .services
            .iter()
            .map(|(_, c)| c.new_flows)
            .sum())
    }

    /// Packets balancer `i`'s data plane has forwarded, all services.
    pub fn forwarded(&self, i: usize) -> Result<u64> {
        Ok(self.balancers[i]
            .stats()?
            .services
            .iter()
            .map(|(_, c)| c.packets)
            .sum())
    }

    /// Whether balancer `i`'s connection table has an entry for the TCP flow from `client` to
    /// `to` (it has carried a packet of it).
    pub fn has_flow(&self, i: usize, client: SocketAddr, to: SocketAddr) -> Result<bool> {
        let (SocketAddr::V4(client), SocketAddr::V4(to)) = (client, to) else {
            bail!("IPv4 only");
        };
        let maps = Maps::open_pinned(&self.balancers[i].pin_dir)?;
        Ok(maps.flows.get(&flow_key(client, to), 0).is_ok())
    }

    /// Whether `vip` is on balancer `i`'s `lo` (what its BIRD announces).
    pub fn vip_on_lo(&self, i: usize, vip: Ipv4Addr) -> Result<bool> {
        let text = self.balancers[i]
            .ns
            .ip(&["-4", "-o", "addr", "show", "dev", "lo"])?;
        Ok(text.contains(&format!("inet {vip}/32 ")))
    }

    /// For a failure message: the router's routes and sessions, and each balancer's VIPs on
    /// lo and the ends of its logs.
    pub fn diagnosis(&self) -> String {
        let mut out = format!(
            "--- router: kernel routes\n{}",
            self.remote
                .router
                .ip(&["-4", "route"])
                .unwrap_or_else(|e| e.to_string())
        );
        if let Some(bird) = &self.router_bird {
            out += &format!(
                "BIRD protocols:\n{}\nBIRD log (end):\n{}\n",
                bird.birdc(&["show", "protocols"])
                    .unwrap_or_else(|e| e.to_string()),
                bird.log_tail(30)
            );
        }
        for (i, balancer) in self.balancers.iter().enumerate() {
            let on_lo: Vec<Ipv4Addr> = [SCALEOUT_VIP, SECOND_VIP]
                .into_iter()
                .filter(|&vip| self.vip_on_lo(i, vip).unwrap_or(false))
                .collect();
            let tail = |text: String, n: usize| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            };
            out += &format!(
                "--- balancer {} ({}): VIPs on lo {on_lo:?}\nxdplb log (end):\n{}\n",
                i + 1,
                scaleout_balancer_address(i),
                tail(balancer.log(), 15)
            );
            if let Some(bird) = &self.birds[i] {
                out += &format!("BIRD log (end):\n{}\n", bird.log_tail(15));
            }
        }
        out
    }
}

/// The connection-table key of the TCP flow from `client` to `to`.
fn flow_key(client: SocketAddrV4, to: SocketAddrV4) -> FlowKey {
    FlowKey {
        src: Addr::from(*client.ip()),
        dst: Addr::from(*to.ip()),
        sport: client.port().to_be(),
        dport: to.port().to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    }
}

impl Drop for ScaleoutLab {
    fn drop(&mut self) {
        // The router's BIRD first: its directory goes with it.
        drop(self.router_bird.take());
        let _ = std::fs::remove_dir_all(&self.router_dir);
    }
}
