//! `xdplb realserver up|down|check`: prepare a DR real server to accept packets for VIPs
//! without answering ARP or neighbour solicitations for them (the balancer must own the VIPs
//! on the network).
//!
//! IPv4: `up` sets arp_ignore=1 (answer ARP only for addresses on the asking interface) and
//! arp_announce=2 (never use a VIP as ARP source) on `all` and the server's interfaces, and
//! only then adds each VIP/32 to `lo`, so there is no moment in which the host answers ARP for
//! a VIP. What `up` changed is remembered per network namespace, so `down` restores exactly
//! that, and running `up` twice changes nothing.
//!
//! IPv6 needs nothing but the VIP/128 on `lo`: Linux answers a neighbour solicitation only for
//! an address of the interface it came in on (or an anycast address there, or, with proxy_ndp
//! and forwarding on, a proxy entry), and solicits its own neighbours from its link-local
//! address, never from a VIP on `lo`. `check` reports what would make it answer anyway.

mod state;

use std::net::{IpAddr, Ipv6Addr};

use anyhow::Result;

use crate::netconf::{self, address, neighbour, sysctl};
use state::State;

const ARP_IGNORE: (&str, i64) = ("arp_ignore", 1);
const ARP_ANNOUNCE: (&str, i64) = ("arp_announce", 2);

fn target_interfaces(interface: Option<&str>) -> Result<Vec<String>> {
    let mut out = vec!["all".to_string()];
    match interface {
        Some(i) => out.push(i.to_string()),
        None => out.extend(sysctl::interfaces()?.into_iter().filter(|i| i != "lo")),
    }
    Ok(out)
}

pub async fn up(vips: &[IpAddr], interface: Option<&str>) -> Result<()> {
    if let Some(i) = interface {
        netconf::if_index(i)?;
    }
    let mut state = State::load()?;
    // ARP concerns IPv4 VIPs only; IPv6 VIPs need nothing beyond the address on lo.
    if vips.iter().any(IpAddr::is_ipv4) {
        for iface in target_interfaces(interface)? {
            for (name, value) in [ARP_IGNORE, ARP_ANNOUNCE] {
                let current = sysctl::get(&iface, name)?;
                if current < value {
                    state.remember_sysctl(&iface, name, current);
                    sysctl::set(&iface, name, value)?;
                    println!("set net.ipv4.conf.{iface}.{name}={value} (was {current})");
                }
            }
        }
    }
    state.save()?; // before touching addresses, so a failure below can still be undone
    let handle = netconf::connect()?;
    let lo = netconf::if_index("lo")?;
    for &vip in vips {
        let prefix = address::host_prefix(vip);
        if address::add(&handle, lo, vip).await? {
            state.remember_vip(vip);
            println!("added {vip}/{prefix} to lo");
        } else {
            println!("{vip}/{prefix} already on lo");
        }
    }
    state.save()
}

pub async fn down(vips: &[IpAddr]) -> Result<()> {
    let mut state = State::load()?;
    let handle = netconf::connect()?;
    let lo = netconf::if_index("lo")?;
    let targets: Vec<IpAddr> = if vips.is_empty() {
        state.vips()
    } else {
        vips.to_vec()
    };
    for vip in targets {
        if !state.forget_vip(vip) {
            println!("{vip}: not added by `xdplb realserver up`, left alone");
            continue;
        }
        if address::remove(&handle, Some(lo), vip).await? {
            println!("removed {vip}/{} from lo", address::host_prefix(vip));
        }
    }
    if state.vips().is_empty() {
        for (iface, name, value) in state.take_sysctls() {
            // An interface may have gone away since `up`; nothing to restore then.
            if sysctl::get(&iface, &name).is_ok() {
                sysctl::set(&iface, &name, value)?;
                println!("restored net.ipv4.conf.{iface}.{name}={value}");
            }
        }
    }
    state.save()
}

