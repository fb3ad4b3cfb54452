//! Path MTU discovery through the balancer: a remote client behind a router whose link toward
//! it has MTU 1400 downloads 2 MB, as a viewer or a DICOM retrieval would. The server's
//! 1500-byte packets make the router send "fragmentation needed" to their source, which is
//! the VIP: unless the balancer passes that error on to the real that sent them, the real never
//! learns the path's MTU and the download stalls for good.
//!
//! Each lab first downloads straight from a real's own address (the control: the lab itself
//! is right), then flushes the reals' learned path MTUs, so every download through the VIP
//! depends on an error the balancer passed on.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use xdplb_lab::lab::{Arms, DrLab, LabConfig, NatLab, Netns, RemoteClient, download, dr_policy};

const MTU: u32 = 1400;
const BYTES: usize = 2 << 20;
/// No byte for this long: stalled (a black hole retransmits full-size segments forever).
const STALL: Duration = Duration::from_secs(5);
const DOWNLOADS: usize = 6;

/// Forgets every path MTU `host` learned (the kernel keeps them as route exceptions).
fn forget_path_mtus(host: &Netns) -> Result<()> {
    host.ip(&["route", "flush", "cache"])?;
    Ok(())
}

fn downloads_through(
    client: &Netns,
    to: SocketAddr,
    reals: &[(Netns, std::net::Ipv4Addr, String)],
) -> Result<()> {
    for i in 0..DOWNLOADS {
        for (ns, _, _) in reals {
            forget_path_mtus(ns)?;
        }
        download(client, to, BYTES, STALL)
            .with_context(|| format!("download {i} of {BYTES} bytes through {to}"))?;
    }
    Ok(())
}

#[test]
fn large_downloads_through_a_dr_vip_survive_a_smaller_mtu_on_the_way() -> Result<()> {
    let mut lab = DrLab::build(&LabConfig {
        reals: 2,
        ports: vec![104],
    })?;
    let remote = RemoteClient::build(&lab.prefix, &mut lab.switch, "br0", MTU)?;
    lab.switch.attach_pass()?;
    for (ns, _, _) in &lab.reals {
        RemoteClient::route_via_router(ns)?;
    }
    RemoteClient::route_via_router(&lab.balancer.ns)?;
    lab.balancer.start(&dr_policy(&lab, &[104]))?;

    // The control: straight from a real, which learns the path MTU from the router itself.
    let real = SocketAddr::from((lab.reals[0].1, 104));
    download(&remote.client, real, BYTES, STALL).context("control download from a real")?;

    downloads_through(&remote.client, lab.vip(104), &lab.reals).map_err(|e| {
        let counters = lab.balancer.stats_table().unwrap_or_default();
        e.context(format!(
            "through the VIP; the balancer's counters:\n{counters}"
        ))
    })?;
    // The data plane does it alone: with the controller gone (crashed), errors still pass on.
    lab.balancer.kill()?;
    downloads_through(&remote.client, lab.vip(104), &lab.reals)
        .context("with the controller stopped")?;
    Ok(())
}

#[test]
fn large_downloads_through_a_nat_vip_survive_a_smaller_mtu_on_the_way() -> Result<()> {
    let mut lab = NatLab::build(Arms::Two, 2)?;
    let remote = RemoteClient::build(&lab.prefix, &mut lab.switch, "br-out", MTU)?;
    lab.switch.attach_pass()?;
    RemoteClient::route_via_router(&lab.balancer.ns)?;
    // The router reaches the reals' own addresses through the balancer (for the control).
    remote
        .router
        .ip(&["route", "add", "198.19.0.0/24", "via", "198.18.0.2"])?;
    // The control reaches a real directly through the balancer: plain routing allowed.
    lab.balancer
        .start(&format!("nat_routing: open\n{}", lab.policy()))?;

    let real = SocketAddr::from((lab.reals[0].1, 8080));
    download(&remote.client, real, BYTES, STALL).context("control download from a real")?;

    downloads_through(&remote.client, lab.vip(80), &lab.reals).map_err(|e| {
        let counters = lab.balancer.stats_table().unwrap_or_default();
        e.context(format!(
            "through the VIP; the balancer's counters:\n{counters}"
        ))
    })?;
    Ok(())
}
