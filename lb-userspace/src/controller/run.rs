//! The controller's main loop: load and attach, keep the maps in line with the policy and with
//! the real servers' reachability, reload on SIGHUP. Stopping the controller leaves the data
//! plane attached and forwarding; `xdplb down` removes it.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use super::{announce, lock};
use crate::{
    dataplane::{
        loader,
        maps::{Maps, VIP_ADDR_ADDED},
        sync::{Observed, Sync},
    },
    health::monitor::{Monitor, Report},
    netconf::{self, neighbour},
    policy::{self, Forwarding, Policy, Role},
};

/// How often reals' MACs are re-read from the neighbour table.
const REFRESH: Duration = Duration::from_secs(1);

pub async fn run(config: &Path, pin_dir: &Path) -> Result<()> {
    let mut policy = policy::load(config)?;
    let _lock = lock::acquire(pin_dir)?;
    let mut loaded = loader::load(pin_dir)?;
    for interface in &policy.interfaces {
        loaded.attach(&interface.name, interface.xdp_mode)?;
    }
    let handle = netconf::connect()?;
    let outside = outside_interface(&policy)?;
    enable_forwarding_for_nat(&policy)?;
    let mut sync = Sync::adopt(&loaded.maps)?;
    let previously = owned_vips(&loaded.maps)?;
    let mut observed = Observed {
        announced_vips: announce::vips(
            &handle,
            netconf::if_index(&outside)?,
            &vips(&policy),
            &previously,
        )
        .await?,
        ..Default::default()
    };

    // First resolution: ask for every real, and run every health check once, so the first
    // maps already hold only working reals (a restart must not mark live reals down).
    let (mut monitor, mut reports) = Monitor::new();
    monitor.follow(&policy)?;
    refresh_macs(&handle, &outside, &policy, &mut observed).await?;
    first_checks(&mut monitor, &mut reports, &policy).await;
    refresh_macs(&handle, &outside, &policy, &mut observed).await?;
    observed.unhealthy = monitor.unhealthy();
    sync.apply(&mut loaded.maps, &policy, &observed)?;
    report_reals(&sync);
    info!(config = %config.display(), pin_dir = %pin_dir.display(), "xdplb running");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let before = observed.macs.clone();
                refresh_macs(&handle, &outside, &policy, &mut observed).await?;
                if observed.macs != before {
                    sync.apply(&mut loaded.maps, &policy, &observed)?;
                    report_reals(&sync);
                }
            }
            Some(report) = reports.recv() => {
                if health_changed(&mut monitor, report) {
                    observed.unhealthy = monitor.unhealthy();
                    sync.apply(&mut loaded.maps, &policy, &observed)?;
                    report_reals(&sync);
                }
            }
            _ = hangup.recv() => {
                match policy::load(config) {
                    Err(e) => error!("reload refused, the running configuration stays: {e}"),
                    Ok(new) => {
                        for interface in new.interfaces.iter().filter(|i| !policy.interfaces.iter().any(|o| o.name == i.name)) {
                            loaded.attach(&interface.name, interface.xdp_mode)?;
                        }
                        let wanted = vips(&new);
                        let if_index = netconf::if_index(&outside_interface(&new)?)?;
                        let owned = announce::vips(&handle, if_index, &wanted, &observed.announced_vips).await?;
                        announce::withdraw(&handle, &observed.announced_vips, &wanted).await?;
                        observed.announced_vips = owned;
                        enable_forwarding_for_nat(&new)?;
                        monitor.follow(&new)?;
                        observed.unhealthy = monitor.unhealthy();
                        policy = new;
                        refresh_macs(&handle, &outside, &policy, &mut observed).await?;
                        sync.apply(&mut loaded.maps, &policy, &observed)?;
                        info!("policy reloaded");
                        report_reals(&sync);
                    }
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!(
        "controller stopping; the data plane stays attached and keeps forwarding (`xdplb down` removes it)"
    );
    Ok(())
}

/// A NAT balancer is its reals' gateway: it routes their replies (the fallback path when a
/// neighbour is not resolved yet) and their other traffic, so IPv4 forwarding must be on.
fn enable_forwarding_for_nat(policy: &Policy) -> Result<()> {
    if !policy
        .services
        .iter()
        .any(|s| s.forwarding == Forwarding::Nat)
    {
        return Ok(());
    }
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?.trim() != "1" {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .context("enabling net.ipv4.ip_forward for NAT")?;
        info!("net.ipv4.ip_forward=1: NAT services route through this host");
    }
    Ok(())
}

fn outside_interface(policy: &Policy) -> Result<String> {
    policy
        .interfaces
        .iter()
        .find(|i| i.role == Role::Outside)
        .map(|i| i.name.clone())
        .context("the policy has no client-facing interface")
}

fn vips(policy: &Policy) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = policy.services.iter().map(|s| s.vip).collect();
    v.sort();
    v.dedup();
    v
}

