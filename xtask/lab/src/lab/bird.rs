//! BIRD 2 (Debian `bird2`) for several active balancers behind an ECMP router: the
//! configuration of a balancer and of the router, and a runner that starts the real `bird` in a
//! lab namespace and stops it on drop.
//!
//! The configurations are generated here for both the scale-out lab and the packaged examples
//! (packaging/bird/bird-{balancer,router}.conf): tests/lab_scaleout.rs checks that the packaged
//! files are exactly what this renders (logging to syslog instead of the lab's log file), so
//! the recipe the lab proves is the recipe that ships.
//!
//! Facts found by trial (BIRD 2.0.12, see ../shared/DESIGN.md):
//! - Every instance needs its own control socket (`-s`) and pid file (`-P`): the default
//!   /run/bird does not exist here, and instances in namespaces of one host would share it.
//! - `protocol direct` sees an address added to or removed from `lo` at once (netlink): the
//!   router's kernel route changes within about 10 ms of xdplb adding or removing a VIP.
//! - A silent link failure is noticed after the BGP hold time (240 s by default), after
//!   3 x 100 ms with BFD. After a session error BIRD waits `error wait time` (60 s by default)
//!   before it tries again, and `connect retry time` (120 s) between attempts: both short here.
//! - `merge paths on` in the router's kernel protocol makes one multipath route of the equal
//!   routes from several balancers. These are plain multipath routes (no resilient nexthop
//!   groups): adding or removing a next hop rehashes many flows to other balancers, which is
//!   why every balancer must choose the same real for a flow.
//! - `router` is a keyword in BIRD's configuration language: no protocol may be called so.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::{Netns, netns::run};

/// The router's AS.
pub const ROUTER_AS: u32 = 65000;
/// Every balancer's AS (eBGP to the router; the balancers do not peer with each other).
pub const BALANCER_AS: u32 = 65001;
/// BFD's transmit and receive interval, both ends.
pub const BFD_INTERVAL_MS: u32 = 100;
/// BFD declares the session down after this many intervals without a packet.
pub const BFD_MULTIPLIER: u32 = 3;

/// Where BIRD logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BirdLog {
    /// A packaged install: syslog.
    Syslog,
    /// The lab: standard error (the runner's log file), with protocol state changes.
    Lab,
}

/// BIRD on one balancer: announces the VIP/32s that xdplb keeps on `lo` to the router.
#[derive(Clone, Debug)]
pub struct BalancerBird {
    /// This balancer's address toward the router (also its router id).
    pub address: Ipv4Addr,
    /// The interface toward the router (BFD runs on it).
    pub interface: String,
    pub router: Ipv4Addr,
    /// The VIPs' range (`198.18.2.0/24`): only /32s inside it are announced.
    pub vips: String,
    pub log: BirdLog,
}

/// BIRD on the router: a BGP session with each balancer, their VIP routes merged into one
/// multipath route per VIP in the kernel.
#[derive(Clone, Debug)]
pub struct RouterBird {
    /// The router's address toward the balancers (also its router id).
    pub address: Ipv4Addr,
    /// The interface toward the balancers (BFD runs on it).
    pub interface: String,
    /// The balancers' addresses; the session with the i-th is protocol `lb{i+1}`.
    pub balancers: Vec<Ipv4Addr>,
    pub vips: String,
    pub log: BirdLog,
}

/// The router's BGP protocol name for balancer `i` (from 0).
pub fn balancer_protocol(i: usize) -> String {
    format!("lb{}", i + 1)
}

fn log_lines(w: &mut String, log: BirdLog) {
    match log {
        BirdLog::Syslog => w.push_str("log syslog all;\n\n"),
        BirdLog::Lab => w.push_str(
            "log stderr all;\n\
             debug protocols { states, events };\n\n",
        ),
    }
}

fn common(w: &mut String, router_id: Ipv4Addr, vips: &str, interface: &str) {
    let _ = writeln!(w, "router id {router_id};\n");
    let _ = writeln!(
        w,
        "# The VIPs' range: only /32s inside it are announced and accepted.\n\
         define XDPLB_VIPS = [ {vips}{{32,32}} ];\n"
    );
    w.push_str(
        "# Interfaces and addresses, followed over netlink: an address added to or removed\n\
         # from an interface is seen at once.\n\
         protocol device {\n}\n\n",
    );
    let _ = writeln!(
        w,
        "# BFD on the link between router and balancers: a dead link or host is noticed after\n\
         # {BFD_MULTIPLIER} x {BFD_INTERVAL_MS} ms, where BGP alone would wait for its hold time.\n\
         protocol bfd {{\n\
         \x20   interface \"{interface}\" {{\n\
         \x20       min rx interval {BFD_INTERVAL_MS} ms;\n\
         \x20       min tx interval {BFD_INTERVAL_MS} ms;\n\
         \x20       multiplier {BFD_MULTIPLIER};\n\
         \x20   }};\n\
         }}\n"
    );
}

