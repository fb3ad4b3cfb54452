//! Kernel network state the controller reads and sets over rtnetlink and /proc/sys.

pub mod address;
pub mod neighbour;
pub mod sysctl;

use anyhow::{Context, Result};

/// Opens an rtnetlink connection on the current tokio runtime.
pub fn connect() -> Result<rtnetlink::Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Interface index by name, or a clear error.
pub fn if_index(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no network interface named `{name}`"))
}

/// An interface's index and own MAC address, as the current network namespace has them.
pub fn if_mac(name: &str) -> Result<(u32, [u8; 6])> {
    let index = if_index(name)?;
    let addresses = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    for entry in addresses {
        if entry.interface_name != name {
            continue;
        }
        if let Some(mac) = entry
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok((index, mac));
        }
    }
    anyhow::bail!("interface `{name}` has no MAC address (XDP load balancing needs Ethernet)")
}

/// The members of bond `name` (none if it is no bond), as the kernel lists them in
/// /proc/net/bonding, which shows the current network namespace's bonds.
pub fn bond_members(name: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/net/bonding/{name}"))
        .map(|text| {
            text.lines()
                .filter_map(|line| line.strip_prefix("Slave Interface:"))
                .map(|member| member.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}