fn owned_vips(maps: &Maps) -> Result<HashSet<Ipv4Addr>> {
    let mut out = HashSet::new();
    for entry in maps.vip_addrs.iter() {
        let (addr, flags) = entry?;
        if flags & VIP_ADDR_ADDED != 0 {
            out.insert(Ipv4Addr::from(addr.to_ne_bytes()));
        }
    }
    Ok(out)
}

/// Reads the reals' MACs; provokes ARP for those missing. A real whose entry vanished keeps
/// its last MAC (the kernel garbage-collects idle entries; XDP traffic does not refresh them).
async fn refresh_macs(
    handle: &rtnetlink::Handle,
    outside: &str,
    policy: &Policy,
    observed: &mut Observed,
) -> Result<()> {
    let if_index = netconf::if_index(outside)?;
    let table = neighbour::table(handle, if_index).await?;
    let mut macs = HashMap::new();
    // Only DR sends to reals by MAC; NAT finds its next hop in the kernel's FIB.
    for service in policy
        .services
        .iter()
        .filter(|s| s.forwarding == Forwarding::Dr)
    {
        for real in &service.members() {
            if let Some(mac) = table
                .get(&real.address)
                .or_else(|| observed.macs.get(&real.address))
            {
                if observed
                    .macs
                    .get(&real.address)
                    .is_some_and(|old| old != mac)
                {
                    warn!(real = %real.address, "real server's MAC changed; following it");
                }
                macs.insert(real.address, *mac);
            }
            if !table.contains_key(&real.address) {
                neighbour::provoke(outside, real.address);
            }
        }
    }
    observed.macs = macs;
    Ok(())
}

/// Waits for every real's first check result (each check is bounded by its timeout), so
/// the first map contents reflect the reals' health.
async fn first_checks(
    monitor: &mut Monitor,
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<Report>,
    policy: &Policy,
) {
    let longest = policy
        .services
        .iter()
        .map(|s| s.health.timeout)
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest + Duration::from_millis(500);
    while !monitor.all_decided() {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(report)) => {
                health_changed(monitor, report);
            }
            _ => break,
        }
    }
}

/// Records a check result; logs and returns true when the real's state changed.
fn health_changed(monitor: &mut Monitor, report: Report) -> bool {
    let real = report.real.clone();
    let latency = report.outcome.latency;
    match monitor.record(report) {
        Some(change) if change.up => {
            info!(real = %real, reason = %change.reason, latency_ms = latency.as_millis() as u64, "real is up");
            true
        }
        Some(change) => {
            warn!(real = %real, reason = %change.reason, latency_ms = latency.as_millis() as u64, "real is down");
            true
        }
        None => false,
    }
}

fn report_reals(sync: &Sync) {
    for real in &sync.reals_view {
        info!(service = %real.service, real = %real.address, id = real.id, up = real.up, weight = real.weight, "real");
    }
}

/// `xdplb down`: stop a running controller, remove the VIPs it added, detach, unpin.
pub async fn down(pin_dir: &Path) -> Result<()> {
    if let Some(pid) = lock::holder(pin_dir) {
        println!("stopping the running controller (pid {pid})");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if lock::holder(pin_dir).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !pin_dir.exists() {
        println!("nothing pinned at {}: already down", pin_dir.display());
        return Ok(());
    }
    if let Ok(maps) = Maps::open_pinned(pin_dir) {
        let handle = netconf::connect()?;
        for vip in owned_vips(&maps)? {
            if netconf::address::remove(&handle, None, vip).await? {
                println!("removed VIP {vip}");
            }
        }
    }
    loader::remove_pins(pin_dir)?;
    let _ = std::fs::remove_file(lock::path_for(pin_dir));
    println!(
        "xdplb is down: XDP detached, pins under {} removed",
        pin_dir.display()
    );
    Ok(())
}
