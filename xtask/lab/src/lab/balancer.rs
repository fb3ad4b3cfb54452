//! The balancer host of a lab: its namespace and the real `xdplb run` process, with the
//! data plane pinned under a per-lab directory. Dropping it stops the controller and runs the
//! real `xdplb down`.

use std::{
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xdplb::dataplane::{counters, maps::Maps};

use super::netns::{Netns, mac_text, run};

/// What `xdplb run` logs once its first sync is done.
const READY_LINE: &str = "xdplb running";
/// What the controller logs after applying a reloaded policy.
const RELOADED_LINE: &str = "policy reloaded";

pub struct Balancer {
    child: Option<Child>,
    pub pin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub ns: Netns,
    /// `--metrics-listen` for the next `start` (inside the balancer namespace).
    pub metrics_listen: String,
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

impl Balancer {
    pub fn new(prefix: &str) -> Result<Balancer> {
        let work_dir = std::env::temp_dir().join(prefix);
        fs::create_dir_all(&work_dir)?;
        Ok(Balancer {
            child: None,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/lab-{prefix}")),
            work_dir,
            ns: Netns::create(format!("{prefix}-lb"))?,
            metrics_listen: "off".into(),
        })
    }

    /// Writes `policy` and starts `xdplb run`; returns once this controller has synced and
    /// every configured real is up in the live tables.
    pub fn start(&mut self, policy: &str) -> Result<()> {
        self.start_until(policy, true)
    }

    /// As `start`, but returns once the controller has synced, whatever the reals' state (an
    /// operator may have halted some).
    pub fn start_synced(&mut self, policy: &str) -> Result<()> {
        self.start_until(policy, false)
    }

    fn start_until(&mut self, policy: &str, all_reals_up: bool) -> Result<()> {
        let config = self.work_dir.join("policy.yaml");
        fs::write(&config, policy)?;
        let started_before = self.log().matches(READY_LINE).count();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join("xdplb.log"))?;
        let child = self
            .ns
            .command(xdplb_binary()?.to_str().unwrap())
            .args(["run", "--config"])
            .arg(&config)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--socket")
            .arg(self.work_dir.join("xdplb.sock"))
            .arg("--metrics-listen")
            .arg(&self.metrics_listen)
            .arg("--state-file")
            .arg(self.work_dir.join("admin-state.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("xdplb run exited ({status}):\n{}", self.log());
            }
            // A restarted controller finds complete tables in the pins before it has started,
            // so its own "running" line counts too.
            let running = self.log().matches(READY_LINE).count() > started_before;
            if running && (!all_reals_up || self.all_reals_in_live_tables().unwrap_or(false)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("reals not up within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `policy` and sends SIGHUP; returns once the controller logged the reload.
    pub fn reload(&mut self, policy: &str) -> Result<()> {
        let before = self.log().matches(RELOADED_LINE).count();
        fs::write(self.work_dir.join("policy.yaml"), policy)?;
        let pid = self.child.as_ref().context("no controller running")?.id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(RELOADED_LINE).count() == before {
            if Instant::now() > deadline {
                bail!("no reload within 10 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the controller with SIGKILL (a crash): the pinned data plane stays.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("no controller running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Whether every configured real is up and every service's live Maglev table is full and
    /// holds only that service's reals (all of them, or with failover/backup reals the chosen
    /// ones): the controller has written what the policy asks for.
    pub fn all_reals_in_live_tables(&self) -> Result<bool> {
        use std::collections::{HashMap, HashSet};
        let maps = Maps::open_pinned(&self.pin_dir)?;
        let mut reals: HashMap<u32, HashSet<u32>> = HashMap::new();
        for (id, real) in maps.reals.iter().enumerate() {
            let real = real?;
            if real.addr.is_none() {
                continue;
            }
            if real.flags & lb_common::service::REAL_UP == 0 {
                return Ok(false);
            }
            reals.entry(real.service).or_default().insert(id as u32);
        }
        let mut services = 0;
        for entry in maps.services.iter() {
            let (_, service) = entry?;
            services += 1;
            let own = reals.get(&service.id).cloned().unwrap_or_default();
            for i in 0..lb_common::maps::MAGLEV_TABLE_SIZE {
                if !own.contains(&maps.maglev.get(&(service.table_base + i), 0)?) {
                    return Ok(false);
                }
            }
        }
        Ok(services > 0)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.work_dir.join("xdplb.log")).unwrap_or_default()
    }

    pub fn stats(&self) -> Result<counters::Snapshot> {
        counters::snapshot(&Maps::open_pinned(&self.pin_dir)?)
    }

    /// Runs the `xdplb` binary with `args` in the balancer namespace; returns its stdout.
    pub fn xdplb(&self, args: &[&str]) -> Result<String> {
        let out = run(self
            .ns
            .command(xdplb_binary()?.to_str().unwrap())
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `xdplb ARGS --socket <this controller's socket>` in the balancer namespace, as an
    /// operator would; returns the whole output (status included).
    pub fn ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(self
            .ns
            .command(xdplb_binary()?.to_str().unwrap())
            .args(args)
            .arg("--socket")
            .arg(self.work_dir.join("xdplb.sock"))
            .stdin(Stdio::null())
            .output()?)
    }

    /// What `xdplb status` prints for this balancer's controller.
    pub fn status_table(&self) -> Result<String> {
        let out = self.ctl(&["status"])?;
        anyhow::ensure!(
            out.status.success(),
            "xdplb status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What `xdplb stats` prints for this balancer.
    pub fn stats_table(&self) -> Result<String> {
        self.xdplb(&[
            "stats",
            "--pin-dir",
            self.pin_dir.to_str().context("pin dir")?,
        ])
    }

    /// The MAC the data plane sends to for real `address`.
    pub fn dataplane_mac(&self, address: Ipv4Addr) -> Result<Option<[u8; 6]>> {
        let maps = Maps::open_pinned(&self.pin_dir)?;
        let target = lb_common::addr::Addr::from(address);
        for real in maps.reals.iter() {
            let real = real?;
            if real.addr == target && real.flags & lb_common::service::REAL_UP != 0 {
                return Ok(Some(real.mac));
            }
        }
        Ok(None)
    }

    /// Whether an XDP program is attached to `interface` (in any mode). Read from `ip -j`:
    /// the text output names the peer's namespace (`link-netns xdplb-...`), which contains
    /// "xdp" whatever is attached.
    pub fn xdp_attached(&self, interface: &str) -> Result<bool> {
        let text = self.ns.ip(&["-j", "link", "show", "dev", interface])?;
        let links: serde_json::Value = serde_json::from_str(&text)?;
        Ok(links[0].get("xdp").is_some())
    }

    /// This host's MAC on `interface`, as `ip` prints it.
    pub fn mac(&self, interface: &str) -> Result<String> {
        Ok(mac_text(&self.ns.mac(interface)?))
    }
}

impl Balancer {
    /// Stops the controller and takes the data plane down (`xdplb down`): the balancer
    /// namespace is left as it was before `start`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        if let Ok(xdplb) = xdplb_binary() {
            let _ = self
                .ns
                .command(xdplb.to_str().unwrap())
                .args(["down", "--force", "--pin-dir"])
                .arg(&self.pin_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = xdplb::dataplane::loader::remove_pins(&self.pin_dir);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}
