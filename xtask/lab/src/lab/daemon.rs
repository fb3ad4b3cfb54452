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
