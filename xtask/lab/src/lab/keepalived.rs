//! keepalived (VRRP) for an active/standby pair of balancers: its configuration, and a runner
//! that starts the real `keepalived` in a lab namespace and stops it on drop.
//!
//! The configuration is generated here for both the lab and the packaged examples
//! (packaging/keepalived/keepalived-{dr,nat}.conf, node A): tests/lab_pair.rs checks that the
//! packaged files are exactly what this renders with the production paths, so the recipe the
//! lab proves is the recipe that ships.
//!
//! Facts found by trial on this machine kind (keepalived 2.2.7, see ../shared/DESIGN.md):
//! - Several keepalived in namespaces of one host share /run: each gets its own pid files
//!   (`-p`, `-r`) in its balancer's work directory. `-s NETNS` is not used: keepalived would
//!   enter the namespace itself, and the lab already starts it with `nsenter --net`, which
//!   keeps the host's /sys/fs/bpf visible to the track script (`xdplb ready` reads the pins).
//! - Multicast VRRP (224.0.0.18) crosses the lab's Linux bridge: no unicast peers are needed.
//! - A pulled cable is a carrier loss on the node's interface: keepalived sees it over netlink
//!   and goes to FAULT at once (removing the VIP itself); the peer takes over when the adverts
//!   stop (3 x advert_int + skew, about 0.35 s at 0.1 s).
//! - keepalived in the foreground (`-n`) is two processes: the parent and its VRRP child. A
//!   polite stop (SIGTERM to the parent) sends a priority-0 advert, removes the addresses and
//!   ends both in about a second; a crash must kill both, and leaves the addresses behind.

use std::{
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use super::{Netns, netns::run};

/// Node A's priority: the preferred node.
pub const PRIORITY_PREFERRED: u8 = 150;
/// Node B's priority.
pub const PRIORITY_STANDBY: u8 = 100;
/// What a node that is not ready loses: more than the gap between the two priorities.
pub const NOT_READY_WEIGHT: i32 = -100;
/// Seconds between VRRP adverts (VRRPv3 allows below 1 s).
pub const ADVERT_INT: &str = "0.1";
/// Seconds a ready node that returns waits before taking mastership back.
pub const PREEMPT_DELAY_S: u32 = 3;

/// One floating address and the VRRP instance that holds it.
#[derive(Clone, Debug)]
pub struct VrrpInstance {
    /// keepalived's instance name.
    pub name: String,
    /// What the address is for (a comment in the configuration; lines end with `\n`).
    pub purpose: String,
    pub interface: String,
    pub virtual_router_id: u8,
    /// `ADDRESS/PREFIX`.
    pub address: String,
}

/// The keepalived configuration of one node of a pair.
#[derive(Clone, Debug)]
pub struct KeepalivedConfig {
    /// `DR` or `two-arm NAT` (the header comment).
    pub mode: String,
    pub node: Node,
    /// The track script's command line: `xdplb ready --pin-dir DIR --socket SOCK`.
    pub ready_command: String,
    /// One instance (DR) or two in a sync group (NAT: the VIP and the reals' gateway).
    pub instances: Vec<VrrpInstance>,
}

/// Which node of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub const BOTH: [Node; 2] = [Node::A, Node::B];

    pub fn index(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }

    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    pub fn priority(self) -> u8 {
        match self {
            Node::A => PRIORITY_PREFERRED,
            Node::B => PRIORITY_STANDBY,
        }
    }

    pub fn router_id(self) -> &'static str {
        match self {
            Node::A => "xdplb-a",
            Node::B => "xdplb-b",
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Node::A => "A",
            Node::B => "B",
        })
    }
}

/// Where a node's `xdplb` is and which of its data planes to ask.
#[derive(Clone, Debug)]
pub struct XdplbPaths {
    pub binary: String,
    pub pin_dir: String,
    pub socket: String,
}

impl XdplbPaths {
    /// A packaged install: /usr/sbin/xdplb with its default pin directory and socket.
    pub fn production() -> XdplbPaths {
        XdplbPaths {
            binary: "/usr/sbin/xdplb".into(),
            pin_dir: "/sys/fs/bpf/xdplb".into(),
            socket: "/run/xdplb/xdplb.sock".into(),
        }
    }

    fn ready_command(&self) -> String {
        format!(
            "{} ready --pin-dir {} --socket {}",
            self.binary, self.pin_dir, self.socket
        )
    }
}

impl KeepalivedConfig {
    /// DR: one instance holding the VIP on the client-facing interface.
    pub fn dr(node: Node, xdplb: &XdplbPaths, interface: &str, vip: &str) -> KeepalivedConfig {
        KeepalivedConfig {
            mode: "DR".into(),
            node,
            ready_command: xdplb.ready_command(),
            instances: vec![VrrpInstance {
                name: "xdplb_vip".into(),
                purpose: "The VIP, on the client-facing interface.".into(),
                interface: interface.into(),
                virtual_router_id: 100,
                address: format!("{vip}/32"),
            }],
        }
    }

