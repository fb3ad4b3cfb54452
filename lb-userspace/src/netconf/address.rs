//! Adding and removing /32 addresses (VIPs on the balancer's interface or a real's loopback).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::Handle;

/// Whether `addr`/32 is on `if_index`.
pub async fn has(handle: &Handle, if_index: u32, addr: Ipv4Addr) -> Result<bool> {
    Ok(find(handle, Some(if_index), addr).await?.is_some())
}

async fn find(
    handle: &Handle,
    if_index: Option<u32>,
    addr: Ipv4Addr,
) -> Result<Option<netlink_packet_route::address::AddressMessage>> {
    let mut dump = handle.address().get().execute();
    while let Some(msg) = dump.try_next().await? {
        if if_index.is_some_and(|i| i != msg.header.index) || msg.header.prefix_len != 32 {
            continue;
        }
        let matches = msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == addr));
        if matches {
            return Ok(Some(msg));
        }
    }
    Ok(None)
}

/// Adds `addr`/32 to `if_index`; returns false if it was already there.
pub async fn add(handle: &Handle, if_index: u32, addr: Ipv4Addr) -> Result<bool> {
    if has(handle, if_index, addr).await? {
        return Ok(false);
    }
    handle
        .address()
        .add(if_index, IpAddr::V4(addr), 32)
        .execute()
        .await
        .with_context(|| format!("adding {addr}/32"))?;
    Ok(true)
}

/// Removes `addr`/32 from `if_index` (any interface if `None`); returns false if it was absent.
pub async fn remove(handle: &Handle, if_index: Option<u32>, addr: Ipv4Addr) -> Result<bool> {
    let Some(msg) = find(handle, if_index, addr).await? else {
        return Ok(false);
    };
    handle
        .address()
        .del(msg)
        .execute()
        .await
        .with_context(|| format!("removing {addr}/32"))?;
    Ok(true)
}

/// Every IPv4 address on this host's interfaces (in the current network namespace).
pub fn local_ipv4() -> Result<std::collections::HashSet<Ipv4Addr>> {
    let addresses = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    Ok(addresses
        .filter_map(|entry| entry.address?.as_sockaddr_in().map(|a| a.ip()))
        .collect())
}