/// Prints whether this host would answer ARP (IPv4) or neighbour solicitations (IPv6) for
/// each VIP, and why. Returns whether all is well.
pub async fn check(vips: &[IpAddr], interface: Option<&str>) -> Result<bool> {
    let handle = netconf::connect()?;
    let lo = netconf::if_index("lo")?;
    let interfaces: Vec<String> = match interface {
        Some(i) => {
            netconf::if_index(i)?;
            vec![i.to_string()]
        }
        None => sysctl::interfaces()?
            .into_iter()
            .filter(|i| i != "lo")
            .collect(),
    };
    let mut ok = true;
    // VIPs `xdplb realserver up` would put right.
    let mut fixable = Vec::new();
    for &vip in vips {
        let mut vip_ok = true;
        if !address::has(&handle, lo, vip).await? {
            vip_ok = false;
            println!("{vip}: NOT on lo: this host drops packets the balancer forwards to {vip}");
        }
        let (problems, up_fixes) = match vip {
            IpAddr::V4(_) => (arp_problems(vip, &interfaces)?, true),
            IpAddr::V6(v6) => (ndp_problems(&handle, v6, &interfaces).await?, false),
        };
        if problems.is_empty() && vip_ok {
            match vip {
                IpAddr::V4(_) => {
                    println!("{vip}: ok: held on lo, no ARP answered or announced for it")
                }
                IpAddr::V6(_) => println!(
                    "{vip}: ok: held on lo, no neighbour solicitation for it answered (it is on no other interface, not anycast, no proxy entry)"
                ),
            }
        }
        for p in &problems {
            println!("{vip}: PROBLEM: {p}");
        }
        if !vip_ok || (up_fixes && !problems.is_empty()) {
            fixable.push(vip);
        }
        ok &= vip_ok && problems.is_empty();
    }
    if !fixable.is_empty() {
        println!(
            "fix: xdplb realserver up --vip {}",
            fixable
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(ok)
}

/// Why this host would answer ARP for IPv4 `vip`, or announce it, on `interfaces`.
fn arp_problems(vip: IpAddr, interfaces: &[String]) -> Result<Vec<String>> {
    let all_ignore = sysctl::get("all", "arp_ignore")?;
    let all_announce = sysctl::get("all", "arp_announce")?;
    let mut problems = Vec::new();
    for iface in interfaces {
        let ignore = all_ignore.max(sysctl::get(iface, "arp_ignore")?);
        let announce = all_announce.max(sysctl::get(iface, "arp_announce")?);
        if ignore == 0 {
            problems.push(format!(
                "would answer ARP for {vip} on {iface} (arp_ignore={ignore}: replies for any local address)"
            ));
        }
        if announce < 2 {
            problems.push(format!(
                "may use {vip} as ARP source on {iface} (arp_announce={announce})"
            ));
        }
    }
    Ok(problems)
}

/// Why this host would answer neighbour solicitations for IPv6 `vip` on `interfaces`. Linux
/// answers one for an address of the receiving interface, an anycast address joined there, or
/// a proxy entry when the interface forwards and proxy_ndp is on (`all` or the interface);
/// an address on `lo` alone is never answered for on another interface.
async fn ndp_problems(
    handle: &rtnetlink::Handle,
    vip: Ipv6Addr,
    interfaces: &[String],
) -> Result<Vec<String>> {
    let holders = address::holders(handle, IpAddr::V6(vip)).await?;
    let anycast = neighbour::anycast6()?;
    let proxies = neighbour::proxies6(handle).await?;
    let all_proxy = sysctl::get6("all", "proxy_ndp").unwrap_or(0);
    let mut problems = Vec::new();
    for iface in interfaces {
        let index = netconf::if_index(iface)?;
        if holders.contains(&index) {
            problems.push(format!(
                "answers neighbour solicitations for {vip} on {iface}: it is an address of {iface} (a VIP belongs on lo only: ip -6 addr del {vip}/... dev {iface})"
            ));
        }
        if anycast.iter().any(|(name, a)| name == iface && *a == vip) {
            problems.push(format!(
                "answers neighbour solicitations for {vip} on {iface}: it is an anycast address there (/proc/net/anycast6; a subnet-router anycast address, the prefix itself, is one while forwarding is on)"
            ));
        }
        // An interface without IPv6 (disable_ipv6, or gone) answers nothing.
        let proxy_ndp = all_proxy.max(sysctl::get6(iface, "proxy_ndp").unwrap_or(0));
        let forwarding = sysctl::get6(iface, "forwarding").unwrap_or(0);
        let entry = proxies
            .iter()
            .any(|&(i, a)| a == vip && (i == index || i == 0));
        if proxy_ndp != 0 && forwarding != 0 && entry {
            problems.push(format!(
                "answers neighbour solicitations for {vip} on {iface} as its proxy (net.ipv6.conf proxy_ndp=1 and forwarding=1 there, and `ip -6 neigh show proxy` lists {vip}): ip -6 neigh del proxy {vip} dev {iface}"
            ));
        } else if entry {
            println!(
                "{vip}: note: a proxy entry for {vip} is listed (ip -6 neigh show proxy); with net.ipv6.conf.{{all,{iface}}}.proxy_ndp=1 and forwarding=1 on {iface} this host would answer for it"
            );
        }
    }
    Ok(problems)
}
