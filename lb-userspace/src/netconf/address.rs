//! Adding and removing host addresses, /32 or /128 (VIPs on the balancer's interface or a real's
//! loopback).

use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, CacheInfo,
};
use rtnetlink::Handle;

/// Whether `addr` (/32 or /128) is on `if_index`.
pub async fn has(handle: &Handle, if_index: u32, addr: IpAddr) -> Result<bool> {
    Ok(find(handle, Some(if_index), addr).await?.is_some())
}

async fn find(
    handle: &Handle,
    if_index: Option<u32>,
    addr: IpAddr,
) -> Result<Option<netlink_packet_route::address::AddressMessage>> {
    let mut dump = handle.address().get().execute();
    while let Some(msg) = dump.try_next().await? {
        if if_index.is_some_and(|i| i != msg.header.index)
            || msg.header.prefix_len != host_prefix(addr)
        {
            continue;
        }
        let matches = msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == addr),
        );
        if matches {
            return Ok(Some(msg));
        }
    }
    Ok(None)
}

/// Adds `addr` (/32 or /128) to `if_index`; returns false if it was already there. An IPv6
/// address skips duplicate address detection (as keepalived's VIPs do): it is usable at once,
/// not after a second of being tentative.
///
/// On any interface but `lo` an IPv6 address is added deprecated (preferred lifetime 0, valid
/// forever, as `ip -6 addr add ... preferred_lft 0`): it still answers neighbour solicitations
/// and takes packets, but the kernel never picks it as the source of this host's own
/// connections. Otherwise a VIP/128 would win source selection (longest matching prefix,
/// counted up to each address's prefix length: 128 beats the interface's /64) for every
/// destination near it, and the balancer's health checks to DR reals, which hold the VIP
/// themselves, would leave from the VIP and be answered to the reals' own loopback (found in
/// the lab: every IPv6 DR real stayed down). SNAT's default source, the kernel's pick toward
/// a real, would be the VIP too. On `lo` the outgoing interface's own addresses win anyway.
pub async fn add(handle: &Handle, if_index: u32, addr: IpAddr) -> Result<bool> {
    if has(handle, if_index, addr).await? {
        return Ok(false);
    }
    let mut request = handle.address().add(if_index, addr, host_prefix(addr));
    if addr.is_ipv6() {
        let loopback = nix::net::if_::if_nametoindex("lo").is_ok_and(|lo| lo == if_index);
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        if !loopback {
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX; // forever
            message
                .attributes
                .push(AddressAttribute::CacheInfo(lifetimes));
        }
    }
    request
        .execute()
        .await
        .with_context(|| format!("adding {addr}/{}", host_prefix(addr)))?;
    Ok(true)
}

/// Removes `addr` (/32 or /128) from `if_index` (any interface if `None`); returns false if it was absent.
pub async fn remove(handle: &Handle, if_index: Option<u32>, addr: IpAddr) -> Result<bool> {
    let Some(msg) = find(handle, if_index, addr).await? else {
        return Ok(false);
    };
    handle
        .address()
        .del(msg)
        .execute()
        .await
        .with_context(|| format!("removing {addr}/{}", host_prefix(addr)))?;
    Ok(true)
}

/// The indexes of the interfaces holding `addr`, with any prefix length.
pub async fn holders(handle: &Handle, addr: IpAddr) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut dump = handle.address().get().execute();
    while let Some(msg) = dump.try_next().await? {
        let matches = msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == addr),
        );
        if matches && !out.contains(&msg.header.index) {
            out.push(msg.header.index);
        }
    }
    Ok(out)
}

/// The prefix length of one host's address: 32, or 128 for IPv6.
pub fn host_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// Every address on this host's interfaces (in the current network namespace).
pub fn local_addresses() -> Result<std::collections::HashSet<IpAddr>> {
    let addresses = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    Ok(addresses
        .filter_map(|entry| {
            let address = entry.address?;
            match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            }
        })
        .collect())
}