    /// Two-arm NAT: the VIP outside and the reals' default gateway inside, moving together.
    pub fn nat(
        node: Node,
        xdplb: &XdplbPaths,
        (outside, vip): (&str, &str),
        (inside, gateway): (&str, &str),
    ) -> KeepalivedConfig {
        let mut config = KeepalivedConfig::dr(node, xdplb, outside, vip);
        config.mode = "two-arm NAT".into();
        config.instances.push(VrrpInstance {
            name: "xdplb_gateway".into(),
            purpose: "The reals' default gateway, on the server-facing interface: their\n\
                      replies come back through the node that holds it."
                .into(),
            interface: inside.into(),
            virtual_router_id: 101,
            address: gateway.into(),
        });
        config
    }

    /// The configuration file, with comments saying why each setting is there.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        match self.node {
            Node::A => {
                let _ = writeln!(
                    w,
                    "# keepalived for an xdplb active/standby pair, {}: node A (the preferred one).\n\
                     # Node B uses this file with two changes: `router_id {}` and `priority {}`.",
                    self.mode,
                    Node::B.router_id(),
                    Node::B.priority()
                );
            }
            Node::B => {
                let _ = writeln!(
                    w,
                    "# keepalived for an xdplb active/standby pair, {}: node B (the standby).",
                    self.mode
                );
            }
        }
        w.push_str(
            "# Both nodes run `xdplb run` with the same policy, which begins with\n\
             # `vip_announcement: none`: keepalived, not xdplb, adds and removes the addresses\n\
             # below. Rendered by xtask/lab/src/lab/keepalived.rs; the pair lab\n\
             # (tests/lab_pair.rs) runs the same with its own paths and interfaces.\n\
             #\n\
             # VRRP adverts go to 224.0.0.18. Where multicast is filtered, add to each\n\
             # vrrp_instance `unicast_src_ip THIS_NODE` and `unicast_peer { OTHER_NODE }`.\n\n",
        );
        let _ = writeln!(w, "global_defs {{");
        let _ = writeln!(w, "    router_id {}", self.node.router_id());
        w.push_str(
            "    # VRRPv3, for an advert_int below one second (VRRPv2 rounds it up to 1 s).\n\
             \x20   vrrp_version 3\n\
             \x20   # The track script runs as root; keepalived then checks that no part of its\n\
             \x20   # path is writable by anyone else.\n\
             \x20   enable_script_security\n\
             \x20   script_user root\n\
             }\n\n",
        );
        w.push_str(
            "# Can this node serve? Its data plane is attached, its controller answers, every\n\
             # service has a real in its table (a node cut off from its servers has none), and\n\
             # it has had for the settle time (the slowest check's rise x interval + timeout),\n\
             # so a node coming back waits until its checks could bring every real back.\n\
             vrrp_script xdplb_ready {\n",
        );
        let _ = writeln!(w, "    script \"{}\"", self.ready_command);
        let _ = writeln!(w, "    interval 1");
        let _ = writeln!(w, "    timeout 2");
        let _ = writeln!(
            w,
            "    # Not ready costs more than the gap between the priorities ({} - {}): a node that\n\
             \x20   # cannot serve yields to a ready peer, and keeps the VIP when neither can.",
            PRIORITY_PREFERRED, PRIORITY_STANDBY
        );
        let _ = writeln!(w, "    weight {NOT_READY_WEIGHT}");
        w.push_str(
            "    # Not ready until the script has passed once: a node that has just started does\n\
             \x20   # not take the VIP before its checks have run.\n\
             \x20   init_fail\n\
             }\n\n",
        );
        if self.instances.len() > 1 {
            w.push_str(
                "# The VIP and the reals' gateway move together: a node holding one but not the\n\
                 # other would receive client packets whose replies go to its peer, or the reverse.\n\
                 vrrp_sync_group xdplb {\n    group {\n",
            );
            for instance in &self.instances {
                let _ = writeln!(w, "        {}", instance.name);
            }
            w.push_str(
                "    }\n\
                 \x20   # keepalived refuses track weights in a sync group unless told; both\n\
                 \x20   # instances track the same script with the same weight, so they stay together.\n\
                 \x20   sync_group_tracking_weight\n\
                 }\n\n",
            );
        }
        for instance in &self.instances {
            for line in instance.purpose.lines() {
                let _ = writeln!(w, "# {line}");
            }
            let _ = writeln!(w, "vrrp_instance {} {{", instance.name);
            w.push_str(
                "    # Both nodes start as BACKUP and the higher priority wins (preempt_delay\n\
                 \x20   # works only so).\n\
                 \x20   state BACKUP\n",
            );
            let _ = writeln!(w, "    interface {}", instance.interface);
            let _ = writeln!(w, "    virtual_router_id {}", instance.virtual_router_id);
            let _ = writeln!(w, "    priority {}", self.node.priority());
            let _ = writeln!(
                w,
                "    # The peer takes over 3 x advert_int + skew (about 0.35 s) after the last advert.\n\
                 \x20   advert_int {ADVERT_INT}"
            );
            let _ = writeln!(
                w,
                "    # A node that comes back, once ready, waits this long before taking the VIP\n\
                 \x20   # back: a flapping link or a node still settling does not move traffic twice.\n\
                 \x20   preempt_delay {PREEMPT_DELAY_S}"
            );
            w.push_str(
                "    # Gratuitous ARPs on becoming master, again 1 s later, and every 10 s while\n\
                 \x20   # master, for clients and switches that missed the first ones.\n\
                 \x20   garp_master_delay 1\n\
                 \x20   garp_master_refresh 10\n\
                 \x20   track_script {\n\
                 \x20       xdplb_ready\n\
                 \x20   }\n\
                 \x20   virtual_ipaddress {\n",
            );
            let _ = writeln!(w, "        {} dev {}", instance.address, instance.interface);
            w.push_str("    }\n}\n");
            if instance.name != self.instances.last().unwrap().name {
                w.push('\n');
            }
        }
        s
    }
}