/// The session settings both ends share.
fn session(w: &mut String) {
    w.push_str(
        "    # The session goes down when BFD says the link or the peer is dead.\n\
         \x20   bfd on;\n\
         \x20   # If BFD itself is stuck, BGP's own keepalives still end the session (240 s by\n\
         \x20   # default).\n\
         \x20   hold time 9;\n\
         \x20   keepalive time 3;\n\
         \x20   # After a session error (BFD down, a pulled cable) wait 1 s before trying again,\n\
         \x20   # doubling up to 10 s while errors repeat (60-300 s by default), and retry a\n\
         \x20   # connection every 2 s (120 s by default): a balancer that returns is announced\n\
         \x20   # again within seconds. It announces only what xdplb has put on lo, so coming back\n\
         \x20   # early announces nothing it cannot serve.\n\
         \x20   error wait time 1, 10;\n\
         \x20   connect delay time 1;\n\
         \x20   connect retry time 2;\n",
    );
}

impl BalancerBird {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        w.push_str(
            "# BIRD 2 on an xdplb balancer (`vip_announcement: bgp`), one of several active\n\
             # balancers behind an ECMP router (the router's side: bird-router.conf). Every\n\
             # balancer uses this file with its own `router id` and `local` address.\n\
             # Rendered by xtask/lab/src/lab/bird.rs; the scale-out lab (tests/lab_scaleout.rs)\n\
             # runs the same with its own logging.\n\
             #\n\
             # xdplb decides what is announced, BIRD only carries it: xdplb keeps each VIP/32 on\n\
             # `lo` exactly while this balancer can serve it (data plane attached and filled, a\n\
             # real in the table of one of the VIP's services) and removes it otherwise, and\n\
             # `xdplb down` removes it 2 s before it stops forwarding.\n\n",
        );
        log_lines(w, self.log);
        common(w, self.address, &self.vips, &self.interface);
        w.push_str(
            "# The VIP/32s xdplb keeps on lo, as routes for BGP to export.\n\
             protocol direct xdplb_vips {\n\
             \x20   ipv4;\n\
             \x20   interface \"lo\";\n\
             }\n\n",
        );
        let _ = writeln!(w, "protocol bgp uplink {{");
        let _ = writeln!(w, "    local {} as {BALANCER_AS};", self.address);
        let _ = writeln!(w, "    neighbor {} as {ROUTER_AS};", self.router);
        session(w);
        w.push_str(
            "    ipv4 {\n\
             \x20       # A balancer learns nothing from the router.\n\
             \x20       import none;\n\
             \x20       # Only the VIP/32s on lo (not lo's 127.0.0.1/8 or anything else).\n\
             \x20       export where proto = \"xdplb_vips\" && net ~ XDPLB_VIPS;\n\
             \x20   };\n\
             }\n",
        );
        s
    }
}

impl RouterBird {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        w.push_str(
            "# BIRD 2 on the router in front of several active xdplb balancers (their side:\n\
             # bird-balancer.conf): a BGP session with each, and one multipath (ECMP) route per\n\
             # VIP in the kernel with a next hop per balancer that announces it.\n\
             # Rendered by xtask/lab/src/lab/bird.rs; the scale-out lab (tests/lab_scaleout.rs)\n\
             # runs the same with its own logging.\n\
             #\n\
             # Also set on this router:\n\
             #   net.ipv4.ip_forward=1\n\
             #   net.ipv4.fib_multipath_hash_policy=1   (hash the ports too: one client's\n\
             #                                          connections spread over the balancers)\n\
             # The kernel's multipath routes are plain ones: when a balancer comes or goes, many\n\
             # flows move to another balancer. Every balancer picks the same real for a flow\n\
             # (same policy, same health), so the moved connections carry on.\n\n",
        );
        log_lines(w, self.log);
        common(w, self.address, &self.vips, &self.interface);
        w.push_str(
            "# The balancers' VIP routes into the kernel: equal routes from several balancers\n\
             # become one route with a next hop for each.\n\
             protocol kernel {\n\
             \x20   ipv4 {\n\
             \x20       import none;\n\
             \x20       export where source = RTS_BGP;\n\
             \x20   };\n\
             \x20   merge paths on;\n\
             }\n\n",
        );
        w.push_str("template bgp xdplb_balancer {\n");
        let _ = writeln!(w, "    local {} as {ROUTER_AS};", self.address);
        session(w);
        w.push_str(
            "    ipv4 {\n\
             \x20       # A balancer may announce only VIP/32s.\n\
             \x20       import where net ~ XDPLB_VIPS;\n\
             \x20       export none;\n\
             \x20   };\n\
             }\n\n\
             # One session per balancer.\n",
        );
        for (i, balancer) in self.balancers.iter().enumerate() {
            let _ = writeln!(
                w,
                "protocol bgp {} from xdplb_balancer {{\n    neighbor {balancer} as {BALANCER_AS};\n}}",
                balancer_protocol(i)
            );
        }
        s
    }
}

