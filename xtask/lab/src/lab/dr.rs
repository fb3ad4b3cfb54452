//! The DR lab: a client, the balancer and N real servers on one bridge (198.18.0.0/24).
//!
//! ```text
//!   client 198.18.0.1 ─┐
//!   balancer 198.18.0.2 ─┤ br0 (switch namespace) ├─ real-1 198.18.0.11 (VIP on lo)
//!                        └─ real-2 198.18.0.12 ...
//! ```
//! The balancer runs the real `xdplb run` binary; the reals are prepared with the real
//! `xdplb realserver up`; traffic is real TCP.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{Ebpf, programs::Xdp};
use xdplb::dataplane::{counters, maps::Maps, object};

use super::{
    EchoServer,
    netns::{self, Netns, mac_text, run},
};

/// What `xdplb run` logs once its first sync is done.
const READY_LINE: &str = "xdplb running";

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

pub struct DrLab {
    pub prefix: String,
    pub pin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    balancer: Option<Child>,
    servers: Vec<EchoServer>,
    _bridge_xdp: Option<Ebpf>,
    pub client: Netns,
    pub lb: Netns,
    switch: Netns,
}

pub fn real_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

/// The `xdplb` binary next to the running test or xtask binary (`XDPLB_BIN` overrides).
pub fn xdplb_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("XDPLB_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("xdplb"))
        .find(|p| p.is_file())
        .context("xdplb binary not built (cargo build -p xdplb)")
}

