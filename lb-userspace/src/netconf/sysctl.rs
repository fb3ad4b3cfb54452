//! Per-interface sysctls under /proc/sys/net/ipv4/conf and /proc/sys/net/ipv6/conf (per
//! network namespace).

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

fn path(family: &str, interface: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{interface}/{name}"))
}

fn read(p: PathBuf) -> Result<i64> {
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("parsing {}", p.display()))
}

/// `net.ipv4.conf.INTERFACE.NAME`.
pub fn get(interface: &str, name: &str) -> Result<i64> {
    read(path("ipv4", interface, name))
}

/// `net.ipv4.conf.INTERFACE.NAME`.
pub fn set(interface: &str, name: &str, value: i64) -> Result<()> {
    let p = path("ipv4", interface, name);
    fs::write(&p, value.to_string()).with_context(|| format!("writing {}", p.display()))
}

/// `net.ipv6.conf.INTERFACE.NAME`.
pub fn get6(interface: &str, name: &str) -> Result<i64> {
    read(path("ipv6", interface, name))
}

/// Interfaces with IPv4 configuration, without the `all` and `default` pseudo-entries.
pub fn interfaces() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc/sys/net/ipv4/conf")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "all" && name != "default" {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}
