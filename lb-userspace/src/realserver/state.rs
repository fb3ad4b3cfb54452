//! What `realserver up` changed, kept in /run/xdplb so `down` can restore it. One file per
//! network namespace, since several lab real servers share one /run: keyed by the namespace's
//! cookie, which the kernel never gives to another namespace (an inode number is reused once
//! a namespace is gone, and a later one would restore what its predecessor recorded).

use std::{fs, net::IpAddr, os::fd::AsRawFd, path::PathBuf};

use anyhow::{Context, Result};

#[derive(Default)]
pub struct State {
    /// (interface, sysctl, original value)
    sysctls: Vec<(String, String, i64)>,
    vips: Vec<IpAddr>,
}

fn path() -> Result<PathBuf> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
        .context("a socket to read this network namespace's cookie")?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "reading this network namespace's cookie: {}",
        std::io::Error::last_os_error()
    );
    Ok(PathBuf::from(format!(
        "/run/xdplb/realserver-netns-{cookie}.state"
    )))
}

impl State {
    pub fn load() -> Result<State> {
        let path = path()?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut state = State::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["sysctl", iface, name, value] => {
                    state
                        .sysctls
                        .push((iface.to_string(), name.to_string(), value.parse()?));
                }
                ["vip", addr] => state.vips.push(addr.parse()?),
                _ => anyhow::bail!("{}: unreadable line `{line}`", path.display()),
            }
        }
        Ok(state)
    }

    pub fn save(&self) -> Result<()> {
        let path = path()?;
        if self.sysctls.is_empty() && self.vips.is_empty() {
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        fs::create_dir_all(path.parent().unwrap())?;
        let mut text = String::new();
        for (iface, name, value) in &self.sysctls {
            text += &format!("sysctl {iface} {name} {value}\n");
        }
        for vip in &self.vips {
            text += &format!("vip {vip}\n");
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Records the original value, unless an earlier `up` already did.
    pub fn remember_sysctl(&mut self, iface: &str, name: &str, value: i64) {
        if !self.sysctls.iter().any(|(i, n, _)| i == iface && n == name) {
            self.sysctls
                .push((iface.to_string(), name.to_string(), value));
        }
    }

    pub fn remember_vip(&mut self, vip: IpAddr) {
        if !self.vips.contains(&vip) {
            self.vips.push(vip);
        }
    }

    pub fn forget_vip(&mut self, vip: IpAddr) -> bool {
        let before = self.vips.len();
        self.vips.retain(|v| *v != vip);
        self.vips.len() != before
    }

    pub fn vips(&self) -> Vec<IpAddr> {
        self.vips.clone()
    }

    pub fn take_sysctls(&mut self) -> Vec<(String, String, i64)> {
        std::mem::take(&mut self.sysctls)
    }
}