/// A keepalived running (VRRP only, in the foreground) in a lab namespace. Dropping it stops
/// it politely, and kills what is left after a few seconds.
pub struct Keepalived {
    child: Option<Child>,
    config: PathBuf,
    vrrp_pid_file: PathBuf,
    log: PathBuf,
    ns_name: String,
}

impl Keepalived {
    /// Writes `config` as `DIR/keepalived.conf`, checks it with `keepalived -t`, starts
    /// keepalived in `ns` and waits until it has started up.
    pub fn start(ns: &Netns, dir: &Path, config: &KeepalivedConfig) -> Result<Keepalived> {
        let file = dir.join("keepalived.conf");
        fs::write(&file, config.render())?;
        run(ns.command("keepalived").arg("-t").arg("-f").arg(&file))
            .context("keepalived -t refused the configuration")?;
        let log = dir.join("keepalived.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let vrrp_pid_file = dir.join("keepalived_vrrp.pid");
        let _ = fs::remove_file(&vrrp_pid_file);
        let child = ns
            .command("keepalived")
            // Foreground, VRRP only, log to stderr (the file) in detail, not to syslog.
            .args(["-n", "-P", "-l", "-D", "-G"])
            .arg("-f")
            .arg(&file)
            // Pid files of its own: every keepalived on the host would share /run's.
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group (nsenter execs keepalived, so the group is keepalived's
            // pid): a crash kills the parent, its VRRP child and any track script at once.
            .process_group(0)
            .spawn()
            .context("starting keepalived")?;
        let mut keepalived = Keepalived {
            child: Some(child),
            config: file,
            vrrp_pid_file,
            log,
            ns_name: ns.name.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = keepalived.child.as_mut().unwrap().try_wait()? {
                keepalived.child = None;
                bail!(
                    "keepalived in {} exited ({status}):\n{}",
                    keepalived.ns_name,
                    keepalived.log()
                );
            }
            if keepalived.log().contains("Startup complete") && keepalived.vrrp_pid().is_some() {
                return Ok(keepalived);
            }
            if Instant::now() > deadline {
                bail!(
                    "keepalived in {} did not start within 10 s:\n{}",
                    keepalived.ns_name,
                    keepalived.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Whether the parent is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The VRRP child's pid, from its pid file, if that process is still one of ours.
    fn vrrp_pid(&self) -> Option<Pid> {
        let pid: i32 = fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only a live keepalived started with our configuration file (a pid can be reused).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(self.config.to_str()?);
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        (ours && !zombie).then_some(Pid::from_raw(pid))
    }

    /// The pids of the parent and its VRRP child (while both run).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.child.iter().map(Child::id).collect();
        pids.extend(self.vrrp_pid().map(|p| p.as_raw() as u32));
        pids
    }

    /// SIGTERM, as `systemctl stop` does: keepalived sends a priority-0 advert (the peer takes
    /// over at once), removes its addresses and exits. Waits up to 5 s, then kills what is left.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() && self.vrrp_pid().is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_all(pid, &mut child);
        bail!(
            "keepalived in {} did not stop within 5 s of SIGTERM; killed",
            self.ns_name
        )
    }

    /// SIGKILL to the parent and its VRRP child (a crash, or a node losing power): nothing is
    /// sent, and the addresses stay where they are.
    pub fn crash(&mut self) -> Result<()> {
        let mut child = self.child.take().context("keepalived is not running")?;
        let pid = Pid::from_raw(child.id() as i32);
        self.kill_all(pid, &mut child);
        Ok(())
    }

    fn kill_all(&self, pid: Pid, child: &mut Child) {
        let vrrp = self.vrrp_pid();
        // The process group we gave it at start: the parent, its VRRP child, a running script.
        let _ = killpg(pid, Signal::SIGKILL);
        if let Some(vrrp) = vrrp {
            let _ = kill(vrrp, Signal::SIGKILL);
        }
        let _ = child.wait();
        // The VRRP child is reparented and reaped elsewhere; wait until it is gone.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.vrrp_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Kills keepalived processes left by lab runs whose process is gone (a test run killed
/// before it could drop its runner): found by the pid files in their work directories, and
/// only if that process is a keepalived running that directory's configuration.
pub fn sweep_leftovers() {
    super::daemon::kill_leftover_daemons(
        "keepalived.conf",
        &["keepalived_vrrp.pid", "keepalived.pid"],
    );
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