impl DrLab {
    /// Builds the topology and prepares the real servers; the balancer starts with `start_balancer`.
    pub fn build(config: &LabConfig) -> Result<DrLab> {
        netns::sweep_leftovers();
        let prefix = netns::unique_prefix();
        let switch = Netns::create(format!("{prefix}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = Netns::create(format!("{prefix}-client"))?;
        let lb = Netns::create(format!("{prefix}-lb"))?;
        let work_dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&work_dir)?;
        let mut lab = DrLab {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/lab-{prefix}")),
            prefix: prefix.clone(),
            work_dir,
            reals: Vec::new(),
            balancer: None,
            servers: Vec::new(),
            _bridge_xdp: None,
            client,
            lb,
            switch,
        };
        let mut ports = vec!["p-client".to_string(), "p-lb".to_string()];
        plug(&lab.switch, &lab.client, "p-client", CLIENT)?;
        plug(&lab.switch, &lab.lb, "p-lb", BALANCER)?;
        for i in 0..config.reals {
            let ns = Netns::create(format!("{prefix}-r{}", i + 1))?;
            let port = format!("p-r{}", i + 1);
            plug(&lab.switch, &ns, &port, real_address(i))?;
            ports.push(port);
            lab.reals
                .push((ns, real_address(i), format!("real-{}", i + 1)));
        }
        lab._bridge_xdp = Some(attach_pass(&lab.switch, ports)?);

        let xdplb = xdplb_binary()?;
        for (ns, _, name) in &lab.reals {
            run(ns.command(xdplb.to_str().unwrap()).args([
                "realserver",
                "up",
                "--vip",
                &VIP.to_string(),
                "--interface",
                "eth0",
            ]))
            .with_context(|| format!("xdplb realserver up on {name}"))?;
            for &port in &config.ports {
                lab.servers.push(EchoServer::start(ns, port, name)?);
            }
        }
        Ok(lab)
    }

    /// Writes `policy` and starts `xdplb run` in the balancer namespace; waits until every
    /// real is up in the data plane.
    pub fn start_balancer(&mut self, policy: &str) -> Result<()> {
        let config = self.work_dir.join("policy.yaml");
        fs::write(&config, policy)?;
        let started_before = self.balancer_log().matches(READY_LINE).count();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join("xdplb.log"))?;
        let child = self
            .lb
            .command(xdplb_binary()?.to_str().unwrap())
            .args(["run", "--config"])
            .arg(&config)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--socket")
            .arg(self.work_dir.join("xdplb.sock"))
            .args(["--metrics-listen", "off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.balancer = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.balancer.as_mut().unwrap().try_wait()? {
                bail!("xdplb run exited ({status}):\n{}", self.balancer_log());
            }
            // This controller finished its first sync, and the tables hold every real (a
            // restarted controller finds complete tables in the pins before it has started).
            let running = self.balancer_log().matches(READY_LINE).count() > started_before;
            if running && self.all_reals_in_live_tables().unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("reals not up within 20 s:\n{}", self.balancer_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether every service entry exists and its live Maglev table holds every real, i.e.
    /// the controller has finished writing what the policy asks for.
    pub fn all_reals_in_live_tables(&self) -> Result<bool> {
        let maps = Maps::open_pinned(&self.pin_dir)?;
        let mut services = 0;
        for entry in maps.services.iter() {
            let (_, service) = entry?;
            services += 1;
            let mut seen = std::collections::HashSet::new();
            for i in 0..lb_common::maps::MAGLEV_TABLE_SIZE {
                seen.insert(maps.maglev.get(&(service.table_base + i), 0)?);
            }
            if seen.len() != self.reals.len() || seen.contains(&lb_common::maps::NO_REAL) {
                return Ok(false);
            }
        }
        Ok(services > 0)
    }

    /// Kills the controller with SIGKILL (a crash): the pinned data plane stays.
    pub fn kill_balancer(&mut self) -> Result<()> {
        let mut child = self.balancer.take().context("no balancer running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The MAC the data plane sends to for real `address`.
    pub fn dataplane_mac(&self, address: Ipv4Addr) -> Result<Option<[u8; 6]>> {
        let maps = Maps::open_pinned(&self.pin_dir)?;
        let target = u32::from_ne_bytes(address.octets());
        for real in maps.reals.iter() {
            let real = real?;
            if real.addr == target && real.flags & lb_common::service::REAL_UP != 0 {
                return Ok(Some(real.mac));
            }
        }
        Ok(None)
    }

    pub fn balancer_log(&self) -> String {
        fs::read_to_string(self.work_dir.join("xdplb.log")).unwrap_or_default()
    }

    pub fn stats(&self) -> Result<counters::Snapshot> {
        counters::snapshot(&Maps::open_pinned(&self.pin_dir)?)
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((VIP, port))
    }

    /// Runs the `xdplb` binary with `args` in the balancer namespace; returns its stdout.
    pub fn xdplb(&self, args: &[&str]) -> Result<String> {
        let out = run(self
            .lb
            .command(xdplb_binary()?.to_str().unwrap())
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The balancer's eth0 MAC as `ip` prints it (aa:bb:...).
    pub fn balancer_mac(&self) -> Result<String> {
        Ok(mac_text(&self.lb.mac("eth0")?))
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

/// Connects `host` to the bridge with a veth pair: `port` in the switch, `eth0` in the host.
fn plug(switch: &Netns, host: &Netns, port: &str, address: Ipv4Addr) -> Result<()> {
    switch.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
    ])?;
    switch.ip(&["link", "set", port, "master", "br0", "up"])?;
    host.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
    host.ip(&["link", "set", "eth0", "up"])?;
    run(host.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
    Ok(())
}

/// Attaches `lab_pass` to every bridge port, so XDP_TX frames from the hosts are received.
fn attach_pass(switch: &Netns, ports: Vec<String>) -> Result<Ebpf> {
    switch.within(move || -> Result<Ebpf> {
        let mut ebpf = Ebpf::load(object::LAB)?;
        let program: &mut Xdp = ebpf
            .program_mut("lab_pass")
            .context("lab_pass")?
            .try_into()?;
        program.load()?;
        for port in &ports {
            program.attach(port, aya::programs::XdpMode::Default)?;
        }
        Ok(ebpf)
    })?
}

impl Drop for DrLab {
    fn drop(&mut self) {
        if let Some(mut child) = self.balancer.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        if let Ok(xdplb) = xdplb_binary() {
            let _ = self
                .lb
                .command(xdplb.to_str().unwrap())
                .args(["down", "--pin-dir"])
                .arg(&self.pin_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = xdplb::dataplane::loader::remove_pins(&self.pin_dir);
        self.servers.clear();
        let _ = fs::remove_dir_all(&self.work_dir);
        // Namespaces drop after this, in field order.
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
