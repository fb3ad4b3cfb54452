//! The balancer answers ARP for its VIPs: each VIP/32 goes on the client-facing interface
//! (as keepalived's virtual_ipaddress does). Only addresses the controller added are marked in
//! the VIP_ADDRS map, so `xdplb down` removes those and never an operator's own.

use std::{collections::HashSet, net::Ipv4Addr};

use anyhow::Result;
use rtnetlink::Handle;
use tracing::info;

use crate::netconf::address;

/// Ensures every VIP is on `if_index`; returns the ones the controller owns (added now, or
/// added by an earlier controller as `previously` says).
pub async fn vips(
    handle: &Handle,
    if_index: u32,
    wanted: &[Ipv4Addr],
    previously: &HashSet<Ipv4Addr>,
) -> Result<HashSet<Ipv4Addr>> {
    let mut owned = HashSet::new();
    for &vip in wanted {
        if address::add(handle, if_index, vip).await? {
            info!(%vip, "VIP added to the client-facing interface");
            owned.insert(vip);
        } else if previously.contains(&vip) {
            owned.insert(vip);
        }
    }
    Ok(owned)
}

/// Removes VIPs the controller owned that are no longer wanted.
pub async fn withdraw(
    handle: &Handle,
    owned: &HashSet<Ipv4Addr>,
    wanted: &[Ipv4Addr],
) -> Result<()> {
    for vip in owned.iter().filter(|v| !wanted.contains(v)) {
        if address::remove(handle, None, *vip).await? {
            info!(%vip, "VIP removed from the interface");
        }
    }
    Ok(())
}
