//! `xdplb realserver up|down|check`: prepare a DR real server to accept packets for VIPs
//! without answering ARP for them (the balancer must own the VIPs on the network).
//!
//! `up` sets arp_ignore=1 (answer ARP only for addresses on the asking interface) and
//! arp_announce=2 (never use a VIP as ARP source) on `all` and the server's interfaces, and
//! only then adds each VIP/32 to `lo`, so there is no moment in which the host answers ARP for
//! a VIP. What `up` changed is remembered per network namespace, so `down` restores exactly
//! that, and running `up` twice changes nothing.

mod state;

use std::net::IpAddr;

use anyhow::Result;

use crate::netconf::{self, address, sysctl};
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
    state.save()?; // before touching addresses, so a failure below can still be undone
    let handle = netconf::connect()?;
    let lo = netconf::if_index("lo")?;
    for &vip in vips {
        if address::add(&handle, lo, vip).await? {
            state.remember_vip(vip);
            println!("added {vip}/32 to lo");
        } else {
            println!("{vip}/32 already on lo");
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
            println!("removed {vip}/32 from lo");
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

/// Prints whether this host would answer ARP for each VIP, and why. Returns whether all is well.
pub async fn check(vips: &[IpAddr], interface: Option<&str>) -> Result<bool> {
    let handle = netconf::connect()?;
    let lo = netconf::if_index("lo")?;
    let all_ignore = sysctl::get("all", "arp_ignore")?;
    let all_announce = sysctl::get("all", "arp_announce")?;
    let interfaces: Vec<String> = match interface {
        Some(i) => vec![i.to_string()],
        None => sysctl::interfaces()?
            .into_iter()
            .filter(|i| i != "lo")
            .collect(),
    };
    let mut ok = true;
    for &vip in vips {
        if !address::has(&handle, lo, vip).await? {
            ok = false;
            println!("{vip}: NOT on lo: this host drops packets the balancer forwards to {vip}");
        }
        let mut problems = Vec::new();
        for iface in &interfaces {
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
        if problems.is_empty() {
            println!("{vip}: ok: held on lo, no ARP answered or announced for it");
        } else {
            ok = false;
            for p in problems {
                println!("{vip}: PROBLEM: {p}");
            }
        }
    }
    if !ok {
        println!(
            "fix: xdplb realserver up --vip {}",
            vips.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(ok)
}