/// One line of `birdc show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    /// `BGP`, `BFD`, `Direct` ...
    pub proto: String,
    /// `up`, `start`, `down` ...
    pub state: String,
    /// For BGP: `Established`, `Active`, `Connect` ... and the last error, if any.
    pub info: String,
}

impl BirdProtocol {
    /// A BGP session that is up.
    pub fn established(&self) -> bool {
        self.state == "up" && self.info.starts_with("Established")
    }
}

/// A BIRD running in the foreground in a lab namespace, with its configuration, control
/// socket, pid file and log in a directory of its own. Dropping it stops it.
pub struct Bird {
    child: Option<Child>,
    dir: PathBuf,
    ns_name: String,
}

impl Bird {
    /// Writes `config` as `DIR/bird.conf`, checks it with `bird -p`, starts BIRD in `ns` and
    /// waits until its control socket answers.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Bird> {
        fs::create_dir_all(dir)?;
        let file = dir.join("bird.conf");
        fs::write(&file, config)?;
        run(Command::new("bird").arg("-p").arg("-c").arg(&file))
            .context("bird -p refused the configuration")?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bird.log"))?;
        let mut bird = Bird {
            child: None,
            dir: dir.to_path_buf(),
            ns_name: ns.name.clone(),
        };
        let _ = fs::remove_file(bird.socket());
        // nsenter execs bird, and `-f` keeps it one process in the foreground: the child's
        // pid is BIRD's.
        bird.child = Some(
            ns.command("bird")
                .arg("-f")
                .arg("-c")
                .arg(&file)
                .arg("-s")
                .arg(bird.socket())
                .arg("-P")
                .arg(dir.join("bird.pid"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting bird")?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = bird.child.as_mut().unwrap().try_wait()? {
                bird.child = None;
                bail!(
                    "bird in {} exited ({status}):\n{}",
                    bird.ns_name,
                    bird.log()
                );
            }
            if bird.birdc(&["show", "status"]).is_ok() {
                return Ok(bird);
            }
            if Instant::now() > deadline {
                bail!(
                    "bird in {} did not answer on its socket within 10 s:\n{}",
                    bird.ns_name,
                    bird.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The control socket (`birdc -s`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// `birdc -s SOCKET ARGS`: what BIRD answered, without birdc's greeting.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(args))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with("BIRD ") || !l.ends_with(" ready."))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// `show protocols`, one entry per protocol.
    pub fn protocols(&self) -> Result<Vec<BirdProtocol>> {
        let text = self.birdc(&["show", "protocols"])?;
        Ok(text
            .lines()
            .skip_while(|l| !l.starts_with("Name"))
            .skip(1)
            .filter_map(|line| {
                // Name Proto Table State Since Info...
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() >= 5).then(|| BirdProtocol {
                    name: fields[0].into(),
                    proto: fields[1].into(),
                    state: fields[3].into(),
                    info: fields[5..].join(" "),
                })
            })
            .collect())
    }

    /// Waits until every BGP protocol in `names` is established; returns how long that took.
    pub fn wait_established(&self, names: &[String], timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let protocols = self.protocols()?;
            let up = names
                .iter()
                .all(|name| protocols.iter().any(|p| &p.name == name && p.established()));
            if up {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "BGP sessions {names:?} in {} not established within {timeout:?}:\n{}\n{}",
                    self.ns_name,
                    self.birdc(&["show", "protocols"]).unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `show route [ARGS]`, as BIRD prints it.
    pub fn routes(&self, args: &[&str]) -> Result<String> {
        let mut command = vec!["show", "route"];
        command.extend_from_slice(args);
        self.birdc(&command)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops BIRD (SIGTERM: its sessions are closed with a notification, so the peer withdraws
    /// its routes at once); kills it if it has not ended within 3 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills BIRD processes left by lab runs whose process is gone, found by their pid files.
pub fn sweep_leftovers() {
    super::daemon::kill_leftover_daemons("bird.conf", &["bird.pid"]);
}
