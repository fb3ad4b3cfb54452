//! Kernel settings the policy needs beside the data plane: IP forwarding and local sources for
//! the NAT and SNAT paths the kernel finishes (a next hop not resolved yet), and the port range
//! SNAT gives flows.

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::{
    netconf,
    policy::{Forwarding, Policy, Role},
};

/// Kernel settings the policy's services need, set before the maps are written (and again on
/// a reload).
pub fn prepare(policy: &Policy) -> Result<()> {
    prepare_for_nat(policy)?;
    if policy.vip_announcement == crate::policy::VipAnnouncement::Bgp {
        answer_no_arp_for_vips(policy)?;
    }
    if policy
        .services
        .iter()
        .any(|s| s.forwarding == Forwarding::Snat)
    {
        super::snat::reserve_ports()?;
    }
    Ok(())
}

/// A NAT balancer is its reals' gateway: it routes their replies (the fallback path when a
/// neighbour is not resolved yet) and their other traffic, so IPv4 forwarding must be on. SNAT
/// needs the same fallback path.
fn prepare_for_nat(policy: &Policy) -> Result<()> {
    if !policy.services.iter().any(|s| s.forwarding.translates()) {
        return Ok(());
    }
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?.trim() != "1" {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .context("enabling net.ipv4.ip_forward for NAT")?;
        info!("net.ipv4.ip_forward=1: NAT services route through this host");
    }
    // IPv6 NAT the same way. A host forwarding IPv6 stops taking router advertisements
    // (accept_ra=1 counts only on hosts): a NAT balancer's IPv6 addresses and routes are static.
    let ipv6_forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";
    if policy
        .services
        .iter()
        .any(|s| s.forwarding.translates() && s.vip.is_ipv6())
        && std::fs::read_to_string(ipv6_forwarding)?.trim() != "1"
    {
        std::fs::write(ipv6_forwarding, "1")
            .context("enabling net.ipv6.conf.all.forwarding for IPv6 NAT")?;
        info!("net.ipv6.conf.all.forwarding=1: IPv6 NAT services route through this host");
    }
    // A translated packet whose next hop's MAC is unknown is handed to the kernel to resolve
    // it. A reply then carries the VIP as its source, an address of this host, which the
    // kernel drops unless the interface it came in on accepts local sources. That happens on
    // every node that has just become active in a pair (clients learnt the VIP's move from
    // gratuitous ARP and never ARP for it, so this node has no neighbour entry for them), and
    // whenever a client's entry has gone. Only the interfaces replies come in on: the inside
    // ones (two-arm), else the one interface (one-arm). SNAT's packets to the reals carry an
    // address of this host as their source too, and come in on the client side: every
    // interface then.
    let snat = policy
        .services
        .iter()
        .any(|s| s.forwarding == Forwarding::Snat);
    let inside: Vec<&str> = policy
        .interfaces
        .iter()
        .filter(|i| i.role == Role::Inside)
        .map(|i| i.name.as_str())
        .collect();
    let reply_side: Vec<&str> = if inside.is_empty() || snat {
        policy.interfaces.iter().map(|i| i.name.as_str()).collect()
    } else {
        inside
    };
    for interface in reply_side {
        if netconf::sysctl::get(interface, "accept_local")? != 1 {
            netconf::sysctl::set(interface, "accept_local", 1).with_context(|| {
                format!("setting net.ipv4.conf.{interface}.accept_local=1 for NAT")
            })?;
            info!(
                interface,
                "accept_local=1: NAT replies handed to the kernel (client MAC not yet known) carry the VIP as source"
            );
        }
        // Strict reverse-path filtering drops them all the same: the VIP's route is elsewhere.
        let strict = [interface, "all"]
            .iter()
            .filter_map(|i| netconf::sysctl::get(i, "rp_filter").ok())
            .max()
            == Some(1);
        if strict {
            warn!(
                interface,
                "rp_filter=1 (strict) here drops NAT replies handed to the kernel while a client's MAC is unknown (their source is the VIP): use rp_filter=2 (loose) or 0 on this interface"
            );
        }
    }
    Ok(())
}

/// BGP: the VIPs are on `lo`, and Linux answers ARP for any local address on any interface
/// unless told otherwise: the client-facing interfaces answer only for their own addresses
/// (`arp_ignore=1`) and never use a VIP as an ARP source (`arp_announce=2`), as on a DR real.
fn answer_no_arp_for_vips(policy: &Policy) -> Result<()> {
    for interface in policy.interfaces.iter().filter(|i| i.role == Role::Outside) {
        for (name, value) in [("arp_ignore", 1), ("arp_announce", 2)] {
            if netconf::sysctl::get(&interface.name, name)? < value {
                netconf::sysctl::set(&interface.name, name, value).with_context(|| {
                    format!("setting net.ipv4.conf.{}.{name}={value}", interface.name)
                })?;
                info!(
                    interface = %interface.name,
                    "{name}={value}: VIPs announced over BGP are on lo, and this interface must not answer ARP for them"
                );
            }
        }
    }
    Ok(())
}
