//! IPv4 per-interface sysctls under /proc/sys/net/ipv4/conf (per network namespace).

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

fn path(interface: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{interface}/{name}"))
}

pub fn get(interface: &str, name: &str) -> Result<i64> {
    let p = path(interface, name);
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("parsing {}", p.display()))
}

pub fn set(interface: &str, name: &str, value: i64) -> Result<()> {
    let p = path(interface, name);
    fs::write(&p, value.to_string()).with_context(|| format!("writing {}", p.display()))
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
