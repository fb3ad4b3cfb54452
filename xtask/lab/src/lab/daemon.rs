//! Third-party servers (dcmtk's storescp, an MLLP server, openssl's TLS server, python's HTTP
//! server) run as processes inside a lab namespace, stopped by their own pid when dropped.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::Netns;

pub struct Daemon {
    name: String,
    child: Child,
}

impl Daemon {
    /// Starts `program args` in `ns` and waits until it accepts TCP connections on `port`.
    pub fn start(ns: &Netns, port: u16, program: &str, args: &[&str]) -> Result<Daemon> {
        Daemon::start_in(ns, port, program, args, None)
    }

    /// As `start`, in working directory `dir`.
    pub fn start_in(
        ns: &Netns,
        port: u16,
        program: &str,
        args: &[&str],
        dir: Option<&std::path::Path>,
    ) -> Result<Daemon> {
        let mut cmd = ns.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        let mut daemon = Daemon {
            name: program.to_string(),
            child,
        };
        daemon.wait_for_port(ns, port)?;
        Ok(daemon)
    }

    fn wait_for_port(&mut self, ns: &Netns, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited before listening: {status}", self.name);
            }
            let up = ns.within(move || {
                TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok()
            })?;
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not listen on port {port} within 10 s", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // nsenter execs the program, so the child's pid is the server's.
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Kills daemons (keepalived, BIRD) left by lab runs whose process is gone (a test run killed
/// before it could drop its runners): found by the pid files `pid_files` in the runs' work
/// directories (`/tmp/xdplb-PID-...`), and only if that process runs that directory's
/// configuration file `config` (a pid can be reused).
pub(super) fn kill_leftover_daemons(config: &str, pid_files: &[&str]) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run_pid) = name
            .strip_prefix("xdplb-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if kill(Pid::from_raw(run_pid), None).is_ok() {
            continue;
        }
        let dir = entry.path();
        let config = dir.join(config);
        let Some(config) = config.to_str() else {
            continue;
        };
        for file in pid_files {
            let Some(pid) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(config));
            if ours {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
