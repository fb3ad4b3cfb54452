//! Who holds the VIP addresses (`vip_announcement`). With `arp`, the balancer answers ARP for
//! its VIPs: each VIP/32 goes on the client-facing interface (as keepalived's
//! virtual_ipaddress does). Only addresses the controller added are marked in the VIP_ADDRS
//! map, so `xdplb down` removes those and never an operator's own. With `none`, keepalived
//! moves them between the nodes of a pair and xdplb adds or removes nothing. With `bgp`, each
//! VIP/32 is on `lo` exactly while this balancer can serve it, for BIRD's `protocol direct` to
//! announce to the ECMP router: only VIPs of which a service has a real in its table, and only
//! once the data plane is filled (the caller's `servable`).

use std::{collections::HashSet, net::IpAddr};

use anyhow::Result;
use rtnetlink::Handle;
use tracing::{info, warn};

use crate::{
    netconf::{self, address},
    policy::{Policy, Role, VipAnnouncement},
};

/// Puts the policy's VIPs on the client-facing interface and removes the ones it no longer
/// has, if the policy leaves that to xdplb; returns the VIPs the controller owns (`owned`:
/// those it added before).
pub async fn follow(
    handle: &Handle,
    policy: &Policy,
    owned: &HashSet<IpAddr>,
    servable: &HashSet<IpAddr>,
) -> Result<HashSet<IpAddr>> {
    if policy.vip_announcement == VipAnnouncement::Unmanaged {
        if !owned.is_empty() {
            warn!(
                vips = ?owned,
                "vip_announcement is none, but xdplb added these VIPs earlier: they stay until `xdplb down` (or remove them yourself) so that only keepalived moves VIPs"
            );
        }
        return Ok(owned.clone());
    }
    let (wanted, interface) = match policy.vip_announcement {
        VipAnnouncement::Bgp => {
            let mut wanted: Vec<IpAddr> = wanted(policy)
                .into_iter()
                .filter(|v| servable.contains(v))
                .collect();
            wanted.sort();
            (wanted, "lo")
        }
        _ => (
            wanted(policy),
            policy
                .interfaces
                .iter()
                .find(|i| i.role == Role::Outside)
                .map(|i| i.name.as_str())
                .unwrap_or_default(),
        ),
    };
    let now_owned = vips(handle, interface, &wanted, owned).await?;
    withdraw(handle, owned, &wanted).await?;
    Ok(now_owned)
}

/// The policy's VIPs, each once.
pub fn wanted(policy: &Policy) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = policy.services.iter().map(|s| s.vip).collect();
    v.sort();
    v.dedup();
    v
}

/// Ensures every VIP is on `interface`; returns the ones the controller owns (added now, or
/// added by an earlier controller as `previously` says).
async fn vips(
    handle: &Handle,
    interface: &str,
    wanted: &[IpAddr],
    previously: &HashSet<IpAddr>,
) -> Result<HashSet<IpAddr>> {
    let if_index = netconf::if_index(interface)?;
    let mut owned = HashSet::new();
    for &vip in wanted {
        if address::add(handle, if_index, vip).await? {
            info!(%vip, interface, "VIP added");
            owned.insert(vip);
        } else if previously.contains(&vip) {
            owned.insert(vip);
        }
    }
    Ok(owned)
}

/// Removes VIPs the controller owned that are no longer wanted.
async fn withdraw(handle: &Handle, owned: &HashSet<IpAddr>, wanted: &[IpAddr]) -> Result<()> {
    for vip in owned.iter().filter(|v| !wanted.contains(v)) {
        if address::remove(handle, None, *vip).await? {
            info!(%vip, "VIP removed");
        }
    }
    Ok(())
}
