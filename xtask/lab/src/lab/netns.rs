//! One network namespace: created with `ip netns add`, deleted on drop.

use std::{
    fs::File,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `xdplb-PID-N`: unique per process and lab.
pub fn unique_prefix() -> String {
    format!(
        "xdplb-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command; fails with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Netns {
    pub fn create(name: String) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs in this namespace's network stack but the host's mounts, so it sees
    /// the host's /sys/fs/bpf (`ip netns exec` would remount /sys and hide the pins).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread inside this namespace (sockets it opens live in the namespace).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        Ok(std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the lab namespace");
            f()
        }))
    }

    /// Runs `f` inside this namespace and waits for it.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))
    }

    /// Turns IPv6 duplicate address detection off for interfaces that appear in this
    /// namespace from now on (`default`) and for those here (`all`): their link-local and
    /// other addresses are usable at once. A tentative link-local address would keep a host
    /// from soliciting neighbours (it has no source for them) for a second or two.
    pub fn ipv6_without_dad(&self) -> Result<()> {
        run(self.command("sysctl").args([
            "-qw",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_dad=0",
        ]))?;
        Ok(())
    }

    /// Adds IPv6 `address/prefix_len` to `interface`, without duplicate address detection.
    pub fn add_ipv6(
        &self,
        interface: &str,
        address: std::net::Ipv6Addr,
        prefix_len: u8,
    ) -> Result<()> {
        self.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{address}/{prefix_len}"),
            "dev",
            interface,
            "nodad",
        ])?;
        Ok(())
    }

    pub fn mac(&self, interface: &str) -> Result<[u8; 6]> {
        let text = self.ip(&["-o", "link", "show", interface])?;
        let mac = text
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("no MAC")?;
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad MAC {mac}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `dev`'s receive work (NAPI) in a kernel thread the scheduler can put on any CPU,
/// instead of in the softirq of whoever sends to it: a live-frames generator's loop would
/// otherwise also run the receiver and overflow the veth's ring.
pub fn threaded_napi(ns: &Netns, dev: &str) -> Result<()> {
    // GRO on gives a veth its NAPI instance, which threaded mode needs.
    run(ns.command("ethtool").args(["-K", dev, "gro", "on"]))?;
    // /sys shows the namespace's devices only when mounted inside it: `ip netns exec`.
    run(Command::new("ip")
        .args(["netns", "exec", &ns.name, "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{dev}/threaded")))?;
    Ok(())
}

/// Deletes namespaces and pins left by lab runs whose process is gone, and ends their
/// keepalived and BIRD processes.
pub fn sweep_leftovers() {
    super::keepalived::sweep_leftovers();
    super::bird::sweep_leftovers();
    let dead = |name: &str| {
        name.strip_prefix("xdplb-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            })
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("lab-")
                && dead(rest)
            {
                let _ = xdplb::dataplane::loader::remove_pins(&entry.path());
            }
        }
    }
}

/// A MAC as `ip` prints it: `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
