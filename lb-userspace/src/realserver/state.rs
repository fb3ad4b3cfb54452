//! What `realserver up` changed, kept in /run/xdplb so `down` can restore it. One file per
//! network namespace (keyed by the namespace's inode), since several lab real servers share
//! one /run.

use std::{fs, net::Ipv4Addr, os::unix::fs::MetadataExt, path::PathBuf};

use anyhow::{Context, Result};

#[derive(Default)]
pub struct State {
    /// (interface, sysctl, original value)
    sysctls: Vec<(String, String, i64)>,
    vips: Vec<Ipv4Addr>,
}

fn path() -> Result<PathBuf> {
    let netns = fs::metadata("/proc/self/ns/net")
        .context("reading this process's network namespace")?
        .ino();
    Ok(PathBuf::from(format!(
        "/run/xdplb/realserver-netns-{netns}.state"
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

    pub fn remember_vip(&mut self, vip: Ipv4Addr) {
        if !self.vips.contains(&vip) {
            self.vips.push(vip);
        }
    }

    pub fn forget_vip(&mut self, vip: Ipv4Addr) -> bool {
        let before = self.vips.len();
        self.vips.retain(|v| *v != vip);
        self.vips.len() != before
    }

    pub fn vips(&self) -> Vec<Ipv4Addr> {
        self.vips.clone()
    }

    pub fn take_sysctls(&mut self) -> Vec<(String, String, i64)> {
        std::mem::take(&mut self.sysctls)
    }
}
